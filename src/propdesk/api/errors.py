"""Errors at the HTTP edge: one envelope, stable codes.

Every error response is ``{"error": {"code": "...", "message": "...", "details": {...}}}``:

    DomainError (core)          its ``http_status`` / ``code`` / ``details``
    ApiError (this layer)       bad media type, bad idempotency key, idempotency conflicts, ...
    RequestValidationError      422 ``validation_error``; details.errors = [{loc, msg, type, ctx?}] (JSON-safe)
    HTTPException               its status; 404 ``not_found``, 405 ``method_not_allowed``, 413 ``body_too_large``
    anything else               500 ``internal_error`` (logged with its traceback; none in the body)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..domain.errors import DomainError
from .render import json_response

STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal decided by the web layer (not the core). Rendered like a DomainError."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


class BodyTooLarge(HTTPException):
    """Raised from the body-counting ``receive`` wrapper; an HTTPException so FastAPI re-raises it untouched."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes")
        self.limit = limit


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return json_response(error_body(code, message, details), status, headers)


def describe(exc: DomainError | ApiError) -> tuple[int, dict[str, Any]]:
    """(status, body) of a refusal, for responses and for the idempotency store."""
    return exc.http_status, error_body(exc.code, exc.message, _safe(exc.details))


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: no exception objects, no bytes, bounded depth."""
    if depth > 8:
        return "..."
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    # Decimal, UUID, datetime and the rest render through their string form.
    return str(value)


def validation_details(errors: Sequence[Any]) -> dict[str, Any]:
    """Field errors without the raw input (which may be huge or binary) and with a stringified context."""
    out = []
    for e in list(errors)[:50]:
        if not isinstance(e, Mapping):
            out.append({"loc": [], "msg": str(e), "type": "value_error"})
            continue
        item: dict[str, Any] = {
            "loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:500],
            "type": str(e.get("type", "value_error")),
        }
        ctx = e.get("ctx")
        if isinstance(ctx, Mapping) and ctx:
            item["ctx"] = {str(k): v if isinstance(v, bool | int) else str(v)[:500] for k, v in ctx.items()}
        out.append(item)
    return {"errors": out}


def validation_error(errors: Sequence[Any], message: str = "request validation failed") -> Response:
    return error_response(422, "validation_error", message, validation_details(errors))


# ---------------------------------------------------------------------------------------------- handlers
async def handle_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, body = describe(exc)
    return json_response(body, status)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    status, body = describe(exc)
    return json_response(body, status, exc.headers)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_error(exc.errors())


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = STATUS_CODES.get(status, "http_error")
    if status == 404:
        message = "no such route" if "route" not in request.scope else str(exc.detail)
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    details = {"limit_bytes": exc.limit} if isinstance(exc, BodyTooLarge) else {}
    return error_response(status, code, message, details, headers)
