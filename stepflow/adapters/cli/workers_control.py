"""`stepflow worker-control INSTANCE_ID status|pause|resume|stop`: an operator's order to one
worker, over RabbitMQ, recorded in the store.

    stepflow worker-control media-7f3a pause  --amqp-url amqp://… --store postgresql://…
    stepflow worker-control media-7f3a status --json        # prints the worker's own answer

pause = `stop_consuming_jobs` (the worker hands back the orders it holds, takes no new one),
resume = `resume_consuming_jobs`, stop = `stop_worker` (it finishes its running jobs, says
`Terminated` and exits), status = `status` (it answers Idle or Busy, its pid and host; this
command waits `--wait` seconds for that answer on a queue of its own, so a backend still
gets its copy). The order is published to the worker's direct queue with `mandatory`, so a
worker that is not listening (never started, exited, another `--prefix`) is an error, not
a silent drop. Each order sent is recorded as a `WorkerOrdered` event (`--actor`, default
the OS user) in the store, which the workers view and `stepflow audit --kind worker` show.

Exit codes: 0 sent (and, for status, answered); 1 no status answer within `--wait`; 2 bad
usage, or no such worker listening; 4 broker or store unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.connection import connect_once, mask_url, publish
from stepflow.adapters.amqp.topology import Topology, persistent
from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, common, default_actor
from stepflow.adapters.cli.formatting import emit_json
from stepflow.adapters.cli.options import add_settings
from stepflow.adapters.cli.session import Session, UsageError, guarded
from stepflow.adapters.worker_control import ACTIONS, ORDERS, direct_order

DONE = {"pause": "paused (it takes no new order until resumed)", "resume": "resumed",
        "stop": "told to stop (it finishes its running jobs, then exits)", "status": "asked for its status"}


class NotListening(Exception):
    """No direct queue took the order: no worker of that id is connected."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    help = "send one worker a control order: status, pause, resume or stop"
    parser = common(sub.add_parser("worker-control", help=help, description=help))
    parser.add_argument("instance_id", metavar="INSTANCE_ID", help="the worker's instance id (stepflow workers)")
    parser.add_argument("action", choices=ACTIONS,
                        help="status: ask it; pause: stop taking orders; resume: take them again; "
                             "stop: finish running jobs and exit")
    add_settings(parser, "amqp_url", "prefix", "actor",
                 helps={"actor": "who sends it, recorded in the audit log ($STEPFLOW_ACTOR; default: the OS user)"})
    parser.add_argument("--wait", type=float, default=5.0, metavar="S",
                        help="status: how long to wait for the worker's answer (default 5 s)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    parser.set_defaults(func=guarded(worker_control_command))


def worker_control_command(args: argparse.Namespace) -> int:
    settings = args.settings
    with Session(args, catch_up=False, writes=True) as s:
        try:
            answer = asyncio.run(send(settings.amqp_url, settings.prefix, args.instance_id, args.action, args.wait))
        except NotListening as error:
            raise UsageError(str(error)) from None
        except OSError as error:  # ConnectionError, TimeoutError, aiormq.AMQPConnectionError
            print(f"stepflow: broker unreachable at {mask_url(settings.amqp_url)}: {error!r}", file=sys.stderr)
            return EXIT_UNREACHABLE
        position = s.engine.record_worker_order(actor=default_actor(settings), instance_id=args.instance_id,
                                                order=ORDERS[args.action], via="cli")
        s.runner.run_once()
    outcome: dict[str, Any] = {"ok": True, "instance_id": args.instance_id, "action": args.action,
                               "order": ORDERS[args.action], "notification_id": position}
    if args.action == "status":
        outcome["status"] = None if answer is None else {"activity": answer.worker.activity,
                                                         **answer.worker.system_info}
        outcome["ok"] = answer is not None
    if args.json:
        emit_json(outcome)
    elif args.action == "status" and answer is not None:
        info = ", ".join(f"{k} {v}" for k, v in answer.worker.system_info.items())
        print(f"worker {args.instance_id}: {answer.worker.activity}" + (f" ({info})" if info else ""))
    elif args.action != "status":
        print(f"worker {args.instance_id} {DONE[args.action]}")
    if args.action == "status" and answer is None:
        print(f"stepflow: no status answer from worker {args.instance_id} within {args.wait:g} s", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def send(url: str, prefix: str, instance_id: str, action: str, wait_s: float) -> p.WorkerStatus | None:
    """Publish the order (mandatory: raise `NotListening` when no worker queue took it); for
    `status`, return the worker's answer, or None after `wait_s`."""
    import aio_pika

    topology = Topology(prefix)
    connection = await connect_once(url, "stepflow-cli", timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            exchange = await channel.get_exchange(topology.direct_messaging, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise NotListening(f"no worker listens here: exchange {topology.direct_messaging!r} does not exist "
                               f"(is the --prefix {prefix!r} right?)") from None
        answers: asyncio.Queue[p.WorkerStatus] = asyncio.Queue()
        if action == "status":
            # A queue of our own on the worker answers' exchange: the backend keeps its copy.
            replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await replies.bind(topology.worker_response, routing_key=p.WORKER_STATUS)

            async def on_reply(message: Any) -> None:
                with contextlib.suppress(Exception):
                    status = p.decode_status(message.body)
                    if status.instance == instance_id:
                        answers.put_nowait(status)

            await replies.consume(on_reply, no_ack=True)
        message = direct_order(instance_id, action)
        try:
            await publish(exchange, persistent(message.body, message_id=message.message_id,
                                               headers=dict(message.headers)), "")
        except aio_pika.exceptions.DeliveryError:
            raise NotListening(f"no worker {instance_id!r} is listening (no direct queue took the order; "
                               "see `stepflow workers`)") from None
        if action != "status":
            return None
        try:
            return await asyncio.wait_for(answers.get(), wait_s)
        except TimeoutError:
            return None
    finally:
        await connection.close()
