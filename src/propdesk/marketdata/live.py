"""The prices the execution core sees: the quote store, all stale at once while the process is off the bus.

A process cut off from the price bus cannot know whether another process accepted a newer price, so it must not
fill at the one it holds (ARCHITECTURE.md, scale-out). :class:`LivePrices` is the ``PriceSource`` handed to the
execution core: while ``connected()`` is false every quote comes back flagged ``stale``, which the gates refuse
with ``stale_price`` and the triggers (resting orders, SL/TP) wait out, like any quote older than its limit. The
store itself (read by the pages and the market API) is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from ..domain.quotes import Quote
from .store import QuoteStore

__all__ = ["LivePrices"]


class LivePrices:
    """``store.latest`` while ``connected()``; the same quotes flagged stale while not."""

    def __init__(self, store: QuoteStore, connected: Callable[[], bool]) -> None:
        self.store = store
        self.connected = connected

    def latest(self, symbol: str) -> Quote | None:
        """The held quote of ``symbol`` (None if none), flagged stale while the bus is down."""
        q = self.store.latest(symbol)
        if q is None or self.connected():
            return q
        return replace(q, stale=True)

    def mid(self, symbol: str) -> Decimal | None:
        """The held mid of ``symbol`` (used for conversions, which carry no staleness of their own)."""
        return self.store.mid(symbol)
