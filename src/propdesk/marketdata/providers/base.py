"""The provider interface every price source implements, and the feed loop that pushes quotes into PropDesk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ...domain.quotes import Quote


class QuoteProvider(Protocol):
    """A source of quotes in time order (per symbol). ``name`` labels the quotes' ``source``."""

    name: str

    def quotes(self) -> Iterator[Quote]:
        """Yield quotes in non-decreasing time order; a finite provider (replay) ends, a live one does not."""
        ...


@dataclass
class FeedStats:
    """What a feed did: quotes received, accepted by the store, dropped, and what they set off."""

    received: int = 0
    accepted: int = 0
    dropped: int = 0
    triggered_orders: int = 0
    protective: int = 0
    liquidations: int = 0
