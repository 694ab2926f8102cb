"""stepflow against the raw broker loop and Celery, side by side, on one RabbitMQ.

    python -m benchmarks                          # every scenario, default sizes (8 to 10 minutes on 2 cores)
    python -m benchmarks --quick                  # every scenario, tiny sizes (CI smoke; under a minute)
    python -m benchmarks throughput latency       # some scenarios
    python -m benchmarks throughput --contenders raw,sqlite --workflows 5000 --steps 10

Scenarios: throughput, fanout, latency, scale, history, chain, starts, replay (see
benchmarks/scenarios.py).
Contenders: raw (plain aio-pika backend + workers, no store), celery (chains, acks_late, no
result backend), sqlite and postgres (stepflow: the backend and `stepflow worker`
processes). Every run uses its own queue prefix and store and cleans up after itself.

Writes results.json, results.md and results.png under --out (default benchmarks/results/),
and the processes' logs under --out/logs/. Exit 1 when a scenario failed its own checks
(a workflow not completed, a count that does not match, a process that died, a timeout).
Speed is never asserted: the goals are reported against.

Needs RabbitMQ (BENCH_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/; a vhost is the
URL's path: amqp://guest:guest@127.0.0.1:5672/bench), PostgreSQL (BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test) and the `bench` extra (celery, matplotlib,
sqlalchemy). Every BENCH_* setting reaches every process the harness starts. The queues and
exchanges a run declares are deleted when it ends, failed or not; those a deletion missed (the
broker away for a moment) once more when the harness ends, on SIGINT and SIGTERM too.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.harness.common import BenchFailure, delete_pending, machine
from benchmarks.scenarios import CONTENDERS, QUICK, SCENARIOS, Context, Sizes


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness works (CI)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--contenders", default=None, help=f"comma-separated, of {','.join(CONTENDERS)}")
    parser.add_argument("--workflows", type=int, default=None, help="throughput: workflows")
    parser.add_argument("--steps", type=int, default=None, help="throughput: steps per workflow")
    parser.add_argument("--rounds", type=int, default=None, help="throughput: interleaved rounds (best kept)")
    parser.add_argument("--fanout", type=int, default=None, help="fanout: jobs in the fan-out step")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--latency-rounds", type=int, default=None,
                        help="latency: interleaved rounds; the median round by job gap p50 is reported (default 3)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="latency: offer every contender this many workflows/s (default: half its own maximum); "
                             "to compare two commits at the same load")
    parser.add_argument("--scale", default=None, help="scale: comma-separated workflow counts")
    parser.add_argument("--history", default=None, help="history: comma-separated steps per workflow")
    parser.add_argument("--chain-steps", type=int, default=None, help="chain: sequential steps (default 400)")
    parser.add_argument("--http-clients", type=int, default=None, help="starts: concurrent HTTP clients (default 8)")
    parser.add_argument("--http-seconds", type=float, default=None, help="starts: seconds per variant")
    parser.add_argument("--replay-events", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="worker processes per contender (default 2)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = dataclasses.replace(QUICK) if args.quick else Sizes()
    overrides: dict[str, Any] = {
        "throughput_workflows": args.workflows, "throughput_steps": args.steps, "rounds": args.rounds,
        "fanout": args.fanout, "latency_seconds": args.latency_seconds,
        "latency_rounds": args.latency_rounds, "latency_rate": args.latency_rate, "replay_events": args.replay_events,
        "workers": args.workers,
        "scale_workflows": tuple(int(n) for n in args.scale.split(",")) if args.scale else None,
        "history_steps": tuple(int(n) for n in args.history.split(",")) if args.history else None,
        "chain_steps": args.chain_steps, "http_clients": args.http_clients, "http_seconds": args.http_seconds,
        "contenders": tuple(c.strip() for c in args.contenders.split(",")) if args.contenders else None,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    if sizes.latency_rounds < 1:
        raise SystemExit(f"--latency-rounds must be at least 1 (got {sizes.latency_rounds})")
    bad = [c for c in sizes.contenders if c not in CONTENDERS]
    if bad:
        raise SystemExit(f"unknown contender(s) {', '.join(bad)}; choose from {', '.join(CONTENDERS)}")
    return sizes


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: every run's clean-up (its `finally`) runs; a second one
    is ignored so that the clean-up can finish (SIGKILL still ends it at once)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _main(args, argv)
    finally:
        left = delete_pending()
        if left:
            print(f"warning: could not delete {len(left)} queue(s)/exchange(s): {', '.join(left)}", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    sizes = sizes_from(args)
    names = args.scenarios or list(SCENARIOS)
    out: Path = args.out
    logs = out / "logs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx = Context(sizes=sizes, logs=logs, log=lambda line: print(line, flush=True))
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(), "quick": args.quick, "sizes": dataclasses.asdict(sizes),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "scenarios": {},
    }
    print(f"machine: {report.machine_line(results['machine'])}")
    began = time.monotonic()
    for name in names:
        print(f"{name}:", flush=True)
        started = time.monotonic()
        try:
            data = SCENARIOS[name](ctx)
        except BenchFailure as error:
            print(f"  FAILED: {error}", file=sys.stderr, flush=True)
            data = {"ok": False, "error": str(error)}
        except Exception as error:  # noqa: BLE001  a broken harness is a failed scenario too
            traceback.print_exc()
            data = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        data["wall_s"] = round(time.monotonic() - started, 1)
        results["scenarios"][name] = data
        results["duration_s"] = time.monotonic() - began
        report.write(results, out)  # after every scenario: a long run leaves what it has
    paths = report.write(results, out)
    print()
    print(paths["markdown"].read_text())
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['png']} in {results['duration_s']:.0f} s")
    failed = [n for n, d in results["scenarios"].items() if not d.get("ok")]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
