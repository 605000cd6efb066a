"""A trader-readable status of every rule: how each floor is computed, where the account stands, room left.

The most common complaint about prop firms is that traders cannot tell how a limit was computed; this view
answers it from the same state the engine judges by.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..money import fmt, money
from .engine import Evaluator, iso

HUNDRED = Decimal(100)


def _m(d: Decimal | None) -> str | None:
    return fmt(money(d)) if d is not None else None


def _used(top: Decimal, floor: Decimal, value: Decimal) -> tuple[Decimal, Decimal]:
    room = value - floor
    span = top - floor
    used = (top - value) * HUNDRED / span if span > 0 else Decimal(0)
    return room, max(Decimal(0), used).quantize(Decimal("0.01"))


def rules_status(ev: Evaluator, balance: Decimal, equity: Decimal, now: datetime) -> dict[str, Any]:
    """Limits (floor, computation, value, room, % used), progress rules, other rules, and the next reset."""
    s = ev.s
    limits: list[dict[str, Any]] = []
    dl = ev.rules.get("max_daily_loss")
    if dl is not None and s.daily_floor is not None and s.daily_anchor is not None:
        v = equity if dl["include_floating"] else balance
        room, used = _used(s.daily_anchor, s.daily_floor, v)
        allowance = (
            f"{fmt(dl['amount'])}"
            if "amount" in dl
            else (f"{fmt(dl['pct'])}% of {'the initial balance' if dl['base'] == 'initial_balance' else 'the anchor'}")
        )
        limits.append(
            {
                "rule": "max_daily_loss",
                "floor": _m(s.daily_floor),
                "value": _m(v),
                "room": _m(room),
                "used_pct": fmt(used),
                "anchor": dl["anchor"],
                "anchor_value": _m(s.daily_anchor),
                "checked": "equity" if dl["include_floating"] else "balance",
                "evaluation": dl["evaluation"],
                "action": dl["action"],
                "paused_today": s.day_paused,
                "computation": f"{dl['anchor'].replace('_', ' ')} {_m(s.daily_anchor)} minus {allowance} = "
                f"{_m(s.daily_floor)}; breach when {'equity' if dl['include_floating'] else 'balance'} "
                f"goes {'to or ' if dl['breach_on_touch'] else ''}below it",
            }
        )
    ml = ev.rules.get("max_loss")
    if ml is not None and s.max_floor is not None:
        allow = ev._allowance("max_loss")
        top = s.max_floor + allow
        room, used = _used(top, s.max_floor, equity)
        basis = {
            "static": f"initial balance {_m(s.initial)}",
            "eod_trailing": f"highest end-of-day balance {_m(max(s.peak_eod_balance, s.initial))}",
            "intraday_trailing": f"highest equity {_m(max(s.peak_equity, s.initial))}",
            "closed_balance_trailing": f"highest closed balance {_m(max(s.peak_closed_balance, s.initial))}",
        }
        lock = ev.lock_level()
        comp = f"{basis[ml['mode']]} minus {_m(allow)}"
        if s.max_locked:
            comp = f"locked at {_m(lock)} (the trailing floor reached the lock and stops moving)"
        elif lock is not None:
            comp += f"; locks at {_m(lock)}"
        limits.append(
            {
                "rule": "max_loss",
                "floor": _m(s.max_floor),
                "initial_floor": _m(s.initial - allow),
                "value": _m(equity),
                "room": _m(room),
                "used_pct": fmt(used),
                "mode": ml["mode"],
                "locked": s.max_locked,
                "lock_at": _m(lock),
                "evaluation": ml["evaluation"],
                "computation": f"{comp} = {_m(s.max_floor)}",
            }
        )
    progress = ev.progress()
    deadlines = [
        {
            "rule": rule,
            "deadline": iso(at),
            "seconds_left": max(0, int((at - now).total_seconds())),
            **{k: v for k, v in info.items() if k != "deadline"},
        }
        for at, rule, info in ev.deadlines()
    ]
    others = {
        rid: params for rid, params in ev.rules.items() if rid not in ("max_daily_loss", "max_loss", *progress.keys())
    }
    next_reset = ev.cal.next_start(now)
    return {
        "phase": ev.phase.id,
        "verdict": s.verdict,
        "trading_day": s.day.isoformat() if s.day else None,
        "balance": _m(balance),
        "equity": _m(equity),
        "initial_balance": _m(s.initial),
        "limits": limits,
        "progress": progress,
        "deadlines": deadlines,
        "rules": {
            rid: {k: (fmt(v) if isinstance(v, Decimal) else v) for k, v in p.items()} for rid, p in others.items()
        },
        "timezone": ev.book.timezone,
        "day_starts_at": ev.book.day_starts_at.strftime("%H:%M"),
        "next_day_reset": iso(next_reset),
        "seconds_to_reset": int((next_reset - now).total_seconds()),
    }
