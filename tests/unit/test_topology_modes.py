"""The queue arguments of each mode, as mcai-worker-sdk 2.1.1 declares them (research doc
section 2): standalone exactly as before, cluster (quorum) exactly as the SDK's
AMQP_SERVER_CONFIGURATION=cluster. The broker's side of it is tests/integration/test_mcai_topology*.py."""

from __future__ import annotations

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import Topology


def test_standalone_job_and_worker_queues_keep_the_sdks_classic_arguments() -> None:
    t = Topology("x_")
    assert t.job_queue_arguments("job_echo") == {"x-max-priority": 100, "x-dead-letter-exchange": "x_job_delayed",
                                                 "x-dead-letter-routing-key": "x_job_echo"}
    assert t.worker_queue_arguments(p.WORKER_DISCOVERY) == {"x-dead-letter-exchange": "x_job_response_delayed",
                                                            "x-dead-letter-routing-key": "x_worker_discovery"}
    assert t.worker_queue_arguments(p.WORKER_STATUS) is None and t.arguments() is None
    assert t.arguments({"x-message-ttl": 5}) == {"x-message-ttl": 5}


def test_cluster_mode_makes_every_queue_quorum_and_drops_priorities() -> None:
    t = Topology("x_", quorum=True)
    assert t.job_queue_arguments("job_echo") == {"x-dead-letter-exchange": "x_job_delayed",
                                                 "x-dead-letter-routing-key": "x_job_echo", "x-queue-type": "quorum"}
    assert t.worker_queue_arguments(p.WORKER_DISCOVERY) == {
        "x-dead-letter-exchange": "x_job_response_delayed", "x-dead-letter-routing-key": "x_worker_discovery",
        "x-queue-type": "quorum"}
    assert t.worker_queue_arguments(p.WORKER_STATUS) == {"x-queue-type": "quorum"} == t.arguments()
    assert t.arguments({"x-message-ttl": 5}) == {"x-message-ttl": 5, "x-queue-type": "quorum"}
    assert (t.job_submit, t.direct_queue("i")) == (Topology("x_").job_submit, "x_direct_messaging_i")  # same names
