"""A worker's memory of the jobs it answered, kept in a file so it outlives a restart.

A worker answers an order for a job it already answered with the same response instead of
running it again; in memory that protects against a redelivery while it lives. When several
backends hand over (or one restarts), an order may come back after the worker restarted too,
and a job that costs money or time must still not run twice. So, optionally, each confirmed
answer is appended to a local file, and a starting worker reads the last `limit` back.

The file is one msgspec-JSON record per line, appended and flushed after the broker confirmed
the answer. A line torn by a crash is skipped when read. It is bounded: once it holds twice
`limit` records it is rewritten with the last `limit` (written beside it, then renamed over
it, so a crash while compacting leaves the old file). Flushed, not fsynced: it survives the
process dying, not the machine losing power (then the job may run again: at least once).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import IO

import msgspec
import structlog

from stepflow.adapters import protocol as p

log = structlog.get_logger("stepflow.worker")


class Answered(msgspec.Struct, frozen=True, kw_only=True):
    job: str  # the job's key (its id as text)
    answer: p.Message


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Answered).decode


class AnsweredFile:
    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        self.path = Path(path)
        self.limit = limit
        self._records = 0  # lines in the file
        self._file: IO[bytes] | None = None

    def load(self) -> OrderedDict[str, p.Message]:
        """The last `limit` answers in the file, oldest first (an absent file: none)."""
        answered: OrderedDict[str, p.Message] = OrderedDict()
        skipped = 0
        try:
            with self.path.open("rb") as lines:
                for line in lines:
                    self._records += 1
                    try:
                        record = _decode(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        skipped += 1  # a line torn by a crash, or not ours
                        continue
                    answered.pop(record.job, None)
                    answered[record.job] = record.answer
                    if len(answered) > self.limit:
                        answered.popitem(last=False)
        except FileNotFoundError:
            pass
        if skipped:
            log.warning("answered_file_lines_skipped", path=str(self.path), lines=skipped)
        return answered

    def append(self, job: str, answer: p.Message, remembered: OrderedDict[str, p.Message]) -> None:
        """Add one answer; compact to `remembered` (the worker's memory) when the file is full."""
        if self._records >= 2 * self.limit:
            self._compact(remembered)
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(_encode(Answered(job=job, answer=answer)) + b"\n")
        self._file.flush()
        self._records += 1

    def _compact(self, remembered: OrderedDict[str, p.Message]) -> None:
        self.close()
        fresh = self.path.with_name(self.path.name + ".new")
        with fresh.open("wb") as out:
            for job, answer in remembered.items():
                out.write(_encode(Answered(job=job, answer=answer)) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        fresh.replace(self.path)
        self._records = len(remembered)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
