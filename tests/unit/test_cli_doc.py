"""The command line explains itself: every command has a description in its own `--help`, every
argument and flag a help text, and docs/cli.md is generated from that parser and current."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from stepflow.adapters.cli import build_parser, main

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_has_a_description_and_every_flag_a_help() -> None:
    missing = [f"{name}: description" for name, command in _commands().items() if not command.description]
    missing += [f"{name}: {action.option_strings or action.dest}" for name, command in _commands().items()
                for action in command._actions if not action.help]
    assert missing == []


def test_json_output_is_documented_as_one_object_per_line() -> None:
    for name, command in _commands().items():
        for action in command._actions:
            if "--json" in action.option_strings:
                assert "one JSON object" in (action.help or ""), name


def test_the_cli_doc_is_generated_from_the_parser_and_current() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert _generator().render() == text, "docs/cli.md is stale: run python docs/gen_cli.py"
    for name in _commands():
        assert f"\n## stepflow {name}\n" in text
    assert "`--detach-on-exit`" in text and "one JSON object per line" in text


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("stepflow ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "Ctrl-C or --timeout stops the workflow" in " ".join(capsys.readouterr().out.split())
