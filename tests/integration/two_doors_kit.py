"""The replay machinery of ``test_two_doors.py``: an ``evaluate`` fixture driven through the live service.

The offline door (``propdesk.evaluation.OfflineRun``) walks one event stream: trade opens, price points and trade
closes, sorted by (time, kind, row) with kind open < price < close, and processes day boundaries lazily, at the
next event, with the values at the boundary. ``Replay`` walks the very same stream (built here from the same
readers, with the same sort key) through one of the two live doors of the execution service:

``order``
    Each trade is an order and a close over the HTTP API; the fill price is the log's price because the replay
    stores a quote with bid = ask = that price just before (straight into the quote store, *not* through
    ``on_quote``: a trade row is not a price point of the offline stream, and letting it move equity before the
    fill would judge a close before it is booked). Price points are posted through ``POST /quotes``, so the
    service marks and judges them itself (``on_quote`` -> ``process_triggers`` -> rules); bars are posted as
    the worst price for the position held (low for a long, high for a short), ticks as they are.
``check-trade``
    Each trade is reported to ``POST /api/v1/risk/check-trade`` twice, at its open (open fields only) and at
    its close (the whole row: profit, swap, commission), with the clock at that instant; this door books the
    log's own P&L, so commissions and ``profit`` overrides are reproduced exactly.

Day boundaries, ``rolls``:

``lazy``
    Nothing but the commands: the live engine rolls the days itself on each command (``RulesBridge.sync``),
    exactly as the offline driver rolls them at its next event.
``eod``
    Before every event, every day start since the previous one is rolled by the EOD endpoint
    (``POST /api/v1/admin/eod``) with the clock at the boundary, as the worker does in production. With a price
    file the positions held are first marked at the offline boundary price (the open of the first bar at or
    after the day start, else the last known price; the last tick for ticks), so start-of-day equity is the
    same number in both doors.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.money import ZERO, fmt, money
from propdesk.domain.quotes import Quote
from propdesk.domain.rules.engine import EngineState, Evaluator, iso
from propdesk.domain.rules.pretrade import CalendarEvent
from propdesk.domain.rules.rulebook import Rulebook
from propdesk.evaluation import LogTrade, OfflineRun, Series, evaluate, read_calendar, read_prices, read_trades
from propdesk.rulebooks import load_rulebook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evaluate"
CASES: dict[str, dict[str, str]] = json.loads((FIXTURES / "cases.json").read_text())
PREFIX = "/api/v1/prop"

OPEN, PRICE, CLOSE = 0, 1, 2  # the offline driver's event kinds, in its tie-break order
TERMINAL = {"passed", "failed", "expired", "liquidated", "completed"}
VERDICT = {
    "passed": "passed",
    "failed": "failed",
    "expired": "failed",
    "active": "in_progress",
    "day_paused": "in_progress",
}

# Execution policy generous enough that no policy gate ever decides: the rulebook alone does. No fees, fills at
# the mid (bid = ask = the log's price), quotes never too old for the replay's jumps in time, and a safety net
# that only fires at zero equity.
POLICY: dict[str, Any] = {
    "max_notional": "100000000",
    "max_leverage": "10000",
    "max_position_equity_pct": "10000000",
    "max_open_positions": 100,
    "max_open_orders": 100,
    "fee_bps": "0",
    "slippage_model": "mid_price",
    "max_quote_age_seconds": 1_000_000,
    "auto_liquidation_drawdown_pct": "100",
}


@dataclass
class Case:
    name: str
    ref: str
    phase: str | None
    book: Rulebook
    trades: list[LogTrade]
    prices: dict[str, Series] | None
    calendar: list[CalendarEvent] | None

    @property
    def plan_id(self) -> str:
        return self.ref.split("@", 1)[0]

    @property
    def offer_id(self) -> str | None:
        return self.ref.split("@", 1)[1] if "@" in self.ref else None

    @property
    def has_commission(self) -> bool:
        return any(lt.commission or lt.swap for lt in self.trades)

    def offline(self, *, fees: bool = True) -> dict[str, Any]:
        """The offline door's output; with ``fees=False``, for the same log without its commissions and swaps
        (what the order door books with a zero-fee policy), through the same driver."""
        c = CASES[self.name]
        if fees:
            return evaluate(
                load_rulebook(self.ref),
                FIXTURES / c["trades"],
                phase=self.phase,
                prices_path=FIXTURES / c["prices"] if "prices" in c else None,
                calendar_path=FIXTURES / c["calendar"] if "calendar" in c else None,
            )
        trades = [replace(lt, trade=replace(lt.trade), commission=ZERO, swap=ZERO) for lt in self.trades]
        return OfflineRun(load_rulebook(self.ref), self.phase, trades, self.prices, self.calendar).run()

    def events(self) -> list[tuple[datetime, int, int, Any]]:
        """The offline driver's event stream (``OfflineRun.run``): same events, same sort key."""
        out: list[tuple[datetime, int, int, Any]] = []
        for n, lt in enumerate(self.trades):
            out.append((lt.trade.open_time, OPEN, n, lt))
            if lt.trade.close_time is not None:
                out.append((lt.trade.close_time, CLOSE, n, lt))
        for sym, s in (self.prices or {}).items():
            for t in s.times:
                out.append((t, PRICE, 0, sym))
        out.sort(key=lambda e: (e[0], e[1], e[2]))
        return out

    def phase_start(self) -> datetime:
        """Offline, the phase starts at the start of the first trade's trading day."""
        cal = Evaluator(self.book, self.phase).cal
        first = min(lt.trade.open_time for lt in self.trades)
        return cal.start_of(cal.day_of(first))

    def price_profit(self, lt: LogTrade) -> Decimal | None:
        """The trade's gross P&L from its prices, in USD, at its own close price (USD accounts only)."""
        t = lt.trade
        if t.close_price is None:
            return None
        diff = (t.close_price - t.open_price) * (1 if t.side == "buy" else -1) * t.lots * lt.inst.contract_size
        if lt.inst.quote_currency == self.book.currency:
            return money(diff)
        assert lt.inst.base_currency == self.book.currency
        return money(diff / t.close_price)


