"""Embed the engine: start a workflow in-process, wait for its end, read its state.

    python examples/api/embed.py          # stores its events in ./stepflow.sqlite
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import structlog
from thumbnails import worker  # the worker beside this file

from stepflow import EmbeddedRuntime, load_definition, open_engine

DEFINITION = Path(__file__).with_name("thumbnails.toml")


async def main() -> None:
    # stepflow logs with structlog and leaves its set-up to the program: warnings up, on stderr.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    definition = load_definition(DEFINITION)  # checked on load: DefinitionError says where
    engine = open_engine("sqlite:///stepflow.sqlite")  # or postgresql://..., memory://
    try:
        async with EmbeddedRuntime(engine, [worker]) as runtime:
            good = await runtime.start(definition, {"images": ["beach.png", "forest.png"]}, actor="embed-example")
            bad = await runtime.start(definition, {"width": 8}, actor="embed-example")
            # wait() returns the workflow's WorkflowState once it has ended (completed, error,
            # stopped or deleted); with `timeout=` it raises TimeoutError instead of waiting on.
            done = await runtime.wait(good, timeout=60)
            failed = await runtime.wait(bad, timeout=60)
    finally:
        engine.close()

    print(f"{done.definition.identifier}: {done.status}")
    for step_id, step in done.steps.items():
        print(f"  {step_id}: {step.status} {step.outputs}")
    print(f"{failed.definition.identifier}: {failed.status}, {failed.reason}")
    for job in failed.jobs.values():
        print(f"  {job.step_id} #{job.index} attempt {job.attempt}: {job.status} ({job.error_kind}) {job.error}")


if __name__ == "__main__":
    asyncio.run(main())
