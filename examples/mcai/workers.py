"""The stepflow side of the mcai example: a stepflow-SDK worker that joins what the mcai
workers produced (it gets the mcai steps' string outputs as ordinary parameters), and one
that can stand in for the mcai worker of `job_words`."""

from __future__ import annotations

import asyncio

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


# The same work as worker.py's, for the `job_words` steps, written with stepflow's SDK: either
# kind of worker may serve a job type, and a workflow does not tell them apart.
words = Worker("mcai-example-words", version="1.0.0", description="upper-cases a word (stepflow SDK)")


class WordParams(msgspec.Struct):
    message: str


@words.job("job_words")
async def upper_word(params: WordParams, ctx: JobContext) -> dict:
    await ctx.progress(10)
    if params.message == "fail":
        raise RuntimeError(f"cannot upper-case {params.message!r}")
    if params.message.startswith("sleep"):
        await asyncio.sleep(float(params.message[len("sleep"):] or 1))
    return {"upper": params.message.upper()}
