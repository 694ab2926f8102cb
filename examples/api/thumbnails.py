"""A worker: typed parameters, progress, and a failure with a kind (see docs/api.md).

Over RabbitMQ, for a backend (`stepflow serve`, or `stepflow run --amqp-url`) to send it jobs:
    stepflow worker examples/api/thumbnails.py:worker --amqp-url amqp://guest:guest@localhost:5672/
In-process, with the engine (embedded mode):
    stepflow run examples/api/thumbnails.toml --worker examples/api/thumbnails.py:worker
"""

from __future__ import annotations

import asyncio
import hashlib

import msgspec

from stepflow import JobContext, JobFailed, Worker

worker = Worker("thumbnails", version="1.0.0", description="thumbnails and albums", prefetch=4)


class ThumbnailParams(msgspec.Struct):
    """What a `thumbnail` job takes: checked against the order before the handler runs."""

    image: str
    width: int = 320


class Thumbnail(msgspec.Struct):
    path: str
    bytes: int


class AlbumParams(msgspec.Struct):
    title: str
    paths: list[str]


@worker.job("thumbnail")
async def thumbnail(params: ThumbnailParams, ctx: JobContext) -> Thumbnail:
    if not 16 <= params.width <= 4096:
        # The step lists "invalid_input" as non_retryable: this job fails at once, no retry.
        raise JobFailed(f"width {params.width} is not between 16 and 4096", kind="invalid_input")
    await ctx.progress(10, "decoding")
    await asyncio.sleep(0.01)  # the real work goes here; a stop order cancels it
    await ctx.progress(80, "encoding")
    name = params.image.rsplit(".", 1)[0]
    return Thumbnail(path=f"thumbs/{name}-{params.width}.jpg", bytes=params.width * 48)


@worker.job("album")
async def album(params: AlbumParams, ctx: JobContext) -> dict[str, object]:
    index = hashlib.sha256("\n".join(params.paths).encode()).hexdigest()[:12]
    return {"index": index, "count": len(params.paths)}
