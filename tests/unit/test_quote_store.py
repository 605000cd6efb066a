"""The quote store keeps the newest quote per symbol and drops out-of-order and duplicate ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from propdesk.domain.quotes import Quote
from propdesk.marketdata.store import QuoteStore

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D = Decimal


def q(bid: str, ask: str, seconds: float = 0, seq: int = 0, symbol: str = "EURUSD") -> Quote:
    return Quote(symbol, D(bid), D(ask), T0 + timedelta(seconds=seconds), seq)


def test_a_store_without_a_database_keeps_the_latest_quote_in_memory() -> None:
    store = QuoteStore(None)

    assert store.latest("EURUSD") is None
    assert store.mid("EURUSD") is None
    stored = store.put(q("1.1", "1.1002"))

    assert stored is not None and stored.seq == 1
    assert store.latest("EURUSD") == stored
    assert store.mid("EURUSD") == D("1.1001")
    store.refresh()  # no database: a no-op
    assert store.stats.accepted == 1


def test_newer_ticks_replace_older_ones_and_get_increasing_sequence_numbers() -> None:
    store = QuoteStore(None)
    store.put(q("1.1", "1.1002"))

    second = store.put(q("1.2", "1.2002", 1))

    assert second is not None and second.seq == 2
    assert store.latest("EURUSD") == second


def test_an_out_of_order_tick_is_dropped() -> None:
    store = QuoteStore(None)
    newest = store.put(q("1.1", "1.1002", 10))

    assert store.put(q("1.3", "1.3002", 5)) is None

    assert store.latest("EURUSD") == newest
    assert store.stats.dropped_out_of_order == 1


def test_a_tick_with_a_sequence_not_above_the_held_one_is_dropped() -> None:
    store = QuoteStore(None)
    store.put(q("1.1", "1.1002", 0, seq=5))

    assert store.put(q("1.2", "1.2002", 1, seq=5)) is None
    assert store.put(q("1.2", "1.2002", 1, seq=4)) is None
    accepted = store.put(q("1.2", "1.2002", 1, seq=6))

    assert accepted is not None and accepted.seq == 6
    assert store.stats.dropped_out_of_order == 2


def test_a_duplicate_tick_is_dropped() -> None:
    store = QuoteStore(None)
    first = store.put(q("1.1", "1.1002"))

    assert store.put(q("1.1", "1.1002")) is None

    assert store.latest("EURUSD") == first
    assert store.stats.dropped_duplicate == 1
    assert store.stats.accepted == 1


def test_a_changed_price_at_the_same_timestamp_is_a_new_tick() -> None:
    store = QuoteStore(None)
    store.put(q("1.1", "1.1002"))

    moved = store.put(q("1.1001", "1.1003"))

    assert moved is not None and moved.seq == 2


def test_symbols_are_independent_and_listed_in_order() -> None:
    store = QuoteStore(None)
    store.put(q("150", "150.02", 5, symbol="USDJPY"))
    store.put(q("1.1", "1.1002", 0, symbol="EURUSD"))  # older than USDJPY's tick but another symbol

    assert [x.symbol for x in store.all()] == ["EURUSD", "USDJPY"]


def test_apply_many_is_apply_in_order_under_one_lock() -> None:
    batch = [
        q("1.1", "1.1002", 1),
        q("1.0", "1.0002", 0),  # older: dropped
        q("1.1", "1.1002", 1),  # identical: dropped
        q("1.2", "1.2002", 1),  # equal time, later arrival: taken
        q("150.1", "150.2", 0, symbol="USDJPY"),
    ]
    one, many = QuoteStore(None), QuoteStore(None)
    expected = [s for s in map(one.apply, batch) if s is not None]
    assert many.apply_many(batch) == expected
    assert [(s.symbol, str(s.bid), s.seq) for s in expected] == [
        ("EURUSD", "1.1", 1),
        ("EURUSD", "1.2", 2),
        ("USDJPY", "150.1", 1),
    ]
    assert many.stats == one.stats
