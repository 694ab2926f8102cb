"""The benchmark harness works: `python -m benchmarks --quick` with the smallest sizes.

Proves that every scenario runs its contenders (separate processes on RabbitMQ, SQLite and
PostgreSQL), checks its own results and writes the JSON, markdown and PNG reports. Speed is
never asserted here: the numbers of a CI machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.postgres]

SCENARIOS = ("throughput", "fanout", "latency", "scale", "history", "chain", "starts", "replay")


def test_quick_benchmark_runs_every_scenario_and_writes_the_reports(tmp_path: Path) -> None:
    missing = [name for name in ("celery", "sqlalchemy", "matplotlib") if importlib.util.find_spec(name) is None]
    assert not missing, f"the benchmark needs the bench extra (pip install -e '.[bench]'): {', '.join(missing)}"
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--workflows", "30",
         "--fanout", "20", "--latency-seconds", "1", "--scale", "50", "--history", "3,6",
         "--chain-steps", "10", "--http-seconds", "0.5", "--replay-events", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

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
