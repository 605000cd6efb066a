"""Keyset pagination with opaque cursors.

A list response is ``{"items": [...], "next_cursor": "..." | null}``. ``?limit=`` is 1..500 (default 100);
``?cursor=`` is the ``next_cursor`` of the previous page. A cursor is base64url JSON naming the list it belongs
to and the sort key of the last item; a cursor from another list, or one that does not decode, is a 422
``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Query

from .errors import ApiError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1..500).")]
Cursor = Annotated[str | None, Query(max_length=512, description="The next_cursor of the previous page.")]


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    raw = json.dumps({"k": kind, "v": list(key)}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, arity: int) -> list[Any] | None:
    """The sort key in ``cursor`` (None for the first page); raises 422 ``invalid_cursor``."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise ApiError(422, "invalid_cursor", "the cursor is not valid") from None
    if (
        not isinstance(data, dict)
        or data.get("k") != kind
        or not isinstance(data.get("v"), list)
        or len(data["v"]) != arity
        or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in data["v"])
    ):
        raise ApiError(422, "invalid_cursor", "the cursor does not belong to this list")
    return list(data["v"])


def decode_int_cursor(kind: str, cursor: str | None) -> int:
    """A single-integer sort key (0 for the first page)."""
    values = decode_cursor(kind, cursor, 1)
    if values is None:
        return 0
    if not isinstance(values[0], int) or not 0 <= values[0] < 2**63:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return values[0]


def page(
    kind: str,
    rows: Sequence[Any],
    limit: int,
    key: Callable[[Any], Sequence[Any]],
    present: Callable[[Any], Any] = lambda r: r,
) -> dict[str, Any]:
    """Build a page from up to ``limit + 1`` rows fetched in key order."""
    more = len(rows) > limit
    items = list(rows[:limit])
    return {
        "items": [present(r) for r in items],
        "next_cursor": encode_cursor(kind, key(items[-1])) if more and items else None,
    }
