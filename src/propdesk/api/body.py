"""Strict request bodies: our own JSON decoding, before FastAPI sees the body.

Every route of the API uses ``StrictJSONRoute``. For a request with a body it

1. refuses a non-JSON media type with 415 ``unsupported_media_type`` (a body without a JSON content type is
   never guessed at);
2. decodes the JSON itself: numbers with a fraction or exponent become exact ``Decimal`` (never a float, so
   ``0.1`` is 0.1 and ``1e400`` is a huge finite number the field validators then refuse), ``NaN`` and
   ``Infinity`` are refused, integers longer than 40 digits are refused (Python's own 4,300-digit guard would
   otherwise raise a bare ``ValueError``), duplicate object keys are refused (no parser differentials),
   strings may not contain NUL or lone surrogates (PostgreSQL cannot store them), and nesting is bounded;
3. computes the request hash used by idempotency (method, path, query and the canonical body).

FastAPI then validates the decoded value against the route's pydantic model as usual.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_INT_DIGITS = 40
MAX_DEPTH = 32


class BodyError(ValueError):
    """The body is not acceptable JSON; the message says why."""


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise BodyError(f"integer with {len(s.lstrip('-'))} digits is too large (limit {MAX_INT_DIGITS})")
    return int(s)


def _parse_float(s: str) -> Decimal:
    try:
        return Decimal(s)
    except InvalidOperation as exc:  # pragma: no cover - the JSON scanner only hands over valid numbers
        raise BodyError(f"invalid number {s[:40]!r}") from exc


def _reject_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a number JSON allows")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise BodyError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _check_str(s: str) -> None:
    if "\x00" in s:
        raise BodyError("strings may not contain NUL characters")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError("strings may not contain lone surrogates") from exc


def _check(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_str(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_str(k)
            _check(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check(v, depth + 1)


def decode_json(raw: bytes) -> Any:
    """Decode a request body strictly (see the module docstring); raises ``BodyError``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("the body is not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_pairs,
        )
    except BodyError:
        raise
    except json.JSONDecodeError as exc:
        raise BodyError(f"invalid JSON: {exc.msg} (position {exc.pos})") from exc
    except RecursionError as exc:
        raise BodyError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise BodyError(f"invalid JSON: {str(exc)[:200]}") from exc
    _check(value)
    return value


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, with no charset other than UTF-8."""
    if not content_type:
        return False
    parts = [p.strip() for p in content_type.split(";")]
    mt = parts[0].lower()
    if not (mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))):
        return False
    for p in parts[1:]:
        name, _, val = p.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _canon(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(type(obj).__name__)


def canonical(value: Any) -> str:
    """The canonical text of a decoded body: sorted keys, no whitespace, numbers as written."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canon)


def request_hash(method: str, path: str, query: str, body: Any) -> str:
    """SHA-256 over method, path, query string and canonical body: what "the same request" means."""
    h = hashlib.sha256()
    for part in (method.upper(), path, query, canonical(body)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


class _DecodedRequest(Request):
    """A request whose body was already read and decoded by ``StrictJSONRoute``."""

    def __init__(self, request: Request, raw: bytes, decoded: Any):
        super().__init__(request.scope, request.receive)
        self._raw = raw
        self._decoded = decoded

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._decoded


class StrictJSONRoute(APIRoute):
    """An APIRoute that reads, checks and decodes the body itself before FastAPI's own parsing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            if request.method in BODY_METHODS:
                raw = await request.body()
                decoded: Any = None
                if raw.strip():
                    if not is_json_media_type(request.headers.get("content-type")):
                        raise ApiError(
                            415,
                            "unsupported_media_type",
                            "the body must be application/json (UTF-8)",
                            {"content_type": (request.headers.get("content-type") or "")[:100]},
                        )
                    try:
                        decoded = decode_json(raw)
                    except BodyError as exc:
                        raise RequestValidationError(
                            [{"type": "json_invalid", "loc": ("body",), "msg": str(exc), "input": None}]
                        ) from None
                request.state.body = decoded
                request.state.body_hash = request_hash(
                    request.method,
                    request.scope["path"],
                    request.scope.get("query_string", b"").decode("latin-1"),
                    decoded,
                )
                request = _DecodedRequest(request, raw, decoded)
            return await handler(request)

        return strict_handler
