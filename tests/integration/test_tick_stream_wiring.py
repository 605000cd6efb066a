"""The store's tick stream hears of every stored quote, after the execution core reacted to it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from propdesk.domain.quotes import Quote
from propdesk.logs import get
from propdesk.marketdata.feed import publish


def test_published_quotes_reach_subscribers_after_the_core_reacted_and_dropped_ones_do_not(service, quotes, clock):
    seen: list[tuple[Quote, int]] = []
    reacted = {"n": 0}

    class Core:
        def on_quote(self, q: Quote) -> dict[str, int]:
            reacted["n"] += 1
            return service.on_quote(q)

    quotes.ticks.subscribe(lambda q: seen.append((q, reacted["n"])), ["EURUSD"])
    now = clock.now()
    q1 = Quote("EURUSD", Decimal("1.1000"), Decimal("1.1002"), now, 0, "test")
    assert publish(quotes, Core(), q1, get("test")) is not None
    assert publish(quotes, Core(), q1, get("test")) is None  # duplicate: dropped, not announced
    publish(quotes, Core(), Quote("GBPUSD", Decimal("1.2"), Decimal("1.2002"), now, 0, "test"), get("test"))
    publish(
        quotes,
        Core(),
        Quote("EURUSD", Decimal("1.1001"), Decimal("1.1003"), now + timedelta(seconds=1), 0, "test"),
        get("test"),
    )
    assert [(q.bid, n) for q, n in seen] == [(Decimal("1.1000"), 1), (Decimal("1.1001"), 3)]
    assert [q.seq for q, _ in seen] == [1, 2]
