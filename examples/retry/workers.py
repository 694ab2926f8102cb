"""Workers for the retry example: `retry_flaky` fails while its attempt number is within
`fail_times`, then succeeds, so the run shows JobErrored -> JobRetryScheduled -> success."""

from __future__ import annotations

import hashlib

from stepflow import JobContext, Worker

flaky = Worker("retry-example", version="1.0.0")


@flaky.job("retry_prepare")
async def prepare(params: dict, ctx: JobContext) -> dict:
    return {"digest": hashlib.sha256(params["payload"].encode()).hexdigest()}


@flaky.job("retry_flaky")
async def flaky_job(params: dict, ctx: JobContext) -> dict:
    if ctx.attempt <= params["fail_times"]:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return {"succeeded_on_attempt": ctx.attempt, "digest": params["digest"]}
