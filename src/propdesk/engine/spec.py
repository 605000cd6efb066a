"""One account as the risk book takes it in (exact Decimal values), and the levels the book derives from it.

``AccountSpec`` is what ``RiskBook.apply_account`` and ``RiskBook.load`` consume: cash, positions, open orders, the
policy's safety-net level, the phase's rules (one shared mapping per distinct frozen rulebook) and the rule state
(``RuleState``: the current floors and highs of ``EngineState``). ``levels`` turns them into the money levels of
every limit exactly as ``domain.rules.engine.Evaluator`` computes them (Decimal), then into floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from ..domain.lifecycle import MARKED, Status
from ..domain.money import money
from ..domain.orders import OrderType, Side
from ..domain.positions import Position
from ..domain.rules.engine import EngineState

HUNDRED = Decimal(100)
NAN = math.nan

MODES = {"static": 0, "eod_trailing": 1, "intraday_trailing": 2, "closed_balance_trailing": 3}
INTRADAY = MODES["intraday_trailing"]
STATUS_CODES = {Status.ACTIVE.value: 0, Status.DAY_PAUSED.value: 1, Status.PAUSED.value: 2}
MARKED_VALUES = frozenset(s.value for s in MARKED)


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A resting limit or stop order; ``price`` is its limit or stop price."""

    order_id: Any
    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the book needs of an account's ``EngineState`` (the current day's floors, highs and notices)."""

    initial: Decimal
    daily_floor: Decimal | None = None
    daily_anchor: Decimal | None = None
    max_floor: Decimal | None = None
    max_locked: bool = False
    peak_equity: Decimal | None = None
    day_paused: bool = False
    ended: bool = False
    warned_daily: bool = False
    warned_max: bool = False

    @classmethod
    def of(cls, s: EngineState) -> RuleState:
        return cls.from_fields(
            s.initial,
            s.daily_floor,
            s.daily_anchor,
            s.max_floor,
            s.max_locked,
            s.peak_equity,
            s.day_paused,
            s.verdict,
            s.day,
            s.warned,
        )

    @classmethod
    def from_fields(
        cls,
        initial: Decimal,
        daily_floor: Decimal | None,
        daily_anchor: Decimal | None,
        max_floor: Decimal | None,
        max_locked: bool,
        peak_equity: Decimal | None,
        day_paused: bool,
        verdict: str | None,
        day: date | str | None,
        warned: list[str] | None,
    ) -> RuleState:
        d = day.isoformat() if isinstance(day, date) else (day or "")
        w = set(warned or ())
        return cls(
            initial,
            daily_floor,
            daily_anchor,
            max_floor,
            bool(max_locked),
            peak_equity,
            bool(day_paused),
            verdict is not None,
            f"max_daily_loss|{d}" in w,
            f"max_loss|{d}" in w,
        )


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: Any
    currency: str
    status: str
    cash: Decimal
    positions: tuple[Position, ...] = ()
    orders: tuple[OpenOrder, ...] = ()
    liquidation_equity: Decimal | None = None
    rules: Mapping[str, Mapping[str, Any]] | None = None
    rulebook_key: str | None = None
    state: RuleState | None = None

    @property
    def marked(self) -> bool:
        """Statuses whose positions are marked to market (``lifecycle.MARKED``); the book holds only these."""
        return self.status in MARKED_VALUES


@dataclass(frozen=True, slots=True)
class Levels:
    """An account's money levels as floats (NaN: not applicable). Breach checks use equity unless noted."""

    daily: float  # realtime daily floor on equity (include_floating), not paused
    daily_balance: Decimal | None  # the daily floor when it is checked on the balance (include_floating: false)
    daily_on_balance: bool  # include_floating: false (the daily checks read the balance, which no price moves)
    daily_touch: bool
    daily_pause: bool  # action pause_day (soft) rather than fail
    warn_daily: float  # equity (or balance, with daily_balance) at or below which the daily warning fires
    max_floor: float  # the standing max-loss floor (trailing floors move it)
    max_realtime: bool
    allowance: float
    warn_frac: float  # 1 - used_pct/100 (NaN without drawdown_warning)
    mode: int
    lock: float
    locked: bool
    peak: float
    target: float
    safety: float
    live: bool  # the rules judge this account (challenge, started, not ended)
    warned_daily: bool
    warned_max: bool


