"""Adapters: brokers (RabbitMQ, in-process), persistence settings, the CLI, the worker SDK.

The worker SDK's public API is importable from here:

    from stepflow.adapters import JobContext, JobFailed, Worker

    worker = Worker("media")

    @worker.job("transcode")
    async def transcode(params: TranscodeParams, ctx: JobContext) -> dict:
        await ctx.progress(40, "encoding")
        return {"path": "/out/720p.mp4"}

Run it with `stepflow worker my_module:worker --amqp-url amqp://...`.
"""

from stepflow.adapters.worker import JobContext, JobFailed, Worker

__all__ = ["JobContext", "JobFailed", "Worker"]
