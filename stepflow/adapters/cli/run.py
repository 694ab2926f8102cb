"""`stepflow run DEFINITION --param k=v`: start a workflow and watch it to the end.

Embedded by default (in-process broker, workers loaded in this process, SQLite store); the
live view redraws per step and job, then the final state of every step and job is printed.
With `--amqp-url` the same run goes over a real RabbitMQ: the backend runs in this process,
and the workers too unless `--no-workers` (then workers started with `stepflow worker`
serve the orders); exit 4 when the broker cannot be reached.
Exit 0 when the workflow completed, 1 when it ended otherwise (with the reason), 2 when the
definition or a parameter is refused (nothing is stored then).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, TextIO

from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, common, default_actor
from stepflow.adapters.cli.view import LiveView
from stepflow.adapters.persistence import open_engine
from stepflow.engine.definitions import (
    DefinitionError,
    WorkflowDefinition,
    coerce_parameter,
    load_definition,
)
from stepflow.engine.workflow import Rejected
from stepflow.sdk import Worker


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("run", help="start a workflow and follow it to the end"))
    parser.add_argument("definition", help="workflow definition file (.toml or .json)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                        help="start parameter (repeatable); lists as a,b,c or JSON")
    parser.add_argument("--worker", "-w", action="append", default=[], metavar="MODULE:ATTR",
                        help="worker(s) to run in-process (module or file path, then ':' and the "
                             "Worker's name); default: every Worker in workers.py beside the definition")
    parser.add_argument("--label", action="append", default=[], help="label the workflow (repeatable)")
    parser.add_argument("--actor", default=None, help="who starts it (default: the OS user)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    parser.add_argument("--quiet", "-q", action="store_true", help="no live view, only the final state")
    parser.add_argument("--amqp-url", default=None,
                        help="run over this RabbitMQ instead of the in-process broker")
    parser.add_argument("--prefix", default=None,
                        help="with --amqp-url: prefix of exchange and queue names (default $STEPFLOW_PREFIX)")
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


def load_workers(specs: list[str], definition_path: Path) -> list[Worker]:
    if not specs:
        beside = definition_path.parent / "workers.py"
        if not beside.exists():
            return []
        module = _import(str(beside))
        return [value for value in vars(module).values() if isinstance(value, Worker)]
    workers: list[Worker] = []
    for spec in specs:
        target, _, attr = spec.rpartition(":")
        if not target:
            raise ValueError(f"--worker expects MODULE:ATTR, got {spec!r}")
        worker = getattr(_import(target), attr)
        if not isinstance(worker, Worker):
            raise ValueError(f"{spec} is a {type(worker).__name__}, not a stepflow Worker")
        workers.append(worker)
    return workers


def _import(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target).resolve()
        name = f"stepflow_workers_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


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
    if getattr(args, "amqp_url", None):
        return asyncio.run(_run_amqp(args, definition, parameters, workers, out))
    return asyncio.run(_run_embedded(args, definition, parameters, workers, out))


async def _run_amqp(args: argparse.Namespace, definition: WorkflowDefinition, parameters: dict[str, Any],
                    workers: list[Worker], out: TextIO) -> int:
    import aio_pika

    from stepflow.adapters.amqp.connection import mask_url
    from stepflow.adapters.amqp.runtime import AmqpRuntime
    from stepflow.adapters.cli import EXIT_UNREACHABLE
    from stepflow.adapters.cli.serve import prefix_of

    try:  # fail fast and plainly when the broker is not there
        probe = await aio_pika.connect(args.amqp_url, timeout=10)
        await probe.close()
    except (OSError, TimeoutError) as error:
        message = str(error).replace(args.amqp_url, mask_url(args.amqp_url))
        print(f"error: cannot reach RabbitMQ at {mask_url(args.amqp_url)}: {message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    runtime = AmqpRuntime(open_engine(args.store), workers, url=args.amqp_url, prefix=prefix_of(args))
    return await _run_embedded(args, definition, parameters, workers, out, runtime=runtime)


async def _run_embedded(args: argparse.Namespace, definition: WorkflowDefinition, parameters: dict[str, Any],
                        workers: list[Worker], out: TextIO, runtime: Any = None) -> int:
    from stepflow.adapters.embedded import EmbeddedRuntime

    if runtime is None:
        runtime = EmbeddedRuntime(open_engine(args.store), workers, projections=True)
    view = LiveView(out, live=not args.quiet)
    async with runtime:
        try:
            workflow_id = await runtime.start(definition, parameters, labels=args.label,
                                              actor=args.actor or default_actor())
        except (DefinitionError, Rejected) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"workflow {workflow_id} started ({definition.identifier} {definition.version})", file=out)
        try:
            state = await runtime.wait(workflow_id, timeout=args.timeout, on_change=view.update)
        except asyncio.TimeoutError:
            state = await runtime.state(workflow_id)
            view.final(state)
            print(f"error: workflow {workflow_id} still {state.status} after {args.timeout}s", file=sys.stderr)
            return EXIT_FAILED
    view.final(state)
    if state.status == "completed":
        return EXIT_OK
    print(f"error: workflow {workflow_id} ended {state.status}: {state.reason}", file=sys.stderr)
    return EXIT_FAILED
