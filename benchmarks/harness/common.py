"""What every contender shares: the load, the result, processes, sampling and broker clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchFailure(RuntimeError):
    """A scenario that did not do what it set out to do: the run fails loudly."""


@dataclass(frozen=True)
class Load:
    """N workflows of one shape, all started at once (`rate` 0) or `rate` per second.

    Shape: `steps` sequential steps of one no-op job each, or (`fan_out` > 0) one step of
    `fan_out` jobs followed by a join step of one job. `timed` carries timestamps through the
    jobs so that the gap between one job's end and the next job's start can be measured in the
    worker processes (latency scenario).
    """

    workflows: int
    steps: int = 1
    fan_out: int = 0
    rate: float = 0.0
    timed: bool = False

    @property
    def widths(self) -> list[int]:
        return [self.fan_out, 1] if self.fan_out else [1] * self.steps

    @property
    def jobs_per_workflow(self) -> int:
        return sum(self.widths)

    @property
    def jobs(self) -> int:
        return self.workflows * self.jobs_per_workflow

    def shape(self) -> str:
        return f"fan-out {self.fan_out} + join" if self.fan_out else f"{self.steps} step(s)"

    def deadline_s(self, floor: float = 60.0) -> float:
        """A generous bound: 60 s, or 100 jobs/s, or the paced start plus 60 s."""
        bound = max(floor, self.jobs / 100.0)
        if self.rate:
            bound = max(bound, self.workflows / self.rate + floor)
        return bound


@dataclass
class RunResult:
    contender: str
    load: Load
    seconds: float  # first start to last completion
    workflows: int  # completed, checked against the load
    jobs: int  # completed jobs, checked against the load
    step_latency_ms: dict[str, float] | None = None  # completion received -> next order confirmed
    handler_gap_ms: dict[str, float] | None = None  # one job's end -> the next job's start (workers)
    e2e_ms: dict[str, float] | None = None  # workflow start -> completion
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # backend (t, MiB)
    cpu_s: dict[str, float] = field(default_factory=dict)  # per role, user + system
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def workflows_per_s(self) -> float:
        return self.workflows / self.seconds if self.seconds > 0 else 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    def rss_summary(self) -> dict[str, float] | None:
        """Start (1 s in, once the backend is up), peak, end, and growth over the second half."""
        samples = [(t, v) for t, v in self.rss_mb if v > 0]
        if not samples:
            return None
        values = [v for t, v in samples if t >= 1.0] or [v for _, v in samples]
        half = values[len(values) // 2:]
        return {"start": values[0], "peak": max(values), "end": values[-1],
                "mid": half[0], "growth_second_half_pct": 100.0 * (values[-1] - half[0]) / half[0]}

    def to_dict(self) -> dict[str, Any]:
        cpu_total = sum(self.cpu_s.values())
        return {
            "contender": self.contender, "load": asdict(self.load), "seconds": round(self.seconds, 4),
            "workflows": self.workflows, "jobs": self.jobs,
            "workflows_per_s": round(self.workflows_per_s, 2), "jobs_per_s": round(self.jobs_per_s, 2),
            "step_latency_ms": self.step_latency_ms, "handler_gap_ms": self.handler_gap_ms, "e2e_ms": self.e2e_ms,
            "rss_mb": [(round(t, 2), round(v, 1)) for t, v in self.rss_mb], "rss_summary": self.rss_summary(),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_job": round(1000 * cpu_total / self.jobs, 4) if self.jobs else None,
            "extra": self.extra,
        }


def summary_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    """p50/p95/p99/max (nearest rank) of durations given in seconds, in milliseconds."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"p50": round(rank(0.50), 3), "p95": round(rank(0.95), 3), "p99": round(rank(0.99), 3),
            "max": round(ordered[-1] * 1000, 3), "mean": round(1000 * sum(ordered) / len(ordered), 3),
            "n": len(ordered)}


