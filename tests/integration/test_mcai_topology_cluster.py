"""Cluster mode on the real RabbitMQ: stepflow with `amqp_server_configuration=cluster` and an
mcai worker (mcai-worker-sdk 2.1.1) with `AMQP_SERVER_CONFIGURATION=cluster` declare the same
quorum queues with the same arguments, so either may declare first; and stepflow's own delays
and the SDK's retry still work on quorum queues, and a workflow runs end to end.

The SDK's cluster-mode declarations are replayed with plain aio-pika, as observed with
`rabbitmqctl` (docs/research/mcai-worker-sdk-2.1.1.md, section 2.2). Each test has its own
vhost, so the names are the original's, unprefixed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import (
    MEDIA_WORKERS,
    Procs,
    Rabbit,
    event_counts,
    one_step,
    sqlite_store,
    wait_final,
)
from test_mcai_topology import (
    INSTANCE,
    JOB_TYPE,
    assert_healthy,
    declare_like_the_sdk,
    run_on,
    vhost,
)

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import Topology
from stepflow.adapters.persistence import open_engine
from stepflow.engine.definitions import load_definition

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.e2e]
__all__ = ["vhost"]  # the fixture: a vhost of its own, no prefix

CLUSTER = Topology(quorum=True)


async def declare_like_the_sdk_in_cluster_mode(channel: aio_pika.abc.AbstractChannel, queue: str = JOB_TYPE) -> None:
    """What mcai-worker-sdk 2.1.1 declares at start with AMQP_SERVER_CONFIGURATION=cluster."""
    await declare_like_the_sdk(channel, queue, cluster=True)


async def declare_like_stepflow(channel: aio_pika.abc.AbstractChannel, *job_types: str,
                                topology: Topology = CLUSTER) -> None:
    """What `stepflow serve` and `stepflow worker` declare (the direct queue aside: exclusive,
    it goes with the connection)."""
    await topology.declare(channel)
    for job_type in job_types:
        await topology.declare_job_queue(channel, job_type)


def queues_of(rabbit: Rabbit) -> dict[str, dict[str, Any]]:
    """Each queue of the vhost: its type, flags and arguments ({name: value}), as the broker
    reports them (`exclusive`: its owner, or "" when not exclusive)."""
    vhost_name = rabbit.url.rsplit("/", 1)[1]
    listing = subprocess.run(
        ["rabbitmqctl", "list_queues", "-p", vhost_name, "name", "type", "durable", "auto_delete", "exclusive",
         "arguments", "--formatter", "json", "-q"], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = json.loads(listing)
    return {row["name"]: {**row, "arguments": {name: value for name, _, value in row["arguments"]}} for row in rows}


def assert_all_quorum(rabbit: Rabbit, names: list[str]) -> dict[str, dict[str, Any]]:
    queues = queues_of(rabbit)
    missing = [name for name in names if name not in queues]
    assert not missing, f"not declared: {missing}"
    classic = {name: queues[name]["type"] for name in names if queues[name]["type"] != "quorum"}
    assert not classic, f"not quorum: {classic}"
    assert all(queues[name]["durable"] for name in names)
    return queues


STEPFLOW_QUEUES = [*CLUSTER.queues()]  # the common part: response, worker, delay, *_not_found, quarantine


@pytest.mark.parametrize("sdk_first", [True, False], ids=["sdk-first", "stepflow-first"])
def test_in_cluster_mode_the_sdk_and_stepflow_declare_the_same_quorum_queues(vhost: Rabbit, sdk_first: bool) -> None:
    sdk, ours = declare_like_the_sdk_in_cluster_mode, lambda channel: declare_like_stepflow(channel, JOB_TYPE, "job_x")
    for declare in ((sdk, ours, sdk) if sdk_first else (ours, sdk, ours)):
        run_on(vhost, declare)  # raises ChannelPreconditionFailed on any difference
    queues = assert_all_quorum(vhost, [*STEPFLOW_QUEUES, JOB_TYPE, "job_x", f"direct_messaging_{INSTANCE}"])
    # The job queues as the SDK has them: dead-letter to job_delayed, no priority (quorum has none).
    for job_queue in (JOB_TYPE, "job_x"):
        assert queues[job_queue]["arguments"] == {"x-dead-letter-exchange": "job_delayed",
                                                  "x-dead-letter-routing-key": job_queue, "x-queue-type": "quorum"}
    assert queues[p.JOB_DELAYED]["arguments"] == {"x-dead-letter-exchange": "", "x-message-ttl": 5000,
                                                  "x-queue-type": "quorum"}


def test_a_standalone_stepflow_is_refused_where_the_sdk_declared_cluster_mode(vhost: Rabbit) -> None:
    """Why the setting exists: the two modes cannot meet on one queue (and the SDK, refused
    the other way round, hangs as a zombie)."""
    run_on(vhost, declare_like_the_sdk_in_cluster_mode)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="inequivalent arg"):
        run_on(vhost, lambda channel: declare_like_stepflow(channel, JOB_TYPE, topology=Topology()))


def test_the_direct_queue_stays_exclusive_and_classic_in_cluster_mode(vhost: Rabbit) -> None:
    """Quorum queues cannot be exclusive; the per-instance queue goes with its connection."""

    async def declare_and_look(channel: aio_pika.abc.AbstractChannel) -> dict[str, Any]:
        await CLUSTER.declare(channel)
        await CLUSTER.declare_direct_queue(channel, "me", ("job_x",))
        return queues_of(vhost)[CLUSTER.direct_queue("me")]

    shown = run_on(vhost, declare_and_look)
    assert (shown["type"], bool(shown["exclusive"]), shown["auto_delete"], shown["durable"]) == (
        "classic", True, True, False)
    assert CLUSTER.direct_queue("me") not in queues_of(vhost)  # gone with the connection


async def test_delays_and_the_sdk_retry_work_on_quorum_queues(vhost: Rabbit) -> None:
    """Per-message expiration (stepflow_job_submit_delayed), queue TTL (job_response_delayed,
    job_delayed) and dead-lettering all hold on this broker's quorum queues."""
    await vhost.channel_do(lambda channel: declare_like_stepflow(channel, "job_x"))
    # A delayed order waits for its own expiration, then routes by its key (the job type).
    await vhost.publish(p.JOB_SUBMIT_DELAYED, "job_x", b"{}", expiration=0.2, delivery_mode=2)
    assert (await vhost.depth(p.JOB_SUBMIT_DELAYED))[0] == 1
    await vhost.wait_depth("job_x", messages=1, timeout=5)
    assert (await vhost.depth(p.JOB_SUBMIT_DELAYED))[0] == 0

    # The SDK's retry: an order rejected without requeue waits 5 s in job_delayed, then comes
    # back to its queue; a response sent to job_response_delayed goes back to its origin.
    async def reject_one(channel: Any) -> None:
        message = await (await channel.declare_queue("job_x", passive=True)).get()
        await message.reject(requeue=False)

    await vhost.channel_do(reject_one)
    await vhost.publish(p.JOB_RESPONSE_DELAYED, p.JOB_COMPLETED, b"{}", delivery_mode=2)
    await vhost.wait_depth(p.JOB_DELAYED, messages=1, timeout=5)
    assert await vhost.depth("job_x") == (0, 0)
    await vhost.wait_depth("job_x", messages=1, timeout=15)
    await vhost.wait_depth(p.JOB_COMPLETED, messages=1, timeout=15)


