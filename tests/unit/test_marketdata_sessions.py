"""Trading sessions: FX weekend, Globex daily break, NYSE holidays and early closes, DST shifts, crypto, staleness."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.instruments import DEFAULT_CATALOGUE, AssetClass
from propdesk.domain.quotes import Quote
from propdesk.marketdata.sessions import (
    SESSION_BY_CLASS,
    STALE_AFTER_SECONDS,
    SessionCalendar,
    SessionKind,
    default_calendar,
)

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
def cal() -> SessionCalendar:
    return SessionCalendar()


# -- FX 24/5 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("friday", "sunday", "friday_close_utc", "sunday_open_utc", "next_friday_close_utc"),
    [
        # spring forward on Sunday 2026-03-08: Friday closes on EST, Sunday reopens on EDT
        ((2026, 3, 6), (2026, 3, 8), utc(2026, 3, 6, 22), utc(2026, 3, 8, 21), utc(2026, 3, 13, 21)),
        # fall back on Sunday 2026-11-01: Friday closes on EDT, Sunday reopens on EST
        ((2026, 10, 30), (2026, 11, 1), utc(2026, 10, 30, 21), utc(2026, 11, 1, 22), utc(2026, 11, 6, 22)),
    ],
)
def test_fx_weekend_closes_friday_17_and_reopens_sunday_17_new_york_across_dst(
    cal: SessionCalendar,
    friday: tuple[int, int, int],
    sunday: tuple[int, int, int],
    friday_close_utc: datetime,
    sunday_open_utc: datetime,
    next_friday_close_utc: datetime,
) -> None:
    before = cal.status("EURUSD", ny(*friday, 16, 59, 59))
    assert before.open
    assert before.next_close == friday_close_utc
    assert before.next_open == sunday_open_utc
    at_close = cal.status("EURUSD", ny(*friday, 17, 0))
    assert not at_close.open
    assert at_close.reason == "closed: weekend"
    assert at_close.next_open == sunday_open_utc
    assert at_close.next_close == next_friday_close_utc
    assert not cal.is_open("EURUSD", ny(*sunday, 16, 59, 59))
    reopened = cal.status("USDJPY", ny(*sunday, 17, 0))
    assert reopened.open
    assert reopened.next_close == next_friday_close_utc


def test_fx_is_open_midweek_through_the_new_york_roll(cal: SessionCalendar) -> None:
    for hour in (0, 12, 16, 17, 18, 23):
        assert cal.is_open("GBPUSD", ny(2026, 3, 11, hour, 0))
    assert not cal.is_open("GBPUSD", ny(2026, 3, 7, 12, 0))  # Saturday


def test_fx_week_session_spans_the_dst_switch_inside_it(cal: SessionCalendar) -> None:
    # The week opening Sunday 2026-03-01 (EST) runs to Friday 2026-03-06 17:00 EST = 22:00 UTC.
    s = cal.status("EURUSD", ny(2026, 3, 2, 3, 0))
    assert s.open
    assert s.next_close == utc(2026, 3, 6, 22)


# -- Metals and energy: Globex with a daily break ----------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["XAUUSD", "XAGUSD", "WTIUSD"])
def test_metals_and_energy_daily_break_17_to_18_new_york(cal: SessionCalendar, symbol: str) -> None:
    assert cal.kind(symbol) == SessionKind.CME_GLOBEX
    open_before = cal.status(symbol, ny(2026, 6, 10, 16, 59, 59))
    assert open_before.open
    assert open_before.next_close == ny(2026, 6, 10, 17, 0).astimezone(UTC)
    assert open_before.next_open == ny(2026, 6, 10, 18, 0).astimezone(UTC)
    in_break = cal.status(symbol, ny(2026, 6, 10, 17, 30))
    assert not in_break.open
    assert in_break.reason == "closed: daily break"
    assert in_break.next_open == utc(2026, 6, 10, 22)  # 18:00 EDT
    assert in_break.next_close == utc(2026, 6, 11, 21)  # 17:00 EDT next day
    assert cal.is_open(symbol, ny(2026, 6, 10, 18, 0))


def test_globex_weekend_opens_sunday_18_and_closes_friday_17(cal: SessionCalendar) -> None:
    assert not cal.is_open("XAUUSD", ny(2026, 6, 12, 17, 0))
    fri = cal.status("XAUUSD", ny(2026, 6, 12, 17, 30))
    assert fri.reason == "closed: weekend"
    assert fri.next_open == ny(2026, 6, 14, 18, 0).astimezone(UTC)
    assert not cal.is_open("XAUUSD", ny(2026, 6, 14, 17, 30))  # FX is open here, Globex not yet
    assert cal.is_open("EURUSD", ny(2026, 6, 14, 17, 30))
    assert cal.is_open("XAUUSD", ny(2026, 6, 14, 18, 0))
    last = cal.status("WTIUSD", ny(2026, 6, 12, 16, 0))
    assert last.open and last.next_open == ny(2026, 6, 14, 18, 0).astimezone(UTC)


# -- US equities and index CFDs on the NYSE calendar -------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT"])
def test_us_equity_holiday_thanksgiving_closed_next_open_friday_0930(cal: SessionCalendar, symbol: str) -> None:
    s = cal.status(symbol, ny(2026, 11, 26, 12, 0))
    assert not s.open
    assert s.reason == "closed: exchange holiday"
    assert s.next_open == ny(2026, 11, 27, 9, 30).astimezone(UTC)
    assert s.next_close == ny(2026, 11, 27, 13, 0).astimezone(UTC)


def test_us_equity_early_close_day_after_thanksgiving_closes_13_00(cal: SessionCalendar) -> None:
    s = cal.status("MSFT", ny(2026, 11, 27, 12, 59, 59))
    assert s.open
    assert s.next_close == utc(2026, 11, 27, 18)
    assert s.reason == "open: early close session (closes 13:00 New York)"
    assert s.next_open == ny(2026, 11, 30, 9, 30).astimezone(UTC)
    after = cal.status("MSFT", ny(2026, 11, 27, 13, 0))
    assert not after.open
    assert after.reason == "closed: after the close"
    assert after.next_open == ny(2026, 11, 30, 9, 30).astimezone(UTC)
    assert after.next_close == ny(2026, 11, 30, 16, 0).astimezone(UTC)


def test_us_equity_session_shifts_in_utc_with_dst(cal: SessionCalendar) -> None:
    before = cal.status("NVDA", ny(2026, 3, 6, 9, 0))  # Friday, EST
    assert before.next_open == utc(2026, 3, 6, 14, 30)
    assert before.next_close == utc(2026, 3, 6, 21)
    after = cal.status("NVDA", ny(2026, 3, 9, 9, 0))  # Monday, EDT
    assert after.next_open == utc(2026, 3, 9, 13, 30)
    assert after.next_close == utc(2026, 3, 9, 20)
    assert cal.is_open("NVDA", utc(2026, 3, 9, 13, 30))
    assert not cal.is_open("NVDA", utc(2026, 3, 6, 13, 30))
    # 14:30 UTC is the open in winter, an hour into the session in summer.
    assert cal.is_open("NVDA", utc(2026, 3, 6, 14, 30))


def test_us_equity_boundaries_and_reasons(cal: SessionCalendar) -> None:
    pre = cal.status("TSLA", ny(2026, 6, 10, 9, 29, 59))
    assert not pre.open and pre.reason == "closed: before the open"
    assert pre.next_open == ny(2026, 6, 10, 9, 30).astimezone(UTC)
    at_open = cal.status("TSLA", ny(2026, 6, 10, 9, 30))
    assert at_open.open and at_open.reason == "open: regular session"
    assert at_open.next_close == ny(2026, 6, 10, 16, 0).astimezone(UTC)
    assert at_open.next_open == ny(2026, 6, 11, 9, 30).astimezone(UTC)
    at_close = cal.status("TSLA", ny(2026, 6, 10, 16, 0))
    assert not at_close.open and at_close.reason == "closed: after the close"
    assert at_close.next_open == ny(2026, 6, 11, 9, 30).astimezone(UTC)
    weekend = cal.status("AAPL", ny(2026, 6, 13, 12, 0))
    assert not weekend.open and weekend.reason == "closed: weekend"
    assert weekend.next_open == ny(2026, 6, 15, 9, 30).astimezone(UTC)


@pytest.mark.parametrize("symbol", ["US500", "US100", "US30"])
def test_index_cfds_trade_cme_globex_hours_not_the_cash_session(cal: SessionCalendar, symbol: str) -> None:
    early = cal.status(symbol, ny(2026, 3, 2, 5, 0))  # Monday 05:00 New York: NYSE shut, Globex open
    assert early.open and early.reason == "open: Globex session"
    assert early.next_close == ny(2026, 3, 2, 17, 0).astimezone(UTC)
    brk = cal.status(symbol, ny(2026, 3, 2, 17, 30))
    assert not brk.open and brk.reason == "closed: daily break"
    assert brk.next_open == ny(2026, 3, 2, 18, 0).astimezone(UTC)
    weekend = cal.status(symbol, ny(2026, 6, 13, 12, 0))
    assert not weekend.open and weekend.reason == "closed: weekend"
    assert weekend.next_open == ny(2026, 6, 14, 18, 0).astimezone(UTC)


def test_demo_calendar_treats_every_market_as_open(cal: SessionCalendar) -> None:
    demo = SessionCalendar(always_open=True)
    saturday = ny(2026, 6, 13, 12, 0)
    assert not cal.is_open("EURUSD", saturday)
    for symbol in ("EURUSD", "AAPL", "US500", "XAUUSD"):
        s = demo.status(symbol, saturday)
        assert s.open and "DEMO" in s.reason


def test_us_equity_july_4th_observed_on_friday_3rd_2026(cal: SessionCalendar) -> None:
    s = cal.status("AMZN", ny(2026, 7, 2, 16, 30))
    assert not s.open
    assert s.next_open == ny(2026, 7, 6, 9, 30).astimezone(UTC)


def test_dates_outside_the_exchange_calendar_fall_back_to_the_weekday_rule(cal: SessionCalendar) -> None:
    s = cal.status("AAPL", ny(2045, 1, 3, 10, 0))  # a Tuesday
    assert s.open
    assert s.next_close == ny(2045, 1, 3, 16, 0).astimezone(UTC)


# -- Crypto ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hour", [0, 3, 9, 17, 23])
@pytest.mark.parametrize("day", [1, 4, 7, 8, 26])  # incl. DST Sunday 2026-03-08 and a Saturday
def test_crypto_open_at_any_hour(cal: SessionCalendar, day: int, hour: int) -> None:
    s = cal.status("BTCUSD", ny(2026, 3, day, hour, 0))
    assert s.open and s.next_open is None and s.next_close is None
    assert cal.is_open("ETHUSD", utc(2026, 11, 26, hour))


# -- Input handling and mapping ----------------------------------------------------------------------------------


def test_every_catalogue_symbol_has_a_session_and_a_threshold(cal: SessionCalendar) -> None:
    assert set(SESSION_BY_CLASS) == set(AssetClass)
    assert set(STALE_AFTER_SECONDS) == set(AssetClass)
    for inst in DEFAULT_CATALOGUE:
        cal.status(inst.symbol, utc(2026, 6, 10, 15))
    assert STALE_AFTER_SECONDS[AssetClass.FOREX] == 60
    assert STALE_AFTER_SECONDS[AssetClass.EQUITY] == 30


def test_naive_time_and_unknown_symbol_are_rejected(cal: SessionCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.status("EURUSD", datetime(2026, 6, 10, 12, 0))
    with pytest.raises(KeyError):
        cal.status("NOPE", utc(2026, 6, 10, 12))


def test_next_open_and_close_are_utc_aware(cal: SessionCalendar) -> None:
    for sym in ("EURUSD", "XAUUSD", "AAPL"):
        s = cal.status(sym, ny(2026, 6, 10, 12, 0))
        for t in (s.next_open, s.next_close):
            assert t is not None and t.utcoffset() == timedelta(0)


def test_default_calendar_is_shared() -> None:
    assert default_calendar() is default_calendar()


# -- Staleness ---------------------------------------------------------------------------------------------------


def quote(symbol: str, ts: datetime) -> Quote:
    return Quote(symbol, Decimal("1.1000"), Decimal("1.1002"), ts.astimezone(UTC))


def test_staleness_only_while_open(cal: SessionCalendar) -> None:
    now = ny(2026, 6, 10, 12, 0)
    assert not cal.is_stale(quote("EURUSD", now - timedelta(seconds=60)), now)
    assert cal.is_stale(quote("EURUSD", now - timedelta(seconds=61)), now)
    assert not cal.is_stale(quote("AAPL", now - timedelta(seconds=30)), now)
    assert cal.is_stale(quote("AAPL", now - timedelta(seconds=31)), now)
    assert cal.is_stale(quote("BTCUSD", now - timedelta(seconds=31)), now)
    # A closed market's last quote is not stale: Saturday for FX, the daily break for gold, Thanksgiving for AAPL.
    sat = ny(2026, 6, 13, 12, 0)
    assert not cal.is_stale(quote("EURUSD", ny(2026, 6, 12, 16, 59)), sat)
    assert not cal.is_stale(quote("XAUUSD", ny(2026, 6, 10, 16, 59)), ny(2026, 6, 10, 17, 30))
    assert not cal.is_stale(quote("AAPL", ny(2026, 11, 25, 15, 59)), ny(2026, 11, 26, 12, 0))
    # Once the market reopens, Friday's quote is stale.
    assert cal.is_stale(quote("EURUSD", ny(2026, 6, 12, 16, 59)), ny(2026, 6, 14, 17, 5))


# -- Import hygiene and per-call cost ----------------------------------------------------------------------------


def test_import_is_lazy_and_warning_free() -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import propdesk.marketdata.sessions as s\n"
        "assert 'exchange_calendars' not in sys.modules and 'pandas' not in sys.modules, 'eager import'\n"
        "from datetime import datetime, UTC\n"
        "assert s.SessionCalendar().is_open('AAPL', datetime(2026, 6, 10, 15, tzinfo=UTC))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


KINDS = [SessionKind.FX_24_5, SessionKind.CME_GLOBEX, SessionKind.XNYS]


@given(
    steps=st.lists(st.integers(min_value=-3 * 86400, max_value=3 * 86400), min_size=1, max_size=60),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
)
def test_a_remembered_answer_equals_a_fresh_computation_at_every_moment(steps: list[int], start: datetime) -> None:
    """The per-kind answer window never serves a status that a cold calendar would not give, whichever way the
    clock walks (forward, backward, across weekends, holidays, early closes and midnights)."""
    warm = SessionCalendar()
    at = start
    for step in steps:
        at += timedelta(seconds=step)
        for kind in KINDS:
            assert warm.status_for(kind, at) == SessionCalendar().status_for(kind, at), (kind, at)


@pytest.mark.parametrize("kind", KINDS)
def test_the_answer_window_turns_at_each_boundary(kind: SessionKind) -> None:
    """Walking minute by minute through a week with a holiday, the warm calendar flips exactly where a cold one
    does: open/closed, the next open and close, and the reason."""
    warm = SessionCalendar()
    at = ny(2026, 11, 25, 0, 0)  # Wednesday before Thanksgiving, through the early close, into Monday
    while at < ny(2026, 11, 30, 12, 0):
        assert warm.status_for(kind, at) == SessionCalendar().status_for(kind, at), (kind, at)
        at += timedelta(minutes=10)
