"""Server-sent events: one message's encoding, the heartbeat period, and the JSON default shared with the pages.

Used by the trader's live stream (``web/live.py``) and the admin panel's stream (``api/routes/admin_panel.py``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

# A ``: heartbeat`` comment goes out this often so proxies keep an open stream's connection.
HEARTBEAT_SECONDS = 15.0


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def sse(event: str | None, data: Any) -> bytes:
    """One SSE message (``data`` as compact JSON on one line)."""
    payload = orjson.dumps(data, default=json_default).decode()
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


__all__ = ["HEARTBEAT_SECONDS", "json_default", "sse"]
