"""RabbitMQ adapter: the Step Flow topology, the backend's and the workers' brokers.

    from stepflow.adapters.amqp import AmqpBackendBroker, AmqpWorkerBroker, Topology

See docs/protocol.md for every exchange, queue, routing key, header and message schema.
"""

from stepflow.adapters.amqp.backend_broker import AmqpBackendBroker
from stepflow.adapters.amqp.connection import AmqpDelivery, amqp_url, mask_url
from stepflow.adapters.amqp.topology import Topology
from stepflow.adapters.amqp.worker_broker import AmqpWorkerBroker

__all__ = ["AmqpBackendBroker", "AmqpDelivery", "AmqpWorkerBroker", "Topology", "amqp_url", "mask_url"]