def cpu_self() -> float:
    """User + system CPU seconds of this process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def unique_prefix(tag: str) -> str:
    return f"bench_{tag}_{uuid.uuid4().hex[:8]}_"


# --- processes ---------------------------------------------------------------------------


# Set by the harness for one child process (its queue, its output file), never inherited.
PER_PROCESS = ("BENCH_GAPS_FILE", "BENCH_CELERY_QUEUE", "BENCH_CELERY_DONE", "BENCH_CELERY_PREFETCH",
               "BENCH_CELERY_BACKEND", "BENCH_CELERY_SCHEMA")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: this one's, with every `BENCH_*` setting (the broker URL
    and its vhost, the PostgreSQL URL, ...) as the harness resolved them, and none of stepflow's
    own settings but the broker URL (`stepflow worker` reads it there): a child is told its
    prefix and store on its command line. URLs stay off command lines (they may hold a password)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_") and k not in PER_PROCESS}
    env["BENCH_AMQP_URL"] = env["STEPFLOW_AMQP_URL"] = AMQP_URL
    env["BENCH_POSTGRES_URL"] = POSTGRES_URL
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Proc:
    """A child process with its output in a log file, its CPU time and RSS read from /proc."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  closed in stop()
        self.popen = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env=env or child_env(), start_new_session=True)
        self.pid = self.popen.pid
        self.last_cpu = 0.0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system time so far (the last value read, once the process is gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.last_cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
        return self.last_cpu

    def rss_mb(self) -> float | None:
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * PAGE / 1_048_576

    def tail(self, lines: int = 25) -> str:
        try:
            self._log.flush()
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchFailure(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def terminate(self) -> None:
        """SIGTERM (or the process's stop signal) to this process only, by its pid."""
        if self.alive():
            self.cpu_seconds()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)

    def stop(self, timeout: float = 15.0) -> int | None:
        """The stop signal, then SIGKILL after `timeout`."""
        self.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode


class Processes:
    """The processes of one contender run; stopped (all of them) on exit."""

    def __init__(self, log_dir: Path, stop_timeout: float = 15.0) -> None:
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.items: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              stop_signal: int = signal.SIGTERM) -> Proc:
        proc = Proc(name, argv, self.log_dir, env, stop_signal)
        self.items.append(proc)
        return proc

    def check(self) -> None:
        for proc in self.items:
            proc.check_alive()

    def cpu(self) -> dict[str, float]:
        """CPU seconds per role (the name before the first '-')."""
        roles: dict[str, float] = {}
        for proc in self.items:
            role = proc.name.split("-", 1)[0]
            roles[role] = roles.get(role, 0.0) + proc.cpu_seconds()
        return roles

    def stop_all(self, timeout: float = 15.0) -> None:
        for proc in self.items:
            proc.terminate()
        for proc in self.items:
            proc.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all(self.stop_timeout)


