"""The Step Flow message protocol: names and message shapes on the wire.

Shapes follow the original Step Flow backend and its worker SDK (see docs/protocol.md), so a
worker written for it can serve stepflow. Additions are optional fields only. Every message is
JSON encoded with msgspec; the backend and the SDK share these Structs and decoders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from itertools import accumulate
from typing import Any, Literal, TypeVar

import msgspec

# Exchanges, queues and routing keys (names of the original; a prefix may be added).
JOB_SUBMIT = "job_submit"
JOB_QUEUE_NOT_FOUND = "job_queue_not_found"
JOB_RESPONSE = "job_response"
JOB_RESPONSE_DELAYED = "job_response_delayed"
WORKER_RESPONSE = "worker_response"
DIRECT_MESSAGING = "direct_messaging"
JOB_DELAYED = "job_delayed"  # the SDK's: job queues dead-letter a rejected order here, back after 5 s
JOB_RESPONSE_NOT_FOUND = "job_response_not_found"
WORKER_RESPONSE_NOT_FOUND = "worker_response_not_found"
DIRECT_MESSAGING_NOT_FOUND = "direct_messaging_not_found"
# stepflow's own additions: names the original never uses.
JOB_SUBMIT_DELAYED = "stepflow_job_submit_delayed"
QUARANTINE = "stepflow_quarantine"

JOB_COMPLETED = "job_completed"
JOB_PROGRESSION = "job_progression"
JOB_ERROR = "job_error"
JOB_STOPPED = "job_stopped"
RESPONSE_KEYS = (JOB_COMPLETED, JOB_PROGRESSION, JOB_ERROR, JOB_STOPPED)
WORKER_DISCOVERY = "worker_discovery"
WORKER_STATUS = "worker_status"
# The SDK announces itself with the same body three times: `worker_discovery` on `job_response`
# at every (re)connection, `worker_created` on `worker_response` once its start-up HTTP calls
# succeeded, and `worker_terminated` on `worker_response` when it stops.
WORKER_CREATED = "worker_created"
WORKER_TERMINATED = "worker_terminated"
WORKER_KEYS = (WORKER_DISCOVERY, WORKER_STATUS, WORKER_CREATED, WORKER_TERMINATED)

CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 1_048_576  # larger inbound bodies go to quarantine undecoded

_T = TypeVar("_T")

# A job on the wire: an unsigned 64-bit integer (the original's, and stepflow's since it gives
# every job one, see `stepflow.engine.wire`), or the engine's uuid text (orders stored before).
WireJobId = int | str
MAX_WIRE_INT = (1 << 64) - 1

class Parameter(msgspec.Struct, frozen=True, kw_only=True):
    """One named value. The original SDK sends `type` (with `default` and `store`, ignored
    here) and reads only `type`, which must be there; `kind` is what its Python workers write,
    accepted on answers and never sent (UNSET is left out of the encoding)."""

    id: str
    type: str = "string"
    value: Any = None
    kind: str | msgspec.UnsetType = msgspec.UNSET


class JobOrder(msgspec.Struct, frozen=True, kw_only=True):
    """backend -> worker, on `job_submit` with the job type as routing key."""

    job_id: WireJobId
    parameters: list[Parameter]
    type: str = "job"
    workflow_id: str | None = None
    attempt: int = 1
    timeout_s: float | None = None


class JobProgression(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """worker -> backend, key `job_progression`.

    An original SDK worker sends `job_id` (an integer), `progression`, `datetime`,
    `docker_container_id` (its instance id) and `system_info`, and no workflow id."""

    job_id: WireJobId
    progression: int
    datetime: datetime | None = None
    docker_container_id: str | None = None
    message: str | None = None
    workflow_id: str | None = None


class JobResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """worker -> backend, keys `job_completed`, `job_error`, `job_stopped`.

    The error text is the parameter `message`; a completed job's parameters become its outputs.
    The original SDK answers a stop on `job_stopped` with status `completed`, and a job that set
    its status to stopped on `job_completed` with status `stopped`: the key and the status
    together say what happened (`stepflow.adapters.inbox`).
    """

    job_id: WireJobId
    status: str
    parameters: list[Parameter] = []
    destination_paths: list[str] = []
    execution_duration: float | None = None
    workflow_id: str | None = None
    error_kind: str | None = None
    instance_id: str | None = None

    def parameter(self, name: str) -> Any:
        for parameter in self.parameters:
            if parameter.id == name:
                return parameter.value
        return None


class WorkerDiscovery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """worker -> backend, key `worker_discovery`: on start, then as a heartbeat."""

    instance_id: str
    queue_name: str
    direct_messaging_queue_name: str
    label: str = ""
    description: str = ""
    version: str = "0.0.0"
    sdk_version: str = ""
    parameters: dict[str, Any] = {}
    job_types: list[str] = []
    host: str = ""
    started_at: datetime | None = None
    activity: Literal["Idle", "Busy", "Suspended", "Terminated"] = "Idle"


class WorkerActivity(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The original SDK puts its whole description here, its instance id included."""

    activity: str
    system_info: dict[str, Any] = {}
    instance_id: str | None = None


