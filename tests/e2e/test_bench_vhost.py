"""The benchmark harness works, on a vhost of its own: `python -m benchmarks --quick` with the
smallest sizes and `BENCH_AMQP_URL=amqp://.../VHOST`.

Every process the harness starts must use that vhost (its workers are waited for there), and
the harness must leave it as it found it: no queue and no exchange of its own, whether the
run passed, a process of it died, or the harness itself was stopped with SIGTERM. Each test
makes a fresh vhost with rabbitmqctl and deletes it at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]
SCENARIOS = ("throughput", "fanout", "latency", "scale", "history", "chain", "starts", "replay")


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-s", *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def leftovers(vhost: str) -> tuple[list[str], list[str]]:
    """The vhost's queues, and its exchanges other than the default ones ("" and amq.*)."""
    queues = rabbitmqctl("list_queues", "-p", vhost, "name").split()
    exchanges = [name for name in rabbitmqctl("list_exchanges", "-p", vhost, "name").splitlines()
                 if name.strip() and not name.startswith("amq.")]
    return queues, exchanges


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"stepflow_bench_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


def bench_env(vhost: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "STEPFLOW_"))}
    env["BENCH_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_quick_benchmark_runs_every_scenario_on_its_own_vhost_writes_the_reports_and_leaves_it_empty(
        vhost: str, tmp_path: Path) -> None:
    """Every scenario runs its contenders (separate processes on RabbitMQ, SQLite and
    PostgreSQL), checks its own results and writes the JSON, markdown and PNG reports. Speed is
    never asserted here: the numbers of a CI machine mean nothing."""
    missing = [name for name in ("celery", "sqlalchemy", "matplotlib") if importlib.util.find_spec(name) is None]
    assert not missing, f"the benchmark needs the bench extra (pip install -e '.[bench]'): {', '.join(missing)}"
    out = tmp_path / "results"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--workflows", "30",
         "--fanout", "20", "--latency-seconds", "1", "--latency-rounds", "2", "--scale", "50", "--history", "3,6",
         "--chain-steps", "10", "--http-seconds", "0.5", "--replay-events", "2000"],
        cwd=ROOT, env=bench_env(vhost), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert leftovers(vhost) == ([], []), done.stdout[-2000:]
    print(f"python -m benchmarks --quick on vhost {vhost}: {time.monotonic() - started:.0f} s")

    results = json.loads((out / "results.json").read_text())
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, data in results["scenarios"].items():
        assert data["ok"] is True, f"{name}: {data.get('error')}"
    throughput = results["scenarios"]["throughput"]["results"]
    assert set(throughput) == {"raw", "celery", "sqlite", "postgres"}
    for contender, row in throughput.items():
        assert row["workflows"] == 30 and row["jobs"] == 30 * 3, contender
        assert row["workflows_per_s"] > 0
    assert results["scenarios"]["fanout"]["results"]["sqlite"]["jobs"] == 21
    latency = results["scenarios"]["latency"]["results"]
    assert latency["sqlite"]["step_latency_ms"]["n"] > 0 and latency["raw"]["handler_gap_ms"]["n"] > 0
    for contender, row in latency.items():  # two rounds each; the row is the lower job gap p50 of the two
        rounds = [r["p50"] for r in row["rounds_handler_gap_ms"]]
        assert len(rounds) == 2 and row["handler_gap_ms"]["p50"] == min(rounds), contender
        assert row["round_kept"] == rounds.index(min(rounds)) + 1, contender
    assert results["scenarios"]["replay"]["events"] >= 2000
    history = results["scenarios"]["history"]
    assert [row["load"]["steps"] for row in history["by_history"]] == [3, 6] and history["longest_to_shortest"] > 0
    chain = results["scenarios"]["chain"]["results"]
    assert set(chain) == {"raw", "sqlite", "postgres"}
    for contender, row in chain.items():
        assert row["jobs"] == 10, contender
        assert 0 < row["seconds"] < row["with_startup_s"], contender
    starts = results["scenarios"]["starts"]["results"]
    assert starts["single"]["workflows"] > 0 and starts["batch"]["workflows"] % 5 == 0

    markdown = (out / "results.md").read_text()
    for heading in ("**Throughput**", "**Fan-out/fan-in**", "**Latency**", "**Scale**", "**History length**",
                    "**Chain**", "**HTTP starts**", "**Replay**", "**Goals**"):
        assert heading in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def _kill_the_backend(harness: subprocess.Popen[str]) -> None:
    """A process of the run dies (SIGKILL, no goodbye): the run fails."""
    for pid, cmdline in _children(harness.pid).items():
        if "benchmarks.harness.stepflow_backend" in cmdline:
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError("no backend process to kill")


def _stop_the_harness(harness: subprocess.Popen[str]) -> None:
    harness.send_signal(signal.SIGTERM)


@pytest.mark.parametrize(("interrupt", "code"), [(_kill_the_backend, 1), (_stop_the_harness, 128 + signal.SIGTERM)],
                         ids=["a-process-dies", "sigterm"])
def test_a_failed_or_stopped_run_still_deletes_what_it_declared(
        vhost: str, tmp_path: Path, interrupt: Callable[[subprocess.Popen[str]], None], code: int) -> None:
    # Far more workflows than can finish before the interruption: the run is cut short.
    harness = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "throughput", "--contenders", "sqlite", "--workflows", "50000",
         "--steps", "1", "--rounds", "1", "--workers", "1", "--out", str(tmp_path / "results")],
        cwd=ROOT, env=bench_env(vhost), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any("benchmarks.harness.stepflow_backend" in c for c in _children(harness.pid).values()):
            assert harness.poll() is None, harness.communicate()[0]
            assert time.monotonic() < deadline, "the harness started no backend in 60 s"
            time.sleep(0.1)
        time.sleep(1.0)  # the backend has declared its queues and is starting workflows
        assert leftovers(vhost)[0], "the run's queues are not on the vhost"
        interrupt(harness)
        output = harness.communicate(timeout=90)[0]
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait(10)
    assert harness.returncode == code, output[-3000:]
    assert leftovers(vhost) == ([], []), output[-3000:]
