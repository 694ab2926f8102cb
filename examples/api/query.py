"""Read the read models: workflows, one workflow's steps and jobs, statistics per job type.

    python examples/api/query.py [STORE_URL]     # default: sqlite:///stepflow.sqlite

It first runs two workflows in-process (one completes, one fails), so there is something to
read; point it at any store (`postgresql://...`, the one `stepflow serve` writes) to read that.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import structlog
from thumbnails import worker  # the worker beside this file

from stepflow import EmbeddedRuntime, load_definition, open_engine
from stepflow.queries import open_views

DEFINITION = Path(__file__).with_name("thumbnails.toml")


async def run_two(store: str) -> None:
    engine = open_engine(store)
    try:
        async with EmbeddedRuntime(engine, [worker]) as runtime:
            definition = load_definition(DEFINITION)
            for parameters in ({"images": ["beach.png", "forest.png"]}, {"width": 8}):
                workflow_id = await runtime.start(definition, parameters, labels=["query-example"])
                await runtime.wait(workflow_id, timeout=60)
    finally:
        engine.close()


def report(store: str) -> None:
    # open_views applies the events stored since the views were last brought up to date.
    with open_views(store) as views:
        page = views.workflows(label="query-example", limit=10)  # newest first
        for summary in page.items:
            print(f"{summary.definition}@{summary.definition_version} {summary.status} "
                  f"{summary.steps_done}/{summary.steps_total} steps {summary.progress:.0f}%")
        failed = views.workflows(status="error", label="query-example").items[0]
        detail = views.workflow(failed.workflow_id)  # WorkflowDetail: the summary, steps, jobs
        assert detail is not None
        for step in detail.steps:
            print(f"  step {step.step_id}: {step.status} {step.job_counts}")
        for job in detail.jobs:
            print(f"  job {job.step_id} #{job.index} attempt {job.attempt}: {job.status} ({job.error_kind})")
        errors = views.jobs(status="error", workflow_id=failed.workflow_id)
        print(f"jobs in error: {len(errors.items)}")
        for stats in views.job_type_stats():
            print(f"{stats.job_type}: {stats.completed} completed, {stats.errored} errored of {stats.submitted}")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    url = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///stepflow.sqlite"
    asyncio.run(run_two(url))
    report(url)
