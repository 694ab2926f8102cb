"""Logging set-up for entry points (CLI, `serve`, `worker`); library code never calls it.

One event per line: a console renderer for people at a terminal, JSON lines for machines
(`--log-format json` or `STEPFLOW_LOG_FORMAT=json`, read into `stepflow.settings.Settings`
by the entry point, which passes them here). Context such as `workflow_id` and `job_id` is
bound with `structlog.contextvars`, so it follows async handlers.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(fmt: str = "console", level: str = "info") -> None:
    level_name = level.upper()
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        # Resolve sys.stderr per logger, not once: a test runner or a daemon may swap it.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
