"""Helpers for the rules tests: small rulebooks built inline and a driver that feeds an ``Evaluator`` events.

The driver follows the event protocol of ``propdesk.domain.rules.engine``: ``advance`` to each event's time
first (expiries and day boundaries, valued at the last known balance/equity or at an explicit boundary value),
then the event, then ``check_pass``. Every decision is kept in ``decisions`` in the order it was produced.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from propdesk.domain.rules.engine import Decision, EngineState, Evaluator, Trade
from propdesk.domain.rules.rulebook import Rulebook, parse_rulebook

D = Decimal
MON = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; every helper book is in UTC unless it says otherwise


def at(day: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    """An instant ``day`` days after Monday 2026-03-02 00:00 UTC."""
    return MON + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def book(
    rules: dict[str, Any] | None = None,
    *,
    phase_rules: dict[str, Any] | None = None,
    phases: list[dict[str, Any]] | None = None,
    start: str = "100000",
    tz: str = "UTC",
    day_starts_at: str = "00:00",
) -> Rulebook:
    """A one-phase (unless ``phases``) rulebook with ``rules`` as the defaults."""
    return parse_rulebook(
        {
            "id": "t",
            "starting_balance": start,
            "timezone": tz,
            "day_starts_at": day_starts_at,
            "rules": rules or {},
            "phases": phases or [{"id": "phase_1", "rules": phase_rules or {}}],
        },
        where="test.yaml",
    )


class Drive:
    """Feeds one evaluator; tracks the account's balance and equity like a driver would."""

    def __init__(
        self,
        rb: Rulebook,
        phase: str | None = None,
        *,
        start: datetime = MON,
        state: EngineState | None = None,
    ) -> None:
        self.ev = Evaluator(rb, phase, state=state)
        self.balance = self.ev.s.balance
        self.equity = self.ev.s.equity
        self.decisions: list[Decision] = []
        self.open: dict[str, Trade] = {}
        self.boundary_equity: dict[datetime, Decimal] = {}
        self._n = 0
        if state is None:
            self.ev.begin(start, self.balance, self.equity)

    # -- plumbing
    def _value_at(self, b: datetime) -> tuple[Decimal, Decimal]:
        return self.balance, self.boundary_equity.get(b, self.equity)

    def _take(self, ds: list[Decision]) -> list[Decision]:
        self.decisions.extend(ds)
        return ds

    def advance(self, t: datetime) -> list[Decision]:
        return self._take(self.ev.advance(t, self._value_at))

    # -- events
    def mark(self, t: datetime, equity: Decimal | int | str, *, check_pass: bool = True) -> list[Decision]:
        """A price moved: equity is now ``equity`` (balance unchanged)."""
        out = self.advance(t)
        self.equity = D(equity)
        out += self._take(self.ev.on_equity(t, self.balance, self.equity))
        if check_pass:
            out += self._take(self.ev.check_pass(t, len(self.open)))
        return out

    def buy(
        self,
        t: datetime,
        lots: Decimal | int | str = 1,
        *,
        ticket: str | None = None,
        symbol: str = "EURUSD",
        side: str = "buy",
        reaction_ms: int | None = None,
    ) -> str:
        self._n += 1
        ticket = ticket or f"T{self._n}"
        tr = Trade(ticket, symbol, side, D(lots), t, D("1.1"), reaction_ms=reaction_ms)
        self.advance(t)
        self.open[ticket] = tr
        self._take(self.ev.on_open(t, tr, self.balance, self.equity))
        self._take(self.ev.check_pass(t, len(self.open)))
        return ticket

    def close(self, t: datetime, ticket: str, profit: Decimal | int | str) -> list[Decision]:
        """Close ``ticket`` with net ``profit`` (its floating P&L just before the close was ``profit``)."""
        out = self.advance(t)
        tr = self.open.pop(ticket)
        tr.close_time, tr.close_price, tr.profit = t, D("1.1"), D(profit)
        self.balance += D(profit)
        if not self.open:  # flat: equity is the balance; otherwise the closed trade's floating just became realized
            self.equity = self.balance
        out += self._take(self.ev.on_close(t, tr, self.balance, self.equity))
        out += self._take(self.ev.check_pass(t, len(self.open)))
        return out

    def trade(
        self, t_open: datetime, t_close: datetime, profit: Decimal | int | str, lots: str = "1"
    ) -> list[Decision]:
        """A round trip: open then close with ``profit`` (nothing else open in between)."""
        ticket = self.buy(t_open, lots)
        return self.close(t_close, ticket, profit)

    # -- views
    def of(self, rule: str, kind: str | None = None) -> list[Decision]:
        return [d for d in self.decisions if d.rule == rule and (kind is None or d.kind == kind)]

    def breaches(self) -> list[Decision]:
        return [d for d in self.decisions if d.kind == "breach"]

    @property
    def verdict(self) -> str | None:
        return self.ev.s.verdict
