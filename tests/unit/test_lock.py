"""The lock (constraints.txt) pins every dependency pyproject.toml names, in every extra.

A package missing from the lock would be installed at whatever version the index serves that
day, which is how a fresh machine once failed where CI had passed.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_of_every_extra_is_pinned_in_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    wanted.discard(project["name"])
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            pinned[match.group(1).lower().replace("_", "-")] = match.group(2)
    assert wanted - pinned.keys() == set(), "refresh constraints.txt (see README, Development)"


def test_the_readme_and_ci_install_with_the_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    installs = re.findall(r"pip install -q [^\n`&]*", readme + ci)  # stepflow's installs
    assert installs
    unlocked = [cmd for cmd in installs if "-c constraints.txt" not in cmd]
    assert unlocked == []
