"""docs/api.md shows the programs under examples/api/ as they are: every block marked
`<!-- file: PATH -->` equals that file, and every file there is shown."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```(\w+)\n(.*?)```\n", re.DOTALL)


def shown() -> dict[str, str]:
    blocks = {}
    for path, _, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        assert path not in blocks, f"{path} is shown twice"
        blocks[path] = text
    return blocks


def test_every_block_is_its_file() -> None:
    for path, text in shown().items():
        assert text == (ROOT / path).read_text(encoding="utf-8"), f"docs/api.md's copy of {path} differs from the file"


def test_every_example_is_shown() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "examples" / "api").iterdir()
             if p.suffix in (".py", ".toml")}
    assert files == set(shown()) and len(files) == 4
