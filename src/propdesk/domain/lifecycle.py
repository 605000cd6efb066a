"""The account lifecycle as data: states, triggers and one transition table.

Every move an account can make is an entry in ``TRANSITIONS``; anything else raises ``IllegalTransition``.
``Trigger.PASS`` is only ever fired by the rules engine; no API route maps to it, so no client can make an
account pass.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DAY_PAUSED = "day_paused"
    PAUSED = "paused"
    LOCKED = "locked"
    PASSED = "passed"
    FAILED = "failed"
    EXPIRED = "expired"
    LIQUIDATED = "liquidated"
    COMPLETED = "completed"


class Trigger(StrEnum):
    START = "start"  # service: begin trading
    PAUSE = "pause"  # admin hold
    RESUME = "resume"  # admin release of a pause or a lock
    LOCK = "lock"  # admin freeze
    COMPLETE = "complete"  # service/admin: end without a verdict
    LIQUIDATE = "liquidate"  # service/admin command or the policy safety net
    DAY_PAUSE = "day_pause"  # rules: soft breach
    DAY_START = "day_start"  # rules: next trading day begins
    FAIL = "fail"  # rules: hard breach
    EXPIRE = "expire"  # rules: time limit or inactivity
    PASS = "pass"  # rules only


class Mode(StrEnum):
    CHALLENGE = "challenge"
    AUDITION = "audition"


TERMINAL: frozenset[Status] = frozenset(
    {Status.PASSED, Status.FAILED, Status.EXPIRED, Status.LIQUIDATED, Status.COMPLETED}
)
TRADING: frozenset[Status] = frozenset({Status.ACTIVE})
"""Statuses in which new orders are accepted."""
MARKED: frozenset[Status] = frozenset({Status.ACTIVE, Status.DAY_PAUSED, Status.PAUSED})
"""Statuses whose open positions are marked to market (a locked account is frozen)."""

S, T = Status, Trigger
TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (S.PENDING, T.START): S.ACTIVE,
    (S.ACTIVE, T.START): S.ACTIVE,  # idempotent start
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
    (S.LOCKED, T.LIQUIDATE): S.LIQUIDATED,  # an explicit admin decision overrides the freeze
    (S.ACTIVE, T.DAY_PAUSE): S.DAY_PAUSED,
    (S.DAY_PAUSED, T.DAY_START): S.ACTIVE,
    (S.ACTIVE, T.DAY_START): S.ACTIVE,  # rolling the day on an active account is a no-op move
    (S.ACTIVE, T.FAIL): S.FAILED,
    (S.DAY_PAUSED, T.FAIL): S.FAILED,
    (S.PAUSED, T.FAIL): S.FAILED,
    (S.ACTIVE, T.EXPIRE): S.EXPIRED,
    (S.DAY_PAUSED, T.EXPIRE): S.EXPIRED,
    (S.PAUSED, T.EXPIRE): S.EXPIRED,
    (S.ACTIVE, T.PASS): S.PASSED,
}
del S, T


def transition(status: Status, trigger: Trigger) -> Status:
    """The status after ``trigger``; raises ``IllegalTransition`` (a 409 at the edge) for any other move."""
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(
            f"cannot {trigger.value} an account that is {status.value}",
            details={
                "status": status.value,
                "trigger": trigger.value,
                "allowed": sorted(t.value for (s, t) in TRANSITIONS if s == status),
            },
        ) from None


def is_terminal(status: Status) -> bool:
    return status in TERMINAL
