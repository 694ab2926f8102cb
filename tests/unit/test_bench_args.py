"""The benchmark's command line refuses what it cannot run with one line, before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "message"), [
    (["latency", "--latency-rounds", "0"], "--latency-rounds must be at least 1 (got 0)"),
    (["throughput", "--contenders", "raw,nope"], "unknown contender(s) nope"),
])
def test_bad_arguments_get_one_line_and_exit_1(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(message) and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
