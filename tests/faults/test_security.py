"""Security basics: credentials come from the environment or flags and never reach a log;
the quarantine keeps a payload as bytes and never executes it; values from outside are
never evaluated as templates; bad definitions and parameters over the CLI and the Python API
are refused naming the field, with nothing stored. (Template syntax itself, attribute walks,
calls and format specs: tests/unit/test_templates.py. The size limit: test_fuzz_inbound.py.)"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import AMQP_URL, ROOT, Procs, Rabbit, sqlite_store, wait_until
from fault_kit import FAULT_WORKERS, figures, pipeline, ready, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import default_backend
from stepflow.adapters.memory.broker import MemoryBroker, MemoryDelivery
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import DefinitionError, build_definition

rabbit, procs_factory, postgres_store = amqp_fixtures.rabbit, amqp_fixtures.procs_factory, amqp_fixtures.postgres_store


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.mark.e2e
@pytest.mark.integration
@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_passwords_in_the_broker_and_store_urls_never_reach_the_logs(
        rabbit: Rabbit, postgres_store: str, procs_factory: Callable[[str], Procs]) -> None:
    user, password = f"sf_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex}"
    _rabbitmqctl("add_user", user, password)
    admin_url = rabbit.url  # the fixture's clean-up needs it: this user is gone by then
    try:
        _rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        host = AMQP_URL.split("@", 1)[1]
        rabbit.url = f"amqp://{user}:{password}@{host}"
        # PostgreSQL trusts local connections here, so any password works: the point is the logs
        store = postgres_store.replace("postgresql://postgres@", f"postgresql://postgres:{password}x@")
        rabbit.job_types.update(FAULT_TYPES)
        procs = procs_factory(store)
        json_logs = {"STEPFLOW_LOG_FORMAT": "json", "STEPFLOW_LOG_LEVEL": "debug"}
        serve = procs.serve(**json_logs)
        procs.worker("w", FAULT_WORKERS, **json_logs)
        ready(rabbit, procs, job_completed=1, fault_a=1, fault_b=1)
        engine = open_engine(store)
        try:
            workflow_id = engine.start_workflow(pipeline(2), {"name": "secret-run"})
            asyncio.run(rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, b"{garbage", message_id="g1",
                                       content_type=p.CONTENT_TYPE))
            wait_all_final(engine, [workflow_id], 60, procs.logs)
            wait_until(lambda: "message_quarantined" in serve.log(), 30, "the quarantine log line")
        finally:
            engine.close()
        for proc in procs.all:
            proc.terminate()
        logs = "".join(proc.log() for proc in procs.all)
        assert password not in logs
        assert '"amqp": "amqp://' in logs and ":***@" in logs  # the URL is logged, masked
        # and a start-up failure with both URLs (store unreachable) masks them too
        result = subprocess.run(
            [sys.executable, "-m", "stepflow", "serve", "--store",
             f"postgresql://postgres:{password}@127.0.0.1:1/x", "--amqp-url", rabbit.url],
            env=rabbit.env(STEPFLOW_LOG_FORMAT="json"), cwd=ROOT, capture_output=True, text=True, timeout=60,
            check=False)
        assert result.returncode == 4 and password not in result.stdout + result.stderr
        figures("security", password_leaks=0)
    finally:
        rabbit.url = admin_url
        _rabbitmqctl("delete_user", user)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))  # unpickling this creates the file


def test_the_quarantine_keeps_payloads_as_data_and_never_runs_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    broker = MemoryBroker()
    backend = default_backend(engine, broker.backend(), max_body=4096)
    payloads = [
        (pickle.dumps(_Evil(str(marker))), "application/x-python-pickle"),
        (pickle.dumps(_Evil(str(marker))), p.CONTENT_TYPE),
        (f"__import__('os').system('touch {marker}')".encode(), p.CONTENT_TYPE),
        (('{"job_id": "{__import__(\'os\')}", "status": "completed", "workflow_id": "'
          + str(uuid.uuid4()) + '"}').encode(), p.CONTENT_TYPE),
        (b'{"job_id": "j", "status": "completed", "parameters": [{"id": "x", "type": "template", '
         b'"value": "{workflow.__class__.__mro__}"}], "workflow_id": "' + str(uuid.uuid4()).encode() + b'"}',
         p.CONTENT_TYPE),
    ]
    deliveries = [MemoryDelivery(queue=p.JOB_COMPLETED, body=body, message_id=f"evil-{n}", content_type=ctype)
                  for n, (body, ctype) in enumerate(payloads)]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(backend.handle_batch(deliveries))
        loop.run_until_complete(backend.stop())
    finally:
        loop.close()
    assert not marker.exists()
    kept = {d.message_id: d.body for d, _ in broker.quarantined}
    assert kept == {d.message_id: d.body for d in deliveries}  # every byte kept, as it came
    recorded = [e for _, e in engine.notifications(0, 100, topics=("MessageQuarantined",))]
    assert len(recorded) == len(deliveries)
    for event in recorded:
        assert isinstance(event, ev.MessageQuarantined)
        body = next(d.body for d in deliveries if d.message_id == event.message_id)
        assert event.body_excerpt == body[:512].decode("utf-8", "replace") and event.body_size == len(body)
    engine.close()


def test_values_from_outside_are_data_never_templates() -> None:
    """A start parameter or a worker's output that looks like a template is copied as text:
    rendering is one pass over the definition's templates, never over the values."""
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    sneaky = "{workflow.items} {__import__('os').system('id')} {steps.a.outputs}"
    workflow_id = engine.start_workflow(pipeline(2), {"name": sneaky})
    (submitted,) = [e for e in engine.history(workflow_id) if isinstance(e, ev.JobSubmitted)]
    assert submitted.parameters["name"] == sneaky
    engine.close()


