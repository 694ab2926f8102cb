"""Regenerate the generated parts of docs/protocol.md from the code.

    python docs/gen_protocol.py          # rewrite the blocks in place
    python docs/gen_protocol.py --check  # exit 1 if the doc is out of date (a test runs this)

Two blocks are generated, between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`:
`names` (every exchange and queue, from `Topology`, with its declared arguments) and `schemas`
(the JSON Schema of every message, from the msgspec Structs of `stepflow.adapters.protocol`).
The prose around them is written by hand.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import msgspec

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.topology import JOB_DELAY_MS, MAX_PRIORITY, RESPONSE_DELAY_MS, Topology

DOC = Path(__file__).resolve().parent / "protocol.md"

MESSAGES: list[tuple[type[msgspec.Struct], str, str, str]] = [
    # (Struct, exchange / routing key, producer, consumer)
    (p.JobOrder, "`job_submit`, key = job type (via `stepflow_job_submit_delayed` when delayed)", "backend (outbox)",
     "workers of that type; the backend when unroutable (`job_queue_not_found`)"),
    (p.JobProgression, "`job_response`, key `job_progression`", "worker (`ctx.progress`)", "backend"),
    (p.JobResult, "`job_response`, keys `job_completed`, `job_error`, `job_stopped`", "worker", "backend"),
    (p.WorkerDiscovery, "`worker_response`, key `worker_discovery`", "worker (start, heartbeat, exit)",
     "backend"),
    (p.WorkerStatus, "`worker_response`, key `worker_status`", "worker (answer to `status`)", "backend"),
    (p.DirectOrder, "`direct_messaging`, matched on headers", "backend (outbox, operators)",
     "the worker instance(s) whose direct queue matches"),
]


def names_block() -> str:
    t = Topology()
    rows = [
        ("exchange", t.job_submit, "topic, durable", f"`alternate-exchange={t.job_queue_not_found}`"),
        ("exchange", t.job_delayed, "fanout, durable", ""),
        ("exchange", t.job_response, "topic, durable", f"`alternate-exchange={t.job_response_not_found}`"),
        ("exchange", t.job_response_delayed, "fanout, durable", ""),
        ("exchange", t.worker_response, "topic, durable", f"`alternate-exchange={t.worker_response_not_found}`"),
        ("exchange", t.direct_messaging, "headers, durable", f"`alternate-exchange={t.direct_messaging_not_found}`"),
        *[("exchange", name, "fanout, durable", "an alternate exchange: what nothing else routed")
          for name in (t.job_queue_not_found, t.job_response_not_found, t.worker_response_not_found,
                       t.direct_messaging_not_found)],
        ("exchange", t.job_submit_delayed, "fanout, durable", "stepflow's: delayed orders"),
        ("queue", "`<job type>`", "durable",
         (f"`x-max-priority={MAX_PRIORITY}`, `x-dead-letter-exchange={t.job_delayed}`, "
          f"`x-dead-letter-routing-key=<job type>`; bound to `{t.job_submit}` with key `<job type>`")),
        ("queue", t.job_delayed, "durable",
         (f"`x-message-ttl={JOB_DELAY_MS}`, `x-dead-letter-exchange=\"\"`; bound to `{t.job_delayed}` "
          "(key `*`): a rejected order goes back to its queue after 5 s")),
        ("queue", t.job_queue_not_found, "durable", f"bound to `{t.job_queue_not_found}`"),
        *[("queue", key, "durable", f"bound to `{t.job_response}` with key `{key}`")
          for key in p.RESPONSE_KEYS],
        ("queue", t.job_response_delayed, "durable",
         (f"`x-message-ttl={RESPONSE_DELAY_MS}`, `x-dead-letter-exchange=\"\"`; "
          f"bound to `{t.job_response_delayed}`")),
        ("queue", p.WORKER_DISCOVERY, "durable",
         (f"`x-dead-letter-exchange={t.job_response_delayed}`, `x-dead-letter-routing-key={p.WORKER_DISCOVERY}`; "
          f"bound to `{t.worker_response}` and to `{t.job_response}` with key `{p.WORKER_DISCOVERY}`")),
        *[("queue", key, "durable", f"bound to `{t.worker_response}` with key `{key}`")
          for key in p.WORKER_KEYS if key != p.WORKER_DISCOVERY],
        *[("queue", name, "durable", f"bound to `{name}`: kept for the operator")
          for name in (t.job_response_not_found, t.worker_response_not_found)],
        ("queue", "`direct_messaging_<instance_id>`", "exclusive, auto-delete",
         (f"stepflow's workers: bound to `{t.direct_messaging}` by `instance_id=<id>`, by `job_type=<type>` "
          "for each of its types, and by `x-match=any` on `broadcast=\"true\"` (a string, as the original "
          "SDK binds it) or `stepflow_broadcast=\"true\"` (stepflow's workers only)")),
        ("queue", t.job_submit_delayed, "durable",
         f"stepflow's: `x-dead-letter-exchange={t.job_submit}`; bound to `{t.job_submit_delayed}`"),
        ("queue", t.quarantine, "durable", "stepflow's; no binding: the backend and workers publish to it by name"),
    ]
    lines = ["| kind | name | declared | arguments, bindings |", "| --- | --- | --- | --- |"]
    for kind, name, declared, args in rows:
        shown = name if name.startswith("`") else f"`{name}`"
        lines.append(f"| {kind} | {shown} | {declared} | {args} |")
    return "\n".join(lines)


def _clean_descriptions(node: object) -> object:
    """Dedent docstrings ourselves: msgspec 0.23 started doing it, 0.18-0.22 kept the indent,
    and the doc must not change with the version pip happens to install."""
    if isinstance(node, dict):
        return {key: inspect.cleandoc(value) if key == "description" and isinstance(value, str)
                else _clean_descriptions(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_clean_descriptions(value) for value in node]
    return node


def schemas_block() -> str:
    parts = []
    for struct, route, producer, consumer in MESSAGES:
        schema = _clean_descriptions(msgspec.json.schema(struct))
        doc = (struct.__doc__ or "").strip().splitlines()[0]
        parts.append(
            f"### {struct.__name__}\n\n{doc}\n\n"
            f"- on: {route}\n- produced by: {producer}\n- consumed by: {consumer}\n\n"
            f"```json\n{json.dumps(schema, indent=2, sort_keys=True)}\n```"
        )
    return "\n\n".join(parts)


BLOCKS = {"names": names_block, "schemas": schemas_block}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no generated block {name!r}")
        block = make()
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{DOC} is out of date: run python docs/gen_protocol.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
