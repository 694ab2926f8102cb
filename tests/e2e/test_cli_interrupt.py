"""Ctrl-C and `--timeout` in `stepflow run`, on a real process: the workflow is stopped (a
`WorkflowStopped` by actor `cli`, with the reason), or, with `--detach-on-exit`, left running
with a word on how to stop it. Before, Ctrl-C exited 130 in silence and the workflow stayed
`running` for ever while its job went on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

WORKERS = '''
import asyncio
from stepflow import JobContext, Worker

worker = Worker("sleeper")

@worker.job("sleep")
async def sleep(params: dict, ctx: JobContext) -> dict:
    await ctx.progress(10, "sleeping")
    await asyncio.sleep(120)
    return {"slept": True}
'''
DEFINITION = '''
identifier = "sleepy"
version = "1.0.0"

[[steps]]
id = "nap"
job_type = "sleep"
'''


def env(home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out["STEPFLOW_HOME"] = str(home)
    return out


@pytest.fixture
def sleepy(tmp_path: Path) -> Path:
    """A workflow whose one job sleeps two minutes (its worker beside it, as `run` finds it)."""
    (tmp_path / "workers.py").write_text(WORKERS)
    (tmp_path / "workflow.toml").write_text(DEFINITION)
    return tmp_path


def start(place: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    """`stepflow run` until its job is running (read from its output, not slept on); its id."""
    proc = subprocess.Popen([sys.executable, "-m", "stepflow", "run", "workflow.toml", *flags], cwd=place,
                            env=env(place), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    workflow_id = ""
    for line in proc.stdout:
        if line.startswith("workflow ") and line.rstrip().endswith("started (sleepy 1.0.0)"):
            workflow_id = line.split()[1]
        if workflow_id and "1 processing" in line:
            return proc, workflow_id
    proc.kill()
    raise AssertionError(f"the job never ran: {proc.communicate()[1]}")


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in out + err, err
    return proc.returncode, out, err


def stepflow(place: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepflow", *args], cwd=place, env=env(place),
                          capture_output=True, text=True, timeout=60, check=False)


def history(place: Path, workflow_id: str) -> list[dict[str, Any]]:
    done = stepflow(place, "history", workflow_id, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def status(place: Path, workflow_id: str) -> str:
    done = stepflow(place, "show", workflow_id, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["workflow"]["status"])


@pytest.mark.parametrize("how", ["ctrl-c", "timeout"])
def test_ctrl_c_or_the_timeout_stops_the_workflow_as_actor_cli(sleepy: Path, how: str) -> None:
    if how == "ctrl-c":
        proc, workflow_id = start(sleepy)
        proc.send_signal(signal.SIGINT)
        expected_code, why = 130, "interrupted (Ctrl-C)"
    else:
        proc, workflow_id = start(sleepy, "--timeout", "1")
        expected_code, why = 1, "still running after 1s (--timeout)"
    code, out, err = finish(proc)
    assert code == expected_code, err
    assert err.splitlines() == [(f"stepflow: {why}: stopped workflow {workflow_id} "
                                 f"(`stepflow history {workflow_id}` shows it)")]
    assert f"workflow {workflow_id} sleepy 1.0.0: stopped" in out
    events = history(sleepy, workflow_id)
    stopped = [e for e in events if e["event"] == "WorkflowStopped"]
    assert len(stopped) == 1 and stopped[0]["actor"] == "cli"
    assert stopped[0]["data"]["reason"] == f"stopped by stepflow run: {why}"
    assert "JobCompleted" not in [e["event"] for e in events]
    assert status(sleepy, workflow_id) == "stopped"


@pytest.mark.parametrize("how", ["ctrl-c", "timeout"])
def test_detach_on_exit_leaves_it_running_and_says_how_to_stop_it(sleepy: Path, how: str) -> None:
    if how == "ctrl-c":
        proc, workflow_id = start(sleepy, "--detach-on-exit")
        proc.send_signal(signal.SIGINT)
        expected_code = 130
    else:
        proc, workflow_id = start(sleepy, "--detach-on-exit", "--timeout", "1")
        expected_code = 1
    code, _, err = finish(proc)
    assert code == expected_code, err
    (line,) = err.splitlines()
    assert line.startswith("stepflow: ") and f"workflow {workflow_id} left running (--detach-on-exit)" in line
    assert f"`stepflow stop {workflow_id}` stops it" in line
    assert status(sleepy, workflow_id) == "running"
    assert "WorkflowStopped" not in [e["event"] for e in history(sleepy, workflow_id)]
    stopped = stepflow(sleepy, "stop", workflow_id)  # what it said to do works
    assert stopped.returncode == 0 and status(sleepy, workflow_id) == "stopped", stopped.stderr
