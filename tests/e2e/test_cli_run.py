"""`stepflow run` end to end, as a user runs it: a separate process, embedded mode, SQLite file
(the default store, in the data directory `$STEPFLOW_HOME`, here the test's directory)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def stepflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """This checkout's `stepflow`, whatever is installed, with `cwd` as its data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["STEPFLOW_HOME"] = str(cwd)
    return subprocess.run([sys.executable, "-m", "stepflow", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def stored_events(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        return conn.execute("select count(*) from stored_events").fetchone()[0] if "stored_events" in tables else 0


def test_run_media_example_to_completion_and_print_every_step_and_job(tmp_path: Path) -> None:
    result = stepflow("run", str(ROOT / "examples/media/workflow.toml"), "--param", "renditions=360p,720p,1080p",
                      "--param", "size_kib=32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "media-pipeline 1.0.0: completed" in out
    for step in ("probe", "transcode", "package"):
        assert f"step {step}: completed" in out
    assert out.count("attempt 1: completed") == 5  # probe + 3 renditions + package
    assert "rendition=1080p" in out and "entries=3" in out
    assert stored_events(tmp_path / "stepflow.sqlite") > 0


def test_run_exits_1_with_the_reason_when_retries_are_exhausted(tmp_path: Path) -> None:
    result = stepflow("run", str(ROOT / "examples/retry/workflow.toml"), "--param", "fail_times=9",
                      "--store", f"sqlite:///{tmp_path}/r.sqlite", "--quiet", cwd=tmp_path)
    assert result.returncode == 1
    assert "ended error" in result.stderr and "transient failure on attempt 4" in result.stderr
    assert "attempt 4: error" in result.stdout


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("size_kib=lots", "expected integer, got 'lots' - at `$.parameters.size_kib`"),
        ("colour=red", "unknown parameter 'colour' - at `$.parameters.colour`"),
        ("renditions", "expected K=V"),
    ],
)
def test_run_refuses_bad_parameters_and_stores_nothing(tmp_path: Path, param: str, message: str) -> None:
    result = stepflow("run", str(ROOT / "examples/media/workflow.toml"), "--param", param, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert stored_events(tmp_path / "stepflow.sqlite") == 0


def test_run_refuses_an_invalid_definition_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('identifier = "x"\n[[steps]]\nid = "a"\njob_type = "t"\nparents = ["ghost"]\n')
    result = stepflow("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown step 'ghost' - at `$.steps[0].parents[0]`" in result.stderr
    assert stored_events(tmp_path / "stepflow.sqlite") == 0