@pytest.mark.parametrize("data, field", [
    ({"identifier": "x", "steps": [{"id": "a", "job_type": "t", "retry": {"max_attempts": "three"}}]},
     "max_attempts"),
    ({"identifier": "x", "steps": [{"id": "a", "job_type": "t", "parents": ["nope"]}]}, "parents"),
    ({"identifier": "x", "steps": [{"id": "a", "job_type": "t", "bogus": 1}]}, "bogus"),
    ({"identifier": "x", "steps": [{"id": "a", "job_type": "t", "parameters": {"v": "{workflow.missing}"}}]},
     "missing"),
    ({"identifier": "x", "parameters": [{"id": "n", "type": "complex"}], "steps": [{"id": "a", "job_type": "t"}]},
     "type"),
])
def test_a_bad_definition_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        build_definition(data)
    assert field in str(raised.value)


def test_bad_parameters_over_the_python_api_name_the_field_and_store_nothing() -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    definition = build_definition({"identifier": "x", "parameters": [{"id": "count", "type": "integer"}],
                                   "steps": [{"id": "a", "job_type": "t"}]})
    for bad in ({"count": "many"}, {}, {"count": 1, "extra": 2}):
        with pytest.raises(DefinitionError) as raised:
            engine.start_workflow(definition, bad)
        assert "count" in str(raised.value) or "extra" in str(raised.value), raised.value
    assert engine.max_notification_id() == 0
    engine.close()


@pytest.mark.e2e
def test_bad_definitions_and_parameters_over_the_cli_name_the_field_and_store_nothing(tmp_path: Path) -> None:
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('identifier = "x"\n[[steps]]\nid = "a"\njob_type = "t"\ntimeout_s = "soon"\n')
    good_file = tmp_path / "good.toml"
    good_file.write_text('identifier = "x"\n[[parameters]]\nid = "count"\ntype = "integer"\n'
                         '[[steps]]\nid = "a"\njob_type = "t"\n')
    store = sqlite_store(tmp_path)
    for args, field in ((["run", str(bad_file)], "timeout_s"),
                        (["run", str(good_file), "-p", "count=many"], "count"),
                        (["run", str(good_file), "-p", "nope=1"], "nope")):
        result = subprocess.run([sys.executable, "-m", "stepflow", *args, "--store", store], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0 and field in result.stderr, (args, result.stdout, result.stderr)
    if (tmp_path / "store.sqlite").exists():
        engine = open_engine(store)
        assert engine.max_notification_id() == 0
        engine.close()
