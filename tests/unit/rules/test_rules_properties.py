"""Properties of the evaluator over random event sequences.

- No sequence of events reaches an illegal lifecycle state: the statuses the decisions imply follow the
  lifecycle's transition table, and once there is a verdict no event changes it or produces a decision.
- Trailing max-loss floors never fall, follow their mode's formula, and stick exactly at the lock.
- ``EngineState`` survives JSON, and replaying the rest of the events on a restored state re-derives exactly the
  stored decisions and verdict.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rules_kit import MON, Drive, book

from propdesk.domain.lifecycle import TERMINAL, Status, Trigger, transition
from propdesk.domain.rules.engine import Decision, EngineState, Evaluator
from propdesk.domain.rules.rulebook import Rulebook

D = Decimal

# One step of a random session: minutes since the previous step, what happens, and an amount in dollars.
steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=900),
        st.sampled_from(["open", "close", "mark", "mark"]),
        st.integers(min_value=-2500, max_value=4000),
    ),
    min_size=6,
    max_size=60,
)


@cache
def rich_book(daily_action: str, daily_eval: str, mode: str, lock: bool, flat: bool) -> Rulebook:
    max_loss: dict[str, Any] = {"pct": 8, "mode": mode}
    if lock:
        max_loss["lock_at_offset"] = "0"
    return book(
        {
            "max_daily_loss": {
                "pct": 4,
                "anchor": "start_of_day_balance",
                "action": daily_action,
                "evaluation": daily_eval,
            },
            "max_loss": max_loss,
            "drawdown_warning": {},
            "tick_scalping": {"min_hold_seconds": 300, "max_closes_per_minute": 2},
            "revenge_trading": {"window_minutes": 60, "size_multiple": 2},
            "ea_detection": {"min_orders": 4, "interval_cv_max": "0.2"},
        },
        phase_rules={
            "profit_target": {"pct": 6, "require_flat": flat},
            "min_trading_days": {"days": 2},
            "consistency": {"mode": "best_day", "max_share_pct": 60},
            "max_trading_days": {"days": 12},
            "inactivity": {"days": 4},
        },
    )


books = st.builds(
    rich_book,
    st.sampled_from(["fail", "pause_day"]),
    st.sampled_from(["realtime", "end_of_day"]),
    st.sampled_from(["static", "eod_trailing", "intraday_trailing", "closed_balance_trailing"]),
    st.booleans(),
    st.booleans(),
)


def play(d: Drive, step: tuple[int, str, int], t: Any) -> list[Decision]:
    """Apply one random step at ``t``; returns the decisions it produced."""
    _, kind, amount = step
    before = len(d.decisions)
    if kind == "open":
        d.buy(t, lots=str(1 + abs(amount) % 3))
    elif kind == "close" and d.open:
        d.close(t, next(iter(d.open)), amount)
    else:
        d.mark(t, d.balance + (D(amount) if d.open else 0))
    return d.decisions[before:]


TRIGGERS = {"pause_day": Trigger.DAY_PAUSE, "fail": Trigger.FAIL, "expire": Trigger.EXPIRE, "pass": Trigger.PASS}


def status_of(ev: Evaluator) -> Status:
    verdict = {"passed": Status.PASSED, "failed": Status.FAILED, "expired": Status.EXPIRED}
    if ev.s.verdict is not None:
        return verdict[ev.s.verdict]
    return Status.DAY_PAUSED if ev.s.day_paused else Status.ACTIVE


@given(books, steps)
def test_no_event_sequence_reaches_an_illegal_lifecycle_state(rb: Rulebook, path: list[tuple[int, str, int]]) -> None:
    d = Drive(rb)
    status, day = Status.ACTIVE, d.ev.s.day
    assert day is not None
    t = MON
    for step in path:
        t += timedelta(minutes=step[0])
        verdict_before = d.ev.s.verdict
        out = play(d, step, t)
        if verdict_before is not None:
            assert out == []  # a verdict is final: nothing more happens
            assert d.ev.s.verdict == verdict_before
            continue
        ended_at = None
        for dec in out:
            assert dec.kind in ("breach", "warning", "flag", "pass")
            if ended_at is not None:
                # Several floors crossed by the event that ended the phase are all recorded, at that instant.
                assert (dec.at, dec.kind) == (ended_at, "breach")
                continue
            dec_day = d.ev.cal.day_of(dec.at)
            if dec_day > day and not dec.evidence.get("end_of_day") and status not in TERMINAL:
                status, day = transition(status, Trigger.DAY_START), dec_day
            trigger = TRIGGERS.get(dec.action)
            if trigger is not None:
                status = transition(status, trigger)  # raises IllegalTransition on an illegal move
                if status in TERMINAL:
                    ended_at = dec.at
        assert d.ev.s.day is not None
        if d.ev.s.day > day and status not in TERMINAL:
            status, day = transition(status, Trigger.DAY_START), d.ev.s.day
        assert status == status_of(d.ev)
    hard = [x for x in d.decisions if x.is_hard]
    passes = [x for x in d.decisions if x.kind == "pass"]
    assert len(passes) == (1 if d.ev.s.verdict == "passed" else 0)
    assert (len(hard) > 0) == (d.ev.s.verdict in ("failed", "expired"))
    times = [x.at for x in d.decisions if x.kind == "breach"]
    assert times == sorted(times)  # breaches are chronological


@given(
    st.sampled_from(["eod_trailing", "intraday_trailing", "closed_balance_trailing"]),
    st.sampled_from([None, "0", "1500", "-500", "-4000"]),  # -4000: a lock below the initial floor
    steps,
)
def test_trailing_floors_never_fall_follow_their_formula_and_stick_at_the_lock(
    mode: str, lock_offset: str | None, path: list[tuple[int, str, int]]
) -> None:
    rules: dict[str, Any] = {"amount": "3000", "mode": mode}
    if lock_offset is not None:
        rules["lock_at_offset"] = lock_offset
    d = Drive(book({"max_loss": rules}, start="50000"))
    lock = D(50000) + D(lock_offset) if lock_offset is not None else None
    floor = d.ev.s.max_floor
    assert floor == D(47000)
    t = MON
    for step in path:
        t += timedelta(minutes=step[0])
        day_before = d.ev.s.day
        play(d, step, t)
        s = d.ev.s
        assert s.max_floor is not None
        assert s.max_floor >= floor  # never falls
        if s.max_floor != floor and mode == "eod_trailing":
            assert s.day != day_before  # moved only by a day end
        if s.max_locked:
            assert lock is not None
            assert s.max_floor == max(lock, D(47000))  # exactly the lock (never below the initial floor)
            assert not floor > s.max_floor
        elif s.verdict is None:
            peak = {
                "eod_trailing": s.peak_eod_balance,
                "intraday_trailing": s.peak_equity,
                "closed_balance_trailing": s.peak_closed_balance,
            }[mode]
            assert s.max_floor == max(D(47000), peak - 3000)
            assert lock is None or s.max_floor < lock or s.max_floor == D(47000)  # no candidate seen yet
        floor = s.max_floor


@given(books, steps, st.integers(min_value=0, max_value=40))
def test_state_round_trips_through_json_and_a_restored_replay_rederives_the_same_verdict(
    rb: Rulebook, path: list[tuple[int, str, int]], split_at: int
) -> None:
    straight = Drive(rb)
    resumed = Drive(rb)
    t = MON
    for i, step in enumerate(path):
        t += timedelta(minutes=step[0])
        if i == split_at:
            stored = json.loads(json.dumps(resumed.ev.s.to_json()))
            restored = EngineState.from_json(stored)
            assert restored == resumed.ev.s
            assert restored.to_json() == stored
            resumed.ev = Evaluator(rb, state=restored)
        play(straight, step, t)
        play(resumed, step, t)

    assert [x.to_json() | {"kind": x.kind} for x in resumed.decisions] == [
        x.to_json() | {"kind": x.kind} for x in straight.decisions
    ]
    assert resumed.ev.s == straight.ev.s
    assert resumed.ev.s.verdict == straight.ev.s.verdict
    assert resumed.ev.progress() == straight.ev.progress()
    assert resumed.ev.metrics(3) == straight.ev.metrics(3)


def test_a_fresh_state_round_trips_through_json() -> None:
    ev = Evaluator(rich_book("fail", "realtime", "intraday_trailing", True, True))

    assert EngineState.from_json(json.loads(json.dumps(ev.s.to_json()))) == ev.s
