"""Progress rules, pass conditions, consistency, time limits, detectors and DST days through the evaluator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rules_kit import Drive, at, book

D = Decimal


def target(**kw: Any) -> dict[str, Any]:
    return {"profit_target": {"pct": 10, **kw}}


# ================================================================ profit_target
def test_profit_target_pct_passes_when_the_closed_balance_reaches_it() -> None:
    d = Drive(book(phase_rules=target()))
    d.trade(at(0, 9), at(0, 10), "9999.99")
    assert d.verdict is None
    assert d.ev.progress()["profit_target"] == {"value": "9999.99", "target": "10000.00", "met": False}

    out = d.trade(at(0, 11), at(0, 12), "0.01")
    [p] = [x for x in out if x.kind == "pass"]
    assert (p.rule, p.at, p.value) == ("profit_target", at(0, 12), D(10000))
    assert p.evidence["balance"] == "110000.00"
    assert d.verdict == "passed"


def test_profit_target_amount() -> None:
    d = Drive(book(phase_rules={"profit_target": {"amount": "3000"}}, start="50000"))
    d.trade(at(0, 9), at(0, 10), 3000)

    assert d.verdict == "passed"
    assert d.ev.progress()["profit_target"] == {"value": "3000.00", "target": "3000.00", "met": True}


def test_profit_target_counts_closed_balance_not_floating_profit() -> None:
    d = Drive(book(phase_rules=target(require_flat=False)))
    d.buy(at(0, 9))
    d.mark(at(0, 10), 125000)

    assert d.verdict is None


def test_require_flat_holds_the_pass_until_every_position_is_closed() -> None:
    d = Drive(book(phase_rules=target()))
    d.trade(at(0, 9), at(0, 10), 10000)  # target met on closed balance ...
    assert d.verdict == "passed"  # ... and flat: passes

    d2 = Drive(book(phase_rules=target()))
    t = d2.buy(at(0, 8))
    d2.trade(at(0, 9), at(0, 10), 10000)
    assert d2.verdict is None  # a position is still open
    d2.close(at(0, 11), t, 0)
    assert d2.verdict == "passed"
    assert d2.of("profit_target", "pass")[0].at == at(0, 11)


def test_without_require_flat_the_pass_comes_with_positions_open() -> None:
    d = Drive(book(phase_rules=target(require_flat=False)))
    d.buy(at(0, 8))
    d.trade(at(0, 9), at(0, 10), 10000)

    assert d.verdict == "passed"


# ================================================================ min_trading_days / min_profitable_days
def test_a_position_held_over_several_days_counts_as_one_trading_day() -> None:
    d = Drive(book(phase_rules={"min_trading_days": {"days": 2}}))
    t = d.buy(at(0, 9))
    d.mark(at(1, 9), 100500)
    d.mark(at(2, 9), 101000)
    d.close(at(3, 9), t, 1000)

    assert d.ev.progress()["min_trading_days"] == {"value": 1, "target": 2, "met": False}


def test_a_day_counts_when_a_trade_was_opened_in_it_not_when_one_closed() -> None:
    d = Drive(book(phase_rules={"min_trading_days": {"days": 2}}))
    t = d.buy(at(0, 23))
    d.close(at(1, 1), t, 100)
    assert d.ev.s.trading_days == ["2026-03-02"]

    d.buy(at(1, 2))
    d.buy(at(1, 3))
    assert d.ev.progress()["min_trading_days"] == {"value": 2, "target": 2, "met": True}


def test_the_pass_waits_for_min_trading_days() -> None:
    d = Drive(book(phase_rules={**target(), "min_trading_days": {"days": 2}}))
    d.trade(at(0, 9), at(0, 10), 12000)
    assert d.verdict is None

    out = d.trade(at(1, 9), at(1, 10), -100)
    assert d.verdict == "passed"
    assert [x.kind for x in out] == ["pass"]


def test_min_profitable_days_counts_days_whose_closed_pnl_reaches_the_threshold() -> None:
    d = Drive(book(phase_rules={"min_profitable_days": {"days": 2, "threshold_pct": "0.5"}}))
    d.trade(at(0, 9), at(0, 10), 500)  # exactly 0.5% of 100,000: counts
    d.trade(at(1, 9), at(1, 10), "499.99")  # below the threshold
    d.trade(at(2, 9), at(2, 10), 2000)
    d.trade(at(2, 11), at(2, 12), -1600)  # the day nets 400: below
    assert d.ev.progress()["min_profitable_days"] == {"value": 1, "target": 2, "met": False}

    d.trade(at(3, 9), at(3, 10), 700)
    assert d.ev.progress()["min_profitable_days"]["met"] is True


def test_min_profitable_days_with_a_zero_threshold_needs_a_positive_day() -> None:
    # RULES.md: "closed P&L >= threshold_pct of initial balance"; with the default 0 a flat day (0.00) is not a
    # *profitable* day, so a day must be strictly positive as well as reach the threshold.
    d = Drive(book(phase_rules={"min_profitable_days": {"days": 1}}))
    d.trade(at(0, 9), at(0, 10), 0)
    assert d.ev.progress()["min_profitable_days"]["value"] == 0

    d.trade(at(1, 9), at(1, 10), "0.01")
    assert d.ev.progress()["min_profitable_days"]["value"] == 1


def test_the_pass_waits_for_min_profitable_days() -> None:
    d = Drive(book(phase_rules={**target(), "min_profitable_days": {"days": 2, "threshold_pct": 1}}))
    d.trade(at(0, 9), at(0, 10), 10500)
    assert d.verdict is None
    d.trade(at(1, 9), at(1, 10), 1000)
    assert d.verdict == "passed"


# ================================================================ time limits
def test_max_trading_days_expires_at_the_start_day_start_plus_n_calendar_days() -> None:
    d = Drive(book(phase_rules={**target(), "max_trading_days": {"days": 5}}), start=at(0, 9))
    d.trade(at(0, 9), at(0, 10), 1000)
    d.mark(at(5) - timedelta(microseconds=1), 101000)  # Friday 23:59:59.999999
    assert d.verdict is None

    out = d.trade(at(5), at(5, 1), 20000)  # exactly at the deadline: too late
    [b] = d.breaches()
    assert (b.rule, b.action, b.at, b.value, b.limit) == ("max_trading_days", "expire", at(5), None, None)
    assert b.evidence == {"days": 5, "phase_start_day": "2026-03-02", "deadline": "2026-03-07T00:00:00Z"}
    assert d.verdict == "expired"
    assert out == []
    assert d.ev.s.balance == D(101000)  # nothing after the deadline counted


def test_max_trading_days_counts_calendar_days_in_the_rulebook_timezone_across_dst() -> None:
    rb = book(phase_rules={"max_trading_days": {"days": 30}}, tz="Europe/Prague")
    d = Drive(rb, start=datetime(2026, 3, 10, 9, tzinfo=UTC))
    deadline = datetime(2026, 4, 8, 22, tzinfo=UTC)  # 2026-04-09 00:00 CEST: 30 local days, 719 hours

    d.mark(deadline - timedelta(seconds=1), 100000)
    assert d.verdict is None
    d.mark(deadline, 100000)
    assert (d.ev.s.verdict, d.breaches()[0].at) == ("expired", deadline)


def test_inactivity_expires_n_times_24_hours_after_the_last_trade_opened_and_holding_is_not_activity() -> None:
    d = Drive(book(phase_rules={"inactivity": {"days": 3}}))
    d.buy(at(0, 9))
    t = d.buy(at(0, 10, 30))
    d.mark(at(2, 12), 101000)  # holding, prices moving: not activity
    d.close(at(3, 10), t, 500)  # closing is not activity either
    d.mark(at(3, 10, 29, 59), 100500)
    assert d.verdict is None

    d.mark(at(3, 10, 30), 100500)
    [b] = d.breaches()
    assert (b.rule, b.action, b.at) == ("inactivity", "expire", at(3, 10, 30))
    assert b.evidence["last_trade_opened_at"] == "2026-03-02T10:30:00Z"
    assert d.verdict == "expired"


def test_inactivity_counts_from_the_phase_start_when_nothing_was_opened() -> None:
    d = Drive(book(phase_rules={"inactivity": {"days": 2}}), start=at(0, 8))
    d.mark(at(2, 8), 100000)

    [b] = d.breaches()
    assert (b.at, b.evidence["last_trade_opened_at"], b.evidence["phase_started_at"]) == (
        at(2, 8),
        None,
        "2026-03-02T08:00:00Z",
    )


def test_the_earlier_deadline_wins_and_nothing_happens_after_it() -> None:
    d = Drive(book(phase_rules={"inactivity": {"days": 2}, "max_trading_days": {"days": 10}}), start=at(0, 8))
    d.buy(at(0, 9))
    d.mark(at(20), 50000)  # far past both deadlines, with a loss that would breach nothing configured anyway

    assert [(b.rule, b.at) for b in d.breaches()] == [("inactivity", at(2, 9))]


# ================================================================ consistency: best day
def best_day(**kw: Any) -> dict[str, Any]:
    return {**target(), "consistency": {"mode": "best_day", "max_share_pct": 50, **kw}}


def test_best_day_consistency_blocks_the_pass_then_releases_it_when_later_days_dilute_the_best_day() -> None:
    d = Drive(book(phase_rules=best_day()))
    d.trade(at(0, 9), at(0, 10), 6000)
    d.trade(at(1, 9), at(1, 10), 2000)
    d.trade(at(2, 9), at(2, 10), 2000)  # target met: 10,000; best day 6,000 / 10,000 = 60% > 50%

    assert d.verdict is None
    assert d.breaches() == []  # block is a pass condition, not a breach
    assert d.ev.progress()["consistency"] == {"value": "60.00", "target": "50", "met": False}

    d.trade(at(3, 9), at(3, 10), 2000)  # 6,000 / 12,000 = 50%: allowed (not strict)
    assert d.verdict == "passed"
    assert d.ev.progress()["consistency"] == {"value": "50.00", "target": "50", "met": True}


def test_strict_best_day_consistency_needs_strictly_less_than_the_share() -> None:
    d = Drive(book(phase_rules=best_day(strict=True)))
    for day, pnl in enumerate([6000, 2000, 2000, 2000]):
        d.trade(at(day, 9), at(day, 10), pnl)
    assert d.verdict is None  # exactly 50% is not < 50%

    d.trade(at(4, 9), at(4, 10), 1000)  # 6,000 / 13,000 = 46.15%
    assert d.verdict == "passed"


@pytest.mark.parametrize(
    ("denominator", "share", "passed"), [("total_profit", "50.00", False), ("sum_of_positive_days", "45.45", True)]
)
def test_best_day_denominators(denominator: str, share: str, passed: bool) -> None:
    # Days +5,000, -1,000, +4,000, +2,000: net 10,000 (the target), positive days sum to 11,000.
    d = Drive(book(phase_rules=best_day(max_share_pct=48, denominator=denominator)))
    for day, pnl in enumerate([5000, -1000, 4000, 2000]):
        d.trade(at(day, 9), at(day, 10), pnl)

    assert d.ev.progress()["consistency"]["value"] == share
    assert (d.verdict == "passed") is passed


def test_best_day_consistency_flag_passes_with_a_flag() -> None:
    d = Drive(book(phase_rules=best_day(action="flag")))
    out = d.trade(at(0, 9), at(0, 10), 10000)

    assert [(x.rule, x.kind) for x in out] == [("consistency", "flag"), ("profit_target", "pass")]
    assert out[0].evidence["share_pct"] == "100.00"
    assert out[0].evidence["best_day"] == "2026-03-02"
    assert d.verdict == "passed"


def test_best_day_consistency_fail_fails_at_the_moment_of_passing() -> None:
    d = Drive(book(phase_rules=best_day(action="fail")))
    out = d.trade(at(0, 9), at(0, 10), 10000)

    [b] = [x for x in out if x.kind == "breach"]
    assert (b.rule, b.action, b.value, b.limit) == ("consistency", "fail", D(100), D(50))
    assert d.verdict == "failed"


def test_best_day_consistency_fail_waits_until_every_other_pass_condition_holds() -> None:
    # The target is met on day 0 but min_trading_days is not: this is not yet "the moment of passing", so a
    # lopsided ratio is not final; by the time the days are met, later profit has fixed it.
    d = Drive(book(phase_rules={**best_day(action="fail"), "min_trading_days": {"days": 3}}))
    d.trade(at(0, 9), at(0, 10), 10000)
    d.trade(at(1, 9), at(1, 10), 5000)
    assert d.verdict is None

    d.trade(at(2, 9), at(2, 10), 5000)  # 10,000 / 20,000 = 50%
    assert d.verdict == "passed"
    assert d.breaches() == []


def test_best_day_consistency_applies_to_payout_does_not_hold_a_challenge_pass() -> None:
    d = Drive(book(phase_rules=best_day(applies_to="payout")))
    d.trade(at(0, 9), at(0, 10), 10000)

    assert d.verdict == "passed"
    assert "consistency" not in d.ev.progress()


# ================================================================ consistency: per trade
def test_per_trade_consistency_follows_the_rules_md_worked_example() -> None:
    rb = book({"consistency": {"mode": "per_trade", "max_share_pct": 50, "action": "flag", "applies_to": "always"}})
    d = Drive(rb)
    snaps = []
    for i, pnl in enumerate([1000, 500, -300, 600, 200]):
        d.trade(at(0, 9 + i), at(0, 9 + i, 30), pnl)
        snaps.append(d.ev.per_trade_snapshot(f"T{i + 1}", D(pnl)))

    assert [(s["ticket"], s["share_pct"], s["violated"]) if s else None for s in snaps] == [
        ("T1", "100.00", True),  # +1000 -> 1000 / 1000 = 100%: violation
        ("T2", "33.33", False),  # +500 -> 500 / 1500
        None,  # a loss is not a winning trade: no snapshot, not in the cumulative
        ("T4", "28.57", False),  # +600 -> 600 / 2100
        ("T5", "8.70", False),  # +200 -> 200 / 2300
    ]
    assert [s["cumulative_winning_profit"] for s in snaps if s] == ["1000.00", "1500.00", "2100.00", "2300.00"]
    [f] = d.of("consistency", "flag")
    assert (f.evidence["ticket"], f.evidence["share_pct"], f.value, f.limit) == ("T1", "100.00", D(100), D(50))
    assert f.evidence["cumulative_winning_profit"] == "1000.00"
    assert d.verdict is None


def test_per_trade_consistency_fail_ends_the_phase_on_a_violation() -> None:
    # Taken literally (RULES.md): the first winning trade is always 100%, so per_trade + fail fails on it.
    rb = book({"consistency": {"mode": "per_trade", "max_share_pct": 50, "action": "fail", "applies_to": "always"}})
    d = Drive(rb)
    d.trade(at(0, 9), at(0, 10), 1000)

    [b] = d.breaches()
    assert (b.rule, b.action, b.evidence["mode"]) == ("consistency", "fail", "per_trade")
    assert d.verdict == "failed"


def test_per_trade_consistency_strict_treats_an_equal_share_as_a_violation() -> None:
    rb = book(
        {
            "consistency": {
                "mode": "per_trade",
                "max_share_pct": 50,
                "action": "flag",
                "applies_to": "always",
                "strict": True,
            }
        }
    )
    d = Drive(rb)
    d.trade(at(0, 9), at(0, 10), 1000)
    d.trade(at(0, 11), at(0, 12), 1000)  # exactly 50%

    assert [f.evidence["ticket"] for f in d.of("consistency", "flag")] == ["T1", "T2"]


def test_per_trade_snapshots_are_taken_even_where_the_rule_applies_only_to_payouts() -> None:
    rb = book(
        {"consistency": {"mode": "per_trade", "max_share_pct": 50, "action": "flag", "applies_to": "payout"}},
        phase_rules=target(),
    )
    d = Drive(rb)
    d.trade(at(0, 9), at(0, 10), 1000)

    snap = d.ev.per_trade_snapshot("T1", D(1000))
    assert snap is not None
    assert snap["violated"] is True  # lifetime: recorded for the later payout check...
    assert d.of("consistency") == []  # ...but not a condition of this challenge phase


# ================================================================ detectors
def test_tick_scalping_flags_a_trade_held_strictly_less_than_min_hold_seconds() -> None:
    d = Drive(book({"tick_scalping": {"min_hold_seconds": 60, "max_closes_per_minute": 100}}))
    d.trade(at(0, 9), at(0, 9, 1), 10)  # exactly 60 s: fine
    d.trade(at(0, 10), at(0, 10) + timedelta(seconds=59, microseconds=999999), 10)

    [f] = d.of("tick_scalping")
    assert (f.kind, f.evidence["ticket"], f.evidence["min_hold_seconds"]) == ("flag", "T2", 60)
    assert f.evidence["held_seconds"] == pytest.approx(59.999999)


def test_tick_scalping_flags_more_than_max_closes_per_minute() -> None:
    d = Drive(book({"tick_scalping": {"min_hold_seconds": 1, "max_closes_per_minute": 3}}))
    tickets = [d.buy(at(0, 9)) for _ in range(5)]
    for i, t in enumerate(tickets[:3]):
        d.close(at(0, 10, 0, 10 * i), t, 1)
    assert d.of("tick_scalping") == []

    d.close(at(0, 10, 0, 59), tickets[3], 1)  # the 4th close inside 60 s
    [f] = d.of("tick_scalping")
    assert f.evidence == {"closes_in_last_minute": 4, "max_closes_per_minute": 3}
    d.close(at(0, 10, 2), tickets[4], 1)  # a minute later: the window has emptied
    assert len(d.of("tick_scalping")) == 1


def test_revenge_trading_flags_a_bigger_order_within_the_window_after_a_losing_close() -> None:
    d = Drive(book({"revenge_trading": {"window_minutes": 15, "size_multiple": 2}}))
    d.trade(at(0, 9), at(0, 10), -500, lots="1")
    d.buy(at(0, 10, 5), "1.99")  # not big enough
    d.buy(at(0, 10, 15), "2")  # exactly 15 minutes later, exactly 2x: flagged
    d.buy(at(0, 10, 15, 1), "5")  # outside the window

    [f] = d.of("revenge_trading")
    assert (f.evidence["ticket"], f.evidence["losing_lots"], f.value, f.limit) == ("T3", "1", D(2), D(2))


def test_revenge_trading_ignores_a_bigger_order_after_a_winning_close() -> None:
    d = Drive(book({"revenge_trading": {"window_minutes": 15, "size_multiple": 2}}))
    d.trade(at(0, 9), at(0, 10), 500, lots="1")
    d.buy(at(0, 10, 1), "10")

    assert d.of("revenge_trading") == []


def test_ea_detection_flags_machine_regular_order_intervals_once() -> None:
    d = Drive(book({"ea_detection": {"min_orders": 5, "interval_cv_max": "0.05"}}))
    for i in range(8):
        d.buy(at(0, 9) + timedelta(seconds=60 * i))

    [f] = d.of("ea_detection")
    assert (f.kind, f.evidence["score"], f.evidence["orders"], D(f.evidence["interval_cv"])) == ("flag", "50", 5, D(0))
    assert f.at == at(0, 9, 4)


def test_ea_detection_leaves_irregular_human_orders_alone() -> None:
    d = Drive(book({"ea_detection": {"min_orders": 5, "interval_cv_max": "0.05"}}))
    for s in [0, 70, 300, 320, 900, 1500, 1530]:
        d.buy(at(0, 9) + timedelta(seconds=s), reaction_ms=900)

    assert d.of("ea_detection") == []


def test_ea_detection_flags_reactions_faster_than_a_human() -> None:
    d = Drive(book({"ea_detection": {"min_orders": 4, "interval_cv_max": "0.01", "reaction_ms_min": 150}}))
    for s, r in [(0, 40), (70, 35), (300, 900), (320, 20)]:
        d.buy(at(0, 9) + timedelta(seconds=s), reaction_ms=r)

    [f] = d.of("ea_detection")
    assert (f.evidence["score"], f.evidence["fast_reactions"]) == ("50", 3)


# ================================================================ DST days through the evaluator
FTMO = {"max_daily_loss": {"pct": 5, "base": "initial_balance", "anchor": "start_of_day_balance"}}
DST = [
    ("Europe/Prague", datetime(2026, 3, 28, 23, tzinfo=UTC), 23),
    ("Europe/Prague", datetime(2026, 10, 24, 22, tzinfo=UTC), 25),
    ("America/New_York", datetime(2026, 3, 8, 5, tzinfo=UTC), 23),
    ("America/New_York", datetime(2026, 11, 1, 4, tzinfo=UTC), 25),
]


@pytest.mark.parametrize(("tz", "start", "hours"), DST)
def test_on_a_dst_day_the_daily_floor_resets_at_the_local_day_start(tz: str, start: datetime, hours: int) -> None:
    h = timedelta(hours=1)
    end = start + hours * h
    d = Drive(book(FTMO, tz=tz), start=start)
    t = d.buy(start + h)
    d.close(end - timedelta(seconds=1), t, -4000)  # the last second of the DST day: balance 96,000
    assert d.ev.s.day_pnl == {d.ev.cal.day_of(start).isoformat(): D(-4000)}

    d.mark(end, 96000)  # the boundary: a new floor of 96,000 - 5,000 = 91,000, exactly at the local day start
    assert d.ev.s.daily_floor == D(91000)
    assert d.ev.cal.local(end).hour == 0
    d.mark(end + h / 2, 92000)  # a 24-hour assumption would still hold the old 95,000 floor here (23h days)
    assert d.breaches() == []


@pytest.mark.parametrize(("tz", "start", "hours"), DST)
def test_on_a_dst_day_a_loss_in_its_last_hour_still_counts_against_that_day(
    tz: str, start: datetime, hours: int
) -> None:
    h = timedelta(hours=1)
    d = Drive(book(FTMO, tz=tz), start=start)
    d.buy(start + h)
    [b] = d.mark(start + (hours - 0.5) * h, 94000)  # on a 25h day a 24-hour assumption would call this tomorrow

    assert b.evidence["trading_day"] == d.ev.cal.day_of(start).isoformat()
    assert b.limit == D(95000)


def test_a_pass_that_only_waited_for_the_flatten_of_a_pause_day_comes_at_the_next_day_start() -> None:
    # The lifecycle has no day_paused -> passed move: the soft breach stands for the rest of the day.
    rb = book(
        {"max_daily_loss": {"pct": 5, "anchor": "start_of_day_balance", "action": "pause_day"}},
        phase_rules={**target(), "min_trading_days": {"days": 2}},
    )
    d = Drive(rb)
    d.trade(at(0, 9), at(0, 10), 20000)  # balance 120,000: target met, one trading day
    t = d.buy(at(1, 9))  # day 1 floor 115,000; two trading days; not flat
    [b] = d.mark(at(1, 10), 114000)
    assert b.action == "pause_day"
    d.close(at(1, 11), t, -6000)  # flattened at 114,000: flat and above the target, but paused
    assert d.verdict is None

    d.mark(at(2, 0, 1), 114000)
    assert d.verdict == "passed"
    assert d.of("profit_target", "pass")[0].at == at(2, 0, 1)


def test_at_the_deadline_boundary_the_phase_expires_before_a_new_day_would_recheck_a_carried_position() -> None:
    # The deadline is a day start. The day that ends there is still judged (end_of_day rules), but the next day
    # is outside the phase: its floor must not turn an expiry into a failure.
    rb = book(
        {"max_daily_loss": {"pct": 5, "anchor": "start_of_day_balance"}}, phase_rules={"max_trading_days": {"days": 2}}
    )
    d = Drive(rb)
    d.trade(at(0, 9), at(0, 10), 3000)  # day 0 ends at 103,000
    d.buy(at(1, 9))  # day 1 floor 98,000
    d.trade(at(1, 10), at(1, 11), 3000)  # balance 106,000; the open position's floating below
    d.mark(at(1, 23), 99000)  # floating -7,000: above today's 98,000 but below tomorrow's 101,000
    d.mark(at(2, 1), 99000)

    assert d.verdict == "expired"
    assert [(b.rule, b.action, b.at) for b in d.breaches()] == [("max_trading_days", "expire", at(2))]


def test_at_the_deadline_boundary_the_ending_day_is_still_judged_at_its_end() -> None:
    rb = book(
        {"max_daily_loss": {"pct": 5, "anchor": "start_of_day_balance", "evaluation": "end_of_day"}},
        phase_rules={"max_trading_days": {"days": 2}},
    )
    d = Drive(rb)
    d.buy(at(1, 9))
    d.mark(at(1, 23), 94000)
    d.mark(at(2, 1), 94000)

    assert d.verdict == "failed"
    assert [(b.rule, b.at) for b in d.breaches()] == [("max_daily_loss", at(2))]
