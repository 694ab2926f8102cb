"""The stepflow side of the mcai example: a stepflow-SDK worker that joins what the mcai
worker produced. It gets the mcai steps' string outputs as ordinary parameters."""

from __future__ import annotations

import msgspec

from stepflow import JobContext, Worker

join = Worker("mcai-example-join", version="1.0.0", description="joins the mcai worker's outputs")


class JoinParams(msgspec.Struct):
    title: str
    words: list[str]


@join.job("mcai_join")
async def join_words(params: JoinParams, ctx: JobContext) -> dict:
    await ctx.progress(50, "joining")
    return {"sentence": f"{params.title}: {' '.join(params.words)}", "count": len(params.words)}
