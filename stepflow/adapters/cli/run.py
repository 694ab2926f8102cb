"""`stepflow run DEFINITION --param k=v`: start a workflow and watch it to the end.

Embedded by default (in-process broker, workers loaded in this process, SQLite store in the
data directory); the live view redraws per step and job, then the final state of every step
and job is printed. With `--amqp-url` the same run goes over a real RabbitMQ: the backend runs
in this process, and the workers too unless `--no-workers` (then workers started with
`stepflow worker` serve the orders); exit 4 when the broker cannot be reached.
Exit 0 when the workflow completed, 1 when it ended otherwise (with the reason) or outlived
`--timeout`, 2 when the definition, a parameter or a worker is refused (nothing is stored
then), 4 when the store or broker cannot be reached, 130 on Ctrl-C. Ctrl-C and `--timeout`
stop the workflow, or leave it running with `--detach-on-exit` (`interrupt`). The runtime
comes from `stepflow.bootstrap`, like `stepflow serve`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

import aiormq

from stepflow import bootstrap
from stepflow.adapters.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    common,
    default_actor,
    loop,
)
from stepflow.adapters.cli.errors import (
    Unavailable,
    UsageError,
    probe_broker,
    quiet_broker_logs,
    say,
)
from stepflow.adapters.cli.interrupt import Signals, caught_signals, let_go, until_end
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


DESCRIPTION = """Start a workflow from a definition file and follow it to its end: a live view of
its steps and jobs, then the final state of each. Embedded by default: an in-process broker,
the workers of workers.py beside the definition (or --worker) in this process, and the store
(default: stepflow.sqlite in the data directory, see `stepflow config`). With --amqp-url the
orders go over RabbitMQ. Ctrl-C or --timeout stops the workflow (actor `cli`), unless
--detach-on-exit. Exit 0 completed, 1 ended otherwise or timed out, 2 bad definition,
parameter or worker (nothing stored), 4 store or broker unreachable, 130 Ctrl-C."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("run", help="start a workflow and follow it to the end",
                                   description=DESCRIPTION))
    parser.add_argument("definition", help="workflow definition file (.toml or .json)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                        help="start parameter (repeatable); lists as a,b,c or JSON")
    parser.add_argument("--worker", "-w", action="append", default=[], metavar="MODULE:ATTR",
                        help="worker(s) to run in-process (module or file path, then ':' and the "
                             "Worker's name); default: every Worker in workers.py beside the definition")
    parser.add_argument("--label", action="append", default=[], help="label the workflow (repeatable)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="stop the workflow if it has not ended after S seconds, and exit 1")
    parser.add_argument("--detach-on-exit", action="store_true",
                        help="on Ctrl-C or --timeout leave the workflow running (and print how to follow "
                             "and stop it) instead of stopping it")
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
    """`--param K=V` texts as the definition's typed start parameters (`DefinitionError` if not)."""
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
    """The `run` command: load, start, follow; its exit code (see the module's docstring)."""
    out = out or sys.stdout
    path = Path(args.definition)
    definition, parameters = _load(path, args.param)
    workers = [] if getattr(args, "no_workers", False) else _workers(args.worker, path)
    over_amqp = bool(getattr(args, "amqp_url", None))  # the flag, not $STEPFLOW_AMQP_URL
    try:
        return loop.run(_run(args, definition, parameters, workers, out, over_amqp=over_amqp))
    except asyncio.CancelledError:  # a second Ctrl-C while the first one's stop was recorded
        say("interrupted again: exiting without waiting for the workflow to stop")
        return EXIT_INTERRUPTED


def _load(path: Path, pairs: list[str]) -> tuple[WorkflowDefinition, dict[str, Any]]:
    try:
        definition = load_definition(path)
        return definition, parse_params(definition, pairs)
    except FileNotFoundError:
        raise UsageError(f"no such definition file: {path}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except DefinitionError as error:
        raise UsageError(f"{path}: {error}") from None


def _workers(specs: list[str], path: Path) -> list[Worker]:
    """The workers to run here; a spec that names none (no such module, attribute, Worker) is exit 2."""
    try:
        return load_workers(specs, path)
    except (ImportError, AttributeError, TypeError, ValueError, OSError, SyntaxError) as error:
        named = ", ".join(specs) or str(path.parent / "workers.py")
        raise UsageError(f"cannot load worker {named}: {error}") from None


async def _run(args: argparse.Namespace, definition: WorkflowDefinition, parameters: dict[str, Any],
               workers: list[Worker], out: TextIO, *, over_amqp: bool) -> int:
    settings = args.settings
    if over_amqp:
        await probe_broker(settings.amqp_url)
    engine = await bootstrap.open_store(settings)
    try:
        # In-process, this process keeps the views (a later `stepflow show` finds them); over
        # RabbitMQ that is the job of the `stepflow serve` beside it.
        runtime = bootstrap.build_runtime(settings, engine, workers, embedded=not over_amqp,
                                          projections=not over_amqp)
        return await _follow(args, runtime, definition, parameters, out, over_amqp=over_amqp)
    finally:
        engine.close()


async def _follow(args: argparse.Namespace, runtime: Runtime, definition: WorkflowDefinition,
                  parameters: dict[str, Any], out: TextIO, *, over_amqp: bool) -> int:
    async with caught_signals() as signals:
        try:
            with quiet_broker_logs():
                await runtime.open()
        except (OSError, aiormq.exceptions.AMQPError) as error:  # the broker went since the probe
            url = args.settings.amqp_url
            raise Unavailable(f"cannot reach RabbitMQ at {redact_url(url)}: {redact_text(str(error), url)}") from None
        try:
            if signals.signum is not None:  # Ctrl-C while starting up: nothing was started
                say("interrupted: no workflow started")
                return EXIT_INTERRUPTED
            return await _start_and_follow(args, runtime, definition, parameters, out, signals, over_amqp)
        finally:
            await runtime.close()


async def _start_and_follow(args: argparse.Namespace, runtime: Runtime, definition: WorkflowDefinition,
                            parameters: dict[str, Any], out: TextIO, signals: Signals, over_amqp: bool) -> int:
    view = LiveView(out, live=not args.quiet)
    try:
        workflow_id = await runtime.start(definition, parameters, labels=args.label,
                                          actor=default_actor(args.settings))
    except (DefinitionError, Rejected) as error:
        raise UsageError(str(error)) from None
    view.say(f"workflow {workflow_id} started ({definition.identifier} {definition.version})\n")
    state = await until_end(runtime, workflow_id, timeout=args.timeout, signals=signals, on_change=view.update)
    if state is None:
        store_flag = f" --store {redact_url(args.store)}" if getattr(args, "store", None) else ""
        return await let_go(runtime, workflow_id, signum=signals.signum, timeout=args.timeout,
                            detach=args.detach_on_exit, view=view, over_amqp=over_amqp, store_flag=store_flag)
    view.final(state)
    if state.status == "completed":
        return EXIT_OK
    say(f"workflow {workflow_id} ended {state.status}: {state.reason}")
    return EXIT_FAILED