class StatusJob(msgspec.Struct, frozen=True, kw_only=True):
    """The job a `worker_status` reports (the original sends status `processing` while busy)."""

    job_id: WireJobId
    status: str = "processing"


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """worker -> backend, key `worker_status`: the answer to a `status` order."""

    type: str = "status"
    job: StatusJob | None = None
    worker: WorkerActivity
    instance_id: str | None = None

    @property
    def instance(self) -> str | None:
        return self.instance_id or self.worker.instance_id


class DirectOrder(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """backend -> one worker (header `instance_id` alone), all (`broadcast: "true"`, a string)
    or stepflow's own workers (`stepflow_broadcast: "true"`), on `direct_messaging`. The
    original SDK needs `parameters` in a `stop_process` (an empty list will do)."""

    type: Literal["stop_process", "status", "stop_consuming_jobs", "resume_consuming_jobs", "stop_worker"]
    job_id: WireJobId | None = None
    parameters: list[Parameter] | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """An outgoing message, as the broker port expects it."""

    routing_key: str
    body: bytes
    message_id: str
    headers: Mapping[str, Any] = {}
    priority: int = 0
    delay_s: float = 0.0


encoder = msgspec.json.Encoder()

# --- decoding: depth first, then msgspec -------------------------------------------------

MAX_DEPTH = 64  # arrays/objects nested deeper than this are refused before decoding


class NestedTooDeep(msgspec.DecodeError, ValueError):
    """A body nested deeper than the limit. A `ValueError`, and a `msgspec.DecodeError` so
    that code catching decode errors treats it as any other undecodable body."""


_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256  # what each bracket does to the depth
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_CHUNK = 8192


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Raise `NestedTooDeep` (a ValueError, "nested deeper than N") when the arrays and
    objects opened outside strings nest deeper than `limit`. Whether the body is valid JSON
    is the decoder's business. Call it before decoding: msgspec recurses, and raises
    RecursionError, not DecodeError, on a body nested some 1,000 deep.

    Linear and at C speed: two `count`s settle the usual small message; otherwise escaped
    backslashes and quotes are removed (a run of backslashes pairs up from the left, as in
    JSON), what lies between quotes is dropped, and the depth is summed over the brackets
    left, in chunks, stopping at the first that goes too deep (~40 ms for 1 MiB of brackets).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        sums = list(accumulate(map(_STEP.__getitem__, brackets[start:start + _CHUNK]), initial=depth))
        if max(sums) > limit:
            raise NestedTooDeep(f"nested deeper than {limit}")
        depth = sums[-1]


def _decoder(struct: type[_T]) -> Callable[[bytes], _T]:
    decode = msgspec.json.Decoder(struct).decode

    def checked(body: bytes) -> _T:
        check_depth(body)
        return decode(body)

    checked.__name__ = checked.__qualname__ = f"decode_{struct.__name__}"
    return checked


decode_order = _decoder(JobOrder)
decode_progression = _decoder(JobProgression)
decode_result = _decoder(JobResult)
decode_discovery = _decoder(WorkerDiscovery)
decode_status = _decoder(WorkerStatus)
decode_direct = _decoder(DirectOrder)


def parameter_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "array_of_strings"
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "array_of_integers"
    if value is None:
        return "null"
    return "object"


def to_parameters(values: Mapping[str, Any]) -> list[Parameter]:
    return [Parameter(id=k, type=parameter_kind(v), value=v) for k, v in values.items()]


def from_parameters(parameters: list[Parameter]) -> dict[str, Any]:
    return {p.id: p.value for p in parameters}


def job_key(job_id: WireJobId) -> str:
    """A job id as text, the same for the integer and for its decimal string."""
    return str(job_id)