class RssSampler:
    """Samples one process's RSS every `interval` seconds in a thread."""

    def __init__(self, proc: Proc, interval: float = 0.25) -> None:
        self.proc = proc
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{proc.name}", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            value = self.proc.rss_mb()
            if value is not None:
                self.samples.append((time.monotonic() - started, value))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until(predicate: Any, timeout: float, what: str, procs: Processes | None = None,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if procs is not None:
            procs.check()
        if time.monotonic() > deadline:
            raise BenchFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- broker ------------------------------------------------------------------------------


async def _consumer_count(url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except Exception:  # noqa: BLE001  not declared yet (a 404 closes the channel)
            return 0
        return declared.declaration_result.consumer_count or 0
    finally:
        await connection.close()


def broker_up(url: str = AMQP_URL) -> bool:
    try:
        asyncio.run(_consumer_count(url, "bench_probe_none"))
    except Exception:  # noqa: BLE001  any failure to connect means: not yet
        return False
    return True


def wait_consumers(queue: str, count: int, procs: Processes, timeout: float = 60.0, url: str = AMQP_URL) -> None:
    """Wait until `count` consumers are on `queue` (the workers are ready)."""
    wait_until(lambda: asyncio.run(_consumer_count(url, queue)) >= count, timeout,
               f"{count} consumer(s) on {queue}", procs, interval=0.2)


# Every queue and exchange a run will declare, noted before its processes start and forgotten
# once deleted: what a failed deletion left is deleted again when the harness ends.
_PENDING: dict[tuple[str, str], set[str]] = {}


def will_declare(queues: Sequence[str], exchanges: Sequence[str] = (), url: str = AMQP_URL) -> None:
    """Note a run's broker objects before anything declares them (see `delete_pending`)."""
    _PENDING.setdefault((url, "queue"), set()).update(queues)
    _PENDING.setdefault((url, "exchange"), set()).update(exchanges)


def delete_broker_objects(queues: Sequence[str], exchanges: Sequence[str] = (), url: str = AMQP_URL) -> bool:
    """Remove a run's queues and exchanges; best effort (a clean-up error never hides the run's):
    on failure they stay noted, and `delete_pending` tries again when the harness ends."""
    will_declare(queues, exchanges, url)
    try:
        _delete_broker_objects(list(queues), list(exchanges), url)
    except Exception as error:  # noqa: BLE001  the broker may be away: say so and go on
        print(f"warning: could not delete {len(queues)} queue(s) of the run: {error!r}", file=sys.stderr)
        return False
    _PENDING[(url, "queue")].difference_update(queues)
    _PENDING[(url, "exchange")].difference_update(exchanges)
    return True


def delete_pending() -> list[str]:
    """Delete every noted queue and exchange not deleted yet (at the harness's end, whatever
    happened); returns the names it could not delete."""
    left: list[str] = []
    for url in sorted({u for u, _ in _PENDING}):
        queues = sorted(_PENDING.get((url, "queue"), ()))
        exchanges = sorted(_PENDING.get((url, "exchange"), ()))
        if (queues or exchanges) and not delete_broker_objects(queues, exchanges, url):
            left += [*queues, *exchanges]
    return left


def _delete_broker_objects(queues: list[str], exchanges: list[str], url: str) -> None:
    """Each on a fresh channel: a 404 closes it."""
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect(url, timeout=5)
        try:
            for kind, names in (("queue", queues), ("exchange", exchanges)):
                for name in names:
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        if kind == "queue":
                            await channel.queue_delete(name)
                        else:
                            await channel.exchange_delete(name)
                    with contextlib.suppress(Exception):
                        await channel.close()
        finally:
            await connection.close()

    asyncio.run(go())


async def _server_properties(url: str) -> dict[str, Any]:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        props = connection.transport.connection.server_properties  # type: ignore[union-attr]
        return {str(k): (v.decode() if isinstance(v, bytes) else v) for k, v in props.items()
                if k in ("product", "version")}
    finally:
        await connection.close()


# --- the machine -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1_048_576, 1)
    with contextlib.suppress(Exception):
        props = asyncio.run(_server_properties(AMQP_URL))
        info["rabbitmq"] = props.get("version")
    with contextlib.suppress(Exception):
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(_pg_conninfo(POSTGRES_URL), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else None
    from importlib.metadata import PackageNotFoundError, version

    for package in ("aio-pika", "eventsourcing", "msgspec", "celery", "kombu"):
        with contextlib.suppress(PackageNotFoundError):
            info[package] = version(package)
    return info


def _pg_conninfo(url: str) -> str:
    return url.split("?", 1)[0]


def pg_schema(action: str, schema: str) -> None:
    """CREATE or DROP (cascade) a PostgreSQL schema for one run."""
    import psycopg

    try:
        with psycopg.connect(_pg_conninfo(POSTGRES_URL), autocommit=True, connect_timeout=5) as conn:
            if action == "create":
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            else:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception as error:
        if action == "create":
            raise
        print(f"warning: could not drop schema {schema}: {error!r}", file=sys.stderr)  # best effort
