"""The rules engine inside the execution core: a challenge account's rulebook, applied on every event.

``RulesBridge`` feeds the pure evaluator (``domain.rules.engine.Evaluator``) from the execution service's
commands, inside the same transaction and under the same account lock:

- before anything happens at ``now``: day boundaries and expiries up to ``now`` (``sync``);
- before an order executes: the rulebook's pre-trade rules (``pretrade``), which can reject it;
- after every fill: trade open/close events (``after_fill``); after every quote that moves equity:
  ``on_equity``;
- then the decisions take effect by themselves: ``fail`` and ``expire`` flatten the account and end the
  phase, ``pause_day`` flattens it until the next day start, a pass ends the phase as ``passed`` and opens the
  next phase's account (fresh balance, same owner, ``parent_account_id`` set), funded accounts scale up.

Every decision is stored in ``violations`` with its evidence and a hash of it; the evaluator's state lives in
``rule_states`` and per-day figures in ``daily_stats``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from ..domain import gates as G
from ..domain.clock import Clock
from ..domain.instruments import Catalogue, Instrument
from ..domain.ledger import Category, Entry, EntryKind
from ..domain.lifecycle import TERMINAL, Status, Trigger
from ..domain.money import CTX, ZERO, fmt, money
from ..domain.orders import OrderPurpose, OrderRequest, OrderType, Side
from ..domain.policy import ExecutionPolicy
from ..domain.positions import FillEffect, Position, Valuation
from ..domain.rules.engine import Decision, EngineState, Evaluator, Trade
from ..domain.rules.pretrade import CalendarEvent, OpenPosition, OrderCheck, check_order, weekend_holds
from ..domain.rules.rulebook import Rulebook, parse_rulebook
from .repository import AccountCtx, CreateAccount, Row


class RulesHost(Protocol):
    """What the rules bridge needs from the execution service (``ExecutionService`` fits): the account loaded
    under its lock, valuation, ledger appends, status moves, flattening and opening the next phase's account."""

    db: Any
    clock: Clock
    catalogue: Catalogue

    def _load(self, conn: Any, account_id: uuid.UUID, *, lock: bool = True) -> AccountCtx: ...
    def _valuate(self, ctx: AccountCtx) -> Valuation: ...
    def _append(self, conn: Any, ctx: AccountCtx, entries: Sequence[Entry], now: datetime) -> None: ...
    def _set_status(
        self, conn: Any, ctx: AccountCtx, trigger: Trigger, now: datetime, evidence: dict[str, Any], *, actor: str
    ) -> Status: ...
    def _flatten(
        self, c: Any, ctx: AccountCtx, now: datetime, *, reason: str, purpose: OrderPurpose = OrderPurpose.LIQUIDATION
    ) -> list[str]: ...
    def create_account(self, cmd: CreateAccount, *, conn: Any | None = None) -> tuple[Row, bool]: ...


SEVERITY = {"breach": "critical", "warning": "warning", "flag": "warning", "reject": "info", "pass": "info"}