def load_case(name: str) -> Case:
    c = CASES[name]
    return Case(
        name,
        c["rulebook"],
        c.get("phase"),
        load_rulebook(c["rulebook"]),
        read_trades(FIXTURES / c["trades"], DEFAULT_CATALOGUE),
        read_prices(FIXTURES / c["prices"]) if "prices" in c else None,
        read_calendar(FIXTURES / c["calendar"]) if "calendar" in c else None,
    )


def _num(v: Any) -> str | None:
    return fmt(money(Decimal(v))) if v is not None else None


def _at(v: Any) -> str:
    t = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return iso(t)


class Replay:
    """One fixture through one live door (``order`` | ``check-trade``), days rolled ``lazy`` or by ``eod``."""

    def __init__(self, platform: Any, client: Any, admin: Any, clock: Any, case: Case, door: str, rolls: str):
        assert door in ("order", "check-trade") and rolls in ("lazy", "eod")
        self.platform = platform
        self.client = client
        self.admin = admin
        self.clock = clock
        self.case = case
        self.door = door
        self.rolls = rolls
        self.cal = Evaluator(case.book, case.phase).cal
        self.account: str | None = None
        self.open: dict[str, LogTrade] = {}  # ticket -> trade held (the offline driver's ``open``)
        self.log: list[str] = []  # what the replay did, for failure messages
        self.opened = 0  # opens the live engine registered (the offline ``trades`` metric)

    # ------------------------------------------------------------------ the walk
    def run(self) -> dict[str, Any]:
        case = self.case
        start = case.phase_start()
        evs = case.events()
        if self.door == "check-trade":
            assert case.prices is None, "the check-trade door books closed P&L only: no price file"
        if self.door == "order":
            self._assert_one_ticket_per_symbol()
        for t, kind, _n, payload in evs:
            if t < start and kind == PRICE:  # prices before the phase only seed the marks
                self.clock.set(t)
                self._price(t, payload)
        self.clock.set(start)
        for ev in case.calendar or []:
            r = self.admin.post(
                "/api/v1/admin/calendar/events",
                json={"at": iso(ev.at), "currency": ev.currency, "impact": ev.impact, "title": ev.title},
            )
            assert r.status_code == 201, r.text
        self._create(start)
        last = start
        for t, kind, _n, payload in evs:
            if t < start:
                continue
            if self.rolls == "eod":
                for b in self.cal.boundaries(last, t):
                    self._roll(b)
                    if self.status() in TERMINAL:
                        return self.result()
            last = max(last, t)
            self.clock.set(t)
            if kind == OPEN:
                self._open(t, payload)
            elif kind == CLOSE:
                self._close(t, payload)
            else:
                self._price(t, payload)
            if self.status() in TERMINAL:
                break
        return self.result()

    def _assert_one_ticket_per_symbol(self) -> None:
        """The execution core nets one position per symbol: two tickets held at once in one symbol would merge
        (and, without a price file, move each other's marks), so the order door needs them not to overlap."""
        held: dict[str, str] = {}
        for _t, kind, _n, lt in self.case.events():
            if kind == OPEN:
                assert lt.trade.symbol not in held, f"tickets {held[lt.trade.symbol]} and {lt.trade.ticket} overlap"
                held[lt.trade.symbol] = lt.trade.ticket
            elif kind == CLOSE:
                held.pop(lt.trade.symbol)

    def _create(self, start: datetime) -> None:
        body: dict[str, Any] = {
            "owner_id": f"replay-{self.case.name}",
            "mode": "challenge",
            "plan_id": self.case.plan_id,
            "start": True,
            "policy": POLICY,
        }
        if self.case.offer_id:
            body["offer_id"] = self.case.offer_id
        if self.case.phase:
            body["phase"] = self.case.phase
        r = self.client.post(f"{PREFIX}/accounts", json=body)
        assert r.status_code == 201, r.text
        acc = r.json()
        assert acc["status"] == "active", acc
        self.account = acc["id"]
        with self.platform.db.read() as c:
            row = c.execute(
                "SELECT rulebook, phase_started_at FROM accounts WHERE id=%s", (uuid.UUID(acc["id"]),)
            ).fetchone()
        # The same rulebook in both doors, and the same phase start.
        assert row["rulebook"] == self.case.book.to_json()
        assert row["phase_started_at"] == start

    # ------------------------------------------------------------------ quotes
    def _store(self, symbol: str, bid: Decimal, ask: Decimal, t: datetime) -> None:
        """Put a quote straight into the quote store (no ``on_quote``): the price a fill or a roll sees."""
        self.platform.quotes.put(Quote(symbol, bid, ask, t))

    def _post(self, symbol: str, bid: Decimal, ask: Decimal, t: datetime) -> None:
        """A price point: through the API, so the service marks and judges every account holding ``symbol``."""
        r = self.client.post(
            f"{PREFIX}/quotes", json={"symbol": symbol, "bid": fmt(bid), "ask": fmt(ask), "ts": iso(t)}
        )
        assert r.status_code == 200, r.text

    def _held_side(self, symbol: str) -> bool | None:
        sides = {lt.trade.side == "buy" for lt in self.open.values() if lt.trade.symbol == symbol}
        assert len(sides) <= 1
        return sides.pop() if sides else None

    def _offline_quote(self, symbol: str, t: datetime, *, boundary: bool) -> tuple[Decimal, Decimal] | None:
        """(bid, ask) that marks the held position in ``symbol`` at ``t`` exactly as the offline driver does."""
        s = (self.case.prices or {}).get(symbol)
        if s is None:
            return None
        long = self._held_side(symbol)
        if s.kind == "ticks":
            i = s.index_at(t)
            return (s.rows[i][0], s.rows[i][1]) if i >= 0 else None
        if long is None:
            i = s.index_at(t)
            return (s.rows[i][3], s.rows[i][3]) if i >= 0 else None
        px = s.mark(t, long, boundary=boundary)
        return (px, px) if px is not None else None

    def _price(self, t: datetime, symbol: str) -> None:
        q = self._offline_quote(symbol, t, boundary=False)
        assert q is not None
        self.log.append(f"{iso(t)} price {symbol} {fmt(q[0])}/{fmt(q[1])}")
        self._post(symbol, q[0], q[1], t)

    # ------------------------------------------------------------------ day rolls
    def _roll(self, b: datetime) -> None:
        self.clock.set(b)
        for sym in sorted({lt.trade.symbol for lt in self.open.values()}):
            q = self._offline_quote(sym, b, boundary=True)
            if q is None:
                # No price file: the last known price, re-stamped at the boundary as a live feed would still show
                # it (the execution core never closes on a quote older than its asset class's threshold).
                last = self.platform.quotes.latest(sym)
                q = (last.bid, last.ask) if last is not None else None
            if q is not None:
                self._store(sym, q[0], q[1], b)
        self.log.append(f"{iso(b)} eod")
        r = self.admin.post("/api/v1/admin/eod", json={})
        assert r.status_code == 200, r.text
        assert r.json()["failed"] == [], r.text

    # ------------------------------------------------------------------ trades
    def _open(self, t: datetime, lt: LogTrade) -> None:
        tr = lt.trade
        self._store(tr.symbol, tr.open_price, tr.open_price, t)
        self.log.append(f"{iso(t)} open #{tr.ticket} {tr.side} {fmt(tr.lots)} {tr.symbol} @ {fmt(tr.open_price)}")
        if self.door == "check-trade":
            self._check(lt, closing=False)
        else:
            body: dict[str, Any] = {"symbol": tr.symbol, "side": tr.side, "quantity": fmt(tr.lots)}
            if tr.sl is not None:
                body["stop_loss"] = fmt(tr.sl)
            if tr.tp is not None:
                body["take_profit"] = fmt(tr.tp)
            r = self.client.post(f"{PREFIX}/accounts/{self.account}/orders", json=body)
            if r.status_code == 422 and self.status() in TERMINAL:
                self.log.append(f"  refused: the phase ended ({self.status()})")
                return
            assert r.status_code == 201, f"#{tr.ticket} was not executed: {r.text}"
            assert Decimal(r.json()["fill"]["price"]) == tr.open_price
        self.open[tr.ticket] = lt
        if self._engine_state().last_open_at == t:
            self.opened += 1

    def _close(self, t: datetime, lt: LogTrade) -> None:
        tr = lt.trade
        assert tr.close_price is not None
        if tr.ticket not in self.open:
            return
        self._store(tr.symbol, tr.close_price, tr.close_price, t)
        self.log.append(f"{iso(t)} close #{tr.ticket} @ {fmt(tr.close_price)}")
        if self.door == "check-trade":
            self._check(lt, closing=True)
        else:
            r = self.client.post(f"{PREFIX}/accounts/{self.account}/positions/{tr.symbol}/close", json={})
            if r.status_code == 422 and self.status() in TERMINAL:
                self.log.append(f"  refused: the phase ended ({self.status()})")
                return
            assert r.status_code == 201, f"#{tr.ticket} was not closed: {r.text}"
            assert Decimal(r.json()["fill"]["price"]) == tr.close_price
        del self.open[tr.ticket]

    def _check(self, lt: LogTrade, *, closing: bool) -> None:
        tr = lt.trade
        body: dict[str, Any] = {
            "account_id": self.account,
            "ticket": tr.ticket,
            "symbol": tr.symbol,
            "side": tr.side,
            "lots": fmt(tr.lots),
            "open_time": iso(tr.open_time),
            "open_price": fmt(tr.open_price),
        }
        if tr.sl is not None:
            body["sl"] = fmt(tr.sl)
        if tr.tp is not None:
            body["tp"] = fmt(tr.tp)
        if closing:
            assert tr.close_time is not None and tr.close_price is not None
            body.update(
                {
                    "close_time": iso(tr.close_time),
                    "close_price": fmt(tr.close_price),
                    "commission": fmt(lt.commission),
                    "swap": fmt(lt.swap),
                }
            )
            if lt.profit_given is not None:
                body["profit"] = fmt(lt.profit_given)
        r = self.client.post("/api/v1/risk/check-trade", json=body)
        if r.status_code == 409 and r.json()["error"]["code"] == "account_not_active":
            self.log.append(f"  refused: the phase ended ({self.status()})")
            return
        assert r.status_code == 200, r.text
        self.log.append(f"  -> {r.json()['result']} ({r.json()['account_status']})")

    # ------------------------------------------------------------------ reading the live door back
    def status(self) -> str:
        with self.platform.db.read() as c:
            row = c.execute("SELECT status FROM accounts WHERE id=%s", (uuid.UUID(self.account),)).fetchone()
        return str(row["status"])

    def _engine_state(self) -> EngineState:
        with self.platform.db.read() as c:
            row = c.execute(
                "SELECT state FROM rule_states WHERE account_id=%s", (uuid.UUID(self.account or ""),)
            ).fetchone()
        return EngineState.from_json(row["state"]["engine"])

    def result(self) -> dict[str, Any]:
        """The live door's outcome in the offline output's shape (from the account, ``violations`` and the
        evaluator state it stored)."""
        aid = uuid.UUID(self.account or "")
        with self.platform.db.read() as c:
            rows = c.execute("SELECT * FROM violations WHERE account_id=%s ORDER BY id", (aid,)).fetchall()
            state = c.execute("SELECT state FROM rule_states WHERE account_id=%s", (aid,)).fetchone()["state"]
        recompute = self.platform.execution.recompute(aid)
        assert recompute["ok"], recompute
        status = self.status()
        ev = Evaluator(self.case.book, self.case.phase, EngineState.from_json(state["engine"]))
        engine_verdict = {"passed": "passed", "failed": "failed", "expired": "failed"}.get(
            ev.s.verdict or "", "in_progress"
        )
        assert VERDICT[status] == engine_verdict, (status, ev.s.verdict)
        return {
            "status": status,
            "verdict": VERDICT[status],
            "breaches": [
                {
                    "rule": r["rule"],
                    "at": _at(r["at"]),
                    "value": _num(r["value"]),
                    "limit": _num(r["limit_value"]),
                    "action": r["action"],
                    "evidence": r["evidence"],
                }
                for r in rows
                if r["kind"] == "breach"
            ],
            "warnings": [
                {"rule": r["rule"], "at": _at(r["at"]), "evidence": r["evidence"]}
                for r in rows
                if r["kind"] == "warning"
            ],
            "flags": [
                {"rule": r["rule"], "at": _at(r["at"]), "evidence": r["evidence"]}
                for r in rows
                if r["kind"] in ("flag", "reject")
            ],
            "passes": [r for r in rows if r["kind"] == "pass"],
            "progress": ev.progress(),
            "trades": self.opened,
        }
