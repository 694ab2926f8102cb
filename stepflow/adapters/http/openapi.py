"""The OpenAPI 3.1 document, generated from the route table and the msgspec Structs."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from stepflow.adapters.http.routes import ENDPOINTS, Endpoint
from stepflow.adapters.http.schemas import ErrorBody

REF = "#/components/schemas/{name}"


def _version() -> str:
    import stepflow

    return str(stepflow.__version__)  # the distribution is "stepflow-engine" (pyproject.toml)


def _operation_id(e: Endpoint) -> str:
    return e.handler.__name__.lstrip("_")


def _query_parameters(type_: type, components: dict[str, Any]) -> list[dict[str, Any]]:
    (ref,), defs = msgspec.json.schema_components([type_], ref_template=REF)
    schema = defs[ref["$ref"].rsplit("/", 1)[1]]
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        any_of = prop.pop("anyOf", None)
        if any_of:  # `X | None` in a query means "absent": document X
            prop.update(next(a for a in any_of if a.get("type") != "null"))
        if prop.get("default") is None:
            prop.pop("default", None)
        out.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return out


def _operation(e: Endpoint, components: dict[str, Any], refs: dict[type, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": _operation_id(e), "summary": e.summary, "tags": [e.tag]}
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema, "description": text}
        for name, schema, text in e.path_params
    ]
    params += [{"name": name, "in": "header", "required": False, "description": text,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"}}
               for name, text in e.headers]
    if e.query is not None:
        params += _query_parameters(e.query, components)
    if params:
        op["parameters"] = params
    if e.body is not None:
        op["requestBody"] = {"required": e.body_required,
                             "content": {"application/json": {"schema": refs[e.body]}}}
    status, body = e.ok
    if body is None:
        content: dict[str, Any] = {e.media_type: {"schema": {"type": "string"}}}
        if e.path == "/openapi.json":
            content = {"application/json": {"schema": {"type": "object"}}}
    else:
        content = {e.media_type: {"schema": refs[body]}}
    responses: dict[str, Any] = {str(status): {"description": "OK", "content": content}}
    for code in e.errors:
        schema = refs[body] if code == 503 and e.path == "/readyz" else refs[ErrorBody]
        words = e.extra.get("error_text", {}).get(code) or _ERROR_TEXT.get(code, "error")
        responses[str(code)] = {"description": words,
                                "content": {"application/json": {"schema": schema}}}
    if code_401 := responses.get("401"):
        code_401["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    op["responses"] = responses
    if e.public:
        op["security"] = []
    return op


_ERROR_TEXT = {400: "not JSON", 401: "no or unknown bearer token", 403: "refused by the definition's rights "
               "(recorded in the audit log)", 404: "unknown", 409: "refused by the workflow's state",
               413: "body too large", 422: "invalid input: `field` names it", 503: "not ready"}


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    types = [ErrorBody] + [t for e in ENDPOINTS for t in (e.ok[1], e.body) if t is not None]
    types = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, components, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "stepflow", "version": _version(),
                 "description": "Workflows, jobs, workers and statistics of a stepflow installation. "
                                "Errors are `ErrorBody` with the bad `field`."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
