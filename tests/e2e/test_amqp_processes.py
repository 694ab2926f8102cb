"""stepflow across processes on the real RabbitMQ: `stepflow serve`, `stepflow worker`, and
this test as the client that starts and stops workflows through the shared store.

Crashes are real: SIGKILL for a worker, `STEPFLOW_FAULT` (an `os._exit(137)` at a named
point in the backend's outbox) for the backend.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import (
    EXAMPLES,
    FIXTURE_WORKERS,
    MEDIA_WORKERS,
    ROOT,
    Procs,
    Rabbit,
    event_counts,
    journal_lines,
    one_step,
    sqlite_store,
    wait_final,
    wait_until,
)

from stepflow.adapters import protocol as p
from stepflow.adapters.persistence import open_engine
from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import load_definition

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory, postgres_store = (  # the fixtures
    amqp_fixtures.rabbit, amqp_fixtures.procs_factory, amqp_fixtures.postgres_store)

MEDIA = EXAMPLES / "media" / "workflow.toml"
SMALL_MEDIA = {"renditions": ["360p", "720p", "1080p"], "size_kib": 32}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_store"))
    return sqlite_store(tmp_path)


@pytest.fixture
def engine_of() -> Iterator[Callable[[str], WorkflowEngine]]:
    opened: list[WorkflowEngine] = []

    def open_(url: str) -> WorkflowEngine:
        opened.append(open_engine(url))
        return opened[-1]

    yield open_
    for engine in opened:
        engine.close()


def ready(rabbit: Rabbit, procs: Procs, **queues: int) -> None:
    """Wait until each queue has that many consumers (the processes are up)."""

    async def wait() -> None:
        for queue, consumers in queues.items():
            await rabbit.wait_depth(queue, consumers=consumers, timeout=20)

    try:
        asyncio.run(wait())
    except AssertionError as error:
        raise AssertionError(f"{error}\n{procs.logs()}") from None


def slow_job(tmp_path: Path, hold: bool = True) -> tuple[object, Path, Path]:
    hold_file, journal = tmp_path / "hold", tmp_path / "journal"
    if hold:
        hold_file.touch()
    definition = one_step("slow_sleep", parameters={"hold": str(hold_file), "journal": str(journal)})
    return definition, hold_file, journal


# --- the media example ---------------------------------------------------------------------


def test_media_example_runs_across_backend_and_two_worker_processes(
        rabbit: Rabbit, store: str, procs_factory: Callable[[str], Procs],
        engine_of: Callable[[str], WorkflowEngine]) -> None:
    procs = procs_factory(store)
    serve = procs.serve()
    probe_package = procs.worker("probe-package", MEDIA_WORKERS, "media_probe", "media_package")
    transcode = procs.worker("transcode", MEDIA_WORKERS, "media_transcode")
    ready(rabbit, procs, job_completed=1, media_probe=1, media_package=1, media_transcode=1)
    engine = engine_of(store)

    # A malformed response first: quarantined, and the backend goes on.
    asyncio.run(rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, b"{oops", message_id="garbage",
                               content_type=p.CONTENT_TYPE))
    workflow_id = engine.start_workflow(load_definition(MEDIA), SMALL_MEDIA)
    state = wait_final(engine, workflow_id, 40, context=procs.logs)

    assert state.status == "completed", f"{state.reason}\n{procs.logs()}"
    by_step = {step: {j.worker for j in state.jobs.values() if j.step_id == step}
               for step in ("probe", "transcode", "package")}
    assert by_step == {"probe": {probe_package.instance_id}, "transcode": {transcode.instance_id},
                       "package": {probe_package.instance_id}}
    counts = event_counts(engine, workflow_id)
    assert counts["JobSubmitted"] == counts["JobCompleted"] == 5
    (kept,) = asyncio.run(rabbit.take_all(p.QUARANTINE))
    assert kept.message_id == "garbage" and kept.headers["x-original-queue"] == p.JOB_COMPLETED
    assert serve.alive()

    # Clean shutdown on SIGTERM; a worker announces it leaves.
    assert transcode.terminate() == 0 and probe_package.terminate() == 0
    wait_until(lambda: serve.log().count("worker_terminated") == 2, what="both workers' goodbyes",
               context=procs.logs)
    assert serve.terminate() == 0, serve.log()
    assert "worker_discovered" in serve.log() and "stopped" in serve.log()


# --- crashes -------------------------------------------------------------------------------


def test_a_worker_killed_mid_job_leads_to_redelivery_and_exactly_one_completion(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs],
        engine_of: Callable[[str], WorkflowEngine]) -> None:
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    procs.serve()
    first = procs.worker("first", FIXTURE_WORKERS)
    ready(rabbit, procs, job_completed=1, slow_sleep=1)
    engine = engine_of(store)
    definition, hold, journal = slow_job(tmp_path)
    workflow_id = engine.start_workflow(definition)  # type: ignore[arg-type]
    wait_until(lambda: journal_lines(journal), what="the first worker to start the job", context=procs.logs)

    assert first.kill() == -9  # SIGKILL mid-job: the order is unacked, the broker requeues it
    hold.unlink()
    second = procs.worker("second", FIXTURE_WORKERS)
    state = wait_final(engine, workflow_id, 30, context=procs.logs)

    assert state.status == "completed"
    (job,) = state.jobs.values()
    assert job.worker == second.instance_id
    lines = journal_lines(journal)
    assert [(kind, pid) for kind, _, pid in lines] == [
        ("start", str(first.pid)), ("start", str(second.pid)), ("done", str(second.pid))]
    counts = event_counts(engine, workflow_id)
    assert counts["JobSubmitted"] == 1 and counts["JobCompleted"] == 1


@pytest.mark.parametrize("fault, published_before_crash", [
    ("after_store_before_publish", 0),
    ("after_publish_before_advance", 1),
])
def test_a_backend_killed_between_storing_and_publishing_publishes_after_restart(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs],
        engine_of: Callable[[str], WorkflowEngine], fault: str, published_before_crash: int) -> None:
    asyncio.run(rabbit.declare("slow_sleep"))  # the job queue exists; no worker yet
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    crashing = procs.serve("crashing", STEPFLOW_FAULT=fault)
    ready(rabbit, procs, job_completed=1)
    engine = engine_of(store)
    definition, _, journal = slow_job(tmp_path, hold=False)
    workflow_id = engine.start_workflow(definition)  # type: ignore[arg-type]

    assert crashing.wait(20) == 137, crashing.log()  # died at the crash point
    assert asyncio.run(rabbit.depth("slow_sleep"))[0] == published_before_crash
    procs.serve("restarted")
    asyncio.run(rabbit.wait_depth("slow_sleep", messages=published_before_crash + 1))
    asyncio.run(asyncio.sleep(0.6))  # a few outbox polls: nothing more is published
    assert asyncio.run(rabbit.depth("slow_sleep"))[0] == published_before_crash + 1

    procs.worker("worker", FIXTURE_WORKERS)
    state = wait_final(engine, workflow_id, 30, context=procs.logs)
    assert state.status == "completed"
    # The order went out once after the restart; a second copy (published before the crash,
    # position not advanced) is recognised by the worker as a job it already answered.
    assert [kind for kind, _, _ in journal_lines(journal)] == ["start", "done"]
    counts = event_counts(engine, workflow_id)
    assert counts["JobSubmitted"] == 1 and counts["JobCompleted"] == 1
    asyncio.run(rabbit.wait_depth("slow_sleep", messages=0))


# --- stop orders ---------------------------------------------------------------------------


def test_a_stop_order_reaches_the_worker_and_the_job_ends_stopped(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs],
        engine_of: Callable[[str], WorkflowEngine]) -> None:
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    procs.serve()
    worker = procs.worker("worker", FIXTURE_WORKERS)
    ready(rabbit, procs, job_completed=1, slow_sleep=1)
    engine = engine_of(store)
    definition, _, journal = slow_job(tmp_path)
    workflow_id = engine.start_workflow(definition)  # type: ignore[arg-type]
    wait_until(lambda: journal_lines(journal), what="the job to start", context=procs.logs)

    # An operator stops the workflow (in the store); the backend's outbox sends stop_process.
    engine.command(cmd.StopWorkflow(workflow_id=workflow_id, reason="operator stop", actor="test"))
    wait_until(lambda: any(kind == "cancelled" for kind, _, _ in journal_lines(journal)),
               what="the handler to be cancelled", context=procs.logs)
    state = wait_final(engine, workflow_id, 10)
    assert state.status == "stopped"
    (job,) = state.jobs.values()
    assert job.status == "stopped"
    assert [kind for kind, _, _ in journal_lines(journal)] == ["start", "cancelled"]
    wait_until(lambda: "job_stop_ordered" in worker.log(), what="the worker to log the stop order")
    asyncio.run(rabbit.wait_depth(p.JOB_STOPPED, messages=0))  # its job_stopped answer was consumed
    assert worker.alive()  # stopping a job does not stop the worker


# --- the CLI -------------------------------------------------------------------------------


def _stepflow(args: list[str], rabbit: Rabbit, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepflow", *args], env=rabbit.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("external_workers", [False, True], ids=["in-process-workers", "worker-process"])
def test_stepflow_run_with_amqp_url_shows_the_live_view(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs], external_workers: bool) -> None:
    store = sqlite_store(tmp_path)
    args = ["run", str(MEDIA), "--amqp-url", rabbit.url, "--prefix", rabbit.prefix, "--store", store,
            "-p", "size_kib=16", "-p", "renditions=360p,720p", "--timeout", "40"]
    if external_workers:
        procs = procs_factory(store)
        procs.worker("media", MEDIA_WORKERS)
        ready(rabbit, procs, media_probe=1, media_transcode=1, media_package=1)
        args.append("--no-workers")
    result = _stepflow(args, rabbit)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "started (media-pipeline 1.0.0)" in out
    assert "transcode" in out and "%" in out  # the live view's step lines
    assert ": completed" in out and out.count("attempt 1: completed") == 4


def test_serve_worker_and_run_exit_4_when_the_broker_is_unreachable(rabbit: Rabbit, tmp_path: Path) -> None:
    nowhere = "amqp://guest:hunter2@127.0.0.1:1/"
    for args in (["serve", "--store", sqlite_store(tmp_path)],
                 ["worker", FIXTURE_WORKERS],
                 ["run", str(MEDIA), "--store", sqlite_store(tmp_path)]):
        result = _stepflow([*args, "--amqp-url", nowhere], rabbit, timeout=30)
        assert result.returncode == 4, (args, result.stdout, result.stderr)
        assert "hunter2" not in result.stdout + result.stderr
        assert "127.0.0.1:1" in result.stdout + result.stderr