def test_a_workflow_runs_end_to_end_in_cluster_mode(vhost: Rabbit, tmp_path: Path) -> None:
    """`stepflow serve` (STEPFLOW_AMQP_SERVER_CONFIGURATION) and two `stepflow worker`s (the
    SDK's own AMQP_SERVER_CONFIGURATION), after an mcai worker declared its queues: one
    worker serves three job types on quorum queues (per-consumer prefetch: quorum queues
    refuse a global one), the other the type the mcai worker declared."""
    run_on(vhost, declare_like_the_sdk_in_cluster_mode)
    store = sqlite_store(tmp_path)
    procs = Procs(vhost, store, tmp_path)
    engine = None
    try:
        procs.serve(STEPFLOW_AMQP_SERVER_CONFIGURATION="cluster")
        procs.worker("media", MEDIA_WORKERS, AMQP_SERVER_CONFIGURATION="cluster")
        procs.worker("slow", amqp_fixtures.FIXTURE_WORKERS, JOB_TYPE, AMQP_SERVER_CONFIGURATION="cluster")

        async def up() -> None:
            for queue in (p.JOB_COMPLETED, p.WORKER_DISCOVERY, JOB_TYPE, *amqp_fixtures.MEDIA_TYPES):
                await vhost.wait_depth(queue, consumers=1, timeout=30)

        try:
            asyncio.run(up())
        except AssertionError as error:
            raise AssertionError(f"{error}\n{procs.logs()}") from None
        assert_all_quorum(vhost, [*STEPFLOW_QUEUES, JOB_TYPE, *amqp_fixtures.MEDIA_TYPES])
        engine = open_engine(store)
        media = engine.start_workflow(load_definition(amqp_fixtures.EXAMPLES / "media" / "workflow.toml"),
                                      {"renditions": ["360p", "720p"], "size_kib": 16})
        slow = engine.start_workflow(one_step(JOB_TYPE), {})
        for workflow_id, jobs in ((media, 4), (slow, 1)):
            state = wait_final(engine, workflow_id, 40, context=procs.logs)
            assert state.status == "completed", f"{state.reason}\n{procs.logs()}"
            counts = event_counts(engine, workflow_id)
            assert counts["JobSubmitted"] == counts["JobCompleted"] == jobs
        run_on(vhost, declare_like_the_sdk_in_cluster_mode)  # the mcai worker reconnecting: still equal
        assert_healthy(procs)
    finally:
        if engine is not None:
            engine.close()
        for proc in procs.all:
            proc.terminate(10)
        procs.close()
