"""`stepflow timeline` over a store holding a played story (workflows started just now)."""

from __future__ import annotations

from uuid import UUID

from test_cli_read import Cli, cli, ids  # noqa: F401  (fixtures)


def test_timeline_table_json_and_bad_ranges(ids: dict[str, UUID], cli: Cli) -> None:  # noqa: F811
    code, out, _ = cli("timeline", "--bin", "minute", "--since", "1h")
    assert code == 0
    header, *rows = out.split("\n\n")[0].splitlines()
    assert header.split()[:4] == ["MINUTE", "(UTC)", "WORKFLOWS", "BY"]
    assert sum(int(row.split()[2]) for row in rows) == len(ids)
    bins = cli.json_lines("timeline", "--bin", "hour")
    assert len(bins) in (24, 25) and sum(sum(b["workflows"].values()) for b in bins) == len(ids)
    assert any(d["job_type"] for b in bins for d in b["durations"])
    code, _, err = cli("timeline", "--bin", "minute", "--since", "30d")
    assert code == 2 and "at most 1500" in err
    code, _, err = cli("timeline", "--since", "1h", "--until", "2h")
    assert code == 2 and "since must be before until" in err
