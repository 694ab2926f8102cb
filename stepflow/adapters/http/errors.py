"""API errors as JSON, and request decoding that names the bad field.

Every error answer has the same body, `{"status", "error", "message", "field"}`: `field` is
where the problem is, `$.path` in the JSON body (msgspec's own path) or `query.NAME` /
`path.NAME` for parameters, and null when no single field is to blame.
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http.schemas import QUERY_CHOICES, ErrorBody

MAX_BODY_BYTES = 1_048_576
T = TypeVar("T")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid",
          500: "internal", 503: "unavailable"}
_AT = re.compile(r" - at (`key` in )?`\$([^`]*)`$")
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = ErrorBody(status=status, error=_CODES.get(status, "error"), message=message, field=field)
    return Response(_encoder.encode(body), status_code=status, media_type="application/json", headers=headers)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type="application/json", headers=headers)


def split_path(error: msgspec.ValidationError | msgspec.DecodeError, prefix: str) -> tuple[str, str | None]:
    """msgspec's message and the field it names: `$.a.b` under `prefix` ('$' or 'query')."""
    text = str(error)
    match = _AT.search(text)
    if match is None:
        return text, None
    reason = text[: match.start()] + (" (in a key)" if match.group(1) else "")
    tail = match.group(2)
    return reason, (f"${tail}" if prefix == "$" else f"{prefix}{tail}" if tail else prefix)


async def decode_body(request: Request, decoder: msgspec.json.Decoder[T], *, empty_ok: bool = False) -> T:
    data = await request.body()
    if len(data) > MAX_BODY_BYTES:
        raise ApiError(413, f"body of {len(data)} bytes is over the {MAX_BODY_BYTES} byte limit")
    if not data.strip():
        if empty_ok:
            data = b"{}"
        else:
            raise ApiError(422, "a JSON body is required", "$")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as error:
        reason, field = split_path(error, "$")
        raise ApiError(422, reason, field or "$") from None
    except msgspec.DecodeError as error:
        raise ApiError(400, f"not JSON: {error}", "$") from None


def decode_query(request: Request, type_: type[T]) -> T:
    params: dict[str, Any] = {}
    known = set(type_.__struct_fields__)  # type: ignore[attr-defined]
    for key, value in request.query_params.multi_items():
        if key not in known:
            raise ApiError(422, f"unknown query parameter {key[:60]!r}; known: {', '.join(sorted(known))}",
                           f"query.{key[:60]}")
        if key in params:
            raise ApiError(422, f"query parameter {key!r} given more than once", f"query.{key}")
        params[key] = value
    for key, (what, valid) in QUERY_CHOICES.get(type_, {}).items():
        for item in params.get(key, "").split(","):
            if key in params and item.strip() not in valid:
                raise ApiError(422, f"unknown {what} {item.strip()[:60]!r}; valid: {', '.join(valid)} "
                                    "(one, or several separated by commas)", f"query.{key}")
    for key in _time_fields(type_) & params.keys():  # type: ignore[arg-type]
        # non-strict conversion would take a bare number as seconds since 1970: only a
        # written-out RFC 3339 time is what the schema documents
        if "-" not in params[key].lstrip("+-"):
            raise ApiError(422, f"query parameter {key!r} is not an RFC 3339 time (e.g. 2024-05-01T00:00:00Z)",
                           f"query.{key}")
    try:
        return msgspec.convert(params, type_, strict=False)
    except msgspec.ValidationError as error:
        reason, field = split_path(error, "query")
        raise ApiError(422, reason, field) from None


@functools.cache
def _time_fields(type_: type) -> frozenset[str]:
    """The fields of a query Struct that hold a datetime (alone or in a union)."""
    info = msgspec.inspect.type_info(type_)
    names = set()
    for field in getattr(info, "fields", ()):
        kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        kinds = tuple(k.type if isinstance(k, msgspec.inspect.Metadata) else k for k in kinds)
        if any(isinstance(kind, msgspec.inspect.DateTimeType) for kind in kinds):
            names.add(field.encode_name)
    return frozenset(names)
