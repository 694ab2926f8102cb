"""Deprecated: the worker SDK moved to `stepflow.sdk`; import it from `stepflow`.

    from stepflow import JobContext, JobFailed, Worker

Kept importable for one release: importing this module warns (`DeprecationWarning`) and
gives the very same objects, so `isinstance` checks and handlers registered on either path
agree.
"""

from __future__ import annotations

from stepflow._deprecation import moved
from stepflow.sdk.answers import SDK_VERSION
from stepflow.sdk.context import JobContext, JobFailed
from stepflow.sdk.handlers import Handler
from stepflow.sdk.orders import (
    INVALID_ORDER,
    MAX_ATTEMPT,
    MAX_ERROR_TEXT,
    MAX_HANDLER_ERROR_TEXT,
    MAX_JOB_ID_BYTES,
    read_order,
)
from stepflow.sdk.worker import REMEMBERED_JOBS, Worker

__all__ = ["INVALID_ORDER", "MAX_ATTEMPT", "MAX_ERROR_TEXT", "MAX_HANDLER_ERROR_TEXT", "MAX_JOB_ID_BYTES",
           "REMEMBERED_JOBS", "SDK_VERSION", "Handler", "JobContext", "JobFailed", "Worker", "read_order"]

moved("stepflow.adapters.worker", "import Worker, JobContext and JobFailed from stepflow (or stepflow.sdk)")
