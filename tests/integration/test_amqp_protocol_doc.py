"""docs/protocol.md is current: its generated blocks match the code, and it names everything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import Topology

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protocol", DOCS / "gen_protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_parts_of_the_protocol_doc_are_up_to_date() -> None:
    gen = _generator()
    text = (DOCS / "protocol.md").read_text()
    assert gen.render(text) == text, "docs/protocol.md is stale: run python docs/gen_protocol.py"


def test_the_protocol_doc_names_every_exchange_queue_key_and_message() -> None:
    text = (DOCS / "protocol.md").read_text()
    topology = Topology()
    names = (*topology.exchanges(), *topology.queues(), *p.RESPONSE_KEYS, *p.WORKER_KEYS,
             "x-quarantine-reason", "x-original-queue", "workflow_id", "job_type", "STEPFLOW_FAULT",
             "stop_process", "status", "stop_consuming_jobs", "resume_consuming_jobs", "stop_worker")
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing
    for struct in (p.JobOrder, p.JobProgression, p.JobResult, p.WorkerDiscovery, p.WorkerStatus, p.DirectOrder):
        assert f"### {struct.__name__}" in text
