"""Quotes: the only evidence a fill may rest on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from .money import CTX, fmt


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid/ask for a symbol at ``ts`` (UTC). ``seq`` orders quotes of one symbol."""

    symbol: str
    bid: Decimal
    ask: Decimal
    ts: datetime
    seq: int = 0
    source: str = "api"

    @property
    def mid(self) -> Decimal:
        return CTX.divide(CTX.add(self.bid, self.ask), Decimal(2))

    def age_seconds(self, now: datetime) -> float:
        return (now - self.ts).total_seconds()

    def evidence(self) -> dict[str, Any]:
        """The quote as JSON-ready evidence for a ledger event or a rejection."""
        return {
            "symbol": self.symbol,
            "bid": fmt(self.bid),
            "ask": fmt(self.ask),
            "ts": self.ts.isoformat().replace("+00:00", "Z"),
            "seq": self.seq,
            "source": self.source,
        }


class PriceSource(Protocol):
    """Where the execution core gets prices. Market data implements it; tests may use an in-memory one."""

    def latest(self, symbol: str) -> Quote | None:
        """The latest quote for ``symbol`` or None; staleness is judged by the caller against its clock."""
        ...
