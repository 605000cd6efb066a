"""Reconciliation: recompute balances and positions from the ledger and compare with what is stored.

Used by ``propdesk verify``, the benchmarks' correctness checks and the demo's self-check. Each account is
recomputed inside one ``REPEATABLE READ READ ONLY`` transaction, so the balances row, the ledger and the fills
are read from one snapshot: a live platform (mark-to-market, orders) writing between the reads cannot produce
a false mismatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VerifyReport:
    """The outcome over many accounts: how many were checked, which mismatched, which could not be checked."""

    checked: int = 0
    ok: int = 0
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.mismatched and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "accounts": self.checked,
            "ok": self.ok,
            "mismatched": len(self.mismatched),
            "errors": len(self.errors),
            "clean": self.clean,
            "mismatches": self.mismatched,
            "failures": self.errors,
        }


def recompute(execution: Any, account_id: uuid.UUID) -> dict[str, Any]:
    """``ExecutionService.recompute`` on one consistent snapshot (read-only; takes no lock)."""
    with execution.db.tx() as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return execution.recompute(account_id, conn=c)  # type: ignore[no-any-return]


def account_ids(db: Any, only: Iterable[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Every account id (oldest first), or the given ones that exist."""
    with db.read() as c:
        if only is None:
            rows = c.execute("SELECT id FROM accounts ORDER BY created_at, id").fetchall()
        else:
            rows = c.execute(
                "SELECT id FROM accounts WHERE id = ANY(%s) ORDER BY created_at, id", (list(only),)
            ).fetchall()
    return [r["id"] for r in rows]


def verify(
    execution: Any,
    ids: Iterable[uuid.UUID],
    on_account: Callable[[uuid.UUID, dict[str, Any] | None], None] | None = None,
) -> VerifyReport:
    """Recompute every account in ``ids``; an account that cannot be recomputed is an error, not a pass."""
    report = VerifyReport()
    for acc in ids:
        report.checked += 1
        result: dict[str, Any] | None = None
        try:
            result = recompute(execution, acc)
        except Exception as exc:
            report.errors.append({"account_id": str(acc), "error": f"{type(exc).__name__}: {exc}"})
        else:
            if result.get("ok"):
                report.ok += 1
            else:
                report.mismatched.append({"account_id": str(acc), "mismatches": result.get("mismatches", [])})
        if on_account is not None:
            on_account(acc, result)
    return report
