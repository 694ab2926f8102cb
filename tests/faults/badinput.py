"""Bad input for the fuzz tests, each message with the fate it must meet, and the ledger that
checks what was observed against those fates.

Backend side (`Generator.one`): a message for one of the backend's queues and where it must
end (see docs/protocol.md and `Backend.handle_batch`):

- QUARANTINE: copied to `stepflow_quarantine` with `x-quarantine-reason` "<kind>: <reason>"
  and recorded as `MessageQuarantined` (kind malformed, unknown or conflicting_duplicate; one
  event per message key + body digest);
- DUPLICATE: the same id and body as a message already applied, counted;
- LATE: a well-formed answer for a job no longer running, recorded as `LateAnswerReceived`;
- LATE_PROGRESS: a progression for a job no longer running, counted.

Worker side (`Generator.one_order`): a job order for a job-type queue and what the worker does
with it (see `stepflow.sdk.orders.read_order`): ANSWERED (`job_error` of kind
invalid_order, when its job and workflow ids can be told from its message id and headers;
the answer then meets a backend fate of its own), DEAD_LETTERED (rejected without requeue,
so RabbitMQ moves it to the quarantine queue), or RUN (a well-formed forged order: the
handler runs, and the backend refuses the completion).

Families: invalid JSON, invalid UTF-8 (in bodies, and in message ids, content types and
header names), lone surrogates, NUL bytes, wrong types, missing
fields, bad workflow ids, wrong-typed headers, nesting up to 5,000 deep built as strings,
brackets inside strings, wide recursive values from a seeded builder, huge numbers, huge
strings, bodies at the size limit +-1 and over it, wrong content types, status mismatches,
unknown jobs and workflows, late answers and progressions, exact and conflicting duplicates,
one message id on several bodies, no message id, garbage on the worker queues.

`quiet` is the worker module of the real traffic (`stepflow worker tests/faults/badinput.py:quiet`):
it answers at once and never reports progress, so the real traffic adds nothing to the
backend's duplicate and late-progress counters and the fuzz's figures stay exact.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from uuid import UUID

from stepflow.adapters import protocol as p
from stepflow.sdk import JobContext, Worker

# backend fates
QUARANTINE, DUPLICATE, LATE, LATE_PROGRESS = "quarantine", "duplicate", "late", "late_progress"
# worker fates of a job order
ANSWERED, DEAD_LETTERED, RUN = "answered", "dead_lettered", "run"
# quarantine kinds
MALFORMED, UNKNOWN, CONFLICT = "malformed", "unknown", "conflicting_duplicate"

ORDER_TYPES = ("fault_a", "fault_b")  # the job types the quiet workers serve
WORKER_MAX_BODY = p.MAX_BODY_BYTES  # the worker SDK's own limit (STEPFLOW_MAX_BODY is serve's)
WORKER_MAX_ID = 200  # bytes; see stepflow.sdk.orders.MAX_JOB_ID_BYTES
DEEPEST = 5_000


class RawText(str):
    """A header value sent as these exact bytes in an AMQP long string: pamqp encodes a str
    with `value.encode("utf-8")`, so invalid UTF-8 reaches the broker as is. A consumer gets
    it as bytes (pamqp cannot decode it), which the adapters decode with replacement."""

    raw: bytes

    def __new__(cls, raw: bytes) -> Self:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


class NoId(str):
    """An empty message id aiormq leaves alone (it gives a random id to a falsy one): the
    consumer sees no message id at all."""

    def __bool__(self) -> bool:
        return True


def as_read(value: Any) -> Any:
    """A RawText as the adapters read it: not UTF-8, so decoded with replacement characters
    (short strings and header names by stepflow's tolerant pamqp decoding; long strings come
    as bytes, which the adapters decode so)."""
    return value.raw.decode("utf-8", "replace") if isinstance(value, RawText) else value


def delivered_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers as a consumer of RabbitMQ sees them, for the in-process broker."""
    return {as_read(k): as_read(v) for k, v in headers.items()}


@dataclass
class Bad:
    category: str
    key: str  # routing key: a backend queue's protocol name, or a job type for an order
    body: bytes
    message_id: str | None  # None: sent with no message id
    expect: str = QUARANTINE
    kind: str = MALFORMED  # QUARANTINE: the kind
    reason: str = ""  # QUARANTINE: a fragment of the reason (case-insensitive)
    content_type: str | None = p.CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)
    order: bool = False
    # an order the worker answers (ANSWERED, RUN): the answer's message id and its backend fate
    answer_id: str | None = None
    answer_expect: str = ""
    answer_kind: str = ""
    answer_reason: str = ""
    worker_reason: str = ""  # ANSWERED: a fragment of the worker's invalid_order text

    @property
    def exchange(self) -> str:
        if self.order:
            return p.JOB_SUBMIT
        if self.key in p.WORKER_KEYS:
            return p.WORKER_RESPONSE
        if self.key == p.JOB_QUEUE_NOT_FOUND:
            return p.JOB_QUEUE_NOT_FOUND
        return p.JOB_RESPONSE

    @property
    def seen_id(self) -> str | None:
        """The message id as a consumer reads it."""
        return as_read(self.message_id)

    @property
    def message_key(self) -> str:
        """The backend's idempotency key: the message id, or a digest of queue and body."""
        if self.message_id:
            return as_read(self.message_id)
        return "sha256:" + hashlib.sha256(self.key.encode() + b"\0" + self.body).hexdigest()[:32]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:32]

    @property
    def cause(self) -> str:
        """The cause of the event a LATE message is recorded as."""
        return f"unroutable:{self.message_key}" if self.key == p.JOB_QUEUE_NOT_FOUND else self.message_key


DONE_TYPE = "fuzz_done"  # no worker serves it: the test answers the done workflow's jobs itself
HELD_TYPE = "fuzz_held"  # no worker serves it: the held workflow runs until the test answers it


def done_definition(jobs: int) -> Any:
    from stepflow.engine.definitions import build_definition

    return build_definition({
        "identifier": "fuzz-done",
        "parameters": [{"id": "items", "type": "array_of_strings", "default": [f"i{n}" for n in range(jobs)]}],
        "steps": [{"id": "only", "job_type": DONE_TYPE, "fan_out": "{workflow.items}"}],
    })


def held_definition() -> Any:
    from stepflow.engine.definitions import build_definition

    return build_definition({"identifier": "fuzz-held", "steps": [{"id": "only", "job_type": HELD_TYPE}]})


