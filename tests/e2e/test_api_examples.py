"""The programs of docs/api.md, run as a user runs them: separate processes, a fresh directory.

Their output is checked, and so is the output the doc shows for them (ids and durations
aside). The worker runs twice: in embedded mode (`stepflow run --worker`) and over RabbitMQ
(`stepflow worker`, with `stepflow run --amqp-url --no-workers` as the backend).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "examples" / "api"
WORKER = f"{API / 'thumbnails.py'}:worker"
pytestmark = pytest.mark.e2e
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures


def env() -> dict[str, str]:
    """This checkout's code, whatever the installed one is; no stepflow settings from outside."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return out


def run(args: list[str], cwd: Path, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment or env(), capture_output=True,
                          text=True, timeout=120, check=False)


def normal(text: str) -> list[str]:
    """Lines without what changes from run to run: ids (whole, or 8 characters and '…') and durations."""
    text = re.sub(r"\b[0-9a-f]{8}-(?:…|[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", "<id>", text)
    return re.sub(r"\b\d+\.\d{3}s\b", "<s>", text).strip().splitlines()


def shown_output(command: str) -> list[str]:
    """The output docs/api.md shows after `$ <command>`."""
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    match = re.search(rf"```(?:sh)?\n\$ {re.escape(command)}\n(.*?)```", doc, re.DOTALL)
    assert match, f"docs/api.md shows no output for {command!r}"
    return normal(match.group(1))


def test_embedding_runs_two_workflows_and_prints_their_states(tmp_path: Path) -> None:
    done = run([str(API / "embed.py")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # logging set to warnings: none
    lines = normal(done.stdout)
    assert lines[:3] == [
        "thumbnails: completed",
        "  thumbnail: completed {'path': ['thumbs/beach-320.jpg', 'thumbs/forest-320.jpg'], 'bytes': [15360, 15360]}",
        "  album: completed {'index': '29be11f31d4d', 'count': 2}",
    ]
    assert lines[3] == ("thumbnails: error, step 'thumbnail' failed: job <id> error: "
                        "width 8 is not between 16 and 4096")
    assert lines[4:] == [f"  thumbnail #{i} attempt 1: error (invalid_input) width 8 is not between 16 and 4096"
                         for i in range(3)]
    assert lines == shown_output("python examples/api/embed.py")
    assert (tmp_path / "stepflow.sqlite").exists()


def test_querying_reads_the_workflows_it_ran(tmp_path: Path) -> None:
    done = run([str(API / "query.py"), f"sqlite:///{tmp_path / 'views.sqlite'}"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = normal(done.stdout)
    assert lines[:2] == ["thumbnails@1.0.0 error 0/2 steps 0%", "thumbnails@1.0.0 completed 2/2 steps 100%"]
    assert "  step thumbnail: error {'error': 3}" in lines and "jobs in error: 3" in lines
    assert lines[-2:] == ["album: 1 completed, 0 errored of 1", "thumbnail: 2 completed, 3 errored of 5"]
    assert lines == shown_output("python examples/api/query.py")
    default = run([str(API / "query.py")], tmp_path)  # no URL: ./stepflow.sqlite
    assert default.returncode == 0 and normal(default.stdout) == lines, default.stderr
    assert (tmp_path / "stepflow.sqlite").exists()


def test_the_worker_in_embedded_mode(tmp_path: Path) -> None:
    command = "stepflow run examples/api/thumbnails.toml --worker examples/api/thumbnails.py:worker --quiet"
    done = run(["-m", "stepflow", "run", str(API / "thumbnails.toml"), "--worker", WORKER, "--quiet",
                "--store", f"sqlite:///{tmp_path / 'w.sqlite'}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert normal(done.stdout) == shown_output(command)
    failed = run(["-m", "stepflow", "run", str(API / "thumbnails.toml"), "--worker", WORKER, "--quiet",
                  "--param", "width=8", "--store", f"sqlite:///{tmp_path / 'w.sqlite'}"], tmp_path)
    assert failed.returncode == 1
    assert failed.stdout.count("attempt 1: error") == 3 and "attempt 2" not in failed.stdout  # not retried
    assert "width 8 is not between 16 and 4096" in failed.stderr


@pytest.mark.rabbitmq
def test_the_worker_over_rabbitmq(rabbit: Rabbit, procs_factory: Callable[[str], Procs], tmp_path: Path) -> None:
    rabbit.job_types |= {"thumbnail", "album"}  # deleted afterwards
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    procs.worker("thumbnails", WORKER)
    amqp_fixtures.wait_until(lambda: "worker_started" in procs.all[0].log(), 30, "the worker to start",
                             context=procs.logs)
    done = run(["-m", "stepflow", "run", str(API / "thumbnails.toml"), "--amqp-url", rabbit.url, "--no-workers",
                "--quiet", "--store", store], tmp_path, rabbit.env())
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    # the same as in embedded mode; every job done by the `stepflow worker` process (--no-workers here)
    assert normal(done.stdout) == shown_output(
        "stepflow run examples/api/thumbnails.toml --worker examples/api/thumbnails.py:worker --quiet")
