"""Operator commands: stop, pause, resume, retry JOB_ID, delete.

Each records who issued it (`--actor`, default `$STEPFLOW_ACTOR` or the OS user) in the
event it causes, so `stepflow audit` can say who did what. A workflow id may be a unique
prefix; `retry` takes a job id (or prefix), as printed by `stepflow show`, and finds its
workflow in the job view. After the command the views are brought up to date, so a
following `stepflow show` reflects it.

Exit codes: 0 recorded (or already so: pausing a paused workflow records nothing and
succeeds); 2 unknown or ambiguous id; 3 refused by the workflow (e.g. retrying a completed
job), with the reason on stderr; 4 store unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from uuid import UUID

from stepflow.adapters.cli import EXIT_OK, EXIT_REFUSED, common, default_actor
from stepflow.adapters.cli.formatting import emit_json
from stepflow.adapters.cli.options import add_settings
from stepflow.adapters.cli.session import Session, UsageError, guarded, sentence
from stepflow.engine import commands as cmd
from stepflow.engine.workflow import Rejected
from stepflow.projections import queries

Build = Callable[[argparse.Namespace, UUID, str], cmd.Command]

_WORKFLOW_COMMANDS: dict[str, tuple[str, str, Build]] = {
    "stop": ("stop a workflow and its running jobs", "stopped",
             lambda a, w, actor: cmd.StopWorkflow(workflow_id=w, reason=a.reason, actor=actor)),
    "pause": ("pause a workflow: no new jobs until resumed", "paused",
              lambda a, w, actor: cmd.PauseWorkflow(workflow_id=w, actor=actor)),
    "resume": ("resume a paused workflow", "resumed",
               lambda a, w, actor: cmd.ResumeWorkflow(workflow_id=w, actor=actor)),
    "delete": ("delete a workflow (kept in the log, hidden from listings)", "deleted",
               lambda a, w, actor: cmd.DeleteWorkflow(workflow_id=w, actor=actor)),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, (help, done, build) in _WORKFLOW_COMMANDS.items():
        parser = _parser(sub, name, help)
        parser.add_argument("workflow_id", help="a workflow id, or a unique prefix of one")
        if name == "stop":
            parser.add_argument("--reason", default="", help="recorded with the stop")
        parser.set_defaults(func=guarded(_workflow_command(build, done)))
    parser = _parser(sub, "retry", "run an errored, stopped or unroutable job again")
    parser.add_argument("job_id", help="a job id, or a unique prefix of one (as `show` prints)")
    parser.set_defaults(func=guarded(retry_command))


def _parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = common(sub.add_parser(name, help=help, description=sentence(help)))
    add_settings(parser, "actor", helps={"actor": "who issues it ($STEPFLOW_ACTOR; default: the OS user)"})
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object (one line)")
    return parser


def _workflow_command(build: Build, done: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with Session(args) as s:
            workflow_id = s.workflow_id(args.workflow_id)
            if not s.exists(workflow_id):
                raise UsageError(f"unknown workflow {workflow_id}")
            return _issue(s, args, build(args, workflow_id, default_actor(args.settings)), done)

    return run


def retry_command(args: argparse.Namespace) -> int:
    with Session(args) as s:
        job_id = s.job_id(args.job_id)
        job = queries.get_job(s.store, job_id)
        if job is None:
            raise UsageError(f"unknown job {job_id}")
        command = cmd.RetryJob(workflow_id=UUID(job.workflow_id), job_id=job_id,
                               actor=default_actor(args.settings))
        return _issue(s, args, command, "retried job", subject=job_id)


def _issue(s: Session, args: argparse.Namespace, command: cmd.Command, done: str,
           subject: str | None = None) -> int:
    subject = subject or str(command.workflow_id)
    try:
        s.engine.command(command)
    except Rejected as error:
        print(f"stepflow: refused: {error}", file=sys.stderr)
        if args.json:
            emit_json({"ok": False, "command": type(command).__name__, "subject": subject, "reason": str(error)})
        return EXIT_REFUSED
    position = s.engine.max_notification_id()
    s.runner.run_once()
    if args.json:
        emit_json({"ok": True, "command": type(command).__name__, "subject": subject,
                   "workflow_id": str(command.workflow_id), "actor": command.actor, "notification_id": position})
    else:
        print(f"{done} {subject}" if subject != str(command.workflow_id) else f"{done} workflow {subject}")
    return EXIT_OK
