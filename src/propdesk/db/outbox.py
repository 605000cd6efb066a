"""Reading the event outbox in commit order, and the relays' cursors (migration 0010, ``domain/events.py``).

Rows are read in ``(txid, id)`` order and only from transactions older than every transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``): a transaction that drew a lower ``id`` but commits later is read
when it has committed, never skipped. A relay saves its cursor only after the bus acknowledged what it published,
so a crash in between publishes some events twice; their ``event_id`` makes the second copy a no-op on the bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain.events import Event

__all__ = ["Cursor", "load_cursor", "prune", "read_batch", "save_cursor"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position of the last event a relay published: ``(txid, id)``; ``(0, 0)`` is the beginning."""

    txid: int = 0
    id: int = 0


def load_cursor(conn: Any, name: str) -> Cursor:
    row = conn.execute("SELECT txid::text AS txid, id FROM outbox_cursors WHERE name = %s", (name,)).fetchone()
    if row is None:
        return Cursor()
    return Cursor(int(row["txid"]), int(row["id"]))


def save_cursor(conn: Any, name: str, cursor: Cursor, published: int, now: datetime) -> None:
    conn.execute(
        "INSERT INTO outbox_cursors (name, txid, id, published, updated_at) VALUES (%s, %s::text::xid8, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, id = EXCLUDED.id,"
        " published = outbox_cursors.published + EXCLUDED.published, updated_at = EXCLUDED.updated_at",
        (name, str(cursor.txid), cursor.id, published, now),
    )


def read_batch(conn: Any, after: Cursor, limit: int = 1000) -> list[Event]:
    """Up to ``limit`` committed events after ``after``, in commit order (see the module docstring)."""
    rows = conn.execute(
        "SELECT id, txid::text AS txid, event_id, type, version, account_id, payload, created_at FROM outbox"
        " WHERE (txid, id) > (%s::text::xid8, %s) AND txid < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY txid, id LIMIT %s",
        (str(after.txid), after.id, limit),
    ).fetchall()
    return [
        Event(
            id=r["id"],
            txid=int(r["txid"]),
            event_id=r["event_id"],
            type=r["type"],
            version=r["version"],
            account_id=r["account_id"],
            payload=r["payload"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


def prune(conn: Any, before: datetime, *, limit: int = 10_000) -> int:
    """Delete up to ``limit`` events older than ``before`` that every relay has passed; returns how many."""
    cur = conn.execute(
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE o.created_at < %s AND NOT EXISTS"
        " (SELECT 1 FROM outbox_cursors c WHERE (o.txid, o.id) > (c.txid, c.id)) LIMIT %s)",
        (before, limit),
    )
    return int(cur.rowcount or 0)
