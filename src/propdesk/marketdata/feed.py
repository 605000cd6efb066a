"""Pushing quotes into PropDesk: the one path every feed (replay, simulated, Massive, the demo driver) takes.

A quote goes into the quote store (which drops out-of-order and duplicate ticks and numbers each symbol's
quotes), and an accepted quote goes straight to the execution core's ``on_quote`` so resting orders, SL/TP,
the safety net and the rulebook react to it at once; then the store's tick stream announces it to its
subscribers (the UI's live stream, workers). A failure reacting to one quote is logged and the feed
goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..domain.quotes import Quote
from .providers.base import FeedStats


def publish(store: Any, execution: Any, quote: Quote, log: Any, stats: FeedStats | None = None) -> Quote | None:
    """Store ``quote`` and let the execution core react; returns the stored quote, or None when dropped."""
    stats = stats if stats is not None else FeedStats()
    stats.received += 1
    stored: Quote | None = store.put(replace(quote, seq=0))  # the store numbers a symbol's quotes
    if stored is None:
        stats.dropped += 1
        return None
    stats.accepted += 1
    try:
        fired = execution.on_quote(stored)
    except Exception as exc:  # a feed never dies of one quote
        log.error("feed_quote_reaction_failed", symbol=stored.symbol, error=repr(exc))
        store.announce(stored)
        return stored
    store.announce(stored)
    stats.triggered_orders += fired.get("orders", 0)
    stats.protective += fired.get("protective", 0)
    stats.liquidations += fired.get("liquidations", 0)
    return stored


def pump(store: Any, execution: Any, quotes: Iterable[Quote], log: Any) -> FeedStats:
    """Publish every quote of a provider's stream; returns the counts."""
    stats = FeedStats()
    for q in quotes:
        publish(store, execution, q, log, stats)
    return stats
