"""The in-process tick stream: filtering, unsubscribe, isolation of a failing subscriber, thread safety."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from propdesk.domain.quotes import Quote
from propdesk.marketdata.stream import TickStream

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def q(symbol: str = "EURUSD", bid: str = "1.1") -> Quote:
    return Quote(symbol, Decimal(bid), Decimal(bid), T)


def test_every_subscriber_gets_the_quotes_of_its_symbols() -> None:
    stream = TickStream()
    everything: list[str] = []
    eur: list[str] = []
    stream.subscribe(lambda x: everything.append(x.symbol))
    stream.subscribe(lambda x: eur.append(x.symbol), symbols=["eurusd"])
    assert stream.publish(q("EURUSD")) == 2
    assert stream.publish(q("GBPUSD")) == 1
    assert everything == ["EURUSD", "GBPUSD"] and eur == ["EURUSD"]


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    stream = TickStream()
    got: list[Quote] = []
    unsubscribe = stream.subscribe(got.append)
    stream.publish(q())
    unsubscribe()
    unsubscribe()
    assert stream.publish(q()) == 0
    assert len(got) == 1 and len(stream) == 0


def test_a_failing_subscriber_is_logged_and_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    stream = TickStream()
    got: list[Quote] = []

    def boom(_: Quote) -> None:
        raise RuntimeError("subscriber bug")

    stream.subscribe(boom)
    stream.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="propdesk.marketdata.stream"):
        assert stream.publish(q()) == 1
    assert len(got) == 1
    assert any("subscriber bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_a_callback_may_unsubscribe_itself_during_delivery() -> None:
    stream = TickStream()
    calls: list[int] = []
    holder: dict[str, object] = {}

    def once(_: Quote) -> None:
        calls.append(1)
        holder["unsub"]()  # type: ignore[operator]

    holder["unsub"] = stream.subscribe(once)
    stream.publish(q())
    stream.publish(q())
    assert calls == [1]


def test_concurrent_publishers_and_subscribers_lose_nothing() -> None:
    stream = TickStream()
    lock = threading.Lock()
    counts = {"n": 0}

    def count(_: Quote) -> None:
        with lock:
            counts["n"] += 1

    stream.subscribe(count)
    stop = threading.Event()

    def churn() -> None:  # subscribe/unsubscribe concurrently with publishing
        while not stop.is_set():
            stream.subscribe(lambda _: None)()

    churner = threading.Thread(target=churn)
    churner.start()
    publishers = [threading.Thread(target=lambda: [stream.publish(q()) for _ in range(500)]) for _ in range(4)]
    for t in publishers:
        t.start()
    for t in publishers:
        t.join()
    stop.set()
    churner.join()
    assert counts["n"] == 2000
    assert len(stream) == 1
