"""Limit rules (max_daily_loss, max_loss) and drawdown warnings: worked examples on a 100,000 account in UTC.

Every example states its floor and why; money in the decisions is compared as exact Decimals.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from rules_kit import Drive, at, book

D = Decimal
FTMO = {"pct": 5, "base": "initial_balance", "anchor": "start_of_day_balance"}


def daily(**kw: Any) -> Drive:
    return Drive(book({"max_daily_loss": {**FTMO, **kw}}))


def maxloss(**kw: Any) -> Drive:
    return Drive(book({"max_loss": {"pct": 10, **kw}}))


# ================================================================ max_daily_loss
def test_daily_floor_is_the_start_of_day_balance_minus_pct_of_initial() -> None:
    d = daily()
    d.trade(at(0, 10), at(0, 11), 2000)  # balance 102,000 at the day end
    d.mark(at(1, 9), 97000)  # day 1 floor = 102,000 - 5% x 100,000 = 97,000

    assert d.ev.s.daily_floor == D(97000)
    assert d.breaches() == []

    [b] = d.mark(at(1, 10), "96999.99")
    assert (b.rule, b.action, b.value, b.limit) == ("max_daily_loss", "fail", D("96999.99"), D(97000))
    assert b.evidence["anchor"] == "start_of_day_balance"
    assert b.evidence["anchor_value"] == "102000.00"
    assert b.evidence["trading_day"] == "2026-03-03"
    assert d.verdict == "failed"


def test_equity_exactly_at_the_daily_floor_is_not_a_breach() -> None:
    d = daily()

    assert d.mark(at(0, 10), 95000) == []
    assert d.verdict is None


def test_equity_exactly_at_the_daily_floor_is_a_breach_with_breach_on_touch() -> None:
    d = daily(breach_on_touch=True)

    [b] = d.mark(at(0, 10), 95000)
    assert (b.rule, b.value, b.limit, b.evidence["breach_on_touch"]) == ("max_daily_loss", D(95000), D(95000), True)


def test_start_of_day_equity_anchor_uses_the_equity_at_the_boundary() -> None:
    d = daily(anchor="start_of_day_equity")
    d.buy(at(0, 10))
    d.mark(at(0, 20), 97000)  # floating -3,000 carried over midnight
    d.mark(at(1, 9), 92500)

    assert (d.ev.s.daily_anchor, d.ev.s.daily_floor) == (D(97000), D(92000))
    assert d.breaches() == []
    [b] = d.mark(at(1, 10), "91999.99")
    assert b.limit == D(92000)
    assert b.evidence["start_of_day_equity"] == "97000.00"


def test_start_of_day_balance_anchor_ignores_floating_at_the_boundary() -> None:
    d = daily()
    d.buy(at(0, 10))
    d.mark(at(0, 20), 97000)
    [b] = d.mark(at(1, 9), 92500)  # the same path as above breaches: the floor stayed at 95,000

    assert b.limit == D(95000)


@pytest.mark.parametrize(
    ("balance", "equity", "anchor", "floor"),
    [
        ("100000", "104000", "104000", "98800"),  # equity above balance: anchor on equity, 5% of 104,000
        ("100000", "97000", "100000", "95000"),  # equity below balance: anchor on balance
    ],
)
def test_max_balance_equity_anchor_on_the_day_anchor_base(balance: str, equity: str, anchor: str, floor: str) -> None:
    d = daily(anchor="start_of_day_max_balance_equity", base="day_anchor")
    d.buy(at(0, 10))
    d.mark(at(0, 20), equity)
    d.mark(at(1, 9), floor)  # exactly at the floor: fine

    assert (d.ev.s.daily_anchor, d.ev.s.daily_floor) == (D(anchor), D(floor))
    assert d.breaches() == []
    [b] = d.mark(at(1, 10), D(floor) - D("0.01"))
    assert b.evidence["anchor"] == "start_of_day_max_balance_equity"
    assert b.evidence["base"] == "day_anchor"


def test_initial_balance_anchor_keeps_the_floor_at_initial_minus_pct_every_day() -> None:
    d = daily(anchor="initial_balance")
    d.trade(at(0, 10), at(0, 11), 8000)
    d.mark(at(1, 9), 108000)
    d.mark(at(2, 9), 95000)

    assert d.ev.s.daily_floor == D(95000)
    assert d.breaches() == []


@pytest.mark.parametrize(("base", "floor"), [("initial_balance", "105000"), ("day_anchor", "104500")])
def test_the_base_is_the_initial_balance_or_the_day_anchor(base: str, floor: str) -> None:
    d = daily(base=base)
    d.trade(at(0, 10), at(0, 11), 10000)  # day 1 anchor: balance 110,000
    d.mark(at(1, 9), 110000)

    assert d.ev.s.daily_floor == D(floor)  # 110,000 - 5% x 100,000  |  110,000 - 5% x 110,000


def test_an_amount_is_subtracted_from_the_anchor_whatever_the_base() -> None:
    d = Drive(book({"max_daily_loss": {"amount": "3000", "base": "day_anchor"}}))
    d.trade(at(0, 10), at(0, 11), 10000)
    d.mark(at(1, 9), 107000)

    assert d.ev.s.daily_floor == D(107000)
    assert d.breaches() == []
    [b] = d.mark(at(1, 10), "106999.99")
    assert (b.limit, b.evidence["amount"], b.evidence["pct"]) == (D(107000), "3000", None)


def test_include_floating_checks_equity() -> None:
    d = daily()
    d.buy(at(0, 10))

    [b] = d.mark(at(0, 11), 94000)
    assert b.evidence["checked"] == "equity"


def test_without_include_floating_only_the_balance_counts() -> None:
    d = daily(include_floating=False)
    t = d.buy(at(0, 10))

    assert d.mark(at(0, 11), 90000) == []  # a deep floating loss: the balance is still 100,000
    d.mark(at(0, 12), 94000)
    [b] = [x for x in d.close(at(0, 13), t, -6000) if x.kind == "breach"]  # realized: balance 94,000
    assert (b.value, b.limit, b.evidence["checked"]) == (D(94000), D(95000), "balance")


def test_end_of_day_evaluation_ignores_an_intraday_dip_that_recovers() -> None:
    d = daily(evaluation="end_of_day")
    d.buy(at(0, 10))
    d.mark(at(0, 11), 90000)
    d.mark(at(0, 20), 96000)
    d.mark(at(1, 9), 96000)

    assert d.breaches() == []


def test_end_of_day_evaluation_breaches_at_the_boundary_on_the_value_at_the_day_end() -> None:
    d = daily(evaluation="end_of_day")
    d.buy(at(0, 10))
    d.mark(at(0, 20), 94000)
    assert d.breaches() == []

    d.mark(at(1, 9), 94000)
    [b] = d.breaches()
    assert (b.at, b.value, b.limit) == (at(1), D(94000), D(95000))
    assert b.evidence["end_of_day"] is True
    assert b.evidence["trading_day"] == "2026-03-02"


def test_pause_day_is_recorded_and_the_day_goes_on_without_more_daily_breaches() -> None:
    d = daily(action="pause_day")
    d.buy(at(0, 10))

    [b] = d.mark(at(0, 11), 94000)
    assert (b.rule, b.kind, b.action) == ("max_daily_loss", "breach", "pause_day")
    assert not b.is_hard
    assert d.verdict is None
    assert d.ev.s.day_paused

    assert d.mark(at(0, 12), 93000) == []  # paused: not breached again the same day
    assert d.verdict is None


def test_a_carried_loss_still_below_the_new_floor_pauses_the_new_day_at_its_start() -> None:
    d = daily(action="pause_day")
    d.buy(at(0, 10))  # the driver did not flatten (offline logs cannot): the loss is carried
    d.mark(at(0, 11), 94000)
    d.mark(at(1, 1), 93000)

    [_, b] = d.breaches()
    assert (b.at, b.action, b.evidence["at_day_start"], b.evidence["trading_day"]) == (
        at(1),
        "pause_day",
        True,
        "2026-03-03",
    )
    assert d.verdict is None


def test_pause_day_next_day_is_checked_again() -> None:
    d = daily(action="pause_day")
    t = d.buy(at(0, 10))
    d.mark(at(0, 11), 94000)
    d.close(at(0, 12), t, -6000)  # flattened: balance 94,000
    d.mark(at(1, 9), 94000)  # day 1 floor = 94,000 - 5,000 = 89,000

    assert d.ev.s.daily_floor == D(89000)
    assert not d.ev.s.day_paused
    d.buy(at(1, 10))
    [b] = d.mark(at(1, 11), 88000)
    assert (b.action, b.limit, b.evidence["trading_day"]) == ("pause_day", D(89000), "2026-03-03")


def test_a_position_carried_over_midnight_breaches_at_the_reset_against_the_new_floor() -> None:
    d = daily()
    d.trade(at(0, 9), at(0, 10), 3000)  # balance 103,000
    d.buy(at(0, 11))
    d.mark(at(0, 23, 59), 96000)  # floating -7,000: above today's floor of 95,000
    assert d.breaches() == []

    d.boundary_equity[at(1)] = D(96000)
    d.mark(at(1, 0, 5), 96000)  # the next event after midnight; the breach is dated at the boundary
    [b] = d.breaches()
    assert (b.at, b.value, b.limit) == (at(1), D(96000), D(98000))  # 103,000 - 5,000
    assert b.evidence["at_day_start"] is True
    assert b.evidence["previous_day"] == "2026-03-02"
    assert b.evidence["trading_day"] == "2026-03-03"
    assert d.verdict == "failed"


def test_an_event_exactly_at_the_day_start_belongs_to_the_new_day() -> None:
    d = daily()
    t = d.buy(at(0, 10))
    d.mark(at(0, 23), 97000)
    d.close(at(1), t, -3000)  # exactly 00:00 UTC: the loss is the new day's

    assert d.ev.s.day_pnl == {"2026-03-03": D(-3000)}
    assert d.ev.s.daily_floor == D(95000)  # day 1 anchor: the balance before the close, 100,000
    assert d.ev.s.trading_days == ["2026-03-02"]

    d.buy(at(2) - timedelta(microseconds=1))  # the last instant of day 1
    assert d.ev.s.trading_days == ["2026-03-02", "2026-03-03"]


# ================================================================ max_loss
def test_static_max_loss_floor_is_initial_minus_pct() -> None:
    d = maxloss()

    assert d.ev.s.max_floor == D(90000)
    assert d.mark(at(0, 10), 90000) == []  # exactly at the floor
    [b] = d.mark(at(0, 11), "89999.99")
    assert (b.rule, b.action, b.value, b.limit) == ("max_loss", "fail", D("89999.99"), D(90000))
    assert b.evidence["mode"] == "static"
    assert d.verdict == "failed"


def test_static_max_loss_with_an_amount_and_touch() -> None:
    d = Drive(book({"max_loss": {"amount": "4000", "breach_on_touch": True}}))

    [b] = d.mark(at(0, 10), 96000)
    assert (b.value, b.limit, b.evidence["amount"]) == (D(96000), D(96000), "4000")


def test_eod_trailing_moves_only_at_the_day_end_and_never_falls() -> None:
    d = maxloss(mode="eod_trailing")
    t = d.buy(at(0, 9))
    d.mark(at(0, 12), 130000)  # an intraday high: does not move the floor
    assert d.ev.s.max_floor == D(90000)
    d.close(at(0, 13), t, 5000)  # balance 105,000
    assert d.ev.s.max_floor == D(90000)  # not before the day ends

    d.mark(at(1, 9), 105000)  # day end: highest end-of-day balance 105,000 -> 95,000
    assert d.ev.s.max_floor == D(95000)

    d.trade(at(1, 10), at(1, 11), -5000)  # balance 100,000
    d.mark(at(2, 9), 100000)  # candidate 90,000 < 95,000: the floor stays
    assert d.ev.s.max_floor == D(95000)
    assert d.ev.s.peak_eod_balance == D(105000)

    [b] = d.mark(at(2, 10), "94999.99")
    assert (b.limit, b.evidence["mode"], b.evidence["peak_eod_balance"]) == (D(95000), "eod_trailing", "105000.00")


def test_intraday_trailing_follows_the_highest_equity_including_unrealized() -> None:
    d = maxloss(mode="intraday_trailing")
    d.buy(at(0, 9))
    d.mark(at(0, 10), 103000)
    assert d.ev.s.max_floor == D(93000)

    d.mark(at(0, 11), 101000)
    assert d.ev.s.max_floor == D(93000)  # never falls
    [b] = d.mark(at(0, 12), "92999.99")
    assert (b.limit, b.evidence["peak_equity"]) == (D(93000), "103000.00")


def test_closed_balance_trailing_moves_at_every_close_and_ignores_floating_highs() -> None:
    d = maxloss(mode="closed_balance_trailing")
    t = d.buy(at(0, 9))
    d.mark(at(0, 10), 120000)
    assert d.ev.s.max_floor == D(90000)

    d.close(at(0, 11), t, 4000)
    assert d.ev.s.max_floor == D(94000)
    d.trade(at(0, 12), at(0, 13), -3000)
    assert d.ev.s.max_floor == D(94000)
    [b] = d.mark(at(0, 14), "93999.99")
    assert b.evidence["peak_closed_balance"] == "104000.00"


def test_lock_at_offset_locks_the_trailing_floor_exactly_at_the_starting_balance() -> None:
    d = Drive(book({"max_loss": {"amount": "2000", "mode": "intraday_trailing", "lock_at_offset": "0"}}, start="50000"))
    d.buy(at(0, 9))
    d.mark(at(0, 10), 51500)
    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(49500), False)

    d.mark(at(0, 11), 53000)  # candidate 51,000 passes the lock: the floor is exactly the lock
    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(50000), True)
    d.mark(at(0, 12), 60000)
    assert d.ev.s.max_floor == D(50000)  # and stops moving

    assert d.mark(at(0, 13), 50000) == []
    [b] = d.mark(at(0, 14), "49999.99")
    assert (b.limit, b.evidence["locked"], b.evidence["lock_at"]) == (D(50000), True, "50000.00")


def test_a_candidate_reaching_the_lock_exactly_locks_it() -> None:
    d = Drive(book({"max_loss": {"amount": "2000", "mode": "intraday_trailing", "lock_at_offset": "0"}}, start="50000"))
    d.mark(at(0, 10), 52000)

    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(50000), True)


def test_lock_at_is_an_absolute_level() -> None:
    d = maxloss(mode="eod_trailing", lock_at="101000")
    d.trade(at(0, 9), at(0, 10), 12000)
    d.mark(at(1, 1), 112000)  # candidate 102,000 >= 101,000: floor = 101,000, locked

    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(101000), True)
    d.trade(at(1, 9), at(1, 10), 20000)
    d.mark(at(2, 1), 132000)
    assert d.ev.s.max_floor == D(101000)


def test_closed_balance_trailing_locks_too() -> None:
    d = maxloss(mode="closed_balance_trailing", lock_at_offset="0")
    d.trade(at(0, 9), at(0, 10), 9000)
    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(99000), False)
    d.trade(at(0, 11), at(0, 12), 2000)

    assert (d.ev.s.max_floor, d.ev.s.max_locked) == (D(100000), True)


def test_max_loss_end_of_day_evaluation_judges_only_the_day_end() -> None:
    d = maxloss(evaluation="end_of_day")
    d.buy(at(0, 9))
    d.mark(at(0, 10), 80000)
    d.mark(at(0, 20), 91000)
    d.mark(at(1, 9), 91000)
    assert d.breaches() == []

    d.mark(at(1, 20), 89000)
    assert d.breaches() == []
    d.mark(at(2, 1), 89000)
    [b] = d.breaches()
    assert (b.at, b.value, b.limit, b.evidence["evaluation"]) == (at(2), D(89000), D(90000), "end_of_day")


def test_eod_trailing_with_end_of_day_evaluation_judges_the_day_against_the_floor_that_stood_during_it() -> None:
    d = maxloss(mode="eod_trailing", evaluation="end_of_day")
    d.trade(at(0, 9), at(0, 10), 10000)  # balance 110,000; the floor stays 90,000 until the day ends
    t = d.buy(at(0, 11))
    d.mark(at(0, 23), 95000)
    d.boundary_equity[at(1)] = D(95000)
    d.mark(at(1, 1), 95000)

    # Day 0 ends at 95,000 >= 90,000: no breach; the floor then trails to 110,000 - 10,000 = 100,000 and the
    # carried position is re-checked at the new day start (end_of_day: only at the next day end).
    assert d.breaches() == []
    assert d.ev.s.max_floor == D(100000)
    d.close(at(1, 2), t, -15000)
    d.mark(at(2, 1), 95000)
    [b] = d.breaches()
    assert (b.at, b.limit) == (at(2), D(100000))


# ================================================================ both floors in one event
def test_one_event_crossing_both_floors_records_both_breaches_highest_floor_first() -> None:
    d = Drive(book({"max_daily_loss": FTMO, "max_loss": {"pct": 10}}))
    d.buy(at(0, 9))

    out = d.mark(at(0, 10), 89000)
    assert [(b.rule, b.limit) for b in out] == [("max_daily_loss", D(95000)), ("max_loss", D(90000))]
    assert d.verdict == "failed"


def test_when_the_trailing_max_loss_floor_is_higher_it_comes_first() -> None:
    d = Drive(book({"max_daily_loss": FTMO, "max_loss": {"pct": 3, "mode": "intraday_trailing"}}))
    d.buy(at(0, 9))
    d.mark(at(0, 10), 104000)  # max floor 101,000; daily floor 95,000

    out = d.mark(at(0, 11), 94000)
    assert [(b.rule, b.limit) for b in out] == [("max_loss", D(101000)), ("max_daily_loss", D(95000))]


def test_a_soft_daily_breach_and_a_hard_max_loss_breach_at_once_are_both_recorded() -> None:
    d = Drive(book({"max_daily_loss": {**FTMO, "action": "pause_day"}, "max_loss": {"pct": 10}}))
    d.buy(at(0, 9))

    out = d.mark(at(0, 10), 89000)
    assert [(b.rule, b.action) for b in out] == [("max_daily_loss", "pause_day"), ("max_loss", "fail")]
    assert d.verdict == "failed"


# ================================================================ drawdown_warning
def test_drawdown_warning_at_80_percent_used_once_per_limit_per_trading_day() -> None:
    d = Drive(book({"max_daily_loss": FTMO, "max_loss": {"pct": 6}, "drawdown_warning": {}}))
    d.buy(at(0, 9))

    assert d.mark(at(0, 10), "96000.01") == []  # 79.9998% of the 5,000 daily room
    [w] = d.mark(at(0, 11), 96000)  # exactly 80%
    assert (w.rule, w.kind, w.action) == ("drawdown_warning", "warning", "warn")
    assert w.evidence["limit"] == "max_daily_loss"
    assert w.evidence["used_pct"] == "80.00"
    assert w.evidence["floor"] == "95000.00"
    assert d.mark(at(0, 12), 95500) == []  # the same limit, the same day: not again

    [w2] = d.mark(at(0, 13), 95200)  # max loss: 4,800 of 6,000 used
    assert (w2.evidence["limit"], w2.evidence["used_pct"]) == ("max_loss", "80.00")

    d.boundary_equity[at(1)] = D(99000)
    d.mark(at(1, 1), 99000)  # new day: anchor 100,000 (balance), floor 95,000
    [w3] = d.mark(at(1, 10), 95900)
    assert (w3.evidence["limit"], w3.evidence["trading_day"]) == ("max_daily_loss", "2026-03-03")


def test_drawdown_warning_threshold_is_a_parameter() -> None:
    d = Drive(book({"max_loss": {"pct": 10}, "drawdown_warning": {"used_pct": 50}}))

    assert d.mark(at(0, 10), "95000.01") == []
    [w] = d.mark(at(0, 11), 95000)
    assert w.evidence["threshold_pct"] == "50"
