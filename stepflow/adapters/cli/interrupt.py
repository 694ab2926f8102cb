"""How `stepflow run` lets go of a workflow that has not ended: Ctrl-C (or SIGTERM), `--timeout`.

Ctrl-C used to end the process with exit 130 and no word while the workflow stayed `running`
in the store for ever (its in-process jobs gone with the process, or still served by workers
over RabbitMQ), and `--timeout` did the same with a message. Leaving a workflow behind is now
a choice: by default it is stopped, with a `WorkflowStopped` whose actor is `cli` and whose
reason says why, so `stepflow history` and `audit` tell what happened; `--detach-on-exit`
leaves it running and says how to follow and stop it. Either way one line on stderr says
which, and the exit code is 128 + the signal (130 for Ctrl-C) or 1 for the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from uuid import UUID

from stepflow.adapters.cli.errors import EXIT_FAILED, say
from stepflow.adapters.cli.view import LiveView
from stepflow.adapters.runtime import Runtime, StateListener
from stepflow.engine import commands as cmd
from stepflow.engine.state import WorkflowState
from stepflow.engine.workflow import Rejected

ACTOR = "cli"  # who stops a workflow when its `stepflow run` is interrupted or times out
SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Signals:
    """The first SIGINT/SIGTERM caught while a workflow is followed (None: none yet)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.caught = asyncio.Event()


@contextlib.asynccontextmanager
async def caught_signals() -> AsyncIterator[Signals]:
    """Catch SIGINT and SIGTERM for the life of the block: the first is recorded (the command
    then stops or detaches the workflow); a second one cancels the command's task, for the
    impatient, and `run` exits without waiting for the stop to be recorded."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals = Signals()

    def on_signal(signum: int) -> None:
        if signals.signum is not None and task is not None:
            task.cancel()
            return
        signals.signum = signum
        signals.caught.set()

    for sig in SIGNAL_NAMES:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield signals
    finally:
        for sig in SIGNAL_NAMES:
            loop.remove_signal_handler(sig)


async def until_end(runtime: Runtime, workflow_id: UUID, *, timeout: float | None, signals: Signals,
                    on_change: StateListener) -> WorkflowState | None:
    """The workflow's final state, or None when a signal or the timeout came first."""
    follow = asyncio.create_task(runtime.wait(workflow_id, on_change=on_change))
    signalled = asyncio.create_task(signals.caught.wait())
    try:
        await asyncio.wait({follow, signalled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        if not follow.done():
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
    return follow.result() if not follow.cancelled() else None


async def let_go(runtime: Runtime, workflow_id: UUID, *, signum: int | None, timeout: float | None,
                 detach: bool, view: LiveView, over_amqp: bool, store_flag: str = "") -> int:
    """Stop the workflow (or, with `detach`, leave it running and say how to handle it); one
    line on stderr; the exit code: 128 + the signal, or 1 after the timeout. `store_flag`
    (` --store URL`, or empty) completes the commands it suggests."""
    if signum is not None:
        why, code = f"interrupted ({SIGNAL_NAMES.get(signum, signum)})", 128 + signum
    else:
        why, code = f"still running after {timeout:g}s (--timeout)", EXIT_FAILED
    show, stop = f"`stepflow show {workflow_id}{store_flag}`", f"`stepflow stop {workflow_id}{store_flag}`"
    if detach:
        how = (f"its orders and answers wait in RabbitMQ for a `stepflow serve` on this store; {show} "
               f"follows it, {stop} stops it" if over_amqp else
               f"its jobs ran in this process and ended with it; {stop} stops it")
        say(f"{why}: workflow {workflow_id} left running (--detach-on-exit); {how}")
        return code
    try:
        await runtime.backend.command(cmd.StopWorkflow(workflow_id=workflow_id, actor=ACTOR,
                                                       reason=f"stopped by stepflow run: {why}"))
    except Rejected:  # it ended in the meantime: say how
        state = await runtime.state(workflow_id)
        view.final(state)
        say(f"{why}, but workflow {workflow_id} had ended: {state.status}")
        return code
    await runtime.backend.flush_outbox()  # its running jobs' stop orders reach the workers now
    view.final(await runtime.state(workflow_id))
    say(f"{why}: stopped workflow {workflow_id} (`stepflow history {workflow_id}{store_flag}` shows it)")
    return code
