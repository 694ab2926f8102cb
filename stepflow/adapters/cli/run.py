"""`stepflow run DEFINITION --param k=v`: start a workflow and watch it to the end.

Embedded by default (in-process broker, workers loaded in this process, SQLite store); the
live view redraws per step and job, then the final state of every step and job is printed.
With `--amqp-url` the same run goes over a real RabbitMQ: the backend runs in this process,
and the workers too unless `--no-workers` (then workers started with `stepflow worker`
serve the orders); exit 4 when the broker cannot be reached.
Exit 0 when the workflow completed, 1 when it ended otherwise (with the reason), 2 when the
definition or a parameter is refused (nothing is stored then). The runtime comes from
`stepflow.bootstrap`, like `stepflow serve`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from stepflow import bootstrap
from stepflow.adapters.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    common,
    default_actor,
)
from stepflow.adapters.cli.options import add_settings
from stepflow.adapters.cli.view import LiveView
from stepflow.adapters.runtime import Runtime
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine.definitions import (
    DefinitionError,
    WorkflowDefinition,
    coerce_parameter,
    load_definition,
)
from stepflow.engine.workflow import Rejected
from stepflow.sdk import Worker
from stepflow.settings import redact_text, redact_url

__all__ = ["load_workers", "parse_params", "register", "run_command"]  # load_workers: its old home


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("run", help="start a workflow and follow it to the end"))
    parser.add_argument("definition", help="workflow definition file (.toml or .json)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                        help="start parameter (repeatable); lists as a,b,c or JSON")
    parser.add_argument("--worker", "-w", action="append", default=[], metavar="MODULE:ATTR",
                        help="worker(s) to run in-process (module or file path, then ':' and the "
                             "Worker's name); default: every Worker in workers.py beside the definition")
    parser.add_argument("--label", action="append", default=[], help="label the workflow (repeatable)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    parser.add_argument("--quiet", "-q", action="store_true", help="no live view, only the final state")
    add_settings(parser, "actor", "amqp_url", "prefix", helps={
        "actor": "who starts it ($STEPFLOW_ACTOR; default: the OS user)",
        "amqp_url": "run over this RabbitMQ instead of the in-process broker (only the flag switches: "
                    "$STEPFLOW_AMQP_URL does not)",
        "prefix": "with --amqp-url: prefix of exchange and queue names ($STEPFLOW_PREFIX)"})
    parser.add_argument("--no-workers", action="store_true",
                        help="with --amqp-url: run no worker here; separate `stepflow worker` processes serve")
    parser.set_defaults(func=run_command)


def parse_params(definition: WorkflowDefinition, pairs: list[str]) -> dict[str, Any]:
    specs = {spec.id: spec for spec in definition.parameters}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise DefinitionError(f"$.parameters.{name}", f"expected K=V, got {pair!r}")
        if name not in specs:
            raise DefinitionError(f"$.parameters.{name}", f"unknown parameter {name!r}")
        values[name] = coerce_parameter(specs[name], text)
    return values


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = Path(args.definition)
    try:
        definition = load_definition(path)
        parameters = parse_params(definition, args.param)
    except FileNotFoundError:
        print(f"error: no such definition file: {path}", file=sys.stderr)
        return EXIT_USAGE
    except DefinitionError as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        return EXIT_USAGE
    workers = [] if getattr(args, "no_workers", False) else load_workers(args.worker, path)
    over_amqp = bool(getattr(args, "amqp_url", None))  # the flag, not $STEPFLOW_AMQP_URL
    return asyncio.run(_run(args, definition, parameters, workers, out, over_amqp=over_amqp))


async def _run(args: argparse.Namespace, definition: WorkflowDefinition, parameters: dict[str, Any],
               workers: list[Worker], out: TextIO, *, over_amqp: bool) -> int:
    settings = args.settings
    if over_amqp and not await _reachable(settings.amqp_url):
        return EXIT_UNREACHABLE
    engine = await bootstrap.open_store(settings)
    try:
        # In-process, this process keeps the views (a later `stepflow show` finds them); over
        # RabbitMQ that is the job of the `stepflow serve` beside it.
        runtime = bootstrap.build_runtime(settings, engine, workers, embedded=not over_amqp,
                                          projections=not over_amqp)
        return await _follow(args, runtime, definition, parameters, out)
    finally:
        engine.close()


async def _reachable(url: str) -> bool:
    """Fail fast and plainly when the broker is not there (a robust connection would wait)."""
    import aio_pika

    try:
        probe = await aio_pika.connect(url, timeout=10)
        await probe.close()
    except (OSError, TimeoutError) as error:
        print(f"error: cannot reach RabbitMQ at {redact_url(url)}: {redact_text(str(error), url)}", file=sys.stderr)
        return False
    return True


async def _follow(args: argparse.Namespace, runtime: Runtime, definition: WorkflowDefinition,
                  parameters: dict[str, Any], out: TextIO) -> int:
    view = LiveView(out, live=not args.quiet)
    async with runtime:
        try:
            workflow_id = await runtime.start(definition, parameters, labels=args.label,
                                              actor=default_actor(args.settings))
        except (DefinitionError, Rejected) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"workflow {workflow_id} started ({definition.identifier} {definition.version})", file=out)
        try:
            state = await runtime.wait(workflow_id, timeout=args.timeout, on_change=view.update)
        except TimeoutError:
            state = await runtime.state(workflow_id)
            view.final(state)
            print(f"error: workflow {workflow_id} still {state.status} after {args.timeout}s", file=sys.stderr)
            return EXIT_FAILED
    view.final(state)
    if state.status == "completed":
        return EXIT_OK
    print(f"error: workflow {workflow_id} ended {state.status}: {state.reason}", file=sys.stderr)
    return EXIT_FAILED
