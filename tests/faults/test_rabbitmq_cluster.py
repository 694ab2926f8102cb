"""A 3-node RabbitMQ cluster loses a node in the middle of a run: nothing is lost.

`stepflow serve` (SQLite store) and two `stepflow worker` processes are given the three
nodes' URLs (`amqp_url`, comma-separated) and cluster mode (`amqp_server_configuration=
cluster`: every durable queue a quorum queue, replicated on the three nodes). They all
connect to the first node, which also leads every queue (they were declared there). Mid-run
that node goes: its app is stopped (`rabbitmqctl stop_app`: the server closes every
connection it held) or its VM is SIGKILLed (a crash: the kernel drops the connections). The
quorum queues elect leaders on the survivors, and each client must reconnect to another node
(round robin over its URLs) and restore its channels, declarations and consumers there.
The run must then complete exactly once: every workflow completed, no job lost, no
transition recorded twice, and every client on a surviving node.

After `stop_app` the run completes while the node is down. After a SIGKILL, RabbitMQ 3.10.8
sometimes leaves the run standing still until the node is back (measured: the messages are
neither ready nor held by a live channel, or ready but not delivered; see the figures
`*_while_down`): so the crashed node is restarted after `OUTAGE_S`, as an operator would,
and the run must then complete with nothing lost.

Printed (fault-suite figures): the cluster's start-up time, how long each client was away
(its `amqp_reconnected ... down_s=`), the orders (jobs submitted) and completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store, wait_until
from cluster_fixtures import Cluster, rabbit_cluster
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final

from stepflow.adapters.persistence import open_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
__all__ = ["rabbit_cluster"]  # the fixture, imported so pytest finds it

WORKFLOWS = 200  # 4 jobs each, ~250 ms a job: the run (~10 s) outlasts the stop and the reconnections
CLUSTER_ENV = {"STEPFLOW_AMQP_SERVER_CONFIGURATION": "cluster"}
OUTAGE_S = 20  # how long the run may go on with a killed node before it is restarted
RECONNECTED = re.compile(r"amqp_reconnected.*?down_s=([0-9.]+)")


@pytest.fixture
def cluster_procs(rabbit_cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Rabbit, Procs]]:
    """The processes of one test on the cluster, all given the three URLs; stopped afterwards.
    The test's own look at the queues (`Rabbit`) goes to the last node, which stays up."""
    rabbit = Rabbit(rabbit_cluster.nodes[-1].url, f"t{uuid.uuid4().hex[:8]}_")
    procs = Procs(rabbit, sqlite_store(tmp_path), tmp_path)
    yield rabbit, procs
    for proc in procs.all:
        proc.terminate(5)
    procs.close()


def node_ports(cluster: Cluster, survivor: int = -1) -> dict[str, int]:
    """Client connection name -> the AMQP port of the node it is connected to (as the cluster,
    asked through a node that is up, sees it: `127.0.0.1:client -> 127.0.0.1:server`)."""
    out = cluster.ctl(cluster.nodes[survivor], "list_connections", "name", "client_properties", "-q",
                      "--no-table-headers")
    found: dict[str, int] = {}
    for line in out.splitlines():
        server = re.search(r"-> [0-9.]+:(\d+)", line)
        client = re.search(r'connection_name","?([^"]+)"', line)
        if server and client:
            found[client.group(1)] = int(server.group(1))
    return found


