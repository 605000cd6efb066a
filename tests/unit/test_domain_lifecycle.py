"""The account lifecycle is a transition table: every entry is tested, and no trigger sequence escapes it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.errors import Conflict, IllegalTransition
from propdesk.domain.lifecycle import MARKED, TERMINAL, TRADING, TRANSITIONS, Status, Trigger, is_terminal, transition

S, T = Status, Trigger

# The table written out by hand, so a silent edit of TRANSITIONS fails here.
EXPECTED: dict[tuple[Status, Trigger], Status] = {
    (S.PENDING, T.START): S.ACTIVE,
    (S.ACTIVE, T.START): S.ACTIVE,
    (S.ACTIVE, T.PAUSE): S.PAUSED,
    (S.DAY_PAUSED, T.PAUSE): S.PAUSED,
    (S.PAUSED, T.RESUME): S.ACTIVE,
    (S.ACTIVE, T.LOCK): S.LOCKED,
    (S.PAUSED, T.LOCK): S.LOCKED,
    (S.DAY_PAUSED, T.LOCK): S.LOCKED,
    (S.PENDING, T.LOCK): S.LOCKED,
    (S.LOCKED, T.RESUME): S.ACTIVE,
    (S.PENDING, T.COMPLETE): S.COMPLETED,
    (S.ACTIVE, T.COMPLETE): S.COMPLETED,
    (S.PAUSED, T.COMPLETE): S.COMPLETED,
    (S.DAY_PAUSED, T.COMPLETE): S.COMPLETED,
    (S.LOCKED, T.COMPLETE): S.COMPLETED,
    (S.PENDING, T.LIQUIDATE): S.LIQUIDATED,
    (S.ACTIVE, T.LIQUIDATE): S.LIQUIDATED,
    (S.PAUSED, T.LIQUIDATE): S.LIQUIDATED,
    (S.DAY_PAUSED, T.LIQUIDATE): S.LIQUIDATED,
    (S.LOCKED, T.LIQUIDATE): S.LIQUIDATED,
    (S.ACTIVE, T.DAY_PAUSE): S.DAY_PAUSED,
    (S.DAY_PAUSED, T.DAY_START): S.ACTIVE,
    (S.ACTIVE, T.DAY_START): S.ACTIVE,
    (S.ACTIVE, T.FAIL): S.FAILED,
    (S.DAY_PAUSED, T.FAIL): S.FAILED,
    (S.PAUSED, T.FAIL): S.FAILED,
    (S.ACTIVE, T.EXPIRE): S.EXPIRED,
    (S.DAY_PAUSED, T.EXPIRE): S.EXPIRED,
    (S.PAUSED, T.EXPIRE): S.EXPIRED,
    (S.ACTIVE, T.PASS): S.PASSED,
}

ALL_PAIRS = [(s, t) for s in Status for t in Trigger]
ILLEGAL_PAIRS = [(s, t) for (s, t) in ALL_PAIRS if (s, t) not in EXPECTED]


def _id(pair: tuple[Status, Trigger]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def test_the_transition_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("pair", "target"), list(EXPECTED.items()), ids=[_id(p) for p in EXPECTED])
def test_each_table_entry_moves_the_account_to_its_target(pair: tuple[Status, Trigger], target: Status) -> None:
    status, trigger = pair

    assert transition(status, trigger) is target


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=[_id(p) for p in ILLEGAL_PAIRS])
def test_every_move_outside_the_table_raises_illegal_transition_with_the_allowed_triggers(
    pair: tuple[Status, Trigger],
) -> None:
    status, trigger = pair

    with pytest.raises(IllegalTransition) as excinfo:
        transition(status, trigger)

    err = excinfo.value
    assert isinstance(err, Conflict)
    assert err.http_status == 409
    assert err.code == "illegal_transition"
    assert err.details["status"] == status.value
    assert err.details["trigger"] == trigger.value
    assert err.details["allowed"] == sorted(t.value for (s, t) in EXPECTED if s is status)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_states_accept_no_trigger(status: Status) -> None:
    assert is_terminal(status)
    for trigger in Trigger:
        with pytest.raises(IllegalTransition):
            transition(status, trigger)


def test_pass_is_reachable_only_from_active_through_the_pass_trigger() -> None:
    into_passed = [(s, t) for (s, t), target in TRANSITIONS.items() if target is Status.PASSED]

    assert into_passed == [(Status.ACTIVE, Trigger.PASS)]
    assert [s for (s, t) in TRANSITIONS if t is Trigger.PASS] == [Status.ACTIVE]


def test_only_active_accounts_trade_and_locked_accounts_are_not_marked() -> None:
    assert frozenset({Status.ACTIVE}) == TRADING
    assert Status.LOCKED not in MARKED
    assert not (MARKED & TERMINAL)


@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_no_trigger_sequence_reaches_a_state_outside_the_table(triggers: list[Trigger]) -> None:
    """Drive random triggers from PENDING: each step is either a table move or an IllegalTransition that leaves
    the state alone; a terminal state never moves again and PASSED is entered only from ACTIVE on PASS."""
    status = Status.PENDING
    reachable_targets = set(TRANSITIONS.values()) | {Status.PENDING}
    for trigger in triggers:
        before = status
        try:
            status = transition(status, trigger)
        except IllegalTransition:
            assert (before, trigger) not in TRANSITIONS
            continue
        assert (before, trigger) in TRANSITIONS
        assert status in reachable_targets
        assert before not in TERMINAL, f"{before} is terminal but moved to {status} on {trigger}"
        if status is Status.PASSED:
            assert (before, trigger) == (Status.ACTIVE, Trigger.PASS)
