"""Generators of bad inbound messages for the fuzz tests: each says which queue it goes to,
its body and properties, and what the backend must do with it (quarantine with a reason
containing `reason`, or ack it as a duplicate and change nothing)."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from stepflow.adapters import protocol as p

QUARANTINE, DUPLICATE = "quarantine", "duplicate"


@dataclass
class Bad:
    category: str
    key: str  # routing key = the backend queue's protocol name
    body: bytes
    message_id: str | None
    expect: str = QUARANTINE
    reason: str = ""  # a fragment of the quarantine reason
    content_type: str | None = p.CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def exchange(self) -> str:
        if self.key in p.WORKER_KEYS:
            return p.WORKER_RESPONSE
        if self.key == p.JOB_QUEUE_NOT_FOUND:
            return p.JOB_QUEUE_NOT_FOUND
        return p.JOB_RESPONSE


@dataclass
class Targets:
    """Real ids the generators aim at: a live workflow, and a finished one with its jobs."""

    live_workflow: str
    done_workflow: str
    done_jobs: list[str]  # completed jobs of done_workflow


def _result(job_id: str, status: str, workflow_id: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": job_id, "status": status, "parameters": [], "workflow_id": workflow_id}
    body.update(extra)
    return body


class Generator:
    def __init__(self, rng: random.Random, targets: Targets, max_body: int) -> None:
        self.rng = rng
        self.t = targets
        self.max_body = max_body
        self.n = 0
        self.kinds = [getattr(self, name) for name in dir(self) if name.startswith("g_")]

    def _id(self, category: str) -> str:
        self.n += 1
        return f"fuzz-{category}-{self.n}-{uuid.uuid4().hex[:8]}"

    def one(self) -> list[Bad]:
        return self.rng.choice(self.kinds)()

    # --- the categories ------------------------------------------------------------------

    def g_invalid_json(self) -> list[Bad]:
        body = self.rng.choice([b"{oops", b"", b"\xff\xfe\x00garbage", b'{"job_id": "x", ', b"[1, 2", b"nul",
                                bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 64)))])
        key = self.rng.choice([*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND])
        return [Bad("invalid_json", key, body, self._id("json"), reason="invalid")]

    def g_wrong_types(self) -> list[Bad]:
        wf = self.t.live_workflow
        key, body = self.rng.choice([
            (p.JOB_COMPLETED, {"job_id": 123, "status": "completed", "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "parameters": "not a list", "workflow_id": wf}),
            (p.JOB_ERROR, {"job_id": ["j"], "status": "error", "workflow_id": wf}),
            (p.JOB_PROGRESSION, {"job_id": "j", "progression": "half", "datetime": "2024-01-01T00:00:00Z",
                                 "workflow_id": wf}),
            (p.JOB_PROGRESSION, {"job_id": "j", "progression": 50, "datetime": "yesterday", "workflow_id": wf}),
            (p.JOB_COMPLETED, {"job_id": "j", "status": "completed", "execution_duration": "slow", "workflow_id": wf}),
            (p.WORKER_DISCOVERY, {"instance_id": 7, "queue_name": None}),
            (p.WORKER_STATUS, {"type": "status", "job": 5, "worker": "busy"}),
            (p.JOB_QUEUE_NOT_FOUND, {"job_id": 1, "parameters": {}}),
            (p.JOB_COMPLETED, [1, 2, 3]),
            (p.JOB_COMPLETED, "a string"),
        ])
        return [Bad("wrong_types", key, json.dumps(body).encode(), self._id("types"), reason="invalid")]

    def g_missing_fields(self) -> list[Bad]:
        key, body = self.rng.choice([
            (p.JOB_COMPLETED, {"status": "completed", "workflow_id": self.t.live_workflow}),
            (p.JOB_ERROR, {"job_id": "j"}),
            (p.JOB_PROGRESSION, {"job_id": "j"}),
            (p.JOB_STOPPED, {}),
            (p.WORKER_DISCOVERY, {}),
            (p.JOB_QUEUE_NOT_FOUND, {"parameters": []}),
        ])
        return [Bad("missing_fields", key, json.dumps(body).encode(), self._id("missing"), reason="invalid")]

    def g_no_workflow_id(self) -> list[Bad]:
        job = self.rng.choice(self.t.done_jobs)
        bad = self.rng.choice([None, "not-a-uuid", "'; DROP TABLE events; --"])
        body = _result(job, "completed", bad)
        return [Bad("bad_workflow_id", p.JOB_COMPLETED, json.dumps(body).encode(), self._id("wfid"),
                    reason="workflow_id")]

    def g_unknown_job(self) -> list[Bad]:
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED, p.JOB_PROGRESSION])
        job = f"no-such-job-{uuid.uuid4()}"
        if key == p.JOB_PROGRESSION:
            body = {"job_id": job, "progression": 5, "datetime": "2024-01-01T00:00:00Z",
                    "workflow_id": self.t.live_workflow}
        else:
            body = _result(job, key.removeprefix("job_"), self.t.live_workflow)
        return [Bad("unknown_job", key, json.dumps(body).encode(), self._id("job"), reason="has no job")]

    def g_unknown_workflow(self) -> list[Bad]:
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED, p.JOB_QUEUE_NOT_FOUND])
        wf = str(uuid.uuid4())
        if key == p.JOB_QUEUE_NOT_FOUND:
            body: dict[str, Any] = {"job_id": "j", "parameters": [], "workflow_id": wf}
        else:
            body = _result("j", key.removeprefix("job_"), wf)
        return [Bad("unknown_workflow", key, json.dumps(body).encode(), self._id("wf"), reason="unknown workflow")]

    def g_already_completed_new_id(self) -> list[Bad]:
        job = self.rng.choice(self.t.done_jobs)
        key = self.rng.choice([p.JOB_COMPLETED, p.JOB_ERROR])
        body = _result(job, key.removeprefix("job_"), self.t.done_workflow)
        return [Bad("completed_job_new_id", key, json.dumps(body).encode(), self._id("again"),
                    reason="already completed")]

    def g_already_completed_same_id(self) -> list[Bad]:
        job = self.rng.choice(self.t.done_jobs)
        body = _result(job, "completed", self.t.done_workflow)
        return [Bad("completed_job_same_id", p.JOB_COMPLETED, json.dumps(body).encode(), f"{job}:completed",
                    expect=DUPLICATE)]

    def g_huge(self) -> list[Bad]:
        size = self.max_body + self.rng.randint(1, 4 * self.max_body)
        body = b'{"job_id": "' + b"x" * size + b'"}'
        return [Bad("huge_body", p.JOB_COMPLETED, body, self._id("huge"), reason="byte limit")]

    def g_wrong_content_type(self) -> list[Bad]:
        body = _result(self.rng.choice(self.t.done_jobs), "completed", self.t.done_workflow)
        ctype = self.rng.choice(["text/plain", "application/xml", "application/x-python-pickle",
                                 "application/octet-stream"])
        return [Bad("wrong_content_type", p.JOB_COMPLETED, json.dumps(body).encode(), self._id("ctype"),
                    content_type=ctype, reason="content type")]

    def g_status_mismatch(self) -> list[Bad]:
        body = _result("j", "error", self.t.live_workflow)
        return [Bad("status_mismatch", p.JOB_COMPLETED, json.dumps(body).encode(), self._id("status"),
                    reason="status")]

    def g_duplicated_message_id(self) -> list[Bad]:
        """Two different malformed messages with one message id: both quarantined, one event."""
        shared = self._id("dup")
        return [Bad("duplicated_message_id", p.JOB_COMPLETED, b"{dup " + str(i).encode(), shared,
                    reason="invalid") for i in range(2)]

    def g_no_message_id(self) -> list[Bad]:
        body = json.dumps({"nonce": uuid.uuid4().hex, "status": "completed"}).encode()
        return [Bad("no_message_id", p.JOB_COMPLETED, body, None, reason="invalid")]


def quarantine_events_expected(sent: list[Bad]) -> int:
    """MessageQuarantined events are keyed by message id (or body hash): duplicates collapse."""
    keys = {b.message_id or (b.key, b.body) for b in sent if b.expect == QUARANTINE}
    return len(keys)