@pytest.mark.parametrize("how", ["stop_app", "kill"])
def test_a_cluster_node_lost_mid_run_loses_nothing(how: str, rabbit_cluster: Cluster,
                                                   cluster_procs: tuple[Rabbit, Procs]) -> None:
    cluster = rabbit_cluster
    rabbit, procs = cluster_procs
    env = {"STEPFLOW_AMQP_URL": cluster.amqp_url, **CLUSTER_ENV}
    engine = open_engine(procs.store)
    victim = cluster.nodes[0]
    try:
        serve = procs.serve(**env)
        workers = [procs.worker("w1", FAULT_WORKERS, **env), procs.worker("w2", FAULT_WORKERS, **env)]
        ready(rabbit, procs, timeout=60, job_completed=1, fault_a=2, fault_b=2)
        kinds = cluster.queue_types(cluster.nodes[-1], rabbit.prefix)
        assert kinds.get(rabbit.prefix + "job_completed") == kinds.get(rabbit.prefix + "fault_a") == "quorum", (
            f"cluster mode (amqp_server_configuration=cluster) did not declare quorum queues: {kinds}")

        # every client is on the first node, the one to be lost: all three must move
        before = node_ports(cluster)
        ours = {name: port for name, port in before.items() if rabbit.prefix in name}
        assert len(ours) >= 3 and set(ours.values()) == {victim.port}, before

        total = scaled(WORKFLOWS)
        shape = pipeline(2, jitter=0.5)
        started = time.monotonic()
        ids: list[uuid.UUID] = [engine.start_workflow(shape, {"name": f"c{n}"}) for n in range(total)]
        wait_until(lambda: completed(engine) >= total // 10, 60, "the run to get going", procs.logs)
        done_before = completed(engine)
        stop_at = time.monotonic()
        (cluster.stop_app if how == "stop_app" else cluster.kill)(victim)
        stop_s = time.monotonic() - stop_at
        done_at_stop = completed(engine)

        wait_until(lambda: all(RECONNECTED.search(p.log()) for p in procs.all), 60,
                   "every client to reconnect", procs.logs)
        ready(rabbit, procs, timeout=60, job_completed=1, fault_a=2, fault_b=2)  # consumers are back
        after = {name: port for name, port in node_ports(cluster).items() if rabbit.prefix in name}
        outage: dict[str, object] = {}
        if how == "kill":
            # The run may stand still until the crashed node (which led the queues) is back
            # (module docstring): it is restarted once the run is done or after OUTAGE_S.
            with contextlib.suppress(AssertionError):
                wait_all_final(engine, ids, OUTAGE_S, str)
            outage = {"completed_while_down": completed(engine), **outage_state(cluster)}
            back_at = time.monotonic()
            cluster.revive(victim)
            outage["node_back_s"] = round(time.monotonic() - back_at, 1)
        wait_all_final(engine, ids, 120, lambda: queues(cluster, rabbit.prefix) + procs.logs())
        elapsed = time.monotonic() - started

        down_s = [float(m) for p in procs.all for m in RECONNECTED.findall(p.log())]
        result = audit(engine, ids)
        figures(f"rabbitmq cluster, {how}", cluster_start_s=round(cluster.start_s, 1), workflows=result.workflows,
                completed=result.completed, completed_before_stop=done_before,
                completed_when_stopped=done_at_stop, orders=result.jobs,
                jobs_completed=result.jobs_completed, jobs_lost=result.jobs_lost,
                transitions_doubled=result.doubled, node_lost_in_s=round(stop_s, 1),
                reconnections=len(down_s), reconnect_s=down_s, run_s=round(elapsed, 1),
                nodes_after=sorted({cluster.node_of_port(port).name for port in after.values()}), **outage)
        result.check()
        assert done_at_stop < total  # the node stopped mid-run
        assert len(down_s) >= 3  # the backend and both workers came back ...
        assert after and victim.port not in after.values(), after  # ... on the surviving nodes
        assert serve.alive() and all(w.alive() for w in workers), procs.logs()
        asyncio.run(rabbit.wait_depth("fault_a", messages=0, timeout=30))
    finally:
        engine.close()
        for proc in procs.all:
            proc.terminate(5)
        if not cluster.running(victim):
            cluster.revive(victim)  # whole again for the module's next test


def queues(cluster: Cluster, prefix: str) -> str:
    """The test's queues as a surviving node sees them, for a failure's message."""
    out = cluster.ctl(cluster.nodes[-1], "list_queues", "name", "type", "leader", "messages_ready",
                      "messages_unacknowledged", "consumers", "-q", check=False)
    channels = cluster.ctl(cluster.nodes[-1], "list_channels", "name", "messages_unconfirmed",
                           "messages_unacknowledged", "consumer_count", "prefetch_count", "-q", check=False)
    return ("--- queues (ready, unacked, consumers) ---\n"
            + "\n".join(line for line in out.splitlines() if prefix in line or line.startswith("name"))
            + "\n--- channels (unconfirmed, unacked, consumers, prefetch) ---\n" + channels + "\n")


def total(cluster: Cluster, listing: str, item: str) -> int:
    """A count summed over every queue or channel (`listing`) of the cluster, which is this
    module's alone: every queue and channel is the test's."""
    out = cluster.ctl(cluster.nodes[-1], listing, item, "-q", "--no-table-headers")
    return sum(int(line.split()[-1]) for line in out.splitlines() if line.strip())


def outage_state(cluster: Cluster) -> dict[str, int]:
    """Where the messages are while a node is down: ready in queues, unacked that no channel
    holds (checked out to consumers that died with the node), published but unconfirmed."""
    unacked = total(cluster, "list_queues", "messages_unacknowledged")
    return {"ready_while_down": total(cluster, "list_queues", "messages_ready"),
            "orphaned_while_down": unacked - total(cluster, "list_channels", "messages_unacknowledged"),
            "unconfirmed_while_down": total(cluster, "list_channels", "messages_unconfirmed")}


def completed(engine: object) -> int:
    return len(engine.notifications(0, 100_000, topics=("WorkflowCompleted",)))  # type: ignore[attr-defined]

