"""JSON rendering for every API response.

Decimals become strings with their meaningful digits only (``Decimal('99754.2000000000')`` -> ``"99754.2"``,
never an exponent), UUIDs become strings, datetimes ISO-8601 in UTC with a ``Z``. Database rows pass through
``reads.present`` helpers so internal columns (``request_hash``) never leave the service.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
from starlette.responses import Response

JSON_MEDIA_TYPE = "application/json"


def dec(d: Decimal) -> str:
    """A Decimal as a plain string: normalized, no exponent, no negative zero."""
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def ts(d: datetime) -> str:
    """ISO-8601 in UTC with ``Z`` (naive datetimes are taken as UTC)."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return dec(obj)
    if isinstance(obj, datetime):
        return ts(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if isinstance(obj, bytes):
        raise TypeError("bytes are never rendered")
    raise TypeError(f"cannot render {type(obj).__name__}")


_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """Render ``obj`` as compact JSON bytes."""
    return orjson.dumps(obj, default=_default, option=_OPTIONS)


def json_response(body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status_code, headers=dict(headers or {}), media_type=JSON_MEDIA_TYPE)
