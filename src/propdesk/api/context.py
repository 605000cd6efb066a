"""What every router needs: the platform, the command runner, a logger, and small read helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..domain.errors import NotFound
from .errors import ApiError
from .idempotency import Commands

if TYPE_CHECKING:
    from ..bootstrap import Platform  # the platform is handed in by create_app, never imported at run time

# Shared OpenAPI documentation of the error envelope.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _err("Missing or invalid bearer token"),
    403: _err("Wrong role"),
    404: _err("Not found"),
    422: _err("Invalid path or query parameter"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    409: _err("Conflict (state, or an Idempotency-Key reused / in flight)"),
    413: _err("Body too large"),
    415: _err("Body is not application/json"),
    422: _err("Validation error, or a gate rejection (the rejected order is recorded)"),
}


@dataclass
class Api:
    platform: Platform
    commands: Commands
    log: Any

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.platform.db.read() as c:
            yield c


def require_account(conn: Any, account_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM accounts WHERE id=%s" + (" FOR UPDATE" if lock else ""), (account_id,)).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} not found", code="account_not_found")
    return row  # type: ignore[no-any-return]


def balance_of(conn: Any, account_id: uuid.UUID) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM balances WHERE account_id=%s", (account_id,)).fetchone()  # type: ignore


def ts_id_key(values: list[Any] | None) -> tuple[datetime, uuid.UUID] | None:
    """Decode a (created_at, id) cursor key."""
    if values is None:
        return None
    try:
        at, ident = datetime.fromisoformat(str(values[0])), uuid.UUID(str(values[1]))
    except ValueError:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid") from None
    if at.tzinfo is None:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return at, ident
