"""Helpers the challenge/rules end-to-end tests share (plans over the admin API, quotes, status, recompute)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

PREFIX = "/api/v1/prop"

# Generous execution limits so the rulebook is what decides, and no fees so the arithmetic is plain.
POLICY = {"max_notional": "2000000", "max_position_equity_pct": "3000", "max_leverage": "30", "fee_bps": "0"}


def post_plan(admin: Any, text: str) -> dict[str, Any]:
    """Store a plan file as the next version of its id (admin API); returns the plan summary."""
    r = admin.post("/api/v1/admin/plans", json={"text": text})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def px(desk: Any, bid: str, spread: str = "0.00010", symbol: str = "EURUSD") -> None:
    """Post a quote at ``bid`` with ``spread`` above it for the ask."""
    desk.quote(symbol, bid, str(Decimal(bid) + Decimal(spread)))


def status(desk: Any, acc: str) -> str:
    return desk.client.get(f"{PREFIX}/accounts/{acc}").json()["status"]  # type: ignore[no-any-return]


def assert_recompute_ok(desk: Any, *accounts: str) -> None:
    """Every account folds back from its ledger to what is stored."""
    for a in accounts:
        rep = desk.platform.execution.recompute(uuid.UUID(a))
        assert rep["ok"], rep