def answers(workflow_id: str, job_ids: Iterable[str]) -> list[tuple[str, str, bytes]]:
    """(queue, message id, body) of a progression and a completion per job, as a worker sends them."""
    out = []
    for job in job_ids:
        out.append((p.JOB_PROGRESSION, f"{job}:progression:1",
                    dumps({"job_id": job, "progression": 50, "message": "half", "workflow_id": workflow_id})))
        out.append((p.JOB_COMPLETED, f"{job}:completed",
                    dumps(result(job, "completed", workflow_id, parameters=[{"id": "out", "value": job[:8]}],
                                 execution_duration=0.01, instance_id="fuzz-test"))))
    return out


@dataclass
class Targets:
    """Real ids the generators aim at."""

    live_workflow: str  # a running workflow (its one job is never answered by the fuzz)
    done_workflow: str  # a completed workflow whose answers the test sent itself
    done_jobs: list[str]  # its jobs, all completed
    applied: dict[str, tuple[str, bytes]]  # message id -> (queue, body) applied to done_workflow
    order_jobs: list[str] = field(default_factory=list)  # done jobs left for late order answers


def result(job_id: Any, status: str, workflow_id: Any, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": job_id, "status": status, "parameters": [], "workflow_id": workflow_id}
    body.update(extra)
    return body


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def deep(depth: int, style: str) -> bytes:
    """A body nested `depth` deep, built as a string (cheap at 5,000)."""
    if style == "list":
        return b"[" * depth + b"]" * depth
    if style == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if style == "mixed":  # two levels a step: one more rather than one less
        return b'{"a":[' * ((depth + 1) // 2) + b"0" + b"]}" * ((depth + 1) // 2)
    if style == "unclosed":
        return b'[{"job_id":' * ((depth + 1) // 2)
    raise ValueError(style)


SCALARS: list[Any] = [None, True, False, 0, -1, 10**30, -(10**30), 2**63, -(2**63) - 1, 1.5, -0.0, 1e308,
                      "", "x", "NaN", "Infinity", "-0", "\u0000", "a\u0000b", "\u00e9t\u00e9", "\U0001f600",
                      "[[[[", "{{{", '"\\', "' OR 1=1 --"]


def wide(rng: random.Random, depth: int, width: int) -> Any:
    """A shallow-but-wide random JSON value (seeded; no NaN, no lone surrogates)."""
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice(SCALARS)
    n = rng.randint(0, width)
    if rng.random() < 0.5:
        return [wide(rng, depth - 1, width) for _ in range(n)]
    return {f"k{rng.randrange(10**6)}": wide(rng, depth - 1, width) for _ in range(n)}


def wide_text(rng: random.Random, limit: int) -> bytes:
    while True:
        text = dumps(wide(rng, rng.randint(2, 5), rng.randint(2, 8)))
        if len(text) <= limit:
            return text


class Generator:
    def __init__(self, rng: random.Random, targets: Targets, max_body: int) -> None:
        self.rng = rng
        self.t = targets
        self.max_body = max_body
        self.n = 0
        self.kinds = [getattr(self, name) for name in sorted(dir(self)) if name.startswith("g_")]
        self.order_kinds = [getattr(self, name) for name in sorted(dir(self)) if name.startswith("o_")]

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)  # the seed gives the same again

    def _id(self, category: str) -> str:
        self.n += 1
        return f"fuzz-{category}-{self.n}-{self._uuid().hex[:8]}"

    def one(self) -> list[Bad]:
        return self.rng.choice(self.kinds)()

    def one_order(self) -> list[Bad]:
        return self.rng.choice(self.order_kinds)()

    # --- backend: helpers ----------------------------------------------------------------

    @property
    def live(self) -> str:
        return self.t.live_workflow

    @property
    def done(self) -> str:
        return self.t.done_workflow

    def _done_job(self) -> str:
        return self.rng.choice(self.t.done_jobs)

    def _late(self, category: str, body: dict[str, Any] | bytes, key: str = p.JOB_COMPLETED, *,
              message_id: str | None = "", **extra: Any) -> Bad:
        raw = body if isinstance(body, bytes) else dumps(body)
        mid = self._id(category) if message_id == "" else message_id
        return Bad(category, key, raw, mid, expect=LATE, **extra)

    def _malformed(self, category: str, key: str, body: bytes, reason: str, **extra: Any) -> Bad:
        return Bad(category, key, body, extra.pop("message_id", None) or self._id(category), reason=reason, **extra)

    def _late_result(self, **extra: Any) -> dict[str, Any]:
        return result(self._done_job(), "completed", self.done, **extra)

    # --- backend: the families -------------------------------------------------------------

    def g_invalid_json(self) -> list[Bad]:
        body, reason = self.rng.choice([
            (b"{oops", "malformed"), (b"", "truncated"), (b'{"job_id": "x", ', "truncated"), (b"[1, 2", "invalid"),
            (b"nul", "malformed"), (b'{"job_id": "a", "status": "completed", "parameters": []} x', "trailing"),
            (b"{'job_id': 'single quotes'}", "malformed"), (b'{"job_id": "a",}', "malformed"),
            (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "malformed"),  # a gzip header
        ])
        key = self.rng.choice([*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND])
        if reason == "trailing":  # elsewhere the object itself fails first
            key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED])
        return [self._malformed("invalid_json", key, body, reason)]

    def g_invalid_utf8(self) -> list[Bad]:
        bad = self.rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"a\x80b"])
        body = b'{"job_id": "' + bad + b'", "status": "completed", "workflow_id": "' + self.done.encode() + b'"}'
        return [self._malformed("invalid_utf8", p.JOB_COMPLETED, body, "Invalid UTF-8")]

    def g_invalid_utf8_properties(self) -> list[Bad]:
        """Bytes that are not UTF-8 in a message id, a content type, a header name: read with
        replacement characters (they once made the frame unreadable and closed the connection)."""
        bad = self.rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc3\x28", b"\x80\x80"])
        roll = self.rng.randrange(3)
        if roll == 0:
            return [self._late("invalid_utf8_properties", self._late_result(),
                               message_id=RawText(self._id("rawid").encode() + bad))]
        if roll == 1:
            return [self._malformed("invalid_utf8_properties", p.JOB_COMPLETED, dumps(self._late_result()),
                                    "content type", content_type=RawText(b"application/json" + bad))]
        return [self._late("invalid_utf8_properties", self._late_result(),
                           headers={RawText(b"x-" + bad): "name not UTF-8", "x-value": RawText(bad)})]

    def g_lone_surrogate(self) -> list[Bad]:
        escape = self.rng.choice([r"\ud800", r"\udfff", r"\ud800\u0041", r"\udc00\ud800"])
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_PROGRESSION, p.WORKER_DISCOVERY])
        body = ('{"job_id": "' + escape + '", "status": "completed", "progression": 1, "instance_id": "'
                + escape + '"}').encode()
        # a field the decoder skips fails with another text than one it reads
        return [self._malformed("lone_surrogate", key, body,
                                "surrogate" if key != p.WORKER_DISCOVERY else "JSON is malformed")]

    def g_nul_bytes(self) -> list[Bad]:
        roll = self.rng.randrange(4)
        if roll == 0:  # raw NUL outside strings
            body = self.rng.choice([b"\x00", b"{\x00}", b'{"job_id": "a", "status": "error"}\x00', b"\x00" * 64])
            return [self._malformed("nul_bytes", p.JOB_COMPLETED, body, "malformed")]
        if roll == 1:  # an escaped NUL in a job id: decodes, and names no job
            body = dumps(result(f"no\u0000job-{self._uuid().hex[:6]}", "completed", self.live))
            return [Bad("nul_bytes", p.JOB_COMPLETED, body, self._id("nul"), kind=UNKNOWN, reason="has no job")]
        if roll == 2:  # NUL in the outputs of a late answer: kept as data
            return [self._late("nul_bytes", self._late_result(parameters=[{"id": "a\u0000", "value": "\u0000"}]))]
        # NUL in a message id (AMQP short strings are counted, not terminated)
        return [self._late("nul_bytes", self._late_result(), message_id=f"fuzz-nul\x00id-{self._uuid().hex}")]

    def g_wrong_types(self) -> list[Bad]:
        wf = self.live
        key, body = self.rng.choice([
            (p.JOB_COMPLETED, {"job_id": 12.5, "status": "completed", "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": -3, "status": "completed"}),
            (p.JOB_COMPLETED, {"job_id": 2**64, "status": "completed"}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "parameters": "not a list", "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "parameters": [{"id": 5}], "workflow_id": wf}),
            (p.JOB_ERROR, {"job_id": ["j"], "status": "error", "workflow_id": wf}),
            (p.JOB_PROGRESSION, {"job_id": "j", "progression": "half", "workflow_id": wf}),
            (p.JOB_PROGRESSION, {"job_id": "j", "progression": 50, "datetime": "yesterday", "workflow_id": wf}),
            (p.JOB_PROGRESSION, {"job_id": "j", "progression": True, "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "execution_duration": "slow", "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "workflow_id": 42}),
            (p.WORKER_DISCOVERY, {"instance_id": 7, "queue_name": None}),
            (p.WORKER_STATUS, {"type": "status", "job": 5, "worker": "busy"}),
            (p.JOB_QUEUE_NOT_FOUND, {"job_id": 1, "parameters": {}}),
            (p.JOB_COMPLETED, [1, 2, 3]),
            (p.JOB_COMPLETED, "a string"),
            (p.JOB_COMPLETED, None),
        ])
        return [self._malformed("wrong_types", key, dumps(body), "invalid")]

    def g_missing_fields(self) -> list[Bad]:
        key, body = self.rng.choice([
            (p.JOB_COMPLETED, {"status": "completed", "workflow_id": self.live}),
            (p.JOB_ERROR, {"job_id": "j"}),
            (p.JOB_PROGRESSION, {"job_id": "j"}),
            (p.JOB_STOPPED, {}),
            (p.WORKER_DISCOVERY, {}),
            (p.WORKER_STATUS, {"type": "status"}),
            (p.JOB_QUEUE_NOT_FOUND, {"parameters": []}),
        ])
        return [self._malformed("missing_fields", key, dumps(body), "missing required field")]

    def g_bad_workflow_id(self) -> list[Bad]:
        bad = self.rng.choice([None, "", "not-a-uuid", "'; DROP TABLE events; --", "0" * 40, "{" + self.done + "}x"])
        reason = "no workflow_id" if not bad else "is not a UUID"
        return [self._malformed("bad_workflow_id", p.JOB_COMPLETED, dumps(result(self._done_job(), "completed", bad)),
                                reason)]

    def g_header_types(self) -> list[Bad]:
        """workflow_id headers of every AMQP type. A truthy non-string is refused ("not a UUID",
        a byte array too: only a string or undecodable bytes are read); a falsy one is as good
        as none, and the body's workflow_id counts."""
        refused: list[Any] = [12345, -1, 10**18, 3.5, True, [self.done], [1, "a"], {"id": self.done},
                              {"nested": {"deeper": [1, 2]}}, bytearray(self.done.encode()), bytearray(b"\xff\xfe"),
                              RawText(b"\xff\xfe\xfd"), RawText(b"\xed\xa0\x80" + self.done.encode())]
        falsy: list[Any] = [0, [], {}, False, None, ""]
        if self.rng.random() < 0.7:
            value = self.rng.choice(refused)
            body = dumps(self._late_result())
            return [self._malformed("header_types", p.JOB_COMPLETED, body, "is not a UUID",
                                    headers={"workflow_id": value})]
        # the job_type header of an unroutable answer may be anything: it is only a label
        job_type = self.rng.choice([7, [1, 2], {"a": 1}, bytearray(b"\xff"), RawText(b"\xff"), "x" * 300])
        if self.rng.random() < 0.5:
            body = dumps({"job_id": self._done_job(), "parameters": [], "workflow_id": self.done})
            return [self._late("header_types", body, p.JOB_QUEUE_NOT_FOUND,
                               headers={"workflow_id": self.rng.choice(falsy), "job_type": job_type})]
        return [self._late("header_types", self._late_result(), headers={"workflow_id": self.rng.choice(falsy)})]

    def g_deep_nesting(self) -> list[Bad]:
        """Bodies nested up to 5,000 deep (cut to the body limit): refused before decoding."""
        style = self.rng.choice(["list", "dict", "mixed", "unclosed"])
        per_level = {"list": 2, "dict": 6, "mixed": 6, "unclosed": 6}[style]
        most = min(DEEPEST, (self.max_body - 8) // per_level)
        depth = self.rng.choice([65, 66, 100, 1_000, most, self.rng.randint(65, most)])
        key = self.rng.choice([*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND])
        return [self._malformed("deep_nesting", key, deep(depth, style), "nested deeper than 64")]

    def g_deep_edge(self) -> list[Bad]:
        """A late answer whose output is nested to exactly the limit (kept), or one deeper (refused)."""
        over = self.rng.random() < 0.5
        inner = 61 + over  # + the body object, the parameters list and the parameter object
        value = json.loads(deep(inner, "list"))
        body = dumps(self._late_result(parameters=[{"id": "deep", "value": value}]))
        if over:
            return [self._malformed("deep_edge", p.JOB_COMPLETED, body, "nested deeper than 64")]
        return [self._late("deep_edge", body)]

    def g_deep_in_strings(self) -> list[Bad]:
        """Brackets inside strings (after escaped quotes and backslashes too) are no nesting:
        the job id decodes, and names no job."""
        n = self.rng.randint(100, min(DEEPEST, self.max_body // 2))
        text = self.rng.choice(["[" * n, "{" * n, '\\"' + "[" * n, "\\" + "{" * n, '\\\\"' + "[" * n, "]}" * (n // 2)])
        body = dumps(result(text, "completed", self.live))
        return [Bad("deep_in_strings", p.JOB_COMPLETED, body, self._id("instr"), kind=UNKNOWN, reason="has no job")]

    def g_recursive_wide(self) -> list[Bad]:
        """Wide random recursive values: as a whole body (refused), or as a late answer's outputs (kept)."""
        if self.rng.random() < 0.5:
            key = self.rng.choice([*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND])
            body = wide_text(self.rng, self.max_body - 64)
            reason = "missing required field" if body.startswith(b"{") else "Expected `object`"
            return [self._malformed("recursive_wide", key, body, reason)]
        value = json.loads(wide_text(self.rng, self.max_body // 2))
        outputs = [{"id": f"o{i}", "value": v} for i, v in enumerate(value if isinstance(value, list) else [value])]
        return [self._late("recursive_wide", self._late_result(parameters=outputs))]

    def g_huge_numbers(self) -> list[Bad]:
        roll = self.rng.randrange(7)
        job = self._done_job()
        if roll == 0:  # a progression of 10**30 for a finished job: counted late
            body = dumps({"job_id": job, "progression": self.rng.choice([10**30, -(10**30), -0, 2**64]),
                          "workflow_id": self.done})
            return [Bad("huge_numbers", p.JOB_PROGRESSION, body, self._id("num"), expect=LATE_PROGRESS)]
        if roll == 1:  # 1e400 is out of a float's range
            body = b'{"job_id": "j", "status": "completed", "execution_duration": 1e400}'
            return [self._malformed("huge_numbers", p.JOB_COMPLETED, body, "out of range")]
        if roll == 2:  # NaN and Infinity are not JSON
            token = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"+1", b"01", b"1.", b".5"])
            body = b'{"job_id": "j", "status": "completed", "execution_duration": ' + token + b"}"
            return [self._malformed("huge_numbers", p.JOB_COMPLETED, body, "malformed")]
        if roll == 3:  # NaN-ish strings where a number belongs
            duration = self.rng.choice(["NaN", "-0", "1e400"])
            body = dumps(result(job, "completed", self.done, execution_duration=duration))
            return [self._malformed("huge_numbers", p.JOB_COMPLETED, body, "Expected `float | null`")]
        if roll == 4:
            body = dumps({"job_id": job, "progression": 1.5, "workflow_id": self.done})
            return [self._malformed("huge_numbers", p.JOB_PROGRESSION, body, "Expected `int`")]
        if roll == 5:  # huge integers as outputs, -0 and 1e30 as a duration: kept
            body = dumps(result(job, "completed", self.done, execution_duration=self.rng.choice([-0.0, 10**30, 1e308]),
                                parameters=[{"id": "n", "value": self.rng.choice([10**30, -(10**40), 2**64, -0])}]))
            return [self._late("huge_numbers", body)]
        body = dumps(result(job, "completed", self.done, parameters=[{"id": "n", "value": 1}])).replace(b"1}]",
                                                                                                     b"1e400}]")
        return [self._malformed("huge_numbers", p.JOB_COMPLETED, body, "out of range")]

    def g_huge_strings(self) -> list[Bad]:
        room = self.max_body - 200
        roll = self.rng.randrange(3)
        if roll == 0:  # a job id of many KiB
            body = dumps(result("j" * self.rng.randint(1_000, room), "completed", self.live))
            return [Bad("huge_strings", p.JOB_COMPLETED, body, self._id("str"), kind=UNKNOWN, reason="has no job")]
        if roll == 1:  # a long error text in a late answer
            body = dumps(result(self._done_job(), "error", self.done,
                                parameters=[{"id": "message", "value": "\u00fc" * (room // 7)}]))
            return [self._late("huge_strings", body, p.JOB_ERROR)]
        # the longest message id AMQP carries (255 bytes)
        mid = (self._id("longid") + "-" + "i" * 255)[:255]
        return [self._late("huge_strings", self._late_result(), message_id=mid)]

    def g_size_limit(self) -> list[Bad]:
        """A late answer padded to the limit - 1, the limit (kept), or the limit + 1 (refused undecoded)."""
        size = self.max_body + self.rng.choice([-1, 0, 1])
        body = dumps(self._late_result())
        body = body + b" " * (size - len(body))
        if size > self.max_body:
            return [self._malformed("size_limit", p.JOB_COMPLETED, body, "byte limit")]
        return [self._late("size_limit", body)]

    def g_over_limit(self) -> list[Bad]:
        size = self.max_body + self.rng.choice([2, self.rng.randint(2, 4096), self.max_body])
        body = b'{"job_id": "' + b"x" * size + b'"}'
        key = self.rng.choice([*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND])
        return [self._malformed("over_limit", key, body, "byte limit")]

    def g_wrong_content_type(self) -> list[Bad]:
        ctype = self.rng.choice(["text/plain", "application/xml", "application/x-python-pickle",
                                 "application/octet-stream", "json", "application/json5", " "])
        return [self._malformed("wrong_content_type", p.JOB_COMPLETED, dumps(self._late_result()), "content type",
                                content_type=ctype)]

    def g_status_mismatch(self) -> list[Bad]:
        # What the original SDK never sends; it does answer a stop on job_stopped with status
        # "completed", and a job that stopped itself on job_completed with status "stopped".
        key, status = self.rng.choice([(p.JOB_COMPLETED, "error"), (p.JOB_ERROR, "completed"),
                                       (p.JOB_ERROR, "stopped"), (p.JOB_COMPLETED, "paused")])
        return [self._malformed("status_mismatch", key, dumps(result(self._done_job(), status, self.done)), "status")]

    def g_unknown_job(self) -> list[Bad]:
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED, p.JOB_PROGRESSION, p.JOB_QUEUE_NOT_FOUND])
        wire = self.rng.random() < 0.5  # an integer id, as the original SDK sends, with no workflow id
        job: Any = self.rng.randrange(2**53) if wire else f"no-such-job-{self._uuid()}"
        workflow: Any = None if wire else self.rng.choice([self.live, self.done])
        if key == p.JOB_PROGRESSION:
            body: dict[str, Any] = {"job_id": job, "progression": 5, "datetime": "2024-01-01T00:00:00Z",
                                    "workflow_id": workflow}
        elif key == p.JOB_QUEUE_NOT_FOUND:
            body = {"job_id": job, "parameters": [], "workflow_id": workflow}
        else:
            body = result(job, key.removeprefix("job_"), workflow)
        reason = "no job has the wire id" if wire else "has no job"
        return [Bad("unknown_job", key, dumps(body), self._id("job"), kind=UNKNOWN, reason=reason)]

    def g_unknown_workflow(self) -> list[Bad]:
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED, p.JOB_PROGRESSION, p.JOB_QUEUE_NOT_FOUND])
        wf = str(self._uuid())
        if key == p.JOB_QUEUE_NOT_FOUND:
            body: dict[str, Any] = {"job_id": "j", "parameters": [], "workflow_id": wf}
        elif key == p.JOB_PROGRESSION:
            body = {"job_id": "j", "progression": 1, "workflow_id": wf}
        else:
            body = result("j", key.removeprefix("job_"), wf)
        return [Bad("unknown_workflow", key, dumps(body), self._id("wf"), kind=UNKNOWN, reason="unknown workflow")]

    def g_late_answer(self) -> list[Bad]:
        """A second answer with a new id for a completed job: completed, error, stopped, unroutable."""
        job = self._done_job()
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED, p.JOB_QUEUE_NOT_FOUND])
        if key == p.JOB_QUEUE_NOT_FOUND:
            body: dict[str, Any] = {"job_id": job, "parameters": [], "workflow_id": self.done}
            return [self._late("late_answer", body, key, headers={"job_type": "fuzz_gone"})]
        status = key.removeprefix("job_")
        body = result(job, status, self.done, parameters=[{"id": "message", "value": f"late {status}"}])
        headers = self.rng.choice([{}, {"workflow_id": self.done}, {"workflow_id": self.done, "job_type": "x"}])
        return [self._late("late_answer", body, key, headers=headers)]

    def g_late_redelivered(self) -> list[Bad]:
        """A late answer, then the same message again: one LateAnswerReceived, one duplicate."""
        first = self._late("late_redelivered", self._late_result())
        again = Bad("late_redelivered", first.key, first.body, first.message_id, expect=DUPLICATE)
        return [first, again]

    def g_late_progress(self) -> list[Bad]:
        body = {"job_id": self._done_job(), "progression": self.rng.randint(0, 100), "workflow_id": self.done,
                "message": "still going"}
        mid = self.rng.choice([self._id("lateprog"), None])  # without an id, the body's digest is the key
        return [Bad("late_progress", p.JOB_PROGRESSION, dumps(body), mid, expect=LATE_PROGRESS)]

    def g_exact_duplicate(self) -> list[Bad]:
        """A message the backend applied, again: byte for byte, or the same answer written
        otherwise (keys reordered, other whitespace) or re-run (another duration, worker, time)."""
        mid = self.rng.choice(sorted(self.t.applied))
        queue, body = self.t.applied[mid]
        variant = self.rng.randrange(3)
        if variant == 1:
            body = json.dumps(json.loads(body), sort_keys=True, indent=self.rng.choice([None, 1])).encode()
        elif variant == 2:
            again = json.loads(body)
            if queue == p.JOB_PROGRESSION:
                again.update(datetime="2031-01-01T00:00:00Z", docker_container_id=f"rerun-{self._uuid().hex[:6]}")
            else:
                again.update(execution_duration=self.rng.random() * 100, instance_id=f"rerun-{self._uuid().hex[:6]}")
            body = dumps(again)
        return [Bad("exact_duplicate", queue, body, mid, expect=DUPLICATE)]

    def g_conflicting_duplicate(self) -> list[Bad]:
        """An applied message id on another answer: no redelivery, a clash (or a forgery)."""
        mid = self.rng.choice(sorted(self.t.applied))
        queue, body = self.t.applied[mid]
        other = json.loads(body)
        if queue == p.JOB_PROGRESSION:
            if self.rng.random() < 0.5:
                other["progression"] = (other["progression"] + 1 + self.rng.randrange(50)) % 101
            else:
                other["message"] = "another message"
        elif self.rng.random() < 0.7:
            other["parameters"] = [{"id": "forged", "value": self._uuid().hex}]
        else:  # the id of an applied completion on an error
            queue = p.JOB_ERROR
            other.update(status="error", parameters=[{"id": "message", "value": "no, it failed"}])
        return [Bad("conflicting_duplicate", queue, dumps(other), mid, kind=CONFLICT, reason="was applied with")]

    def g_same_id_bodies(self) -> list[Bad]:
        """One message id on two malformed bodies: two records. The same body twice: one."""
        shared = self._id("sameid")
        if self.rng.random() < 0.5:
            return [self._malformed("same_id_bodies", p.JOB_COMPLETED, b"{dup " + str(i).encode(), "malformed",
                                    message_id=shared) for i in range(2)]
        return [self._malformed("same_id_bodies", p.JOB_COMPLETED, b"{dup same", "malformed",
                                message_id=shared) for _ in range(2)]

    def g_no_message_id(self) -> list[Bad]:
        """No message id: the key is a digest of queue and body."""
        roll = self.rng.randrange(3)
        if roll == 0:
            body = dumps({"nonce": self._uuid().hex, "status": "completed"})
            copies = self.rng.choice([1, 2])  # the same body twice is one record
            return [Bad("no_message_id", p.JOB_COMPLETED, body, None, reason="missing required field")
                    for _ in range(copies)]
        late = Bad("no_message_id", p.JOB_COMPLETED, dumps(self._late_result(nonce=self._uuid().hex)), None,
                   expect=LATE)
        if roll == 1:
            return [late]
        return [late, Bad("no_message_id", late.key, late.body, None, expect=DUPLICATE)]

    def g_worker_queue_garbage(self) -> list[Bad]:
        key, body, reason = self.rng.choice([
            (p.WORKER_DISCOVERY, dumps({"instance_id": "w", "queue_name": "q", "direct_messaging_queue_name": "d",
                                        "activity": "Dancing"}), "invalid"),
            (p.WORKER_DISCOVERY, dumps({"instance_id": "w", "queue_name": "q", "direct_messaging_queue_name": "d",
                                        "started_at": "the day before yesterday"}), "invalid"),
            (p.WORKER_STATUS, dumps({"worker": {"activity": 1}}), "invalid"),
            (p.WORKER_STATUS, dumps({"worker": {"activity": "Idle"}, "job": {"job_id": "j"}}), "invalid"),
        ])
        return [self._malformed("worker_queue_garbage", key, body, reason)]

    # --- orders ----------------------------------------------------------------------------

    def _order(self, category: str, body: bytes, worker_reason: str, *,
               headers: dict[str, Any] | None = None) -> Bad:
        """A bad order. Given `headers`, they are what is wrong with it, and nothing is left to
        answer with; else its envelope (message id, headers) decides between an answer (and
        which backend fate that answer meets) and a dead letter."""
        job_type = self.rng.choice(ORDER_TYPES)
        bad = Bad(category, job_type, body, self._id(f"order-{category}"), order=True, expect=DEAD_LETTERED,
                  headers={"job_type": job_type}, worker_reason=worker_reason)
        if headers is not None:  # the headers are what is wrong: nothing to answer with
            bad.headers = headers
            return bad
        roll = self.rng.random()
        if roll < 0.3:
            bad.headers["workflow_id"] = str(self._uuid())
            bad.answer_kind, bad.answer_reason = UNKNOWN, "unknown workflow"
        elif roll < 0.55:
            bad.headers["workflow_id"] = self.live
            bad.answer_kind, bad.answer_reason = UNKNOWN, "has no job"
        elif roll < 0.65 and self.t.order_jobs:  # a completed job's id: the answer is a late one
            bad.message_id = self.t.order_jobs.pop()
            bad.headers["workflow_id"] = self.done
            bad.answer_expect = LATE
        elif roll < 0.75:  # no workflow header: the body is not to be trusted
            pass
        elif roll < 0.82:
            bad.headers["workflow_id"] = self.rng.choice(["not-a-uuid", self.live + "0", ""])
        elif roll < 0.9:
            bad.headers["workflow_id"] = self.live
            bad.message_id = None
        else:  # an id too long to name a job
            bad.headers["workflow_id"] = self.live
            bad.message_id = (f"{bad.message_id}-" + "m" * 255)[: self.rng.randint(WORKER_MAX_ID + 1, 255)]
        if bad.answer_kind or bad.answer_expect:
            bad.expect = ANSWERED
            bad.answer_id = f"{bad.seen_id}:error"
            bad.answer_expect = bad.answer_expect or QUARANTINE
        return bad

    def _order_body(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": f"forged-{self._uuid().hex}", "parameters": [], "workflow_id": self.live}
        body.update(fields)
        return body

    def o_invalid_json(self) -> list[Bad]:
        body = self.rng.choice([b"{oops", b"", b"{", b"nul", b"\x00", b'{"job_id": "a", "parameters": []}\x00',
                                b"\x1f\x8b\x08\x00"])
        return [self._order("invalid_json", body, "DecodeError")]

    def o_invalid_text(self) -> list[Bad]:
        """Invalid UTF-8 and lone surrogates."""
        bad = self.rng.choice([b"\xff", b"\xed\xa0\x80", b"\\ud800", b"\\udc00x"])
        return [self._order("invalid_text", b'{"job_id": "' + bad + b'", "parameters": []}', "DecodeError")]

    def o_invalid_utf8_properties(self) -> list[Bad]:
        """Not UTF-8 in the message id (which is the job id an answer names) or a header name."""
        bad = self._order("invalid_utf8_properties", b"{oops", "DecodeError")
        if bad.message_id is not None and len(bad.message_id) < 150 and bad.answer_expect != LATE:
            bad.message_id = RawText(bad.message_id.encode() + self.rng.choice([b"\xff", b"\xed\xa0\x80"]))
            if bad.answer_id is not None:
                bad.answer_id = f"{bad.seen_id}:error"
        bad.headers[RawText(b"x-\xfe")] = "name not UTF-8"
        return [bad]

    def o_deep_nesting(self) -> list[Bad]:
        style = self.rng.choice(["list", "dict", "mixed", "unclosed"])
        return [self._order("deep_nesting", deep(self.rng.choice([65, 1_000, DEEPEST, self.rng.randint(65, DEEPEST)]),
                                                 style), "nested deeper than 64")]

    def o_wrong_types(self) -> list[Bad]:
        body = self.rng.choice([
            self._order_body(job_id=7.5), self._order_body(parameters="all"), self._order_body(parameters=[{"id": 1}]),
            self._order_body(attempt="first"), self._order_body(timeout_s="NaN"), self._order_body(workflow_id=5),
            [1, 2], "order", None,
        ])
        return [self._order("wrong_types", dumps(body), "ValidationError")]

    def o_missing_fields(self) -> list[Bad]:
        body = self.rng.choice([{}, {"job_id": "j"}, {"parameters": []}])
        return [self._order("missing_fields", dumps(body), "missing required field")]

    def o_huge_numbers(self) -> list[Bad]:
        roll = self.rng.randrange(3)
        if roll == 0:
            body = dumps(self._order_body(attempt=self.rng.choice([10**30, 2**63, -1, -(10**30)])))
            return [self._order("huge_numbers", body, "out of range")]
        if roll == 1:
            body = dumps(self._order_body(attempt=1)).replace(b'"attempt": 1', b'"attempt": 1e400')
            return [self._order("huge_numbers", body, "out of range")]
        return [self._order("huge_numbers", dumps(self._order_body()).replace(b'"parameters": []',
                                                                             b'"timeout_s": NaN'), "DecodeError")]

    def o_bad_ids(self) -> list[Bad]:
        job_id = self.rng.choice(["", "j" * (WORKER_MAX_ID + 1), "\u00e9" * 101])
        return [self._order("bad_ids", dumps(self._order_body(job_id=job_id)), "job_id")]

    def o_header_types(self) -> list[Bad]:
        """Wrong-typed headers on a well-formed order. A bad job_type header still leaves the
        ids to answer with (the queue names the type); a bad workflow_id header does not."""
        value = self.rng.choice([12345, 0, [self.live], {"id": self.live}, {"a": {"b": [1]}},
                                 bytearray(self.live.encode()), True, 2.5])
        if self.rng.random() < 0.5:
            bad = self._order("header_types", dumps(self._order_body()), "header job_type")
            bad.headers["job_type"] = value
            return [bad]
        headers = {"workflow_id": value, "job_type": self.rng.choice(ORDER_TYPES)}
        return [self._order("header_types", dumps(self._order_body()), "header workflow_id", headers=headers)]

    def o_recursive_wide(self) -> list[Bad]:
        body = wide_text(self.rng, 16_384)
        reason = "missing required field" if body.startswith(b"{") else "Expected `object`"
        return [self._order("recursive_wide", body, reason)]

    def o_forged(self) -> list[Bad]:
        """A well-formed order nobody sent: the worker runs it; the backend refuses the completion."""
        job_type = self.rng.choice(ORDER_TYPES)
        roll = self.rng.randrange(3)
        job_id = f"forged-{self._uuid().hex}" + ("\u0000nul" if roll == 2 else "")  # a NUL is no bad id
        workflow, kind, reason = (str(self._uuid()), UNKNOWN, "unknown workflow") if roll == 0 else (
            self.live, UNKNOWN, "has no job")
        body = dumps({"job_id": job_id, "parameters": [{"id": "name", "value": "forged"}], "workflow_id": workflow})
        headers: dict[str, Any] = {"workflow_id": workflow, "job_type": job_type}
        bad = Bad("forged", job_type, body, job_id, order=True, expect=RUN, headers=headers,
                  answer_id=f"{job_id}:completed", answer_expect=QUARANTINE, answer_kind=kind, answer_reason=reason)
        if self.rng.random() < 0.25:  # an undecodable workflow header: the worker runs it all the same
            bad.headers["workflow_id"] = RawText(b"\xff\xfe" + self._uuid().hex.encode())
            bad.answer_kind, bad.answer_reason = MALFORMED, "is not a UUID"
        return [bad]

    def limit_orders(self) -> list[Bad]:
        """Orders at the worker's size limit (1 MiB; not read for another reason) and one byte over."""
        out = []
        for size, reason in ((WORKER_MAX_BODY, "missing required field"), (WORKER_MAX_BODY + 1, "byte limit")):
            head = b'{"pad": "'
            body = head + b"p" * (size - len(head) - 2) + b'"}'
            out.append(self._order("order_size_limit", body, reason))
        return out


# --- the ledger ------------------------------------------------------------------------------


@dataclass
class Kept:
    """A message found in the quarantine queue."""

    message_id: str | None
    body: bytes
    reason: str | None  # x-quarantine-reason: the backend quarantined it
    original_queue: str | None
    dead_lettered: bool  # rejected by a worker, moved by the broker (x-death)


@dataclass
class Late:
    cause: str | None
    answer: str
    message: str | None


@dataclass
class Record:
    """A `MessageQuarantined` event."""

    stream: UUID
    message_id: str | None
    kind: str
    reason: str
    digest: str | None


@dataclass
class Observed:
    kept: list[Kept]
    late: list[Late]  # LateAnswerReceived of the target workflows
    records: list[Record]
    duplicates: int  # the backend's counters, over the fuzz
    late_progress: int
    quarantined_counter: int | None = None
    late_counter: int | None = None


@dataclass
class Ledger:
    sent: int = 0  # messages to the backend, direct
    orders: int = 0
    answers: int = 0  # the worker's answers to orders, which the backend settles too
    quarantined: int = 0  # by the backend (queue copies with a reason)
    late: int = 0
    duplicates: int = 0
    late_progress: int = 0
    dead_lettered: int = 0
    records: int = 0
    unaccounted: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "problems"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def account(bads: Iterable[Bad], seen: Observed) -> Ledger:
    """Every message in exactly one place, each the one its fate says."""
    bads = list(bads)
    direct = [b for b in bads if not b.order]
    orders = [b for b in bads if b.order]
    answered = [b for b in orders if b.expect in (ANSWERED, RUN)]
    ledger = Ledger(sent=len(direct), orders=len(orders), answers=len(answered))
    problems = ledger.problems

    # the quarantine queue: each copy is one bad message (or a worker's answer to one)
    waiting: dict[tuple[str | None, bytes], list[Bad]] = {}
    for b in bads:
        if (b.order and b.expect == DEAD_LETTERED) or (not b.order and b.expect == QUARANTINE):
            waiting.setdefault((b.seen_id, b.body), []).append(b)
    answers: dict[str | None, Bad] = {b.answer_id: b for b in answered}
    answers_kept: Counter[str | None] = Counter()
    for copy in seen.kept:
        if copy.dead_lettered:
            ledger.dead_lettered += 1
        else:
            ledger.quarantined += 1
        if not copy.dead_lettered and copy.message_id in answers:
            b = answers[copy.message_id]
            answers_kept[copy.message_id] += 1
            _check_answer(b, copy, problems)
            continue
        candidates = waiting.get((copy.message_id, copy.body)) or waiting.get((None, copy.body))
        if not candidates:
            problems.append(f"unexpected in quarantine: id={copy.message_id!r} reason={copy.reason!r} "
                            f"body={copy.body[:80]!r}")
            continue
        b = candidates.pop()
        if b.order != copy.dead_lettered:
            problems.append(f"{b.category} {b.message_id!r}: dead-lettered={copy.dead_lettered}, expected {b.order}")
        elif not b.order:
            reason = copy.reason or ""
            if not reason.startswith(f"{b.kind}: ") or b.reason.lower() not in reason.lower():
                problems.append(f"{b.category} {b.message_id!r}: reason {reason[:200]!r}, expected {b.kind}: "
                                f"...{b.reason}...")
            if copy.original_queue != b.key:
                problems.append(f"{b.category} {b.message_id!r}: x-original-queue {copy.original_queue!r}")
    missing = [b for group in waiting.values() for b in group]
    problems.extend(f"never reached the quarantine queue: {b.category} {b.message_id!r} {b.body[:60]!r}"
                    for b in missing[:20])
    if len(missing) > 20:
        problems.append(f"... {len(missing)} in all never reached the quarantine queue")

    # late answers: one LateAnswerReceived per cause
    expected_late: Counter[str | None] = Counter(b.cause for b in direct if b.expect == LATE)
    expected_late.update(b.answer_id for b in answered if b.answer_expect == LATE)
    seen_late = Counter(late.cause for late in seen.late)
    ledger.late = sum(seen_late.values())
    if seen_late != expected_late:
        problems.append(f"late answers: {sorted((seen_late - expected_late).items())[:10]} unexpected, "
                        f"{sorted((expected_late - seen_late).items())[:10]} missing")
    for late in seen.late:
        if late.cause in answers:
            b = answers[late.cause]
            if late.answer != "error" or b.worker_reason.lower() not in (late.message or "").lower():
                problems.append(f"late answer to order {b.category}: {late.answer} {late.message!r}")

    # answers to orders: each reached the backend once and met its fate
    for answer_id, b in answers.items():
        wanted = 1 if b.answer_expect == QUARANTINE else 0
        if answers_kept[answer_id] != wanted:
            problems.append(f"answer {answer_id!r} to order {b.category}: {answers_kept[answer_id]} in quarantine, "
                            f"expected {wanted}")

    # counted, not kept
    ledger.duplicates, ledger.late_progress = seen.duplicates, seen.late_progress
    expected_dup = sum(b.expect == DUPLICATE for b in direct)
    expected_lp = sum(b.expect == LATE_PROGRESS for b in direct)
    if seen.duplicates != expected_dup:
        problems.append(f"duplicates counted {seen.duplicates}, expected {expected_dup}")
    if seen.late_progress != expected_lp:
        problems.append(f"late progressions counted {seen.late_progress}, expected {expected_lp}")
    if seen.quarantined_counter is not None and seen.quarantined_counter != ledger.quarantined:
        problems.append(f"quarantined counter {seen.quarantined_counter}, queue copies {ledger.quarantined}")
    if seen.late_counter is not None and seen.late_counter != ledger.late:
        problems.append(f"late answers counter {seen.late_counter}, events {ledger.late}")

    # the records: one per distinct key (message key + body digest), of the expected kind
    from stepflow.engine.events import quarantine_stream_id

    expected_records: dict[UUID, str] = {}
    for b in direct:
        if b.expect == QUARANTINE:
            expected_records[quarantine_stream_id(f"{b.message_key}#{b.digest}")] = b.kind
    answer_kinds = {b.answer_id: b.answer_kind for b in answered if b.answer_expect == QUARANTINE}
    ledger.records = len(seen.records)
    found: set[UUID] = set()
    answer_records: Counter[str | None] = Counter()
    for record in seen.records:
        if record.message_id in answer_kinds:
            answer_records[record.message_id] += 1
            if record.kind != answer_kinds[record.message_id]:
                problems.append(f"record of answer {record.message_id!r}: kind {record.kind}, expected "
                                f"{answer_kinds[record.message_id]}")
            continue
        kind = expected_records.get(record.stream)
        if kind is None:
            problems.append(f"unexpected MessageQuarantined: {record.message_id!r} {record.kind} "
                            f"{record.reason[:100]!r}")
        elif record.kind != kind:
            problems.append(f"MessageQuarantined {record.message_id!r}: kind {record.kind}, expected {kind}")
        if record.stream in found:
            problems.append(f"MessageQuarantined twice for {record.message_id!r}")
        found.add(record.stream)
    if set(expected_records) - found:
        problems.append(f"{len(set(expected_records) - found)} quarantine records missing")
    if any(n != 1 for n in answer_records.values()) or set(answer_records) != set(answer_kinds):
        problems.append(f"answer records: {len(answer_records)} of {len(answer_kinds)}")

    # everything in one place
    settled = ledger.quarantined + ledger.late + ledger.duplicates + ledger.late_progress
    ledger.unaccounted = ledger.sent + ledger.answers - settled
    if ledger.unaccounted:
        problems.append(f"backend: {ledger.sent} sent + {ledger.answers} answers to orders != {ledger.quarantined} "
                        f"quarantined + {ledger.late} late + {ledger.duplicates} duplicates + "
                        f"{ledger.late_progress} late progress")
    dead = sum(b.expect == DEAD_LETTERED for b in orders)
    if ledger.dead_lettered != dead:
        problems.append(f"dead-lettered orders: {ledger.dead_lettered}, expected {dead}")
    return ledger


def _check_answer(b: Bad, copy: Kept, problems: list[str]) -> None:
    """A worker's answer to a bad order, quarantined by the backend."""
    reason = copy.reason or ""
    if not reason.startswith(f"{b.answer_kind}: ") or b.answer_reason.lower() not in reason.lower():
        problems.append(f"answer to {b.category} order {b.message_id!r}: reason {reason[:200]!r}, expected "
                        f"{b.answer_kind}: ...{b.answer_reason}...")
    try:
        body = json.loads(copy.body)
    except ValueError:
        problems.append(f"answer to {b.category} order {b.message_id!r} is not JSON: {copy.body[:80]!r}")
        return
    message = next((prm.get("value") for prm in body.get("parameters", []) if prm.get("id") == "message"), "")
    if b.expect == ANSWERED:
        if body.get("status") != "error" or body.get("error_kind") != "invalid_order" \
                or body.get("job_id") != b.seen_id or b.worker_reason.lower() not in _text(message).lower():
            problems.append(f"answer to {b.category} order: {copy.body[:300]!r}, expected invalid_order "
                            f"...{b.worker_reason}...")
    elif body.get("status") != "completed" or body.get("job_id") != json.loads(b.body)["job_id"]:
        problems.append(f"answer to forged order: {copy.body[:300]!r}")


# --- the real traffic's workers --------------------------------------------------------------


def quiet_worker() -> Worker:
    worker = Worker("fuzz-quiet", version="1.0.0", description="answers at once, never reports progress",
                    prefetch=32, heartbeat_s=2.0)

    async def answer(params: dict, ctx: JobContext) -> dict:
        return {"echo": params.get("name", ""), "item": params.get("item", ""), "attempt": ctx.attempt}

    for job_type in ORDER_TYPES:
        worker.job(job_type)(answer)
    return worker


quiet = quiet_worker()
