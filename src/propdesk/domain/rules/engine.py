"""The evaluator: one phase of one account, driven by events, returning decisions with their evidence.

The evaluator is a state machine over plain data (``EngineState`` serializes to JSON and back). It reads no
clock and does no I/O: every event carries its time and the account values it concerns. Two drivers use it:
the offline ``evaluate`` command (trade log + optional prices) and the live service (fills and quotes).

Events, in the order a driver must feed them:
- ``begin(t, balance)`` once, when the phase starts;
- ``advance(t, value_at)`` before any event at ``t``: processes deadlines (expiry) and every day boundary in
  between, in time order; ``value_at(b)`` gives (balance, equity) at a boundary;
- ``on_open``, ``on_close`` for trades; ``on_equity`` for every price that moves equity;
- ``check_pass`` after anything that can complete the phase.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..money import ZERO, fmt, money
from .calendar import TradingCalendar
from .rulebook import Phase, Rulebook

HUNDRED = Decimal(100)
ValueAt = Callable[[datetime], tuple[Decimal, Decimal]]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _pct(part: Decimal, whole: Decimal) -> Decimal:
    return (part * HUNDRED / whole).quantize(Decimal("0.01")) if whole else ZERO


@dataclass(frozen=True)
class Decision:
    """What a rule decided. ``kind``: breach | warning | flag | pass | reject; ``action`` per RULES.md."""

    rule: str
    kind: str
    action: str
    at: datetime
    value: Decimal | None = None
    limit: Decimal | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def is_hard(self) -> bool:
        return self.kind == "breach" and self.action in ("fail", "expire")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "at": iso(self.at)}
        if self.kind in ("breach", "reject"):
            out.update(
                {
                    "value": fmt(money(self.value)) if self.value is not None else None,
                    "limit": fmt(money(self.limit)) if self.limit is not None else None,
                    "action": self.action,
                }
            )
        out["evidence"] = self.evidence
        return out


@dataclass
class Trade:
    """A trade as the rules see it. ``profit`` is the net P&L in the account currency (set at close)."""

    ticket: str
    symbol: str
    side: str
    lots: Decimal
    open_time: datetime
    open_price: Decimal
    asset_class: str = "forex"
    close_time: datetime | None = None
    close_price: Decimal | None = None
    sl: Decimal | None = None
    tp: Decimal | None = None
    profit: Decimal | None = None
    reaction_ms: int | None = None


@dataclass
class EngineState:
    """Everything the evaluator remembers between events (JSON-serializable via ``to_json``)."""

    initial: Decimal
    balance: Decimal
    equity: Decimal
    started_at: datetime | None = None
    start_day: date | None = None
    day: date | None = None
    last_t: datetime | None = None
    sod_balance: Decimal = ZERO
    sod_equity: Decimal = ZERO
    day_high_equity: Decimal = ZERO
    day_low_equity: Decimal = ZERO
    daily_floor: Decimal | None = None
    daily_anchor: Decimal | None = None
    max_floor: Decimal | None = None
    max_locked: bool = False
    peak_equity: Decimal = ZERO
    peak_closed_balance: Decimal = ZERO
    peak_eod_balance: Decimal = ZERO
    day_pnl: dict[str, Decimal] = field(default_factory=dict)
    day_closes: dict[str, int] = field(default_factory=dict)
    trading_days: list[str] = field(default_factory=list)
    last_open_at: datetime | None = None
    open_times: list[datetime] = field(default_factory=list)
    reactions_ms: list[int] = field(default_factory=list)
    recent_closes: list[datetime] = field(default_factory=list)
    losing_closes: list[tuple[datetime, Decimal]] = field(default_factory=list)
    win_cum: Decimal = ZERO
    wins: int = 0
    closed_trades: int = 0
    warned: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    day_paused: bool = False
    verdict: str | None = None
    max_dd_pct: Decimal = ZERO
    deducted: Decimal = ZERO

    def to_json(self) -> dict[str, Any]:
        def enc(v: Any) -> Any:
            if isinstance(v, Decimal):
                return fmt(v)
            if isinstance(v, datetime):
                return iso(v)
            if isinstance(v, date):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: enc(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [enc(x) for x in v]
            return v

        return {k: enc(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineState:
        def dt(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None

        d = dict(data)
        for k in (
            "initial",
            "balance",
            "equity",
            "sod_balance",
            "sod_equity",
            "day_high_equity",
            "day_low_equity",
            "peak_equity",
            "peak_closed_balance",
            "peak_eod_balance",
            "win_cum",
            "max_dd_pct",
            "deducted",
        ):
            d[k] = Decimal(d[k])
        for k in ("daily_floor", "daily_anchor", "max_floor"):
            d[k] = Decimal(d[k]) if d.get(k) is not None else None
        for k in ("started_at", "last_t", "last_open_at"):
            d[k] = dt(d.get(k))
        for k in ("start_day", "day"):
            d[k] = date.fromisoformat(d[k]) if d.get(k) else None
        d["day_pnl"] = {k: Decimal(v) for k, v in d.get("day_pnl", {}).items()}
        d["open_times"] = [dt(x) for x in d.get("open_times", [])]
        d["recent_closes"] = [dt(x) for x in d.get("recent_closes", [])]
        d["losing_closes"] = [(dt(a), Decimal(b)) for a, b in d.get("losing_closes", [])]
        return cls(**d)


class Evaluator:
    """Evaluates one phase of a rulebook. See the module docstring for the event protocol."""

    def __init__(
        self,
        book: Rulebook,
        phase_id: str | None = None,
        state: EngineState | None = None,
        initial_balance: Decimal | None = None,
    ):
        self.book = book
        self.phase: Phase = book.phase(phase_id)
        self.rules = self.phase.rules
        self.cal = TradingCalendar(book.timezone, book.day_starts_at)
        start = initial_balance if initial_balance is not None else book.starting_balance
        self.s = state or EngineState(
            initial=start,
            balance=start,
            equity=start,
            peak_equity=start,
            peak_closed_balance=start,
            peak_eod_balance=start,
        )
        if self.s.max_floor is None and "max_loss" in self.rules:
            self.s.max_floor = money(self.s.initial - self._allowance("max_loss"))

    # ------------------------------------------------------------------ helpers
    def _allowance(self, rule: str, base: Decimal | None = None) -> Decimal:
        p = self.rules[rule]
        if "amount" in p:
            return p["amount"]  # type: ignore[no-any-return]
        return p["pct"] * (base if base is not None else self.s.initial) / HUNDRED  # type: ignore[no-any-return]

    @property
    def ended(self) -> bool:
        return self.s.verdict is not None

    def lock_level(self) -> Decimal | None:
        p = self.rules.get("max_loss") or {}
        if "lock_at" in p:
            return p["lock_at"]  # type: ignore[no-any-return]
        if "lock_at_offset" in p:
            return self.s.initial + p["lock_at_offset"]  # type: ignore[no-any-return]
        return None

    def _raise_floor(self, candidate: Decimal) -> None:
        """Trailing floors only rise; once a candidate reaches the lock the floor is the lock, for good."""
        s = self.s
        if s.max_locked:
            return
        lock = self.lock_level()
        if lock is not None and candidate >= lock:
            # The floor becomes exactly the lock; a lock set below the floor already standing (a plan whose
            # lock_at_offset is under -allowance) must not lower it, because floors never fall.
            s.max_floor = lock if s.max_floor is None else max(lock, s.max_floor)
            s.max_locked = True
            return
        if s.max_floor is None or candidate > s.max_floor:
            s.max_floor = money(candidate)

    def _daily_floor_for(self, sod_balance: Decimal, sod_equity: Decimal) -> tuple[Decimal, Decimal]:
        p = self.rules["max_daily_loss"]
        anchor_kind = p["anchor"]
        anchor = {
            "start_of_day_balance": sod_balance,
            "start_of_day_equity": sod_equity,
            "start_of_day_max_balance_equity": max(sod_balance, sod_equity),
            "initial_balance": self.s.initial,
        }[anchor_kind]
        # Floors are money: a trader sees (and can recompute) them to the cent.
        anchor = money(anchor)
        if "amount" in p:
            return anchor, money(anchor - p["amount"])
        base = self.s.initial if p["base"] == "initial_balance" else anchor
        return anchor, money(anchor - p["pct"] * base / HUNDRED)

    def _start_day(self, t: datetime, d: date, balance: Decimal, equity: Decimal) -> None:
        s = self.s
        s.day = d
        s.sod_balance, s.sod_equity = balance, equity
        s.day_high_equity = s.day_low_equity = equity
        s.day_paused = False
        if "max_daily_loss" in self.rules:
            s.daily_anchor, s.daily_floor = self._daily_floor_for(balance, equity)

    # ------------------------------------------------------------------ events
    def begin(self, t: datetime, balance: Decimal | None = None, equity: Decimal | None = None) -> None:
        """Start the phase at ``t`` (offline: the start of the first trade's trading day)."""
        s = self.s
        if balance is not None:
            s.balance = balance
        if equity is not None:
            s.equity = equity
        s.started_at = t
        s.start_day = self.cal.day_of(t)
        s.last_t = t
        self._start_day(t, s.start_day, s.balance, s.equity)

    def deadlines(self) -> list[tuple[datetime, str, dict[str, Any]]]:
        """Expiry instants of the time limits, earliest first."""
        s = self.s
        out: list[tuple[datetime, str, dict[str, Any]]] = []
        if "max_trading_days" in self.rules and s.start_day is not None:
            n = self.rules["max_trading_days"]["days"]
            at = self.cal.start_of(s.start_day + timedelta(days=n))
            out.append(
                (at, "max_trading_days", {"days": n, "phase_start_day": s.start_day.isoformat(), "deadline": iso(at)})
            )
        if "inactivity" in self.rules and s.started_at is not None:
            n = self.rules["inactivity"]["days"]
            last = s.last_open_at or s.started_at
            at = last + timedelta(hours=24 * n)
            out.append(
                (
                    at,
                    "inactivity",
                    {
                        "days": n,
                        "last_trade_opened_at": iso(s.last_open_at) if s.last_open_at else None,
                        "phase_started_at": iso(s.started_at),
                        "deadline": iso(at),
                    },
                )
            )
        return sorted(out, key=lambda x: x[0])

    def advance(self, t: datetime, value_at: ValueAt) -> list[Decision]:
        """Process expiries and day boundaries in (last event, t], in time order."""
        s = self.s
        out: list[Decision] = []
        if s.last_t is None or t <= s.last_t or self.ended:
            return out
        boundaries = self.cal.boundaries(s.last_t, t)
        for b in boundaries:
            exp = self._expire_before(b, inclusive=False)
            if exp:
                out.extend(exp)
                return out
            out.extend(self._roll(b, *value_at(b)))
            if self.ended:
                return out
        exp = self._expire_before(t, inclusive=True)
        out.extend(exp)
        if not self.ended:
            s.last_t = t
        return out

    def _expire_before(self, t: datetime, *, inclusive: bool) -> list[Decision]:
        for at, rule, ev in self.deadlines():
            if at < t or (inclusive and at <= t):
                self.s.verdict = "expired"
                self.s.last_t = at
                return [Decision(rule, "breach", "expire", at, None, None, ev)]
        return []

    def _roll(self, b: datetime, balance: Decimal, equity: Decimal) -> list[Decision]:
        """End the trading day at boundary ``b`` and start the next one; re-check carried positions at once."""
        s = self.s
        out: list[Decision] = []
        ended_day = s.day
        s.balance, s.equity = balance, equity
        dl = self.rules.get("max_daily_loss")
        if dl is not None and dl["evaluation"] == "end_of_day" and not s.day_paused and s.daily_floor is not None:
            v = equity if dl["include_floating"] else balance
            if self._below(v, s.daily_floor, dl["breach_on_touch"]):
                out.append(self._daily_breach(b, v, dl, end_of_day=True))
        ml = self.rules.get("max_loss")
        if ml is not None:
            # The day is judged against the floor that stood during it; only then may the floor trail up.
            if (
                ml["evaluation"] == "end_of_day"
                and s.max_floor is not None
                and self._below(equity, s.max_floor, ml["breach_on_touch"])
            ):
                out.append(self._max_breach(b, equity, ml))
            if ml["mode"] == "eod_trailing":
                s.peak_eod_balance = max(s.peak_eod_balance, balance)
                self._raise_floor(s.peak_eod_balance - self._allowance("max_loss"))
        out = self._finish(out)
        if self.ended:
            return out
        # A deadline at this very boundary ends the phase with the day just judged: the next day never starts,
        # so a carried position is not re-checked against a floor of a day outside the phase.
        exp = self._expire_before(b, inclusive=True)
        if exp:
            return out + exp
        self._start_day(b, self.cal.day_of(b), balance, equity)
        out.extend(
            self._limits(b, balance, equity, evidence_extra={"at_day_start": True, "previous_day": str(ended_day)})
        )
        s.last_t = b
        return out

    def on_equity(self, t: datetime, balance: Decimal, equity: Decimal) -> list[Decision]:
        """A price moved equity (or a fill changed it): update highs, trailing floors, check limits."""
        if self.ended:
            return []
        self.s.last_t = max(self.s.last_t or t, t)
        return self._limits(t, balance, equity)

    def on_open(self, t: datetime, trade: Trade, balance: Decimal, equity: Decimal) -> list[Decision]:
        """A trade opened: trading-day count, inactivity clock, detectors."""
        if self.ended:
            return []
        s = self.s
        day = self.cal.day_of(t).isoformat()
        if day not in s.trading_days:
            s.trading_days.append(day)
        s.last_open_at = t
        out = self._detect_on_open(t, trade)
        out.extend(self.on_equity(t, balance, equity))
        return out

    def on_close(self, t: datetime, trade: Trade, balance: Decimal, equity: Decimal) -> list[Decision]:
        """A trade closed with net ``trade.profit``: day P&L, closed-balance trailing, consistency, detectors."""
        if self.ended:
            return []
        s = self.s
        pnl = trade.profit or ZERO
        day = self.cal.day_of(t).isoformat()
        s.day_pnl[day] = s.day_pnl.get(day, ZERO) + pnl
        s.day_closes[day] = s.day_closes.get(day, 0) + 1
        s.closed_trades += 1
        s.balance = balance
        out: list[Decision] = []
        ml = self.rules.get("max_loss")
        if ml is not None and ml["mode"] == "closed_balance_trailing":
            s.peak_closed_balance = max(s.peak_closed_balance, balance)
            self._raise_floor(s.peak_closed_balance - self._allowance("max_loss"))
        if pnl > 0:
            s.wins += 1
            out.extend(self._per_trade_consistency(t, trade, pnl))
        out.extend(self._detect_on_close(t, trade, pnl))
        if not self.ended:
            out.extend(self.on_equity(t, balance, equity))
        return self._finish(out)

    # ------------------------------------------------------------------ limits
    @staticmethod
    def _below(value: Decimal, floor: Decimal, touch: bool) -> bool:
        return value <= floor if touch else value < floor

    def _daily_breach(self, t: datetime, v: Decimal, p: dict[str, Any], *, end_of_day: bool = False) -> Decision:
        s = self.s
        assert s.daily_floor is not None
        return Decision(
            "max_daily_loss",
            "breach",
            p["action"],
            t,
            v,
            s.daily_floor,
            {
                "trading_day": s.day.isoformat() if s.day else None,
                "initial_balance": fmt(money(s.initial)),
                "anchor": p["anchor"],
                "anchor_value": fmt(money(s.daily_anchor or ZERO)),
                "base": p["base"],
                "pct": fmt(p["pct"]) if "pct" in p else None,
                "amount": fmt(p["amount"]) if "amount" in p else None,
                "checked": "equity" if p["include_floating"] else "balance",
                "balance": fmt(money(s.balance)),
                "equity": fmt(money(s.equity)),
                "start_of_day_balance": fmt(money(s.sod_balance)),
                "start_of_day_equity": fmt(money(s.sod_equity)),
                "evaluation": p["evaluation"],
                "breach_on_touch": p["breach_on_touch"],
                "end_of_day": end_of_day,
            },
        )

    def _max_breach(self, t: datetime, v: Decimal, p: dict[str, Any]) -> Decision:
        s = self.s
        assert s.max_floor is not None
        return Decision(
            "max_loss",
            "breach",
            "fail",
            t,
            v,
            s.max_floor,
            {
                "mode": p["mode"],
                "initial_balance": fmt(money(s.initial)),
                "pct": fmt(p["pct"]) if "pct" in p else None,
                "amount": fmt(p["amount"]) if "amount" in p else None,
                "locked": s.max_locked,
                "lock_at": fmt(money(lk)) if (lk := self.lock_level()) is not None else None,
                "peak_equity": fmt(money(s.peak_equity)),
                "peak_closed_balance": fmt(money(s.peak_closed_balance)),
                "peak_eod_balance": fmt(money(s.peak_eod_balance)),
                "balance": fmt(money(s.balance)),
                "equity": fmt(money(v)),
                "evaluation": p["evaluation"],
                "breach_on_touch": p["breach_on_touch"],
            },
        )

    def _limits(
        self, t: datetime, balance: Decimal, equity: Decimal, evidence_extra: dict[str, Any] | None = None
    ) -> list[Decision]:
        s = self.s
        s.balance, s.equity = balance, equity
        s.day_high_equity = max(s.day_high_equity, equity)
        s.day_low_equity = min(s.day_low_equity, equity)
        if equity > s.peak_equity:
            s.peak_equity = equity
        if s.peak_equity > 0:
            dd = (s.peak_equity - equity) * HUNDRED / s.peak_equity
            s.max_dd_pct = max(s.max_dd_pct, dd)
        out: list[Decision] = []
        ml = self.rules.get("max_loss")
        if ml is not None and ml["mode"] == "intraday_trailing":
            self._raise_floor(s.peak_equity - self._allowance("max_loss"))
        dl = self.rules.get("max_daily_loss")
        if dl is not None and dl["evaluation"] == "realtime" and not s.day_paused and s.daily_floor is not None:
            v = equity if dl["include_floating"] else balance
            if self._below(v, s.daily_floor, dl["breach_on_touch"]):
                d = self._daily_breach(t, v, dl)
                if evidence_extra:
                    d.evidence.update(evidence_extra)
                out.append(d)
        if (
            ml is not None
            and ml["evaluation"] == "realtime"
            and s.max_floor is not None
            and self._below(equity, s.max_floor, ml["breach_on_touch"])
        ):
            d = self._max_breach(t, equity, ml)
            if evidence_extra:
                d.evidence.update(evidence_extra)
            out.append(d)
        out = self._finish(out)
        if not self.ended:
            out.extend(self._warnings(t, balance, equity))
        return out

    def _finish(self, breaches: list[Decision]) -> list[Decision]:
        """Order simultaneous breaches highest floor first and apply their effect on the state."""
        hard = [d for d in breaches if d.kind == "breach"]
        rest = [d for d in breaches if d.kind != "breach"]
        hard.sort(key=lambda d: d.limit if d.limit is not None else Decimal("-Infinity"), reverse=True)
        for d in hard:
            if d.action == "fail":
                self.s.verdict = "failed"
            elif d.action == "expire":
                self.s.verdict = "expired"
            elif d.action == "pause_day":
                self.s.day_paused = True
        return hard + rest

    def _warnings(self, t: datetime, balance: Decimal, equity: Decimal) -> list[Decision]:
        dw = self.rules.get("drawdown_warning")
        if dw is None:
            return []
        s = self.s
        out: list[Decision] = []
        day = s.day.isoformat() if s.day else ""
        checks: list[tuple[str, Decimal, Decimal, Decimal]] = []
        dl = self.rules.get("max_daily_loss")
        if dl is not None and s.daily_floor is not None and s.daily_anchor is not None and not s.day_paused:
            v = equity if dl["include_floating"] else balance
            checks.append(("max_daily_loss", v, s.daily_anchor, s.daily_floor))
        if "max_loss" in self.rules and s.max_floor is not None:
            top = s.max_floor + self._allowance("max_loss")
            checks.append(("max_loss", equity, top, s.max_floor))
        for rule, v, top, floor in checks:
            room = top - floor
            if room <= 0:
                continue
            used = (top - v) * HUNDRED / room
            key = f"{rule}|{day}"
            if used >= dw["used_pct"] and key not in s.warned:
                s.warned.append(key)
                out.append(
                    Decision(
                        "drawdown_warning",
                        "warning",
                        "warn",
                        t,
                        v,
                        floor,
                        {
                            "limit": rule,
                            "used_pct": fmt(used.quantize(Decimal("0.01"))),
                            "threshold_pct": fmt(dw["used_pct"]),
                            "floor": fmt(money(floor)),
                            "value": fmt(money(v)),
                            "trading_day": day,
                        },
                    )
                )
        return out

    # ------------------------------------------------------------------ consistency and detectors
    def _consistency_applies(self) -> bool:
        c = self.rules.get("consistency")
        if c is None:
            return False
        funded = self.phase.is_funded
        return bool(c["applies_to"] == "always" or (c["applies_to"] == "payout") == funded)

    def per_trade_snapshot(self, ticket: str, pnl: Decimal) -> dict[str, Any] | None:
        """The per-trade consistency snapshot of a winning trade just closed (call right after ``on_close``).

        RULES.md stores one for every winning trade, whether or not the rule applies in this phase: the share
        of ``pnl`` in the cumulative profit of all winning trades so far, itself included. ``None`` for a losing
        trade or without a ``per_trade`` consistency rule.
        """
        c = self.rules.get("consistency")
        if c is None or c["mode"] != "per_trade" or pnl <= 0 or self.s.win_cum <= 0:
            return None
        share = pnl * HUNDRED / self.s.win_cum
        bad = share >= c["max_share_pct"] if c["strict"] else share > c["max_share_pct"]
        return {
            "mode": "per_trade",
            "ticket": ticket,
            "profit": fmt(money(pnl)),
            "cumulative_winning_profit": fmt(money(self.s.win_cum)),
            "share_pct": fmt(share.quantize(Decimal("0.01"))),
            "max_share_pct": fmt(c["max_share_pct"]),
            "strict": c["strict"],
            "violated": bad,
        }

    def _per_trade_consistency(self, t: datetime, trade: Trade, pnl: Decimal) -> list[Decision]:
        c = self.rules.get("consistency")
        s = self.s
        s.win_cum += pnl
        snap = self.per_trade_snapshot(trade.ticket, pnl)
        if c is None or snap is None or not snap["violated"] or not self._consistency_applies():
            return []
        share = pnl * HUNDRED / s.win_cum
        ev = {k: v for k, v in snap.items() if k != "violated"}
        if c["action"] == "fail":
            return [Decision("consistency", "breach", "fail", t, share, c["max_share_pct"], ev)]
        return [Decision("consistency", "flag", "flag", t, share, c["max_share_pct"], ev)]

    def best_day(self) -> tuple[Decimal, Decimal, Decimal | None, str | None]:
        """(share %, best day P&L, denominator, best day) of best-day consistency."""
        c = self.rules.get("consistency") or {"denominator": "total_profit"}
        pnl = self.s.day_pnl
        if not pnl:
            return ZERO, ZERO, None, None
        best_day, best = max(pnl.items(), key=lambda kv: (kv[1], kv[0]))
        denom = (
            sum(pnl.values(), ZERO)
            if c["denominator"] == "total_profit"
            else sum((v for v in pnl.values() if v > 0), ZERO)
        )
        if denom <= 0 or best <= 0:
            return ZERO, best, denom, best_day
        return (best * HUNDRED / denom), best, denom, best_day

    def _detect_on_open(self, t: datetime, trade: Trade) -> list[Decision]:
        s = self.s
        out: list[Decision] = []
        rv = self.rules.get("revenge_trading")
        if rv is not None:
            window = timedelta(minutes=rv["window_minutes"])
            s.losing_closes = [(ct, lots) for ct, lots in s.losing_closes if t - ct <= window]
            for ct, lots in s.losing_closes:
                if trade.lots >= lots * rv["size_multiple"]:
                    out.append(
                        Decision(
                            "revenge_trading",
                            "flag",
                            "flag",
                            t,
                            trade.lots,
                            lots * rv["size_multiple"],
                            {
                                "ticket": trade.ticket,
                                "lots": fmt(trade.lots),
                                "losing_close_at": iso(ct),
                                "losing_lots": fmt(lots),
                                "size_multiple": fmt(rv["size_multiple"]),
                                "window_minutes": rv["window_minutes"],
                            },
                        )
                    )
                    break
        ea = self.rules.get("ea_detection")
        if ea is not None:
            s.open_times.append(t)
            s.open_times = s.open_times[-ea["min_orders"] :]
            if trade.reaction_ms is not None:
                s.reactions_ms.append(trade.reaction_ms)
                s.reactions_ms = s.reactions_ms[-ea["min_orders"] :]
            if len(s.open_times) >= ea["min_orders"] and "ea_detection" not in s.flagged:
                gaps = [(b - a).total_seconds() for a, b in zip(s.open_times, s.open_times[1:], strict=False)]
                mean = statistics.fmean(gaps)
                cv = Decimal(str(round(statistics.pstdev(gaps) / mean, 6))) if mean > 0 else Decimal(0)
                fast = [r for r in s.reactions_ms if r < ea["reaction_ms_min"]]
                regular = cv <= ea["interval_cv_max"]
                reflex = len(s.reactions_ms) >= ea["min_orders"] // 2 and len(fast) * 2 > len(s.reactions_ms)
                if regular or reflex:
                    s.flagged.append("ea_detection")
                    score = Decimal(50 if regular else 0) + Decimal(50 if reflex else 0)
                    out.append(
                        Decision(
                            "ea_detection",
                            "flag",
                            "flag",
                            t,
                            cv,
                            ea["interval_cv_max"],
                            {
                                "score": fmt(score),
                                "orders": len(s.open_times),
                                "interval_cv": fmt(cv),
                                "interval_cv_max": fmt(ea["interval_cv_max"]),
                                "mean_interval_seconds": round(mean, 3),
                                "fast_reactions": len(fast),
                                "reaction_ms_min": ea["reaction_ms_min"],
                            },
                        )
                    )
        return out

    def _detect_on_close(self, t: datetime, trade: Trade, pnl: Decimal) -> list[Decision]:
        s = self.s
        out: list[Decision] = []
        if pnl < 0:
            s.losing_closes.append((t, trade.lots))
            s.losing_closes = s.losing_closes[-50:]
        ts = self.rules.get("tick_scalping")
        if ts is not None:
            held = (t - trade.open_time).total_seconds()
            if held < ts["min_hold_seconds"]:
                out.append(
                    Decision(
                        "tick_scalping",
                        "flag",
                        "flag",
                        t,
                        Decimal(str(held)),
                        Decimal(ts["min_hold_seconds"]),
                        {"ticket": trade.ticket, "held_seconds": held, "min_hold_seconds": ts["min_hold_seconds"]},
                    )
                )
            s.recent_closes = [c for c in s.recent_closes if (t - c).total_seconds() < 60] + [t]
            if len(s.recent_closes) > ts["max_closes_per_minute"]:
                out.append(
                    Decision(
                        "tick_scalping",
                        "flag",
                        "flag",
                        t,
                        Decimal(len(s.recent_closes)),
                        Decimal(ts["max_closes_per_minute"]),
                        {
                            "closes_in_last_minute": len(s.recent_closes),
                            "max_closes_per_minute": ts["max_closes_per_minute"],
                        },
                    )
                )
        return out

    # ------------------------------------------------------------------ progress and pass
    def progress(self) -> dict[str, dict[str, Any]]:
        """Every progress rule: ``{value, target, met}`` (money as decimal strings)."""
        s = self.s
        out: dict[str, dict[str, Any]] = {}
        pt = self.rules.get("profit_target")
        if pt is not None:
            target = pt["amount"] if "amount" in pt else pt["pct"] * s.initial / HUNDRED
            value = s.balance - s.initial
            out["profit_target"] = {"value": fmt(money(value)), "target": fmt(money(target)), "met": value >= target}
        mtd = self.rules.get("min_trading_days")
        if mtd is not None:
            out["min_trading_days"] = {
                "value": len(s.trading_days),
                "target": mtd["days"],
                "met": len(s.trading_days) >= mtd["days"],
            }
        mpd = self.rules.get("min_profitable_days")
        if mpd is not None:
            n = self.profitable_days()
            out["min_profitable_days"] = {"value": n, "target": mpd["days"], "met": n >= mpd["days"]}
        c = self.rules.get("consistency")
        if c is not None and c["mode"] == "best_day" and self._consistency_applies():
            share, _best, _denom, _day = self.best_day()
            ok = share < c["max_share_pct"] if c["strict"] else share <= c["max_share_pct"]
            if _denom is not None and _denom <= 0 and _best > 0:
                ok = False
            out["consistency"] = {
                "value": fmt(share.quantize(Decimal("0.01"))),
                "target": fmt(c["max_share_pct"]),
                "met": ok,
            }
        return out

    def profitable_days(self) -> int:
        mpd = self.rules.get("min_profitable_days")
        threshold = (mpd["threshold_pct"] * self.s.initial / HUNDRED) if mpd else ZERO
        return sum(1 for v in self.s.day_pnl.values() if v > 0 and v >= threshold)

    def check_pass(self, t: datetime, open_positions: int = 0) -> list[Decision]:
        """The pass decision (or a consistency fail/flag at the moment of passing), when every condition holds."""
        if self.ended or "profit_target" not in self.rules:
            return []
        if self.s.day_paused:
            # The lifecycle has no day_paused -> passed move: a pass that only waited for the flatten of a
            # soft breach comes with the next day start, when the account is active again.
            return []
        prog = self.progress()
        # Consistency is judged at the moment of passing: only when every other condition already holds (a
        # trader who still needs trading days may yet dilute a lopsided best day).
        flat_ok = open_positions == 0 or not self.rules["profit_target"]["require_flat"]
        if not (flat_ok and all(v["met"] for k, v in prog.items() if k != "consistency")):
            return []
        c = self.rules.get("consistency")
        out: list[Decision] = []
        if "consistency" in prog and not prog["consistency"]["met"] and c is not None:
            share, best, denom, best_day = self.best_day()
            ev = {
                "mode": "best_day",
                "best_day": best_day,
                "best_day_profit": fmt(money(best)),
                "denominator": c["denominator"],
                "denominator_value": fmt(money(denom or ZERO)),
                "share_pct": fmt(share.quantize(Decimal("0.01"))),
                "max_share_pct": fmt(c["max_share_pct"]),
            }
            if c["action"] == "fail":
                self.s.verdict = "failed"
                return [Decision("consistency", "breach", "fail", t, share, c["max_share_pct"], ev)]
            if c["action"] == "block":
                return []
            key = "consistency_flag_at_pass"
            if key not in self.s.flagged:
                self.s.flagged.append(key)
                out.append(Decision("consistency", "flag", "flag", t, share, c["max_share_pct"], ev))
        self.s.verdict = "passed"
        out.append(
            Decision(
                "profit_target",
                "pass",
                "pass",
                t,
                self.s.balance - self.s.initial,
                None,
                {
                    "progress": prog,
                    "balance": fmt(money(self.s.balance)),
                    "initial_balance": fmt(money(self.s.initial)),
                    "trading_days": len(self.s.trading_days),
                },
            )
        )
        return out

    def metrics(self, trades: int) -> dict[str, Any]:
        s = self.s
        share, _b, _d, _day = self.best_day()
        net = s.balance - s.initial
        return {
            "trading_days": len(s.trading_days),
            "net_profit": fmt(money(net)),
            "net_profit_pct": fmt(_pct(net, s.initial)),
            "best_day_share_pct": fmt(share.quantize(Decimal("0.01"))),
            "max_drawdown_pct": fmt(s.max_dd_pct.quantize(Decimal("0.01"))),
            "win_rate_pct": fmt(_pct(Decimal(s.wins), Decimal(s.closed_trades))) if s.closed_trades else "0.00",
            "trades": trades,
        }