def inputs_hash(d: Decision) -> str:
    body = json.dumps({"kind": d.kind, "action": d.action, **d.to_json()}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class RulesBridge:
    """Applies a challenge account's frozen rulebook from inside the execution service."""

    def __init__(self, service: RulesHost):
        self.svc = service
        self._books: dict[str, Rulebook] = {}

    # ------------------------------------------------------------------ loading
    def book(self, ctx: AccountCtx) -> Rulebook | None:
        return self.book_for(ctx.account)

    def book_for(self, account: Mapping[str, Any]) -> Rulebook | None:
        """The frozen rulebook of an account row (None outside challenge mode), parsed once per distinct body."""
        raw = account.get("rulebook")
        if not raw or account.get("mode") != "challenge":
            return None
        key = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
        book = self._books.get(key)
        if book is None:
            book = parse_rulebook(raw, where=f"account {account.get('id')}")
            if len(self._books) < 1000:
                self._books[key] = book
        return book

    def evaluator(self, c: Any, ctx: AccountCtx) -> Evaluator | None:
        """The account's evaluator (cached on the context for the length of one command)."""
        cached = getattr(ctx, "rule_ev", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        book = self.book(ctx)
        if book is None:
            return None
        row = c.execute("SELECT state FROM rule_states WHERE account_id=%s", (ctx.id,)).fetchone()
        phase = ctx.account["phase"]
        if row is None:
            return None  # not started yet
        state = EngineState.from_json(row["state"]["engine"])
        ev = Evaluator(book, phase, state)
        ctx.rule_ev = ev
        ctx.rule_extras = dict(row["state"].get("extras") or {})
        ctx.rule_saved = json.dumps(row["state"], sort_keys=True)
        return ev

    def _save(self, c: Any, ctx: AccountCtx, ev: Evaluator, now: datetime) -> None:
        extras = getattr(ctx, "rule_extras", {}) or {}
        state = {"engine": ev.s.to_json(), "extras": extras}
        text = json.dumps(state, sort_keys=True)
        if text == ctx.rule_saved:
            return  # most quotes change nothing the rules remember: no write on the hot path
        c.execute(
            "INSERT INTO rule_states (account_id, state, updated_at) VALUES (%s,%s,%s) ON CONFLICT"
            " (account_id) DO UPDATE SET state=EXCLUDED.state, updated_at=EXCLUDED.updated_at",
            (ctx.id, Jsonb(state), now),
        )
        ctx.rule_saved = text
        self._daily_stats(c, ctx, ev, now)

    def _values(self, ctx: AccountCtx) -> tuple[Decimal, Decimal]:
        val = self.svc._valuate(ctx)
        ctx.valuation = val
        # The rules judge equity in the account currency's minor units, as they report it: an unrounded equity
        # half a cent under a floor would breach with a stored value (rounded) that does not (RULES.md: money).
        return ctx.balance["cash"], money(val.equity)

    # ------------------------------------------------------------------ hooks
    def on_start(self, c: Any, ctx: AccountCtx, now: datetime) -> None:
        """The phase starts when the account starts trading."""
        book = self.book(ctx)
        if book is None:
            return
        balance, equity = self._values(ctx)
        ev = Evaluator(book, ctx.account["phase"], initial_balance=ctx.account["starting_balance"])
        ev.begin(now, balance, equity)
        ctx.rule_ev = ev
        ctx.rule_extras = {"pending_fees": {}, "trades_opened": {}, "cycle_started_at": now.isoformat()}
        c.execute("UPDATE accounts SET phase_started_at=%s WHERE id=%s", (now, ctx.id))
        self._save(c, ctx, ev, now)

    def sync(self, c: Any, ctx: AccountCtx, now: datetime) -> None:
        """Process day boundaries and expiries up to ``now`` and apply what they decide."""
        ev = self.evaluator(c, ctx)
        if ev is None or ev.ended or ctx.status in TERMINAL:
            return
        last = ev.s.last_t
        if last is not None and now > last and ev.cal.boundaries(last, now):
            self._close_day_stats(c, ctx, ev, now)
        balance, equity = self._values(ctx)
        decisions = ev.advance(now, lambda _b: (balance, equity))
        if last is not None and not ev.ended:
            decisions += self._weekend_holds(c, ctx, ev, last, now)
        self._scale_up(c, ctx, ev, now)
        self._apply(c, ctx, ev, decisions, now)

    def _weekend_holds(
        self, c: Any, ctx: AccountCtx, ev: Evaluator, after: datetime, until: datetime
    ) -> list[Decision]:
        """``weekend_trading`` with ``hold_positions: false``: a flag for every position (and every external trade
        reported open) still held when a weekend starts in ``(after, until]``, as the offline driver flags it."""
        wk = ev.rules.get("weekend_trading")
        if wk is None or wk["hold_positions"] or until <= after:
            return []
        if not weekend_holds(ev.rules, ev.cal, after, until, [("", "", "")]):
            return []  # no weekend starts in the interval (nearly every command): nothing to read
        tickets = ctx.rule_extras.get("open_tickets") or {}
        held = []
        for pos in sorted(ctx.positions.values(), key=lambda p: (p.opened_at or after, p.symbol)):  # as opened
            inst = self.svc.catalogue.get(pos.symbol)
            if pos.quantity != 0 and inst is not None:
                held.append((tickets.get(pos.symbol, ""), pos.symbol, inst.asset_class.value))
        rows = c.execute(
            "SELECT ticket, payload->>'symbol' AS symbol FROM external_trades WHERE account_id=%s AND"
            " payload->>'close_time' IS NULL ORDER BY created_at, ticket",
            (ctx.id,),
        ).fetchall()
        for r in rows:
            inst = self.svc.catalogue.get(r["symbol"])
            if inst is not None:
                held.append((r["ticket"], inst.symbol, inst.asset_class.value))
        return weekend_holds(ev.rules, ev.cal, after, until, held)

    def pretrade(
        self,
        c: Any,
        ctx: AccountCtx,
        req: OrderRequest,
        inst: Instrument,
        quote_px: Decimal,
        rate: Decimal,
        now: datetime,
    ) -> G.Rejection | None:
        """The rulebook's pre-trade rules for a trader's order or close; a refusal is returned as a gate rejection.

        A close (or an order that only reduces) meets only the rules that govern closing (the news window with
        scope ``open_and_close``); stop losses, take profits and liquidations are never held back."""
        ev = self.evaluator(c, ctx)
        if ev is None or req.purpose not in (OrderPurpose.CLIENT, OrderPurpose.CLOSE):
            return None
        rules = ev.rules
        cur = ctx.positions.get(req.symbol)
        delta = req.quantity if req.side is Side.BUY else -req.quantity
        reduces = cur is not None and (cur.quantity > 0) != (delta > 0) and abs(delta) <= abs(cur.quantity)
        entry = req.trigger_price if req.order_type is not OrderType.MARKET else quote_px
        assert entry is not None
        notional = CTX.multiply(inst.contract_value(req.quantity, entry), rate)
        risk = None
        if req.stop_loss is not None:
            risk = CTX.multiply(inst.contract_value(req.quantity, abs(entry - req.stop_loss)), rate)
        val = ctx.valuation or self.svc._valuate(ctx)
        marks = {m.symbol: m.notional for m in val.marks}
        positions = tuple(
            OpenPosition(s, "buy" if p.quantity > 0 else "sell", abs(p.quantity), marks.get(s, ZERO))
            for s, p in ctx.positions.items()
        )
        check = OrderCheck(
            now,
            req.symbol,
            inst.asset_class.value,
            req.side.value,
            req.quantity,
            entry,
            notional,
            val.equity,
            req.stop_loss,
            risk,
            positions,
            len(ctx.resting),
            req.order_type is not OrderType.MARKET,
            reduces,
            (inst.base_currency, inst.quote_currency),
            tuple(self._events(c, rules, now)),
            closing=req.purpose is OrderPurpose.CLOSE or reduces,
            netting=True,
        )
        decisions = check_order(rules, ev.cal, check)
        rejects = [d for d in decisions if d.kind == "reject"]
        for d in decisions:
            self._record(c, ctx, ev, d, now)
            if d.kind == "flag" and d.action == "deduct_profit":
                tainted = ctx.rule_extras.setdefault("news_tainted", [])
                if req.symbol not in tainted:
                    tainted.append(req.symbol)
        self._save(c, ctx, ev, now)
        if not rejects:
            return None
        first = rejects[0]
        return G.Rejection(
            G.Code.RULE_VIOLATION,
            f"{first.rule}: {first.evidence.get('message', 'rule violated')}",
            {
                "rule": first.rule,
                "value": fmt(money(first.value)) if first.value is not None else None,
                "limit": fmt(money(first.limit)) if first.limit is not None else None,
                **{k: v for k, v in first.evidence.items() if k != "message"},
                "violations": [r.rule for r in rejects],
            },
        )

    def _events(self, c: Any, rules: dict[str, dict[str, Any]], now: datetime) -> list[CalendarEvent]:
        news = rules.get("news_trading")
        if news is None:
            return []
        rows = c.execute(
            "SELECT at, currency, country, impact, title FROM economic_events WHERE at BETWEEN %s AND %s",
            (now - timedelta(minutes=news["minutes_after"]), now + timedelta(minutes=news["minutes_before"])),
        ).fetchall()
        return [CalendarEvent(r["at"], r["currency"], r["impact"], r["title"], r["country"]) for r in rows]

    def after_fill(
        self,
        c: Any,
        ctx: AccountCtx,
        req: OrderRequest,
        before: Position | None,
        eff: FillEffect,
        price: Decimal,
        fee: Decimal,
        realized: Decimal,
        quote_ts: datetime,
        fill_id: uuid.UUID,
        now: datetime,
    ) -> None:
        """Feed a fill to the evaluator as a trade open and/or close, then apply what it decides."""
        ev = self.evaluator(c, ctx)
        if ev is None or ev.ended:
            return
        balance, equity = self._values(ctx)
        extras = ctx.rule_extras
        fees: dict[str, str] = extras.setdefault("pending_fees", {})
        decisions: list[Decision] = []
        if eff.closed_quantity > 0 and before is not None:
            carried = (
                Decimal(fees.pop(req.symbol, "0"))
                if eff.opened_quantity == 0 or eff.position is None
                else Decimal(fees.get(req.symbol, "0"))
            )
            pnl = realized - fee - carried
            tainted = extras.get("news_tainted") or []
            if req.symbol in tainted and pnl > 0:
                pnl = self._deduct(c, ctx, ev, req.symbol, pnl, now)
                balance, equity = self._values(ctx)
            trade = Trade(
                str(fill_id),
                req.symbol,
                "buy" if before.quantity > 0 else "sell",
                eff.closed_quantity,
                before.opened_at or now,
                before.avg_price,
                "",
                now,
                price,
                before.stop_loss,
                before.take_profit,
                pnl,
            )
            decisions += ev.on_close(now, trade, balance, equity)
            self.snapshot_winner(c, ctx, ev, str(fill_id), pnl, now)
            if eff.position is None and req.symbol in tainted:
                tainted.remove(req.symbol)
        # The fill that opened each position: its ticket (as ``on_open`` names it) for holding rules.
        tickets: dict[str, str] = extras.setdefault("open_tickets", {})
        if eff.position is None:
            tickets.pop(req.symbol, None)
        elif eff.opened_quantity > 0 and (before is None or eff.closed_quantity > 0):
            tickets[req.symbol] = str(fill_id)
        if eff.opened_quantity > 0:
            if eff.closed_quantity == 0:
                fees[req.symbol] = fmt(Decimal(fees.get(req.symbol, "0")) + fee)
            reaction = int((now - quote_ts).total_seconds() * 1000) if req.purpose is OrderPurpose.CLIENT else None
            trade = Trade(
                str(fill_id),
                req.symbol,
                req.side.value,
                eff.opened_quantity,
                now,
                price,
                "",
                sl=req.stop_loss,
                tp=req.take_profit,
                reaction_ms=reaction,
            )
            day = ev.cal.day_of(now).isoformat()
            opened = extras.setdefault("trades_opened", {})
            opened[day] = opened.get(day, 0) + 1
            decisions += ev.on_open(now, trade, balance, equity)
        decisions += ev.check_pass(now, sum(1 for p in ctx.positions.values() if p.quantity != 0))
        self._apply(c, ctx, ev, decisions, now)

    def on_equity(self, c: Any, ctx: AccountCtx, now: datetime) -> None:
        """A quote moved equity: trailing floors, realtime limits, warnings."""
        ev = self.evaluator(c, ctx)
        if ev is None or ev.ended or ctx.status in TERMINAL:
            return
        self.sync(c, ctx, now)
        if ev.ended or ctx.status in TERMINAL:
            return
        val = self.svc._valuate(ctx)
        if val.missing:
            return  # never judge equity on a guessed price
        balance, equity = ctx.balance["cash"], money(val.equity)
        decisions = ev.on_equity(now, balance, equity)
        decisions += ev.check_pass(now, sum(1 for p in ctx.positions.values() if p.quantity != 0))
        self._apply(c, ctx, ev, decisions, now)

    # ------------------------------------------------------------------ effects
    def _record(
        self, c: Any, ctx: AccountCtx, ev: Evaluator, d: Decision, now: datetime, order_id: uuid.UUID | None = None
    ) -> None:
        c.execute(
            "INSERT INTO violations (account_id, rule, kind, severity, action, at, value, limit_value, evidence,"
            " inputs_hash, phase, order_id, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                ctx.id,
                d.rule,
                d.kind,
                SEVERITY.get(d.kind, "info"),
                d.action,
                d.at,
                money(d.value) if d.value is not None else None,
                money(d.limit) if d.limit is not None else None,
                Jsonb(json.loads(json.dumps(d.to_json()["evidence"], default=str))),
                inputs_hash(d),
                ev.phase.id,
                order_id,
                now,
            ),
        )

    def _apply(self, c: Any, ctx: AccountCtx, ev: Evaluator, decisions: list[Decision], now: datetime) -> None:
        for d in decisions:
            self._record(c, ctx, ev, d, now)
        if getattr(ctx, "rule_applying", False):
            self._save(c, ctx, ev, now)
            return  # the outer application re-checks the verdict after its own effects
        ctx.rule_applying = True
        try:
            self._effects(c, ctx, ev, decisions, now)
        finally:
            ctx.rule_applying = False
        self._save(c, ctx, ev, now)

    def _effects(self, c: Any, ctx: AccountCtx, ev: Evaluator, decisions: list[Decision], now: datetime) -> None:
        svc = self.svc
        evidence = {
            "decisions": [
                {"rule": d.rule, "kind": d.kind, "action": d.action} for d in decisions if d.kind in ("breach", "pass")
            ]
        }
        verdict = ev.s.verdict
        if ctx.status in TERMINAL:
            return
        if verdict in ("failed", "expired"):
            reason = f"rules: {verdict}"
            svc._flatten(c, ctx, now, reason=reason, purpose=OrderPurpose.LIQUIDATION)
            svc._set_status(
                c, ctx, Trigger.FAIL if verdict == "failed" else Trigger.EXPIRE, now, evidence, actor="rules"
            )
            return
        if verdict == "passed":
            if ctx.status is not Status.ACTIVE:
                return
            svc._flatten(c, ctx, now, reason="rules: phase passed", purpose=OrderPurpose.CLOSE)
            svc._set_status(c, ctx, Trigger.PASS, now, evidence, actor="rules")
            self._open_next_phase(c, ctx, ev, now)
            return
        paused = any(d.kind == "breach" and d.action == "pause_day" for d in decisions)
        if paused and ctx.status is Status.ACTIVE:
            svc._flatten(
                c, ctx, now, reason="rules: daily loss reached (paused for the day)", purpose=OrderPurpose.LIQUIDATION
            )
            svc._set_status(c, ctx, Trigger.DAY_PAUSE, now, evidence, actor="rules")
        elif ctx.status is Status.DAY_PAUSED and not ev.s.day_paused:
            svc._set_status(c, ctx, Trigger.DAY_START, now, {"trading_day": str(ev.s.day)}, actor="rules")

    def _open_next_phase(self, c: Any, ctx: AccountCtx, ev: Evaluator, now: datetime) -> None:
        nxt = ev.book.next_phase(ev.phase.id)
        if nxt is None:
            return
        policy = ExecutionPolicy.from_json(ctx.account["policy"])
        policy = replace(policy, starting_balance=ctx.account["starting_balance"])
        row, _ = self.svc.create_account(
            CreateAccount(
                owner_id=ctx.account["owner_id"],
                phase=nxt.id,
                clone_id=ctx.account["clone_id"],
                parent_account_id=ctx.id,
                policy=policy,
                rulebook=ctx.account["rulebook"],
                idempotency_key=f"next-phase:{ctx.id}",
                start=True,
                rulebook_id=ctx.account.get("rulebook_id"),
                rulebook_version=ctx.account.get("rulebook_version"),
                offer_id=ctx.account.get("offer_id"),
            ),
            conn=c,
        )
        self.svc._append(
            c,
            ctx,
            [Entry(EntryKind.STATUS_CHANGED, evidence={"next_phase_account_id": str(row["id"]), "next_phase": nxt.id})],
            now,
        )

    def _deduct(self, c: Any, ctx: AccountCtx, ev: Evaluator, symbol: str, pnl: Decimal, now: datetime) -> Decimal:
        """News rule ``deduct_profit``: remove the profit of a trade made inside a blackout by a reversing entry."""
        amount = money(pnl)
        self.svc._append(
            c,
            ctx,
            [
                Entry(
                    EntryKind.ADJUSTMENT,
                    -amount,
                    Category.ADJUSTMENT,
                    {"rule": "news_trading", "action": "deduct_profit", "symbol": symbol, "deducted": fmt(amount)},
                )
            ],
            now,
        )
        ev.s.deducted += amount
        self._record(
            c,
            ctx,
            ev,
            Decision(
                "news_trading", "flag", "deduct_profit", now, amount, None, {"symbol": symbol, "deducted": fmt(amount)}
            ),
            now,
        )
        return ZERO

    def _scale_up(self, c: Any, ctx: AccountCtx, ev: Evaluator, now: datetime) -> None:
        """Funded accounts: a cycle of ``every_days`` ending with ``min_profit_pct`` adds ``increase_pct``."""
        sc = ev.phase.scaling
        if not sc or ctx.status is not Status.ACTIVE:
            return
        extras = ctx.rule_extras
        started = datetime.fromisoformat(extras.get("cycle_started_at") or now.isoformat())
        if now < started + timedelta(days=sc["every_days"]):
            return
        initial = ev.s.initial
        profit = ctx.balance["cash"] - initial
        extras["cycle_started_at"] = now.isoformat()
        if profit < initial * sc["min_profit_pct"] / Decimal(100) or ctx.positions:
            self._save(c, ctx, ev, now)
            return
        increase = money(initial * sc["increase_pct"] / Decimal(100))
        if "max_balance" in sc:
            increase = max(ZERO, min(increase, money(sc["max_balance"] - initial)))
        if increase <= 0:
            return
        self.svc._append(
            c,
            ctx,
            [
                Entry(
                    EntryKind.DEPOSIT,
                    increase,
                    Category.DEPOSIT,
                    {
                        "reason": "scale_up",
                        "previous_initial": fmt(money(initial)),
                        "profit": fmt(money(profit)),
                        "min_profit_pct": fmt(sc["min_profit_pct"]),
                        "increase_pct": fmt(sc["increase_pct"]),
                        "every_days": sc["every_days"],
                    },
                    equity_after=money(self.svc._valuate(ctx).equity + increase),
                )
            ],
            now,
        )
        new_initial = initial + increase
        balance, equity = self._values(ctx)
        fresh = Evaluator(ev.book, ev.phase.id, initial_balance=new_initial)
        fresh.begin(now, balance, equity)
        fresh.s.trading_days = list(ev.s.trading_days)
        ctx.rule_ev = fresh
        self._record(
            c,
            ctx,
            fresh,
            Decision(
                "scaling",
                "pass",
                "scale_up",
                now,
                new_initial,
                initial,
                {"increase": fmt(increase), "new_initial_balance": fmt(money(new_initial))},
            ),
            now,
        )
        self._save(c, ctx, fresh, now)

    # ------------------------------------------------------------------ read models
    def snapshot_winner(self, c: Any, ctx: AccountCtx, ev: Evaluator, ref: str, profit: Decimal, now: datetime) -> None:
        """A per-trade consistency snapshot for every winning trade (share of all winning profit so far)."""
        snap = ev.per_trade_snapshot(ref, profit)
        if snap is None:
            return
        c.execute(
            "INSERT INTO consistency_snapshots (account_id, ref, profit, cumulative_profit, share_pct,"
            " max_share_pct, violated, at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (account_id, ref)"
            " DO NOTHING",
            (
                ctx.id,
                ref,
                Decimal(snap["profit"]),
                Decimal(snap["cumulative_winning_profit"]),
                Decimal(snap["share_pct"]),
                Decimal(snap["max_share_pct"]),
                snap["violated"],
                now,
            ),
        )

    def _daily_stats(self, c: Any, ctx: AccountCtx, ev: Evaluator, now: datetime) -> None:
        s = ev.s
        if s.day is None:
            return
        day = s.day
        opened = (getattr(ctx, "rule_extras", {}) or {}).get("trades_opened", {}).get(day.isoformat(), 0)
        c.execute(
            "INSERT INTO daily_stats (account_id, trading_day, day_start, start_balance, start_equity, high_equity,"
            " low_equity, closed_pnl, trades_opened, trades_closed, daily_floor, max_floor, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (account_id, trading_day) DO UPDATE SET"
            " high_equity=EXCLUDED.high_equity, low_equity=EXCLUDED.low_equity, closed_pnl=EXCLUDED.closed_pnl,"
            " trades_opened=EXCLUDED.trades_opened, trades_closed=EXCLUDED.trades_closed,"
            " daily_floor=EXCLUDED.daily_floor, max_floor=EXCLUDED.max_floor, updated_at=EXCLUDED.updated_at",
            (
                ctx.id,
                day,
                ev.cal.start_of(day),
                money(s.sod_balance),
                money(s.sod_equity),
                money(s.day_high_equity),
                money(s.day_low_equity),
                money(s.day_pnl.get(day.isoformat(), ZERO)),
                opened,
                s.day_closes.get(day.isoformat(), 0),
                money(s.daily_floor) if s.daily_floor is not None else None,
                money(s.max_floor) if s.max_floor is not None else None,
                now,
            ),
        )

    def _close_day_stats(self, c: Any, ctx: AccountCtx, ev: Evaluator, now: datetime) -> None:
        if ev.s.day is None:
            return
        balance, equity = self._values(ctx)
        c.execute(
            "UPDATE daily_stats SET end_balance=%s, end_equity=%s, updated_at=%s WHERE account_id=%s AND"
            " trading_day=%s",
            (money(balance), money(equity), now, ctx.id, ev.s.day),
        )

    # ------------------------------------------------------------------ reads
    def status(self, account_id: uuid.UUID) -> dict[str, Any]:
        """Every rule's standing for an account: floors and how they are computed, progress, deadlines, reset."""
        from ..domain.rules.status import rules_status

        now = self.svc.clock.now()
        with self.svc.db.read() as c:
            ctx = self.svc._load(c, account_id, lock=False)
            book = self.book(ctx)
            base = {
                "account_id": str(account_id),
                "status": ctx.status.value,
                "phase": ctx.account["phase"],
                "rulebook": {
                    "id": ctx.account.get("rulebook_id"),
                    "version": ctx.account.get("rulebook_version"),
                    "offer_id": ctx.account.get("offer_id"),
                }
                if book
                else None,
            }
            ev = self.evaluator(c, ctx)
            if ev is None:
                if book is not None:
                    ev = Evaluator(book, ctx.account["phase"], initial_balance=ctx.account["starting_balance"])
                    ev.begin(now, ctx.balance["cash"], ctx.balance["cash"])
                    return {**base, "started": False, **rules_status(ev, ctx.balance["cash"], ctx.balance["cash"], now)}
                return {**base, "started": False, "limits": [], "progress": {}, "rules": {}}
            val = self.svc._valuate(ctx)
            # Roll an in-memory copy to now so a reader sees today's floor even before the day-roll worker ran.
            equity = money(val.equity)
            ev.advance(now, lambda _b: (ctx.balance["cash"], equity))
            return {
                **base,
                "started": True,
                **rules_status(ev, ctx.balance["cash"], equity, now),
                "missing_prices": list(val.missing),
            }
