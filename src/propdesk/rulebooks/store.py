"""Plan versions in the database: the catalogue the firm sells from.

A plan (rulebook + offers) is stored per ``(id, version)``. Editing a plan creates a new version; running
accounts keep the rulebook that was frozen onto them at creation. Retiring a plan hides it from the
catalogue without touching any account.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from ..domain.clock import Clock
from ..domain.errors import Conflict, InvalidInput, NotFound
from ..domain.rules.rulebook import Rulebook, parse_rulebook
from ..domain.rules.schema import RulebookError
from . import parse_text, presets


class PlanStore:
    """Reads and writes plan versions (engine role)."""

    def __init__(self, db: Any, clock: Clock):
        self.db = db
        self.clock = clock

    def sync_presets(self) -> list[tuple[str, int]]:
        """Store every shipped preset; a preset whose content changed gets a new version. Returns what was added."""
        added = []
        for book in presets():
            with self.db.tx() as c:
                c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 11))", (book.id,))
                latest = c.execute(
                    "SELECT version, digest FROM rulebooks WHERE id=%s ORDER BY version DESC LIMIT 1", (book.id,)
                ).fetchone()
                if latest is not None and latest["digest"] == _digest_without_version(book):
                    continue
                version = (latest["version"] + 1) if latest else book.version
                self._insert(c, book.with_version(version), "preset", "system")
                added.append((book.id, version))
        return added

    def _insert(self, c: Any, book: Rulebook, source: str, actor: str) -> None:
        c.execute(
            "INSERT INTO rulebooks (id, version, name, body, digest, source, created_at, created_by)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                book.id,
                book.version,
                book.name,
                Jsonb(book.to_json()),
                _digest_without_version(book),
                source,
                self.clock.now(),
                actor,
            ),
        )

    def create_version(self, text: str, *, actor: str, where: str = "plan") -> Rulebook:
        """Validate a plan file's text and store it as the next version of its id (errors name the key)."""
        try:
            book = parse_text(text, where)
        except RulebookError as exc:
            raise InvalidInput(str(exc), code="invalid_plan", details={"key": exc.key, "reason": exc.reason}) from None
        with self.db.tx() as c:
            c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 11))", (book.id,))
            latest = c.execute(
                "SELECT version FROM rulebooks WHERE id=%s ORDER BY version DESC LIMIT 1", (book.id,)
            ).fetchone()
            version = (latest["version"] + 1) if latest else 1
            book = book.with_version(version)
            self._insert(c, book, "admin", actor)
        return book

    def retire(self, plan_id: str) -> int:
        """Retire every version of ``plan_id``; returns how many were retired."""
        with self.db.tx() as c:
            rows = c.execute(
                "UPDATE rulebooks SET retired_at=%s WHERE id=%s AND retired_at IS NULL RETURNING version",
                (self.clock.now(), plan_id),
            ).fetchall()
        if not rows:
            raise NotFound(f"no active plan {plan_id!r}", code="plan_not_found")
        return len(rows)

    def get(self, plan_id: str, version: int | None = None, *, conn: Any | None = None) -> Rulebook:
        """A plan version (default: the latest one that is not retired)."""
        sql = "SELECT body, version, retired_at FROM rulebooks WHERE id=%s"
        args: tuple[Any, ...] = (plan_id,)
        if version is not None:
            sql += " AND version=%s"
            args += (version,)
        else:
            sql += " AND retired_at IS NULL ORDER BY version DESC LIMIT 1"
        if conn is not None:
            row = conn.execute(sql, args).fetchone()
        else:
            with self.db.read() as c:
                row = c.execute(sql, args).fetchone()
        if row is None:
            raise NotFound(f"no plan {plan_id!r}" + (f" version {version}" if version else ""), code="plan_not_found")
        if version is not None and row["retired_at"] is not None:
            raise Conflict(f"plan {plan_id!r} version {version} is retired", code="plan_retired")
        return parse_rulebook(row["body"], where=f"{plan_id} v{row['version']}")

    def catalogue(self) -> list[dict[str, Any]]:
        """The latest version of every active plan with its offers."""
        with self.db.read() as c:
            rows = c.execute(
                "SELECT DISTINCT ON (id) id, version, body, created_at FROM rulebooks"
                " WHERE retired_at IS NULL ORDER BY id, version DESC"
            ).fetchall()
        return [summary(parse_rulebook(r["body"], where=r["id"])) for r in rows]

    def versions(self, plan_id: str) -> list[dict[str, Any]]:
        with self.db.read() as c:
            rows = c.execute(
                "SELECT version, name, digest, source, created_at, created_by, retired_at FROM rulebooks"
                " WHERE id=%s ORDER BY version",
                (plan_id,),
            ).fetchall()
        if not rows:
            raise NotFound(f"no plan {plan_id!r}", code="plan_not_found")
        return [dict(r) for r in rows]


def _digest_without_version(book: Rulebook) -> str:
    return book.with_version(1).digest()


def summary(book: Rulebook) -> dict[str, Any]:
    """A plan as the catalogue shows it: phases with their rules, offers with prices."""
    return {
        "id": book.id,
        "version": book.version,
        "name": book.name,
        "description": book.description,
        "currency": book.currency,
        "timezone": book.timezone,
        "day_starts_at": book.day_starts_at.strftime("%H:%M"),
        "phases": [
            {"id": p.id, "name": p.name, "rules": p.rules, "profit_split_pct": p.profit_split_pct, "scaling": p.scaling}
            for p in book.phases
        ],
        "offers": [
            {
                "id": o.id,
                "name": o.name,
                "starting_balance": o.starting_balance,
                "price": o.price,
                "currency": o.currency,
            }
            for o in book.offers
        ],
    }
