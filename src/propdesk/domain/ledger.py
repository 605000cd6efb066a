"""Ledger entries and the fold that turns them back into balances.

The ledger is append-only. Every entry carries a signed cash ``amount`` in the account currency (already
rounded to cents), a ``category`` saying which running total it belongs to, and its evidence. Balances are a
fold over entries; ``recompute`` in the execution service compares this fold with the stored balances row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from .money import ZERO, money


class EntryKind(StrEnum):
    ACCOUNT_CREATED = "account_created"
    DEPOSIT = "deposit"
    ORDER_ACCEPTED = "order_accepted"
    ORDER_REJECTED = "order_rejected"
    ORDER_CANCELLED = "order_cancelled"
    ORDER_MODIFIED = "order_modified"
    FILL = "fill"
    FEE = "fee"
    REALIZED_PNL = "realized_pnl"
    POSITION_MODIFIED = "position_modified"
    STATUS_CHANGED = "status_changed"
    MARK_TO_MARKET = "mark_to_market"
    LIQUIDATION = "liquidation"
    VOID_ORDER = "void_order"
    VOID_FILL = "void_fill"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"
    EXTERNAL_TRADE = "external_trade"


class Category(StrEnum):
    NONE = "none"  # no cash effect (amount must be 0)
    DEPOSIT = "deposit"  # capital in (starting balance, scale-ups)
    PNL = "pnl"  # realized trading P&L
    FEE = "fee"  # commissions (negative amounts)
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry before it is written (the store adds id, sequence and timestamp)."""

    kind: EntryKind
    amount: Decimal = ZERO
    category: Category = Category.NONE
    evidence: dict[str, Any] = field(default_factory=dict)
    equity_after: Decimal | None = None
    order_id: str | None = None
    fill_id: str | None = None

    def __post_init__(self) -> None:
        if self.amount != money(self.amount):
            raise ValueError(f"ledger amount {self.amount} is not rounded to cents")
        if self.category is Category.NONE and self.amount != 0:
            raise ValueError("an entry without a category cannot move cash")


@dataclass(frozen=True, slots=True)
class Totals:
    """The fold of a ledger: what the balances row must equal."""

    cash: Decimal = ZERO
    deposits: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO  # positive number: total commissions paid
    adjustments: Decimal = ZERO
    high_watermark: Decimal = ZERO
    entries: int = 0


def fold(entries: Iterable[tuple[Decimal, str, Decimal | None]]) -> Totals:
    """Fold ``(amount, category, equity_after)`` triples into totals.

    The high watermark is the highest of the cash balance after each entry and every recorded equity.
    """
    cash = deposits = realized = fees = adj = ZERO
    hwm = ZERO
    n = 0
    for amount, category, equity_after in entries:
        n += 1
        cash += amount
        if category == Category.DEPOSIT:
            deposits += amount
        elif category == Category.PNL:
            realized += amount
        elif category == Category.FEE:
            fees -= amount
        elif category == Category.ADJUSTMENT:
            adj += amount
        elif amount != 0:
            raise ValueError(f"entry with category {category!r} moves cash")
        hwm = max(hwm, cash)
        if equity_after is not None:
            hwm = max(hwm, equity_after)
    return Totals(cash, deposits, realized, fees, adj, hwm, n)