def allowance(rules: Mapping[str, Mapping[str, Any]], rule: str, initial: Decimal) -> Decimal:
    p = rules[rule]
    if "amount" in p:
        return Decimal(p["amount"])
    return Decimal(p["pct"]) * initial / HUNDRED


def lock_level(rules: Mapping[str, Mapping[str, Any]], initial: Decimal) -> Decimal | None:
    p = rules.get("max_loss") or {}
    if "lock_at" in p:
        return Decimal(p["lock_at"])
    if "lock_at_offset" in p:
        return initial + Decimal(p["lock_at_offset"])
    return None


def _f(d: Decimal | None) -> float:
    return float(d) if d is not None else NAN


def levels(spec: AccountSpec) -> Levels:
    """The account's levels, computed as ``Evaluator`` does (``_limits``, ``_warnings``, ``progress``)."""
    safety = _f(spec.liquidation_equity) if spec.positions else NAN
    rules, st = spec.rules, spec.state
    if rules is None or st is None or st.ended:
        return Levels(
            NAN,
            None,
            False,
            False,
            False,
            NAN,
            NAN,
            False,
            0.0,
            NAN,
            0,
            NAN,
            False,
            NAN,
            NAN,
            safety,
            False,
            False,
            False,
        )
    dw = rules.get("drawdown_warning")
    used = Decimal(dw["used_pct"]) if dw is not None else None
    daily = warn_daily = NAN
    daily_balance: Decimal | None = None
    dl = rules.get("max_daily_loss")
    touch = pause = on_balance = False
    if dl is not None and st.daily_floor is not None and not st.day_paused:
        touch, pause = bool(dl["breach_on_touch"]), dl["action"] == "pause_day"
        warn_level: Decimal | None = None
        if used is not None and st.daily_anchor is not None and st.daily_anchor - st.daily_floor > 0:
            warn_level = st.daily_anchor - used * (st.daily_anchor - st.daily_floor) / HUNDRED
        if dl["include_floating"]:
            daily = float(st.daily_floor) if dl["evaluation"] == "realtime" else NAN
            warn_daily = _f(warn_level)
        else:
            on_balance = True
            daily_balance = st.daily_floor if dl["evaluation"] == "realtime" else None
            warn_daily = _f(warn_level)  # judged against the balance, at apply time
    max_floor, max_rt, allow, mode, lock, locked = NAN, False, 0.0, 0, NAN, False
    ml = rules.get("max_loss")
    if ml is not None:
        a = allowance(rules, "max_loss", st.initial)
        floor = st.max_floor if st.max_floor is not None else money(st.initial - a)
        max_floor, max_rt, allow = float(floor), ml["evaluation"] == "realtime", float(a)
        mode, lock, locked = MODES[ml["mode"]], _f(lock_level(rules, st.initial)), st.max_locked
    warn_frac = float(1 - used / HUNDRED) if used is not None else NAN
    pt = rules.get("profit_target")
    target = float(st.initial + allowance(rules, "profit_target", st.initial)) if pt is not None else NAN
    peak = _f(st.peak_equity) if st.peak_equity is not None else float(st.initial)
    return Levels(
        daily,
        daily_balance,
        on_balance,
        touch,
        pause,
        warn_daily,
        max_floor,
        max_rt,
        allow,
        warn_frac,
        mode,
        lock,
        locked,
        peak,
        target,
        safety,
        True,
        st.warned_daily,
        st.warned_max,
    )
