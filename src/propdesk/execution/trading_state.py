"""The platform kill switch, stored in PostgreSQL (``trading_state``, migration 0014) and read by every process.

A scope is ``*`` (the platform) or a symbol; its mode is ``active``, ``reduce_only`` or ``halted`` (no row:
``active``). The mode that applies to an order is the stricter of the platform's and its symbol's. Every process
reads the whole (tiny) table at most every ``ttl_s`` (0.5 s by default), so a switch thrown in one process is
enforced by every other within a second. Reads go through the connection the caller already holds (the account's
transaction) when one is given, so the gate never asks the pool for a second connection under an account lock.

``set_mode`` writes the row and its ``admin_audit`` row (action ``trading_state``) in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ..domain.gates import TRADING_MODES, stricter_mode

PLATFORM = "*"
DEFAULT_TTL_S = 0.5


@dataclass(frozen=True, slots=True)
class Effective:
    """The mode that applies to a symbol and the scope that set it (``platform`` or the symbol)."""

    mode: str
    scope: str


def _check_mode(mode: str) -> str:
    if mode not in TRADING_MODES:
        raise ValueError(f"trading mode must be one of {', '.join(TRADING_MODES)}")
    return mode


class TradingState:
    """The kill switch as every process sees it: a cached read of ``trading_state``; thread-safe."""

    def __init__(self, db: Any, *, ttl_s: float = DEFAULT_TTL_S, monotonic: Callable[[], float] = time.monotonic):
        self.db = db
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._modes: dict[str, str] = {}
        self._read_at: float | None = None

    def _load(self, conn: Any) -> dict[str, str]:
        rows = conn.execute("SELECT scope, mode FROM trading_state").fetchall()
        return {r["scope"]: r["mode"] for r in rows}

    def modes(self, conn: Any | None = None) -> dict[str, str]:
        """Every scope that is not ``active`` (``*`` for the platform), at most ``ttl_s`` old."""
        now = self._monotonic()
        with self._lock:
            if self._read_at is not None and now - self._read_at < self.ttl_s:
                return dict(self._modes)
        if conn is not None:
            modes = self._load(conn)
        else:
            with self.db.read() as c:
                modes = self._load(c)
        modes = {k: v for k, v in modes.items() if v != "active"}
        with self._lock:
            self._modes, self._read_at = modes, now
        return dict(modes)

    def effective(self, symbol: str, conn: Any | None = None) -> Effective:
        """The mode an order on ``symbol`` meets now."""
        modes = self.modes(conn)
        platform = modes.get(PLATFORM, "active")
        own = modes.get(symbol, "active")
        mode = stricter_mode(platform, own)
        if mode == "active":
            return Effective("active", "platform")
        return Effective(mode, "platform" if platform == mode else symbol)

    def invalidate(self) -> None:
        """Forget the cache (this process's next order reads the table)."""
        with self._lock:
            self._read_at = None


def read_all(conn: Any) -> list[dict[str, Any]]:
    """Every stored scope (``*`` first), as rows."""
    return list(
        conn.execute(
            "SELECT scope, mode, reason, actor, updated_at FROM trading_state ORDER BY scope <> '*', scope"
        ).fetchall()
    )


def set_mode(
    conn: Any, *, scope: str, mode: str, reason: str, actor: str, at: datetime, known_symbol: Callable[[str], bool]
) -> dict[str, Any]:
    """Set ``scope``'s mode (``*`` or a symbol) and audit it in the caller's transaction; returns the audit's
    ``before``/``after`` and the row. ``active`` deletes the row (no row means active)."""
    _check_mode(mode)
    if scope != PLATFORM and not known_symbol(scope):
        raise ValueError(f"unknown symbol {scope!r}")
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required")
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('propdesk.trading_state'))")
    row = conn.execute("SELECT mode FROM trading_state WHERE scope=%s", (scope,)).fetchone()
    before = row["mode"] if row is not None else "active"
    if mode == "active":
        conn.execute("DELETE FROM trading_state WHERE scope=%s", (scope,))
    else:
        conn.execute(
            "INSERT INTO trading_state (scope, mode, reason, actor, updated_at) VALUES (%s,%s,%s,%s,%s)"
            " ON CONFLICT (scope) DO UPDATE SET mode=EXCLUDED.mode, reason=EXCLUDED.reason, actor=EXCLUDED.actor,"
            " updated_at=EXCLUDED.updated_at",
            (scope, mode, reason, actor, at),
        )
    conn.execute(
        "INSERT INTO admin_audit (actor, action, account_id, reason, before, after, details, created_at)"
        " VALUES (%s,'trading_state',NULL,%s,%s,%s,%s,%s)",
        (
            actor,
            reason,
            Jsonb({"scope": scope, "mode": before}),
            Jsonb({"scope": scope, "mode": mode}),
            Jsonb({"scope": "platform" if scope == PLATFORM else "symbol", "symbol": None if scope == "*" else scope}),
            at,
        ),
    )
    return {"scope": scope, "before": before, "mode": mode, "reason": reason, "actor": actor, "updated_at": at}
