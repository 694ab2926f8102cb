"""The bootstrap wires every command's parts from one `Settings`; one runtime for both brokers;
one signal routine."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from amqp_fixtures import eventually

from stepflow import bootstrap
from stepflow.adapters.amqp import AmqpBackendBroker
from stepflow.adapters.amqp.runtime import AmqpRuntime
from stepflow.adapters.cli.shutdown import stop_signals, watch
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.memory.broker import MemoryBackendBroker
from stepflow.adapters.runtime import Runtime
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import load_definition
from stepflow.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_backend_gets_the_settings(memory_engine: WorkflowEngine) -> None:
    settings = Settings(batch_size=7, outbox_poll=0.25, timeout_check=0.5, max_body=4096,
                        notification_hosts=("hooks.example",))
    runtime = bootstrap.build_runtime(settings, memory_engine, embedded=True, projections=False)
    backend = runtime.backend
    assert (backend.batch_size, backend.outbox_poll_s, backend.timeout_check_s, backend.max_body) == (7, 0.25, 0.5, 4096)
    assert backend.notifier.allowed_hosts == frozenset({"hooks.example"})
    assert isinstance(backend.broker, MemoryBackendBroker) and runtime.read_side is None


def test_over_rabbitmq_the_broker_gets_url_prefix_and_prefetch(memory_engine: WorkflowEngine) -> None:
    settings = Settings(amqp_url="amqp://u:p@rabbit:5672/v", prefix="p_", prefetch=9)
    runtime = bootstrap.build_runtime(settings, memory_engine, embedded=False, projections=True, log_workers=True)
    broker = runtime.backend.broker
    assert isinstance(broker, AmqpBackendBroker)
    assert (broker.url, broker.topology.prefix, broker.prefetch) == ("amqp://u:p@rabbit:5672/v", "p_", 9)
    assert not broker.connected  # nothing opened yet
    assert runtime.read_side is not None and runtime.backend.after_store == runtime.read_side.wake
    runtime.read_side.stop()


def test_http_only_when_asked_and_refused_when_unsafe(memory_engine: WorkflowEngine) -> None:
    runtime = bootstrap.build_runtime(Settings(), memory_engine, embedded=True, projections=False)
    assert bootstrap.http_service(Settings(), memory_engine, runtime) is None
    with pytest.raises(ValueError, match="without authentication"):
        bootstrap.http_service(Settings(http="0.0.0.0:0"), memory_engine, runtime)
    http = bootstrap.http_service(Settings(http="0.0.0.0:0", http_tokens="token-0123456789abcdef=ci:ops",
                                           definitions=(str(EXAMPLES / "media" / "workflow.toml"),)),
                                  memory_engine, runtime)
    assert http is not None and http.auth.enabled and len(http.catalog) == 1


def test_one_runtime_class_whatever_the_broker(memory_engine: WorkflowEngine) -> None:
    assert issubclass(EmbeddedRuntime, Runtime) and issubclass(AmqpRuntime, Runtime)
    assert not issubclass(AmqpRuntime, EmbeddedRuntime)
    amqp = AmqpRuntime(memory_engine, url="amqp://guest:guest@127.0.0.1:1/", prefix="x_", prefetch=3)
    assert amqp.backend.broker.prefetch == 3 and amqp.read_side is None  # type: ignore[attr-defined]


async def test_a_bootstrapped_runtime_runs_a_workflow(memory_engine: WorkflowEngine) -> None:
    path = EXAMPLES / "media" / "workflow.toml"
    runtime = bootstrap.build_runtime(Settings(), memory_engine, load_workers([], path), embedded=True,
                                      projections=True)
    async with runtime:
        workflow_id = await runtime.start(load_definition(path), {"size_kib": 8, "renditions": ["360p"]})
        state = await runtime.wait(workflow_id, timeout=30)
        runtime.check()
    assert state.status == "completed"
    await runtime.close()  # closing twice is harmless


async def test_a_runtime_that_cannot_start_stops_what_it_started(memory_engine: WorkflowEngine) -> None:
    runtime = AmqpRuntime(memory_engine, url="amqp://guest:guest@127.0.0.1:1/", projections=True)
    with pytest.raises(Exception):  # noqa: B017  whatever aio-pika raises for a closed port
        await runtime.open()
    assert runtime.read_side is not None and not runtime.read_side.runner._thread  # type: ignore[attr-defined]


async def test_the_first_signal_stops_and_a_second_one_escalates() -> None:
    seconds: list[bool] = []
    checks: list[int] = []
    async with stop_signals(on_second=lambda: seconds.append(True)) as stop:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await watch(stop, lambda: checks.append(1), every_s=0.01)
        assert stop.is_set() and not seconds and checks
        os.kill(os.getpid(), signal.SIGINT)
        await eventually(lambda: seconds, what="the second signal's escalation")
        assert seconds == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are gone afterwards


async def test_watch_raises_what_check_raises() -> None:
    def dead() -> None:
        raise RuntimeError("a loop died")

    with pytest.raises(RuntimeError, match="a loop died"):
        await watch(asyncio.Event(), dead)
