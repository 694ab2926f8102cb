"""The worker SDK: write a typed `async def`, get a Step Flow worker.

    from stepflow import JobContext, JobFailed, Worker      # or from stepflow.sdk

    worker = Worker("media-worker")

    @worker.job("transcode")
    async def transcode(params: TranscodeParams, ctx: JobContext) -> dict:
        await ctx.progress(40, "encoding")
        return {"path": "/out/720p.mp4"}

The worker owns the broker, prefetch, heartbeats and shutdown; the author writes none of it.
Parameters are validated at the edge into the handler's annotated msgspec Struct (a bad order
is an error of kind `invalid_parameters`, not retried). A handler fails by raising; raise
`JobFailed(message, kind=...)` to name the kind a retry policy can exclude. A `stop_process`
order cancels the handler: it sees `asyncio.CancelledError`, so cleanup is a `finally`.

Modules, along the seams a reader follows: `context` (what a handler sees), `handlers`
(registration: the parameters type and its schema), `worker` (the run loop: take an order,
run its job, answer, settle), `jobs` (a running job and the deliveries its answer settles),
`orders` (reading an order, and telling which job an unreadable one was), `answers` (the
messages a worker publishes), `direct` (orders to this instance, and its announcements).
See docs/api.md.
"""

from stepflow.sdk.context import JobContext, JobFailed
from stepflow.sdk.handlers import Handler
from stepflow.sdk.worker import Worker

__all__ = ["Handler", "JobContext", "JobFailed", "Worker"]
