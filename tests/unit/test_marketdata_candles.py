"""Minute candles from ticks, and synthetic carried-forward bars for empty minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from propdesk.domain.quotes import Quote
from propdesk.marketdata.candles import CandleAggregator

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def q(sec: float, bid: str, ask: str, sym: str = "EURUSD") -> Quote:
    return Quote(sym, Decimal(bid), Decimal(ask), T0 + timedelta(seconds=sec))


def test_minute_bars_on_mid_with_tick_counts() -> None:
    closed = []
    agg = CandleAggregator(on_close=closed.append)
    for x in (
        q(1, "1.0", "1.2"),
        q(20, "1.3", "1.5"),
        q(40, "0.9", "0.9"),
        q(59.9, "1.0", "1.0"),
        q(61, "2.0", "2.0"),
        q(5, "1.0", "1.0", "GBPUSD"),
    ):
        agg.add(x)
    a, b = agg.candles("EURUSD")
    assert (a.minute, a.open, a.high, a.low, a.close, a.ticks) == (
        T0,
        Decimal("1.1"),
        Decimal("1.4"),
        Decimal("0.9"),
        Decimal("1.0"),
        4,
    )
    assert (b.minute, b.open, b.ticks, b.synthetic) == (T0 + timedelta(minutes=1), Decimal("2.0"), 1, False)
    assert closed == [a]
    assert agg.symbols() == ["EURUSD", "GBPUSD"]


def test_late_ticks_are_not_aggregated() -> None:
    agg = CandleAggregator()
    agg.add(q(30, "1.0", "1.0"))
    agg.add(q(10, "5.0", "5.0"))
    assert agg.late == 1 and agg.candles("EURUSD")[0].high == Decimal("1.0")


def test_synthesize_carries_the_last_close_forward() -> None:
    agg = CandleAggregator()
    agg.add(q(0, "1.0", "1.0"))
    agg.add(q(30, "1.2", "1.2"))
    agg.add(q(180, "1.5", "1.5"))
    with pytest.raises(LookupError):
        agg.synthesize("EURUSD", T0 - timedelta(minutes=1))
    gap = agg.synthesize("EURUSD", T0 + timedelta(minutes=1, seconds=7))
    assert gap.synthetic and gap.ticks == 0 and gap.minute == T0 + timedelta(minutes=1)
    assert gap.open == gap.high == gap.low == gap.close == Decimal("1.2")
    real = agg.synthesize("EURUSD", T0)
    assert not real.synthetic and real.ticks == 2
    filled = agg.fill_gaps("EURUSD", T0, T0 + timedelta(minutes=4))
    assert [c.synthetic for c in filled] == [False, True, True, False]
    assert filled[2].close == Decimal("1.2")
    # a tick arriving later for a synthesized minute replaces it with a real candle
    agg2 = CandleAggregator()
    agg2.add(q(0, "1.0", "1.0"))
    agg2.synthesize("EURUSD", T0 + timedelta(minutes=1))
    agg2.add(q(70, "3.0", "3.0"))
    c = agg2.candle("EURUSD", T0 + timedelta(minutes=1))
    assert c is not None and not c.synthetic and c.high == Decimal("3.0")
