"""A handler's `ctx.log` names its job, though it is bound only when first used."""

from __future__ import annotations

from typing import Any, cast

import structlog
from structlog.testing import capture_logs

from stepflow.adapters import protocol as p
from stepflow.sdk import JobContext


class Identity:
    instance_id = "w-1"
    run_token = "r1"


def test_the_job_logger_carries_the_jobs_ids() -> None:
    structlog.reset_defaults()
    order = p.JobOrder(job_id=42, parameters=[], workflow_id="wf-1", attempt=2)
    ctx = JobContext(Identity(), cast(Any, None), order, "encode", "wf-1")
    assert "log" not in vars(ctx)  # not bound by a job that never logs
    with capture_logs() as logs:
        ctx.log.warning("job_note", n=1)
        ctx.log.info("again")
    assert logs[0] == {"event": "job_note", "n": 1, "job_id": 42, "workflow_id": "wf-1", "job_type": "encode",
                       "log_level": "warning"}
    assert logs[1]["job_id"] == 42 and ctx.log is ctx.log
