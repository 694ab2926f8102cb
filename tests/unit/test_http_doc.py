"""docs/http.md is generated from the OpenAPI document and is current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stepflow.adapters.http.routes import ENDPOINTS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_http", DOCS / "gen_http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_http_doc_is_current() -> None:
    assert _generator().render() == (DOCS / "http.md").read_text(), \
        "docs/http.md is stale: run python docs/gen_http.py"


def test_the_http_doc_names_every_route() -> None:
    text = (DOCS / "http.md").read_text()
    for e in ENDPOINTS:
        assert f"### {e.method} `{e.path}`" in text


def test_descriptions_do_not_depend_on_how_docstrings_are_indented() -> None:
    gen = _generator()
    assert gen.text("first line\n    second, indented | piped") == "first line second, indented \\| piped"
    assert gen.text("    first\n    second") == "first second"
