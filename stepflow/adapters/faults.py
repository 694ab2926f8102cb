"""Crash points for the fault suite (docs/protocol.md, "Crash points").

Read once at import: the process dies with `os._exit(137)`, as if SIGKILLed, the Nth time
(STEPFLOW_FAULT_AFTER, default 1) it reaches the point named by STEPFLOW_FAULT. Off, a point
costs one string comparison: callers write `if FAULT == "name": crash()`.

    after_store_before_ack       inbox: a batch's events are committed, none of it is acked
    mid_batch                    inbox: a batch of 2+ messages is committed, the first half acked
    after_store_before_publish   the outbox read stored orders and has published none
    during_publish               outbox: the first half of a batch of 2+ orders is confirmed
    after_publish_before_advance the orders are confirmed, the tracked position not advanced
    poison_message               inbox: about to apply the message whose id (or key) is
                                 STEPFLOW_FAULT_MESSAGE, in every life of the process: a bug
                                 that kills the backend on one message (the crash-loop breaker)
"""

from __future__ import annotations

import os

import structlog

FAULT = os.environ.get("STEPFLOW_FAULT", "")
FAULT_MESSAGE = os.environ.get("STEPFLOW_FAULT_MESSAGE", "")
_visits_left = [int(os.environ.get("STEPFLOW_FAULT_AFTER", "1") or 1)] if FAULT else [0]


def crash() -> None:
    """At the armed crash point: die on the Nth visit (called only when FAULT matched)."""
    _visits_left[0] -= 1
    if _visits_left[0] <= 0:
        structlog.get_logger("stepflow.faults").warning("fault_injected", point=FAULT)
        os._exit(137)
