"""Pre-trade rules: what an order must satisfy before it executes, with the reason and the computed numbers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rules_kit import book

from propdesk.domain.rules.calendar import TradingCalendar
from propdesk.domain.rules.engine import Decision
from propdesk.domain.rules.pretrade import (
    CalendarEvent,
    OpenPosition,
    OrderCheck,
    check_order,
    in_windows,
    stop_loss_risk,
    weekend_holds,
)

D = Decimal
WED = datetime(2026, 3, 4, 12, tzinfo=UTC)  # Wednesday 12:00 UTC (and London, before the clocks change)
SAT = datetime(2026, 3, 7, 12, tzinfo=UTC)

ORDER = OrderCheck(
    at=WED,
    symbol="EURUSD",
    asset_class="forex",
    side="buy",
    lots=D(1),
    price=D("1.1"),
    notional=D(110000),
    equity=D(100000),
)


def check(
    rules: dict[str, Any], order: OrderCheck = ORDER, *, tz: str = "Europe/London", **changes: Any
) -> list[Decision]:
    rb = book(rules, tz=tz)
    return check_order(rb.phase().rules, TradingCalendar(rb.timezone, rb.day_starts_at), replace(order, **changes))


def pos(symbol: str = "EURUSD", side: str = "buy", lots: str = "1", notional: str = "110000") -> OpenPosition:
    return OpenPosition(symbol, side, D(lots), D(notional))


# ---------------------------------------------------------------- lots, positions, orders, leverage, notional
def test_max_lot_size_per_order() -> None:
    assert check({"max_lot_size": {"per_order": 5}}, lots=D(5)) == []

    [r] = check({"max_lot_size": {"per_order": 5}}, lots=D("5.01"))
    assert (r.rule, r.kind, r.action, r.value, r.limit) == ("max_lot_size", "reject", "reject_order", D("5.01"), D(5))
    assert "5.01 lots exceeds the per-order limit of 5" in r.evidence["message"]


def test_max_lot_size_per_symbol_counts_open_lots_in_that_symbol_only() -> None:
    positions = (pos(lots="4"), pos(lots="4"), pos("GBPUSD", lots="9"))
    assert check({"max_lot_size": {"per_symbol": 10}}, lots=D(2), positions=positions) == []

    [r] = check({"max_lot_size": {"per_symbol": 10}}, lots=D(3), positions=positions)
    assert (r.value, r.limit, r.evidence["open_lots"]) == (D(11), D(10), "8")


def test_max_open_positions_refuses_a_new_symbol_beyond_the_count() -> None:
    rules = {"max_open_positions": {"count": 2}}
    two = (pos("EURUSD"), pos("GBPUSD"))

    [r] = check(rules, symbol="USDJPY", positions=two)
    assert (r.rule, r.value, r.limit, r.evidence["open_positions"]) == ("max_open_positions", D(3), D(2), 2)
    assert check(rules, symbol="EURUSD", positions=two) == []  # adds to an open position
    assert check(rules, symbol="USDJPY", positions=two, resting=True) == []  # a resting order is not a position


def test_max_open_positions_counts_several_tickets_in_one_symbol_as_one_position() -> None:
    # The execution core nets one position per symbol, so an offline log's two EURUSD tickets are one position
    # (the same log replayed through the live service must give the same answer).
    assert check({"max_open_positions": {"count": 2}}, symbol="GBPUSD", positions=(pos(), pos())) == []


def test_max_open_orders_counts_resting_orders() -> None:
    rules = {"max_open_orders": {"count": 10}}

    assert check(rules, resting=True, open_orders=9) == []
    [r] = check(rules, resting=True, open_orders=10)
    assert (r.rule, r.value, r.limit) == ("max_open_orders", D(11), D(10))
    assert check(rules, resting=False, open_orders=10) == []  # a market order does not rest


def test_max_leverage_compares_aggregate_notional_with_equity() -> None:
    rules = {"max_leverage": {"ratio": 30}}
    held = (pos(notional="2890000"),)

    assert check(rules, positions=held) == []  # (2,890,000 + 110,000) / 100,000 = 30x exactly
    [r] = check(rules, positions=held, notional=D("110000.01"))
    assert (r.rule, r.limit, r.evidence["aggregate_notional"], r.evidence["equity"]) == (
        "max_leverage",
        D(30),
        "3000000.01",
        "100000.00",
    )


def test_max_notional_per_order_and_aggregate() -> None:
    assert check({"max_notional": {"amount": "110000"}}) == []
    [r] = check({"max_notional": {"amount": "100000"}})
    assert (r.value, r.limit, r.evidence["notional"]) == (D(110000), D(100000), "110000.00")

    [a] = check({"max_notional": {"aggregate": "200000"}}, positions=(pos(notional="95000"),))
    assert (a.value, a.limit, a.evidence["aggregate_notional"]) == (D(205000), D(200000), "205000.00")


# ---------------------------------------------------------------- risk per trade
def test_max_risk_per_trade_requires_a_stop_loss() -> None:
    [r] = check({"max_risk_per_trade": {"pct": 2}})

    assert (r.rule, r.kind, r.value, r.limit) == ("max_risk_per_trade", "reject", None, D(2000))
    assert r.evidence["message"] == "a stop loss is required on every order"
    assert check({"max_risk_per_trade": {"pct": 2, "require_stop_loss": False}}) == []


def test_max_risk_per_trade_rejection_carries_the_computed_risk() -> None:
    # EURUSD 1 lot, entry 1.10000, stop 1.09750: 0.0025 x 1 x 100,000 = 250 USD; 2% of 10,000 equity = 200.
    risk = stop_loss_risk(D("1.10000"), D("1.09750"), D(1), D(100000))
    assert risk == D(250)

    [r] = check({"max_risk_per_trade": {"pct": 2}}, equity=D(10000), sl=D("1.09750"), risk=risk)
    assert (r.value, r.limit) == (D(250), D(200))
    assert r.evidence["risk"] == "250.00"
    assert r.evidence["max_risk"] == "200.00"
    assert r.evidence["stop_loss"] == "1.09750"
    assert r.evidence["message"] == "risk at the stop loss is 250.00 (2.50% of equity), above 2% (200.00)"


def test_max_risk_per_trade_allows_risk_exactly_at_the_limit() -> None:
    risk = stop_loss_risk(D("1.10000"), D("1.09800"), D(1), D(100000))

    assert check({"max_risk_per_trade": {"pct": 2}}, equity=D(10000), sl=D("1.098"), risk=risk) == []


def test_stop_loss_risk_converts_to_the_account_currency() -> None:
    # USDJPY 2 lots, entry 150.000, stop 149.500: 0.5 x 2 x 100,000 = 100,000 JPY at 1/150 = 666.67 USD.
    risk = stop_loss_risk(D("150.000"), D("149.500"), D(2), D(100000), D(1) / D(150))

    assert risk.quantize(D("0.01")) == D("666.67")


# ---------------------------------------------------------------- hours and weekends
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
HOURS = {"trading_hours": {"windows": [{"days": WEEKDAYS, "start": "07:00", "end": "21:00"}]}}


@pytest.mark.parametrize(
    ("t", "allowed"),
    [
        (datetime(2026, 3, 4, 6, 59, 59, tzinfo=UTC), False),
        (datetime(2026, 3, 4, 7, tzinfo=UTC), True),  # the start is inside
        (datetime(2026, 3, 4, 20, 59, 59, tzinfo=UTC), True),
        (datetime(2026, 3, 4, 21, tzinfo=UTC), False),  # the end is outside
        (SAT, False),
        (datetime(2026, 7, 1, 6, 30, tzinfo=UTC), True),  # 07:30 BST: the windows are local wall time
    ],
)
def test_trading_hours_windows_are_local_and_half_open(t: datetime, allowed: bool) -> None:
    out = check(HOURS, at=t)

    assert (out == []) is allowed
    if not allowed:
        assert out[0].rule == "trading_hours"
        assert out[0].evidence["local_time"] == t.astimezone(ZoneInfo("Europe/London")).isoformat()


@pytest.mark.parametrize(
    ("t", "allowed"),
    [
        (datetime(2026, 3, 2, 23, tzinfo=UTC), True),  # Monday 23:00: inside Monday's window
        (datetime(2026, 3, 3, 5, 59, tzinfo=UTC), True),  # Tuesday 05:59: the tail of Monday's window
        (datetime(2026, 3, 3, 6, tzinfo=UTC), False),
        (datetime(2026, 3, 6, 5, tzinfo=UTC), True),  # Friday 05:00: the tail of Thursday's
        (datetime(2026, 3, 6, 22, 30, tzinfo=UTC), False),  # Friday evening: no window starts on Friday
        (datetime(2026, 3, 1, 22, tzinfo=UTC), True),  # Sunday 22:00 opens the week
        (datetime(2026, 3, 7, 1, tzinfo=UTC), False),  # Saturday 01:00
    ],
)
def test_trading_hours_windows_may_wrap_past_midnight(t: datetime, allowed: bool) -> None:
    windows = [{"days": ["sun", "mon", "tue", "wed", "thu"], "start": "22:00", "end": "06:00"}]
    cal = TradingCalendar("UTC", t.time())

    assert in_windows(cal, t, windows) is allowed


def test_a_window_may_end_at_24_00() -> None:
    cal = TradingCalendar("UTC", WED.time())
    windows = [{"days": ["wed"], "start": "20:00", "end": "24:00"}]

    assert in_windows(cal, datetime(2026, 3, 4, 23, 59, 59, tzinfo=UTC), windows)
    assert not in_windows(cal, datetime(2026, 3, 5, 0, 0, tzinfo=UTC), windows)


def test_weekend_trading_refuses_new_orders_on_the_weekend_but_exempts_crypto() -> None:
    [r] = check({"weekend_trading": {}}, at=SAT)
    assert (r.rule, r.kind) == ("weekend_trading", "reject")

    assert check({"weekend_trading": {}}, at=SAT, symbol="BTCUSD", asset_class="crypto") == []
    assert check({"weekend_trading": {}}, at=WED) == []
    assert check({"weekend_trading": {"new_orders": True}}, at=SAT) == []


def test_weekend_trading_exempt_classes_are_configurable() -> None:
    rules = {"weekend_trading": {"exempt_asset_classes": ["crypto", "metal"]}}

    assert check(rules, at=SAT, symbol="XAUUSD", asset_class="metal") == []
    assert len(check(rules, at=SAT)) == 1


def test_weekend_is_judged_in_the_rulebook_timezone() -> None:
    fri_utc_sat_tokyo = datetime(2026, 3, 6, 16, tzinfo=UTC)

    assert check({"weekend_trading": {}}, at=fri_utc_sat_tokyo, tz="UTC") == []
    assert len(check({"weekend_trading": {}}, at=fri_utc_sat_tokyo, tz="Asia/Tokyo")) == 1


def test_hold_positions_false_flags_positions_open_when_the_weekend_starts_except_exempt_classes() -> None:
    rb = book({"weekend_trading": {"hold_positions": False}}, tz="Europe/London")
    cal = TradingCalendar(rb.timezone, rb.day_starts_at)
    held = [("T1", "EURUSD", "forex"), ("T2", "BTCUSD", "crypto")]
    sat = datetime(2026, 3, 7, tzinfo=UTC)

    assert weekend_holds(rb.phase().rules, cal, WED, sat - timedelta(microseconds=1), held) == []
    [f] = weekend_holds(rb.phase().rules, cal, WED, sat, held)
    assert (f.rule, f.kind, f.at, f.evidence["ticket"]) == ("weekend_trading", "flag", sat, "T1")
    assert weekend_holds(rb.phase().rules, cal, sat, sat + timedelta(days=1), held) == []  # already past it
    assert len(weekend_holds(rb.phase().rules, cal, WED, WED + timedelta(days=14), held)) == 2  # two weekends


def test_holding_over_the_weekend_is_fine_by_default() -> None:
    rb = book({"weekend_trading": {}})
    cal = TradingCalendar(rb.timezone, rb.day_starts_at)

    assert weekend_holds(rb.phase().rules, cal, WED, WED + timedelta(days=7), [("T1", "EURUSD", "forex")]) == []


# ---------------------------------------------------------------- news
NFP = CalendarEvent(datetime(2026, 3, 6, 13, 30, tzinfo=UTC), "USD", "high", "Non-Farm Payrolls")
NEWS = {"news_trading": {"minutes_before": 2, "minutes_after": 2}}


@pytest.mark.parametrize(
    ("offset", "inside"),
    [
        (timedelta(minutes=-2, seconds=-1), False),
        (timedelta(minutes=-2), True),  # exactly event - minutes_before
        (timedelta(0), True),
        (timedelta(minutes=2), True),  # exactly event + minutes_after
        (timedelta(minutes=2, seconds=1), False),
    ],
)
def test_news_window_edges_are_inside_and_one_second_beyond_is_not(offset: timedelta, inside: bool) -> None:
    out = check(NEWS, at=NFP.at + offset, currencies=("EUR", "USD"), events=(NFP,))

    assert bool(out) is inside
    if inside:
        [r] = out
        assert (r.rule, r.kind, r.action) == ("news_trading", "reject", "reject_order")
        assert r.evidence["events"] == [
            {"at": "2026-03-06T13:30:00Z", "currency": "USD", "impact": "high", "title": "Non-Farm Payrolls"}
        ]


def test_news_affects_only_instruments_of_the_event_currency_and_impact() -> None:
    assert check(NEWS, at=NFP.at, currencies=("EUR", "GBP"), events=(NFP,)) == []
    medium = replace(NFP, impact="medium")
    assert check(NEWS, at=NFP.at, currencies=("EUR", "USD"), events=(medium,)) == []
    rules = {"news_trading": {"impact": "medium"}}  # medium and above
    assert len(check(rules, at=NFP.at, currencies=("EUR", "USD"), events=(medium,))) == 1


def test_news_scope_open_lets_a_close_through_and_open_and_close_does_not() -> None:
    closing: dict[str, Any] = {"at": NFP.at, "currencies": ("EUR", "USD"), "events": (NFP,), "closing": True}

    assert check(NEWS, **closing) == []
    [r] = check({"news_trading": {"scope": "open_and_close"}}, **closing)
    assert (r.rule, r.evidence["closing"], r.evidence["scope"]) == ("news_trading", True, "open_and_close")


@pytest.mark.parametrize(("action", "kind"), [("reject_order", "reject"), ("flag", "flag"), ("deduct_profit", "flag")])
def test_news_actions(action: str, kind: str) -> None:
    [r] = check({"news_trading": {"action": action}}, at=NFP.at, currencies=("EUR", "USD"), events=(NFP,))

    assert (r.kind, r.action) == (kind, action)


def test_a_closing_order_meets_only_the_news_rule() -> None:
    rules = {**NEWS, "max_lot_size": {"per_order": 1}, "trading_hours": HOURS["trading_hours"]}

    assert check(rules, at=SAT, lots=D(50), closing=True) == []
    assert check(rules, at=SAT, lots=D(50), reduces=True) == []


# ---------------------------------------------------------------- hedging
def test_hedging_not_allowed_refuses_the_opposite_side_in_one_symbol() -> None:
    rules = {"hedging": {"allowed": False}}

    [r] = check(rules, side="sell", positions=(pos(side="buy"),))
    assert (r.rule, r.evidence["across_accounts"]) == ("hedging", False)
    assert check(rules, side="buy", positions=(pos(side="buy"),)) == []
    assert check(rules, side="sell", positions=(pos("GBPUSD", side="buy"),)) == []
    assert check({"hedging": {}}, side="sell", positions=(pos(side="buy"),)) == []  # allowed by default


def test_hedging_across_accounts_of_one_trader() -> None:
    [r] = check({"hedging": {"allowed": False, "across_accounts": True}}, side="sell", other_account_sides=("buy",))
    assert r.evidence["across_accounts"] is True

    assert check({"hedging": {"allowed": False}}, side="sell", other_account_sides=("buy",)) == []
