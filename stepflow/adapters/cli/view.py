"""Terminal rendering of a workflow's state: a live view while it runs, a full table at the end.

At a terminal the live view redraws in place; elsewhere (a pipe, CI) it prints a line only
when a step's summary changes, so logs stay readable.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from stepflow.adapters.cli.errors import drop_stdout
from stepflow.engine.state import WorkflowState

_MARK = {"completed": "✔", "error": "✘", "processing": "…", "waiting": "·", "skipped": "↷", "stopped": "■"}


def step_lines(state: WorkflowState) -> list[str]:
    lines = []
    for step in sorted(state.steps.values(), key=lambda s: s.order):
        jobs = state.current_jobs(step.step_id)
        counts = Counter(job.status for job in jobs)
        progress = sum(job.progression for job in jobs) / len(jobs) if jobs else (100 if step.status == "completed" else 0)
        summary = " ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        bar = _bar(progress)
        lines.append(f"  {_MARK.get(step.status, '?')} {step.step_id:<16} {step.status:<10} {bar} {progress:5.1f}%  "
                     f"{len(jobs)} job(s){': ' + summary if summary else ''}")
    return lines


def _bar(percent: float, width: int = 20) -> str:
    filled = round(percent / 100 * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def final_lines(state: WorkflowState) -> list[str]:
    lines = [f"workflow {state.id} {state.definition.identifier} {state.definition.version}: {state.status}"
             + (f" ({state.reason})" if state.reason else "")]
    for step in sorted(state.steps.values(), key=lambda s: s.order):
        lines.append(f"  step {step.step_id}: {step.status}" + (f" ({step.reason})" if step.reason else ""))
        for job in sorted((j for j in state.jobs.values() if j.step_id == step.step_id),
                          key=lambda j: (j.index, j.attempt)):
            took = f" {job.execution_duration:.3f}s" if job.execution_duration is not None else ""
            detail = job.error if job.error else ", ".join(f"{k}={_short(v)}" for k, v in job.outputs.items())
            lines.append(f"    job {job.job_id} #{job.index} attempt {job.attempt}: {job.status}{took}"
                         + (f"  {detail}" if detail else ""))
    return lines


def _short(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LiveView:
    """What `stepflow run` prints while it follows a workflow. If the reader of a pipe goes away
    (`stepflow run ... | head -3`), the rest is dropped and the run goes on to its end: a
    closed pipe must not leave a workflow behind, running, with nobody following it."""

    def __init__(self, out: TextIO, live: bool = True) -> None:
        self.out = out
        self.live = live
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.gone = False  # the reader went away
        self._drawn = 0
        self._last: list[str] = []

    def say(self, text: str) -> None:
        """Write `text` and flush it now (a script reading the pipe learns it at once)."""
        if self.gone:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            self.gone = True
            if self.out is sys.stdout:
                drop_stdout()

    def update(self, state: WorkflowState) -> None:
        if not self.live:
            return
        lines = step_lines(state)
        if self.tty:
            self.say((f"\x1b[{self._drawn}F\x1b[J" if self._drawn else "") + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self.say("".join(line + "\n" for line, old in zip(lines, self._last + [""] * len(lines))
                             if line != old))
        self._last = lines

    def final(self, state: WorkflowState) -> None:
        self.say("\n".join(final_lines(state)) + "\n")
