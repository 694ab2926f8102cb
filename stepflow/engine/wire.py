"""Integer job ids for the wire: what the original Step Flow protocol and its SDK expect.

The engine names a job by a uuid5 of its place (`job_id_for`), which is what makes a decision
re-made after a crash name the same job. The original SDK only takes an unsigned 64-bit
integer `job_id` and echoes nothing else (no workflow id, no message id), so every job also
gets an integer, its **wire id**, that must be as stable as the uuid and must lead back to the
job through the store.

A wire id is `number << ORDINAL_BITS | ordinal`:
- `number` is the workflow's: drawn at random when it starts and made unique by a one-event
  stream named after it (`number_stream_id`), saved in the same transaction as the start, so
  a clash is a version conflict and another number is drawn. That stream is the index an
  incoming integer is looked up in, once per workflow, not once per job.
- `ordinal` is the job's place among the workflow's submitted jobs (0, 1, 2, ... in the order
  of their `JobSubmitted` events), a function of the state, so a re-decision gives the same.

Both fit below 2**53 (32 + 21 bits), so a wire id survives a JavaScript client or a JSON tool
that reads numbers as doubles. A workflow can submit 2,097,152 jobs (retries count) before its
jobs get no wire id (they then go out with the uuid, which only stepflow's own SDK takes).
"""

from __future__ import annotations

import secrets
from uuid import UUID, uuid5

NUMBER_BITS = 32
ORDINAL_BITS = 21
MAX_ORDINAL = (1 << ORDINAL_BITS) - 1
MAX_WIRE_ID = (1 << (NUMBER_BITS + ORDINAL_BITS)) - 1
NUMBER_NAMESPACE = UUID("3c9d2f4e-8b1a-4f6d-a2e5-7b0c1d9e6f53")


def new_number() -> int:
    """A fresh workflow number (never 0: a wire id of 0 looks like "no id" to some tools)."""
    return 1 + secrets.randbelow((1 << NUMBER_BITS) - 1)


def wire_id(number: int | None, ordinal: int) -> int | None:
    if number is None or ordinal > MAX_ORDINAL:
        return None
    return (number << ORDINAL_BITS) | ordinal


def number_of(wire: int) -> int:
    return wire >> ORDINAL_BITS


def number_stream_id(number: int) -> UUID:
    return uuid5(NUMBER_NAMESPACE, str(number))
