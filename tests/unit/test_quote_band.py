"""The quote sanity band: an absurd tick is held, confirmed by a second quote near it, cleared by one in band."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.quotes import Quote
from propdesk.marketdata.band import QuoteBand
from propdesk.marketdata.sessions import default_calendar
from propdesk.marketdata.store import QuoteStore

D = Decimal
T0 = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # a Wednesday: every FX and index session open


def q(px: str, s: float, symbol: str = "EURUSD") -> Quote:
    return Quote(symbol, D(px), D(px), T0 + timedelta(seconds=s))


def store() -> QuoteStore:
    st = QuoteStore()
    st.band = QuoteBand(DEFAULT_CATALOGUE, default_calendar())
    return st


def test_a_quote_inside_the_band_is_accepted_and_one_far_outside_is_held() -> None:
    st = store()
    assert st.put(q("1.10000", 0)) is not None
    assert st.put(q("1.14000", 1)) is not None  # +3.6%: inside FX's 5%
    assert st.put(q("11.4000", 2)) is None  # a shifted decimal
    assert st.stats.held_out_of_band == 1
    assert st.latest("EURUSD").mid == D("1.14000")  # type: ignore[union-attr]
    assert [h["symbol"] for h in st.held()] == ["EURUSD"]


def test_a_second_quote_near_the_held_one_confirms_the_move() -> None:
    st = store()
    st.put(q("1.10000", 0))
    assert st.put(q("1.30000", 1)) is None
    confirmed = st.put(q("1.30100", 2))
    assert confirmed is not None and confirmed.mid == D("1.30100")
    assert st.held() == []


def test_a_quote_back_in_band_is_accepted_and_clears_the_held_one() -> None:
    st = store()
    st.put(q("1.10000", 0))
    assert st.put(q("0.01000", 1)) is None
    assert st.put(q("1.10010", 2)) is not None
    assert st.held() == []
    assert st.put(q("0.01001", 3)) is None  # a new absurd tick is held afresh, not confirmed by the old one


def test_an_admin_acceptance_stores_the_held_quote() -> None:
    st = store()
    st.put(q("1.10000", 0))
    st.put(q("2.20000", 1))
    accepted = st.accept_held("EURUSD")
    assert accepted is not None and st.latest("EURUSD").mid == D("2.20000")  # type: ignore[union-attr]
    assert st.accept_held("EURUSD") is None


def test_no_band_across_a_market_close() -> None:
    st = store()
    friday = datetime(2026, 3, 6, 21, 50, tzinfo=UTC)  # FX closes Friday 17:00 New York (22:00 UTC)
    st.put(Quote("EURUSD", D("1.10000"), D("1.10000"), friday))
    monday = friday + timedelta(days=2, hours=1)
    assert st.put(Quote("EURUSD", D("1.20000"), D("1.20000"), monday)) is not None  # a 9% weekend gap


def test_bands_differ_by_asset_class() -> None:
    st = store()
    st.put(q("50000", 0, "BTCUSD"))
    assert st.put(q("60000", 1, "BTCUSD")) is not None  # +20%: inside crypto's 25%
    st.put(q("1.10000", 0))
    assert st.put(q("1.21000", 1)) is None  # +10%: outside FX's 5%


def test_old_and_duplicate_ticks_are_dropped_as_such_not_held() -> None:
    st = store()
    st.put(q("1.10000", 5))
    assert st.put(q("9.99999", 1)) is None
    assert st.stats.held_out_of_band == 0 and st.stats.dropped_out_of_order == 1
