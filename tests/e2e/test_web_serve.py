"""`stepflow serve --http` as a real process: embedded (no RabbitMQ) and over RabbitMQ, driven
through the HTTP API with a bearer token; bad settings exit 2 before anything runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp_fixtures
import httpx
import pytest
from amqp_fixtures import MEDIA_WORKERS, ROOT, Procs, sqlite_store

pytestmark = pytest.mark.e2e
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures

MEDIA = ROOT / "examples" / "media" / "workflow.toml"
TOKEN = "serve-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = {"definition": "media-pipeline", "parameters": {"renditions": ["360p", "720p"], "size_kib": 16}}


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    out.update(PYTHONUNBUFFERED="1", STEPFLOW_LOG_FORMAT="console", STEPFLOW_HTTP_TOKENS=f"{TOKEN}=ci:ops")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out.update(extra)
    return out


def wait_for_url(log: Callable[[], str], alive: Callable[[], bool], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"url=(http://127\.0\.0\.1:\d+)", log())
        if match:
            return match.group(1)
        assert alive(), log()
        time.sleep(0.1)
    raise AssertionError(f"no http_serving line in {timeout}s:\n{log()}")


def run_media_through_the_api(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
        assert http.get("/api/workflows").status_code == 200
        assert httpx.get(url + "/api/workflows").status_code == 401
        started = http.post("/api/workflows", json=SMALL)
        assert started.status_code == 201, started.text
        wid = started.json()["workflow_id"]
        deadline = time.monotonic() + 60
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = http.get(f"/api/workflows/{wid}").json()
            if view["workflow"]["status"] in ("completed", "error", "stopped"):
                break
            time.sleep(0.2)
        view["metrics"] = http.get("/metrics").text
        view["ready"] = http.get("/readyz").json()
        view["workers"] = http.get("/api/workers").json()["items"]
        view["page"] = http.get(f"/workflows/{wid}").status_code
        return view


@pytest.fixture(params=["named workers", "workers beside the definition"])
def embedded(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "serve.log"
    named = ["--workers", MEDIA_WORKERS] if request.param == "named workers" else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepflow", "serve", "--embedded", *named,
             "--definitions", str(MEDIA), "--http", "127.0.0.1:0", "--store", sqlite_store(tmp_path)],
            env=env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    yield proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_serve_embedded_with_http(embedded: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, log = embedded
    url = wait_for_url(log.read_text, lambda: proc.poll() is None)
    view = run_media_through_the_api(url)
    assert view["workflow"]["status"] == "completed", view
    assert [j["status"] for j in view["jobs"]] == ["completed"] * 4
    assert 'stepflow_jobs_completed_total{job_type="media_transcode"} 2' in view["metrics"]
    assert view["ready"]["status"] == "ok" and view["ready"]["checks"]["broker"] == "ok"
    assert [w["status"] for w in view["workers"]] == ["alive"]
    assert view["page"] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    # its embedded worker's last announcement was read before the backend stopped
    store = proc.args[proc.args.index("--store") + 1]  # type: ignore[union-attr]
    listed = subprocess.run([sys.executable, "-m", "stepflow", "workers", "--store", store, "--json"], env=env(),
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    workers = [json.loads(line) for line in listed.splitlines()]
    assert [w["status"] for w in workers] == ["terminated"], listed


@pytest.mark.parametrize(("args", "message"), [
    (["--http", "0.0.0.0:0"], "refusing to serve on 0.0.0.0 without authentication"),
    (["--http", "localhost"], "--http expects HOST:PORT"),
    (["--http", "127.0.0.1:0", "--definitions", "missing.toml"], "missing.toml"),
])
def test_bad_http_settings_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "stepflow", "serve", "--embedded", "--store",
                           sqlite_store(tmp_path), *args], env=env(STEPFLOW_HTTP_TOKENS=""), cwd=ROOT,
                          capture_output=True, timeout=60, check=False)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert message in output


@pytest.mark.integration
@pytest.mark.rabbitmq
def test_serve_with_http_over_rabbitmq(procs_factory: Callable[[str], Procs], tmp_path: Path) -> None:
    procs = procs_factory(sqlite_store(tmp_path))
    serve = procs._start("serve-http", ["serve", "--store", procs.store, "--outbox-poll", "0.2", "--http",
                                        "127.0.0.1:0", "--definitions", str(MEDIA)],
                         {"STEPFLOW_HTTP_TOKENS": f"{TOKEN}=ci:ops"})
    worker = procs.worker("media", MEDIA_WORKERS)
    try:
        # its job queues exist once it consumes them: an order sent before goes to "not found"
        amqp_fixtures.wait_until(lambda: "worker_started" in worker.log(), 30, "the worker to start")
        url = wait_for_url(serve.log, serve.alive)
        view = run_media_through_the_api(url)
        assert view["workflow"]["status"] == "completed", view
        assert view["ready"]["checks"]["broker"] == "ok"
        assert 'stepflow_orders_published_total 4' in view["metrics"]
        assert serve.terminate() == 0
    except BaseException:
        print(procs.logs())
        raise
