"""The answered-jobs file: read back after a restart, torn lines skipped, bounded."""

from __future__ import annotations

from pathlib import Path

from stepflow.adapters import protocol as p
from stepflow.sdk.answered import AnsweredFile


def answer(n: int) -> p.Message:
    return p.Message(routing_key=p.JOB_COMPLETED, body=b'{"n":%d}' % n, message_id=f"j{n}:completed",
                     headers={"workflow_id": "w"})


def test_answers_come_back_in_order_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "answered.jsonl"
    first = AnsweredFile(path, limit=10)
    remembered = first.load()
    for n in range(3):
        remembered[f"j{n}"] = answer(n)
        first.append(f"j{n}", answer(n), remembered)
    first.close()
    with path.open("ab") as f:
        f.write(b'{"job": "j9", "answer": {"routing_k')  # a crash mid-write
    again = AnsweredFile(path, limit=10).load()
    assert list(again) == ["j0", "j1", "j2"] and again["j1"] == answer(1)


def test_the_file_stays_bounded_and_keeps_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "answered.jsonl"
    file = AnsweredFile(path, limit=5)
    remembered = file.load()
    for n in range(23):
        remembered[f"j{n}"] = answer(n)
        while len(remembered) > 5:
            remembered.popitem(last=False)
        file.append(f"j{n}", answer(n), remembered)
    file.close()
    assert len(path.read_bytes().splitlines()) <= 10
    assert list(AnsweredFile(path, limit=5).load()) == [f"j{n}" for n in range(18, 23)]
