"""Read commands over the event log itself: history, replay (and its determinism check), audit.

These never need the views caught up (except `replay`, which compares the replayed view
with the stored one), so `history` and `audit` read the log only.

Exit codes (see `stepflow.adapters.cli`): 0 ok; 1 `replay` found the read model and the
aggregate disagree, or `replay --check` found a non-deterministic decision; 2 bad usage,
unknown or ambiguous id; 4 store unreachable.
"""

from __future__ import annotations

import argparse
import sys

import msgspec

from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK
from stepflow.adapters.cli.errors import say
from stepflow.adapters.cli.formatting import emit_json, parse_time, render_detail, table, when
from stepflow.adapters.cli.session import Session, UsageError, read_command
from stepflow.projections.history import AUDIT_KINDS, AuditEntry, audit, records, timeline
from stepflow.projections.replay import ReplayError, check_determinism, replay


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = read_command(sub, "history", "the event timeline of a workflow", cmd_history, views=False, description=(
        "The event timeline of a workflow, from the log: each event with its version, time, step, job, "
        "attempt, causing message and actor. --json: one object per event with all of its fields (`data`)."))
    p.add_argument("workflow_id", help="a workflow id, or a unique prefix of one")

    p = read_command(sub, "replay", "a workflow as it was at a version or time; or the determinism check",
                     cmd_replay, description=(
                         "Rebuild a workflow as it was after its first N events (--at) or at a time (--until), "
                         "and compare the aggregate with the read model (exit 1 if they differ); or, with "
                         "--check, re-decide stored workflows and report decisions that would now differ "
                         "(exit 1 if any). --json: one object."))
    p.add_argument("workflow_id", nargs="*", help="one id (or, with --check, ids to check; default all)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--at", type=int, metavar="N", help="after its first N events")
    group.add_argument("--until", type=parse_time, metavar="TIME", help="as it was at that time")
    group.add_argument("--check", action="store_true",
                       help="re-decide every stored workflow and report decisions that differ")

    p = read_command(sub, "audit", "export the event log with who and what caused each event", cmd_audit,
                     views=False, description=(
                         "Export the event log in the order it was stored, with who (actor) and what message "
                         "(cause) caused each event, filtered by time, actor, workflow or kind (quarantined, "
                         "late, suspect, refused). --after resumes an export. --json: one object per event."))
    p.add_argument("--since", type=parse_time, help="events at or after (ISO 8601 or 2h, 7d...)")
    p.add_argument("--until", type=parse_time, help="events before")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="resume after this notification id")
    p.add_argument("--actor", help="only events issued by this actor")
    p.add_argument("--workflow", help="only this workflow")
    p.add_argument("--kind", choices=sorted(AUDIT_KINDS),
                   help="only inbound messages quarantined (with their kind and reason), late answers, "
                        "crash-loop suspects, or refused actions")


def cmd_history(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        workflow_id = s.workflow_id(args.workflow_id)
        events = s.engine.history(workflow_id)
    if not events:
        raise UsageError(f"unknown workflow {args.workflow_id}")
    if args.json:
        for record in records(events):
            emit_json(record)
        return EXIT_OK
    entries = timeline(events)
    table(((e.version, when(e.time, precise=True), e.event, e.step_id, (e.job_id or "")[:8], e.attempt,
            e.cause, e.actor, e.detail) for e in entries),
          ("V", "TIME", "EVENT", "STEP", "JOB", "TRY", "CAUSE", "ACTOR", "DETAIL"))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        if args.check:
            ids = [s.workflow_id(text) for text in args.workflow_id] or None
            report = check_determinism(s.engine, ids)
            if args.json:  # one object: the verdict, the counts and every divergence
                emit_json({"ok": report.ok, **msgspec.to_builtins(report)})
                return EXIT_OK if report.ok else EXIT_FAILED
            for divergence in report.divergences:
                print(f"{divergence.workflow_id} after v{divergence.version} {divergence.fact}: "
                      f"{divergence.message}")
            print(f"checked {report.workflows} workflow(s), {report.events} events: "
                  f"{len(report.divergences)} divergence(s)", file=sys.stderr)
            return EXIT_OK if report.ok else EXIT_FAILED
        if len(args.workflow_id) != 1:
            raise UsageError("replay takes one workflow id (or --check)")
        try:
            result = replay(s.engine, s.workflow_id(args.workflow_id[0]), at=args.at, until=args.until)
        except ReplayError as error:
            raise UsageError(str(error)) from None
    if args.json:
        emit_json({"version": result.version, "versions": result.versions, "time": result.time,
                   "view": result.view, "differences": result.differences})
    else:
        print(f"replayed to version {result.version} of {result.versions} ({when(result.time, precise=True)})")
        render_detail(result.view, sys.stdout)
        for difference in result.differences:
            say(f"replay difference: {difference}")
    return EXIT_FAILED if result.differences else EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        workflow = s.workflow_id(args.workflow) if args.workflow else None
        entries = audit(s.engine, since=args.since, until=args.until, after=args.after, actor=args.actor,
                        workflow_id=workflow, kinds=AUDIT_KINDS[args.kind] if args.kind else ())
        if args.json:
            for entry in entries:
                emit_json(entry)
            return EXIT_OK
        if args.kind:
            table(((e.notification_id, when(e.time, precise=True), e.event, e.cause, _what(e)) for e in entries),
                  ("ID", "TIME", "EVENT", "MESSAGE", "WHAT"))
            return EXIT_OK
        table(((e.notification_id, when(e.time, precise=True), e.workflow_id[:8], e.version, e.event,
                e.actor, e.cause) for e in entries),
              ("ID", "TIME", "WORKFLOW", "V", "EVENT", "ACTOR", "CAUSE"))
    return EXIT_OK


def _what(entry: AuditEntry) -> str:
    data = entry.data
    if entry.event == "MessageQuarantined":
        return f"{data.get('kind', 'malformed')} on {data.get('queue')}: {data.get('reason')}"[:160]
    if entry.event == "LateAnswerReceived":
        return (f"{data.get('answer')} for job {str(data.get('job_id'))[:8]} of workflow {entry.workflow_id[:8]}, "
                f"which was {data.get('job_status')}")
    if entry.event == "ActionRefused":
        return f"{entry.actor} {data.get('action')}: {data.get('reason')}"[:160]
    return f"{data.get('queue', '')}"
