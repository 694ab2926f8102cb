"""Generate docs/http.md from the HTTP API's OpenAPI document (`GET /openapi.json`).

    python docs/gen_http.py          # rewrite docs/http.md
    python docs/gen_http.py --check  # exit 1 if docs/http.md is out of date (a test runs this)

The whole page is generated: every route (method, path, summary, right, parameters, body,
answers) and every schema (fields, types, required, defaults), in the order of the route
table (`stepflow.adapters.http.routes`) and by schema name. The words come from the code
(summaries, the Structs' docstrings and the parameters' descriptions); descriptions are
normalised here (`inspect.cleandoc`, one line), so the page does not change with how a
msgspec release writes docstrings into JSON Schema. The operator's guide with examples is
`stepflow/adapters/http/README.md`.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: this checkout's stepflow, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stepflow.adapters.http.openapi import document

DOC = Path(__file__).resolve().parent / "http.md"
HEADER = """# The stepflow HTTP API

Generated from the OpenAPI document (`GET /openapi.json`) by `python docs/gen_http.py`; a test
fails when this page is out of date. How to serve it, tokens, rights, metrics and the web view:
`stepflow/adapters/http/README.md`; a first session: the README's "The HTTP API and web view".

Every route but the public ones needs `Authorization: Bearer TOKEN`. Errors are `ErrorBody`
(`status`, `error`, `message`, `field`: where the problem is, `$.path` in the body,
`query.NAME`, `path.NAME` or `header.NAME`).
"""


def text(value: Any) -> str:
    """A description on one line, cell-safe."""
    return " ".join(inspect.cleandoc(str(value or "")).split()).replace("|", "\\|")


def type_of(schema: dict[str, Any]) -> str:
    """A JSON Schema as a short type: `string`, `integer (1..500)`, `[JobInfo](#jobinfo)[]`, ..."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " \\| ".join(type_of(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict):
            return f"{type_of(items)}[]"
        prefix = schema.get("prefixItems")
        return f"[{', '.join(type_of(p) for p in prefix)}]" if prefix else "array"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    out = kind if isinstance(kind, str) else " \\| ".join(kind)
    if "format" in schema:
        out += f" ({schema['format']})"
    low, high = schema.get("minimum", schema.get("minLength")), schema.get("maximum", schema.get("maxLength"))
    if low is not None or high is not None:
        out += f" ({'' if low is None else low}..{'' if high is None else high})"
    return out


def default_of(schema: dict[str, Any]) -> str:
    if "default" not in schema:
        return ""
    value = schema["default"]
    return f"`{'null' if value is None else str(value).lower() if isinstance(value, bool) else value}`"


def route(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", "", text(op.get("summary")) + ("" if op.get("summary", "").endswith(".")
                                                                            else "."), ""]
    if op.get("security") == []:
        lines += ["Public: no token needed.", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | default | description |", "| --- | --- | --- | --- | --- | --- |"]
        for p in params:
            schema = p.get("schema", {})
            lines.append(f"| `{p['name']}` | {p['in']} | {type_of(schema)} | {'yes' if p.get('required') else 'no'} "
                         f"| {default_of(schema)} | {text(p.get('description') or schema.get('description'))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        lines += [f"Body ({'required' if body.get('required') else 'optional'}): {type_of(schema)}", ""]
    lines += ["| answer | body | meaning |", "| --- | --- | --- |"]
    for status, answer in op["responses"].items():
        (media, content), = answer.get("content", {"": {"schema": {}}}).items()
        shape = type_of(content.get("schema", {})) if media == "application/json" else f"`{media}`"
        lines.append(f"| {status} | {shape} | {text(answer.get('description'))} |")
    return [*lines, ""]


def schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [text(schema["description"]), ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, f"Type: {type_of(schema)}", ""]
    required = set(schema.get("required", ()))
    lines += ["| field | type | required | default | description |", "| --- | --- | --- | --- | --- |"]
    for field, prop in properties.items():
        lines.append(f"| `{field}` | {type_of(prop)} | {'yes' if field in required else 'no'} | {default_of(prop)} "
                     f"| {text(prop.get('description'))} |")
    return [*lines, ""]


def render() -> str:
    doc = document()
    lines = [HEADER, "## Routes", ""]
    by_tag: dict[str, list[tuple[str, str]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path))
    lines += ["| method | path | summary |", "| --- | --- | --- |"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            lines.append(f"| {method.upper()} | `{path}` | {text(op.get('summary'))} |")
    lines.append("")
    for tag, routes in by_tag.items():
        lines += [f"## {tag.capitalize()}", ""]
        for method, path in routes:
            lines += route(method, path, doc["paths"][path][method])
    lines += ["## Schemas", ""]
    for name, schema in sorted(doc["components"]["schemas"].items()):
        lines += schema_section(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    fresh = render()
    if "--check" in argv:
        if DOC.read_text() != fresh:
            print("docs/http.md is out of date: run python docs/gen_http.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
