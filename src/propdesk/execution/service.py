"""The execution service: the only writer of account truth.

Every command runs in one PostgreSQL transaction on the engine role's connection and starts by locking the
account row (``SELECT ... FOR UPDATE``), so commands on one account are serialized and two concurrent orders
can never pass a limit together. Inside the lock the pure core decides (gates, fill simulator, position math,
ledger entries) and this module writes the outcome: orders, fills, positions, balances and ledger entries.

Public methods take an optional ``conn``: when given, the command joins the caller's transaction (the API uses
this to store an idempotency record atomically with the effect); otherwise the method opens its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from ..domain import gates as G
from ..domain.clock import Clock
from ..domain.errors import Conflict, InvalidInput, NotFound
from ..domain.fills import execution_price, fee_for
from ..domain.instruments import Catalogue, Instrument, conversion_rate
from ..domain.ledger import Category, Entry, EntryKind, fold
from ..domain.lifecycle import MARKED, Status, Trigger, transition
from ..domain.money import CTX, ZERO, fmt, money
from ..domain.orders import OrderPurpose, OrderRequest, OrderStatus, OrderType, Side, crosses, protective_trigger
from ..domain.positions import Position, Valuation, apply_fill, replay, valuate
from ..domain.quotes import PriceSource, Quote
from .repository import AccountCtx, AccountRepository, CreateAccount, Row
from .rules import RulesBridge
from .trading_state import TradingState


class Metrics(Protocol):
    """What the service reports; the API wires Prometheus behind it."""

    def rejection(self, code: str) -> None: ...
    def order_latency(self, seconds: float) -> None: ...


class _NoMetrics:
    def rejection(self, code: str) -> None:
        pass

    def order_latency(self, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class OrderOutcome:
    """What an order command produced: the order row, its fill (if any) and the rejection (if any)."""

    order: Row
    fill: Row | None
    rejection: G.Rejection | None

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


# The quotes a trigger is being judged at, per symbol (``process_triggers(at_quote=...)``): set only for the
# duration of one judging pass, per thread/context, so concurrent commands never see another's overlay.
_JUDGING_AT: ContextVar[Mapping[str, Quote] | None] = ContextVar("propdesk_judging_at", default=None)


class JudgedPrices:
    """The execution core's price source: the process's latest quotes, except while a trigger is judged at its
    triggering quote (``ExecutionService.process_triggers(at_quote=...)``), when that quote stands for its symbol
    (judging, conversion and fill alike). Everything else is the wrapped source's."""

    def __init__(self, base: PriceSource) -> None:
        self.base = base

    def latest(self, symbol: str) -> Quote | None:
        at = _JUDGING_AT.get()
        if at is not None:
            q = at.get(symbol)
            if q is not None:
                return q
        return self.base.latest(symbol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


class SessionSource(Protocol):
    """What the execution core asks of a session calendar (marketdata.sessions.SessionCalendar fits)."""

    def status(self, symbol: str, at: datetime) -> Any: ...  # .open, .reason, .next_open
    def stale_after(self, symbol: str) -> float: ...


class ExecutionService:
    """Commands and reads over account truth. One instance per process; thread-safe (state lives in Postgres).

    With a session calendar (``sessions``, injected by bootstrap): an order on a closed market is refused
    (``market_closed``, with the reason and the next open), a quote older than its asset class's threshold while
    the market is open is ``stale_price``, and resting orders and SL/TP wait (no fill, nothing recorded) while
    their market is closed or their quote is stale: they fire on the first fresh quote of an open market, at that
    quote (a weekend gap fills at the Monday price, as at a broker). A liquidation (safety net, rule breach, admin)
    is refused on a stale quote while the market is open (``stale_price``); on a closed market it closes at the
    session's last quote, which is the market's closing price, not a stale one. Without a calendar the policy's
    ``max_quote_age_seconds`` is the only freshness check (as before).
    """

    def __init__(
        self,
        db: Any,
        clock: Clock,
        catalogue: Catalogue,
        prices: PriceSource,
        metrics: Metrics | None = None,
        log: Callable[..., None] | None = None,
        *,
        sessions: SessionSource | None = None,
        trading_state: TradingState | None = None,
    ):
        self.db = db
        # The platform kill switch (execution/trading_state.py): None in tests that build a bare core.
        self.trading_state = trading_state
        self.clock = clock
        self.catalogue = catalogue
        self.prices: PriceSource = JudgedPrices(prices)
        self.sessions = sessions
        self.risk_engine: Any = None  # engine.live.RiskEngine when bootstrap wires one (on_quote delegates)
        self.metrics: Metrics = metrics or _NoMetrics()
        self.repo = AccountRepository()
        self.rules = RulesBridge(self)
        self._roll_cache: Any = None  # execution.bulk_roll.RollCache, made on the first roll_all
        self._log = log or (lambda *a, **k: None)

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self, conn: Any | None) -> Iterator[Any]:
        if conn is not None:
            yield conn
        else:
            with self.db.tx() as c:
                yield c

    def _rate(self, ccy: str, account_ccy: str) -> Decimal | None:
        # Only catalogue symbols have quotes. Asking the price source for a pair that does not exist (JPYUSD
        # before USDJPY) makes a database-backed store read through a second pooled connection while this one
        # holds the account lock: with as many concurrent commands as pool connections, that deadlocks.
        def mid(symbol: str) -> Decimal | None:
            if self.catalogue.get(symbol) is None:
                return None
            q = self.prices.latest(symbol)
            return q.mid if q is not None else None

        return conversion_rate(ccy, account_ccy, mid)

    def _load(self, conn: Any, account_id: uuid.UUID, *, lock: bool = True) -> AccountCtx:
        ctx = self.repo.load(conn, account_id, lock=lock)
        ctx.valuation = self._valuate(ctx)
        return ctx

    def _valuate(self, ctx: AccountCtx) -> Valuation:
        insts = {s: self._inst(s) for s in ctx.positions}
        ccy = ctx.policy.currency
        return valuate(
            ctx.balance["cash"], ctx.positions.values(), insts, self.prices.latest, lambda qc: self._rate(qc, ccy)
        )

    def _inst(self, symbol: str) -> Instrument:
        inst = self.catalogue.get(symbol)
        if inst is None:
            raise InvalidInput(f"unknown symbol {symbol!r}", code="unknown_symbol")
        return inst

    def _gate_state(self, ctx: AccountCtx) -> G.AccountState:
        val = ctx.valuation or self._valuate(ctx)
        notional = {m.symbol: m.notional for m in val.marks}
        resting = tuple(
            G.RestingOrder(
                o["symbol"],
                Side(o["side"]),
                o["quantity"],
                o["limit_price"] or o["stop_price"] or ZERO,
                o["notional"] or ZERO,
            )
            for o in ctx.resting
        )
        return G.AccountState(ctx.status, ctx.policy, ctx.balance["cash"], val.equity, ctx.positions, notional, resting)

    def _append(self, conn: Any, ctx: AccountCtx, entries: Sequence[Entry], now: datetime) -> None:
        """Write ledger entries and fold them into the balances row (cash, totals, equity, watermark)."""
        bal = dict(ctx.balance)
        seq = bal["ledger_seq"]
        rows: list[tuple[Any, ...]] = []
        for e in entries:
            seq += 1
            bal["cash"] += e.amount
            if e.category is Category.PNL:
                bal["realized_pnl"] += e.amount
            elif e.category is Category.FEE:
                bal["fees"] -= e.amount
            elif e.category is Category.DEPOSIT:
                bal["deposits"] += e.amount
            elif e.category is Category.ADJUSTMENT:
                bal["adjustments"] += e.amount
            bal["high_watermark"] = max(bal["high_watermark"], bal["cash"])
            if e.equity_after is not None:
                bal["high_watermark"] = max(bal["high_watermark"], e.equity_after)
            rows.append(
                (
                    ctx.id,
                    seq,
                    e.kind.value,
                    e.category.value,
                    e.amount,
                    bal["cash"],
                    e.equity_after,
                    e.order_id,
                    e.fill_id,
                    Jsonb(e.evidence),
                    now,
                )
            )
        # One multi-row INSERT per command step rather than one statement per entry.
        self.repo.insert_ledger(conn, rows)
        bal["ledger_seq"] = seq
        ctx.balance = bal
        self._write_balances(conn, ctx, now)

    def _write_balances(self, conn: Any, ctx: AccountCtx, now: datetime, *, marked: bool = False) -> None:
        val = ctx.valuation
        if marked or val is None or val.cash != ctx.balance["cash"]:
            # A valuation at the same cash over the same positions (a position write clears it) is still exact.
            val = self._valuate(ctx)
        ctx.valuation = val
        bal = ctx.balance
        margin = CTX.divide(val.notional, ctx.policy.max_leverage) if val.notional else ZERO
        self.repo.write_balances(
            conn,
            ctx.id,
            bal,
            equity=money(val.equity),
            unrealized=money(val.unrealized),
            margin=money(margin),
            now=now,
            marked=marked,
        )

    def _set_status(
        self, conn: Any, ctx: AccountCtx, trigger: Trigger, now: datetime, evidence: dict[str, Any], *, actor: str
    ) -> Status:
        old = ctx.status
        new = transition(old, trigger)
        if new is old:
            return new
        self.repo.set_status(conn, ctx.id, new, now)
        ctx.account = {**ctx.account, "status": new.value}
        self._append(
            conn,
            ctx,
            [
                Entry(
                    EntryKind.STATUS_CHANGED,
                    evidence={"from": old.value, "to": new.value, "trigger": trigger.value, "actor": actor, **evidence},
                )
            ],
            now,
        )
        if old is Status.PENDING and new is Status.ACTIVE:
            self.rules.on_start(conn, ctx, now)  # a challenge phase starts when trading starts
        return new

    # ------------------------------------------------------------------ accounts
    def create_account(self, cmd: CreateAccount, *, conn: Any | None = None) -> tuple[Row, bool]:
        """Create an account (idempotent by ``idempotency_key``); returns (account, created)."""
        now = self.clock.now()
        with self._tx(conn) as c:
            if cmd.idempotency_key is not None:
                self.repo.lock_idempotency_key(c, cmd.idempotency_key)
                existing = self.repo.account_by_idempotency_key(c, cmd.idempotency_key)
                if existing is not None:
                    if cmd.request_hash is not None and existing["request_hash"] != cmd.request_hash:
                        raise Conflict(
                            "idempotency_key was already used with a different request", code="idempotency_key_reused"
                        )
                    return existing, False
            if cmd.parent_account_id is not None and not self.repo.account_exists(c, cmd.parent_account_id):
                raise NotFound(f"parent account {cmd.parent_account_id} not found", code="account_not_found")
            acc_id = _uuid()
            policy = cmd.policy
            self.repo.insert_account(c, acc_id, cmd, now)
            ctx = self._load(c, acc_id)
            self._append(
                c,
                ctx,
                [
                    Entry(
                        EntryKind.ACCOUNT_CREATED,
                        evidence={
                            "owner_id": cmd.owner_id,
                            "mode": cmd.mode.value,
                            "phase": cmd.phase,
                            "policy": policy.to_json(),
                            "parent_account_id": str(cmd.parent_account_id or "") or None,
                        },
                    ),
                    Entry(
                        EntryKind.DEPOSIT,
                        money(policy.starting_balance),
                        Category.DEPOSIT,
                        {"reason": "starting balance"},
                        equity_after=money(policy.starting_balance),
                    ),
                ],
                now,
            )
            if cmd.start:
                self._set_status(c, ctx, Trigger.START, now, {}, actor="service")
            return self._account_row(c, acc_id), True

    def apply_trigger(
        self,
        account_id: uuid.UUID,
        trigger: Trigger,
        *,
        actor: str,
        reason: str = "",
        conn: Any | None = None,
        flatten: bool = False,
    ) -> Row:
        """Move an account through the lifecycle table (start, pause, resume, lock, complete, liquidate).

        ``complete`` on an account with exposure (open positions or resting orders) is refused with 409
        ``account_has_exposure`` (details: the symbols and order ids), unless ``flatten``: then the resting orders
        are cancelled and the positions closed at market with their evidence (the same path a liquidation or a
        rule decision takes), and the account completes, all in this one transaction.
        """
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            if trigger is Trigger.LIQUIDATE:
                transition(ctx.status, trigger)  # refuse illegal moves before touching positions
                self._liquidate(c, ctx, now, reason=reason or "liquidation command", actor=actor)
            elif trigger is Trigger.COMPLETE:
                transition(ctx.status, trigger)  # an illegal move is refused before exposure is looked at
                self._complete(c, ctx, now, reason=reason, actor=actor, flatten=flatten)
            else:
                if trigger is Trigger.PASS:
                    raise Conflict("only the rules engine can pass an account", code="illegal_transition")
                self._set_status(c, ctx, trigger, now, {"reason": reason} if reason else {}, actor=actor)
            return self._account_row(c, account_id)

    def _complete(self, c: Any, ctx: AccountCtx, now: datetime, *, reason: str, actor: str, flatten: bool) -> None:
        """End the account without a verdict; with exposure only when ``flatten`` (cancel, close, then complete)."""
        symbols = sorted(s for s, p in ctx.positions.items() if p.quantity != 0)
        order_ids = sorted(str(o["id"]) for o in ctx.resting)
        evidence: dict[str, Any] = {"reason": reason} if reason else {}
        if symbols or order_ids:
            if not flatten:
                raise Conflict(
                    "the account has open positions or resting orders; close and cancel them first, or complete"
                    ' with {"flatten": true}',
                    code="account_has_exposure",
                    details={"symbols": symbols, "order_ids": order_ids},
                )
            closed = self._flatten(
                c, ctx, now, reason=f"complete: {reason}" if reason else "complete", purpose=OrderPurpose.CLOSE
            )
            evidence["flattened"] = {"closed": closed, "cancelled_orders": order_ids}
        self._set_status(c, ctx, Trigger.COMPLETE, now, evidence, actor=actor)

    def _account_row(self, conn: Any, account_id: uuid.UUID) -> Row:
        row = self.repo.account_row(conn, account_id)
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        return row

    # ------------------------------------------------------------------ orders
    def submit_order(
        self,
        account_id: uuid.UUID,
        req: OrderRequest,
        *,
        conn: Any | None = None,
        decision_action_id: uuid.UUID | None = None,
    ) -> OrderOutcome:
        """Gate, then fill (market, or marketable limit/stop) or rest the order; always records the outcome."""
        started = time.perf_counter()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            if req.client_order_id is not None:
                dup = self.repo.order_by_client_id(c, account_id, req.client_order_id)
                if dup is not None:
                    raise Conflict(
                        f"client_order_id {req.client_order_id!r} is already used on this account",
                        code="duplicate_client_order_id",
                        details={"order_id": str(dup["id"])},
                    )
            now = self.clock.now()
            self.rules.sync(c, ctx, now)  # a day may have rolled (pause lifted, phase expired) since last seen
            out = self._submit(c, ctx, req, now, decision_action_id=decision_action_id)
        self.metrics.order_latency(time.perf_counter() - started)
        return out

    def _market(self, symbol: str, inst: Instrument | None, ctx: AccountCtx, now: datetime) -> G.MarketContext:
        quote = self.prices.latest(symbol) if inst is not None else None
        rate = self._rate(inst.quote_currency, ctx.policy.currency) if inst is not None else None
        return G.MarketContext(quote, rate, now, self._session(inst, now))

    def _session(self, inst: Instrument | None, now: datetime) -> G.MarketSession | None:
        if self.sessions is None or inst is None:
            return None
        st = self.sessions.status(inst.symbol, now)
        return G.MarketSession(
            bool(st.open),
            str(st.reason),
            st.next_open,
            inst.asset_class.value,
            float(self.sessions.stale_after(inst.symbol)),
        )

    def _kill_switch(self, c: Any, ctx: AccountCtx, req: OrderRequest) -> G.Rejection | None:
        """The platform kill switch for a trader's order or a resting order firing (SL/TP and liquidations are
        the risk desk's own and always run)."""
        if self.trading_state is None:
            return None
        eff = self.trading_state.effective(req.symbol, c)
        if eff.mode == "active":
            return None
        return G.check_trading_mode(req, eff.mode, ctx.positions.get(req.symbol), eff.scope)

    def _tradeable_quote(self, symbol: str, now: datetime) -> Quote | None:
        """The quote a trigger (resting order, SL/TP) may fire on: None while the market is closed or the quote
        is missing or stale (the trigger waits for a fresh quote of an open market)."""
        q = self.prices.latest(symbol)
        if q is None or self.sessions is None:
            return q
        inst = self.catalogue.get(symbol)
        sess = self._session(inst, now)
        if sess is None:
            return q
        if not sess.open or q.age_seconds(now) > sess.stale_after_seconds:
            return None
        return q

    def _submit(
        self,
        c: Any,
        ctx: AccountCtx,
        req: OrderRequest,
        now: datetime,
        *,
        decision_action_id: uuid.UUID | None = None,
        allowed: frozenset[Status] = frozenset({Status.ACTIVE}),
    ) -> OrderOutcome:
        inst = self.catalogue.get(req.symbol)
        mkt = self._market(req.symbol, inst, ctx, now)
        rejection = G.check_order(req, self._gate_state(ctx), inst, mkt, allowed_statuses=allowed)
        if rejection is None and req.purpose in (OrderPurpose.CLIENT, OrderPurpose.CLOSE):
            rejection = self._kill_switch(c, ctx, req)
        if rejection is None and req.purpose in (OrderPurpose.CLIENT, OrderPurpose.CLOSE):
            assert inst is not None and mkt.quote is not None and mkt.rate is not None
            px = mkt.quote.ask if req.side is Side.BUY else mkt.quote.bid
            rejection = self.rules.pretrade(c, ctx, req, inst, px, mkt.rate, now)
        order_id = _uuid()
        if rejection is not None:
            self.metrics.rejection(rejection.code)
            order = self._insert_order(
                c,
                ctx,
                order_id,
                req,
                OrderStatus.REJECTED,
                now,
                None,
                rejection=rejection,
                decision_action_id=decision_action_id,
            )
            evidence: dict[str, Any] = {"order": _order_evidence(req), "rejection": rejection.to_json()}
            if mkt.quote is not None:
                evidence["quote"] = mkt.quote.evidence()
            self._append(c, ctx, [Entry(EntryKind.ORDER_REJECTED, evidence=evidence, order_id=str(order_id))], now)
            return OrderOutcome(order, None, rejection)
        assert inst is not None and mkt.quote is not None and mkt.rate is not None
        trigger_px = req.trigger_price
        if (
            req.order_type is not OrderType.MARKET
            and trigger_px is not None
            and not crosses(req.order_type, req.side, trigger_px, mkt.quote.bid, mkt.quote.ask)
        ):
            notional = money(CTX.multiply(inst.contract_value(req.quantity, trigger_px), mkt.rate))
            order = self._insert_order(
                c, ctx, order_id, req, OrderStatus.OPEN, now, notional, decision_action_id=decision_action_id
            )
            self._append(
                c,
                ctx,
                [
                    Entry(
                        EntryKind.ORDER_ACCEPTED,
                        evidence={"order": _order_evidence(req), "quote": mkt.quote.evidence()},
                        order_id=str(order_id),
                    )
                ],
                now,
            )
            ctx.resting.append(order)
            return OrderOutcome(order, None, None)
        order, fill = self._fill_new_order(
            c, ctx, order_id, req, inst, mkt.quote, mkt.rate, now, decision_action_id=decision_action_id
        )
        return OrderOutcome(order, fill, None)

    def _insert_order(
        self,
        c: Any,
        ctx: AccountCtx,
        order_id: uuid.UUID,
        req: OrderRequest,
        status: OrderStatus,
        now: datetime,
        notional: Decimal | None,
        *,
        rejection: G.Rejection | None = None,
        decision_action_id: uuid.UUID | None = None,
    ) -> Row:
        row: Row = self._queue_order(
            c, ctx, order_id, req, status, now, notional, rejection=rejection, decision_action_id=decision_action_id
        ).fetchone()
        return row

    def _queue_order(
        self,
        c: Any,
        ctx: AccountCtx,
        order_id: uuid.UUID,
        req: OrderRequest,
        status: OrderStatus,
        now: datetime,
        notional: Decimal | None,
        *,
        rejection: G.Rejection | None = None,
        decision_action_id: uuid.UUID | None = None,
    ) -> Any:
        """Send the order's INSERT ... RETURNING and return its cursor (in a pipeline the row comes later)."""
        return self.repo.queue_order(
            c, ctx.id, order_id, req, status, now, notional, rejection=rejection, decision_action_id=decision_action_id
        )

    def _fill_new_order(
        self,
        c: Any,
        ctx: AccountCtx,
        order_id: uuid.UUID,
        req: OrderRequest,
        inst: Instrument,
        quote: Quote,
        rate: Decimal,
        now: datetime,
        *,
        decision_action_id: uuid.UUID | None = None,
    ) -> tuple[Row, Row]:
        """Record a new order as filled and fill it; the order's INSERT rides in the fill's pipeline (one round
        trip fewer per market order). Returns (order, fill)."""
        sent: list[Any] = []

        def queue_order() -> None:
            sent.append(
                self._queue_order(
                    c, ctx, order_id, req, OrderStatus.FILLED, now, None, decision_action_id=decision_action_id
                )
            )

        fill = self._fill(c, ctx, order_id, req, inst, quote, rate, now, before_writes=queue_order)
        return sent[0].fetchone(), fill

    def _fill(
        self,
        c: Any,
        ctx: AccountCtx,
        order_id: uuid.UUID,
        req: OrderRequest,
        inst: Instrument,
        quote: Quote,
        rate: Decimal,
        now: datetime,
        *,
        before_writes: Callable[[], None] | None = None,
    ) -> Row:
        """Execute order ``order_id`` against ``quote``: fill row, position, fee and P&L ledger entries, balances.
        ``before_writes`` sends statements of its own first, in the same pipeline."""
        fill_id = _uuid()
        oid = str(order_id)
        px, slip_bps = execution_price(req.side, quote, ctx.policy, oid)
        before = ctx.positions.get(req.symbol)
        eff = apply_fill(before, req.symbol, req.side, req.quantity, px, inst.contract_size, now)
        notional = money(CTX.multiply(inst.contract_value(req.quantity, px), rate))
        fee = money(fee_for(notional, ctx.policy))
        realized = money(CTX.multiply(eff.realized_quote, rate))
        after = eff.position
        if after is not None:
            sl = req.stop_loss if req.stop_loss is not None else after.stop_loss
            tp = req.take_profit if req.take_profit is not None else after.take_profit
            after = replace(after, stop_loss=sl, take_profit=tp)
            if before is not None and after.opened_at is None:
                after = replace(after, opened_at=before.opened_at)
        # The writes of a fill need no answer before the next one: send them as one pipeline.
        with c.pipeline():
            if before_writes is not None:
                before_writes()
            self._write_position(c, ctx, req.symbol, after, now)
            fill_cur = self.repo.queue_fill(
                c, fill_id, order_id, ctx.id, req, px, notional, fee, realized, slip_bps, quote, now
            )
            cash_after = ctx.balance["cash"] + realized - fee
            ctx.valuation = self._valuate(replace(ctx, balance={**ctx.balance, "cash": cash_after}))
            equity_after = money(ctx.valuation.equity)
            evidence = {
                "order_id": oid,
                "symbol": req.symbol,
                "side": req.side.value,
                "quantity": fmt(req.quantity),
                "price": fmt(px),
                "slippage_model": ctx.policy.slippage_model.value,
                "slippage_bps": fmt(slip_bps),
                "quote": quote.evidence(),
                "purpose": req.purpose.value,
                "position_before": _pos_evidence(before),
                "position_after": _pos_evidence(after),
                "closed_quantity": fmt(eff.closed_quantity),
                "conversion_rate": fmt(rate),
            }
            entries = [Entry(EntryKind.FILL, evidence=evidence, order_id=oid, fill_id=str(fill_id))]
            if fee:
                entries.append(
                    Entry(
                        EntryKind.FEE,
                        -fee,
                        Category.FEE,
                        {"fill_id": str(fill_id), "fee_bps": fmt(ctx.policy.fee_bps), "notional": fmt(notional)},
                        order_id=oid,
                    )
                )
            if eff.closed_quantity:
                entries.append(
                    Entry(
                        EntryKind.REALIZED_PNL,
                        realized,
                        Category.PNL,
                        {
                            "fill_id": str(fill_id),
                            "closed_quantity": fmt(eff.closed_quantity),
                            "entry_price": fmt(before.avg_price) if before else None,
                            "exit_price": fmt(px),
                            "conversion_rate": fmt(rate),
                        },
                        equity_after=equity_after,
                        order_id=oid,
                    )
                )
            else:
                entries[-1] = replace(entries[-1], equity_after=equity_after)
            self._append(c, ctx, entries, now)
        fill = fill_cur.fetchone()
        self.rules.after_fill(c, ctx, req, before, eff, px, fee, realized, quote.ts, fill_id, now)
        return fill  # type: ignore[no-any-return]

    def _write_position(self, c: Any, ctx: AccountCtx, symbol: str, pos: Position | None, now: datetime) -> None:
        ctx.valuation = None  # positions change: any valuation held is stale
        if pos is None:
            self.repo.delete_position(c, ctx.id, symbol)
            ctx.positions.pop(symbol, None)
            return
        self.repo.upsert_position(c, ctx.id, symbol, pos, now)
        ctx.positions[symbol] = replace(pos, opened_at=pos.opened_at or now)

    def close_position(
        self,
        account_id: uuid.UUID,
        symbol: str,
        quantity: Decimal | None = None,
        *,
        conn: Any | None = None,
        decision_action_id: uuid.UUID | None = None,
    ) -> OrderOutcome:
        """Close all (or ``quantity`` lots) of the position in ``symbol`` at market."""
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            pos = ctx.positions.get(symbol)
            if pos is None:
                raise Conflict(f"no open {symbol} position", code="no_position", details={"symbol": symbol})
            qty = abs(pos.quantity) if quantity is None else quantity
            if qty > abs(pos.quantity):
                raise InvalidInput(
                    f"cannot close {fmt(qty)} lots of a {fmt(abs(pos.quantity))} lot position", code="invalid_quantity"
                )
            req = OrderRequest(symbol, pos.side.opposite, qty, reduce_only=True, purpose=OrderPurpose.CLOSE)
            now = self.clock.now()
            # As for an order: a day may have rolled (or the phase expired) since last seen. If that ends the
            # phase or pauses the day, the rules flatten the position and the gates refuse this close.
            self.rules.sync(c, ctx, now)
            return self._submit(c, ctx, req, now, decision_action_id=decision_action_id)

    def cancel_order(
        self,
        account_id: uuid.UUID,
        order_id: uuid.UUID,
        *,
        conn: Any | None = None,
        actor: str = "client",
        void: bool = False,
        reason: str = "",
    ) -> Row:
        """Cancel a resting order (or, with ``void``, mark it voided by an admin)."""
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            order = self.repo.order(c, account_id, order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found on this account", code="order_not_found")
            if order["status"] != OrderStatus.OPEN.value:
                raise Conflict(
                    f"order is {order['status']}; only open orders can be cancelled",
                    code="order_not_open",
                    details={"status": order["status"]},
                )
            status = OrderStatus.VOIDED if void else OrderStatus.CANCELLED
            row = self.repo.close_order(c, order_id, status, now)
            kind = EntryKind.VOID_ORDER if void else EntryKind.ORDER_CANCELLED
            self._append(
                c,
                ctx,
                [
                    Entry(
                        kind,
                        evidence={"order_id": str(order_id), "actor": actor, "reason": reason},
                        order_id=str(order_id),
                    )
                ],
                now,
            )
            return row

    def modify(
        self,
        account_id: uuid.UUID,
        *,
        symbol: str | None = None,
        order_id: uuid.UUID | None = None,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        clear_stop_loss: bool = False,
        clear_take_profit: bool = False,
        conn: Any | None = None,
    ) -> Row:
        """Change SL/TP of an open position (by symbol) or of a resting order (by id)."""
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            if ctx.status not in MARKED or ctx.status is Status.PAUSED:
                raise Conflict(f"account is {ctx.status.value}", code="account_not_active")
            if order_id is not None:
                order = self.repo.open_order(c, account_id, order_id)
                if order is None:
                    raise NotFound(f"no open order {order_id}", code="order_not_found")
                sl = None if clear_stop_loss else (stop_loss if stop_loss is not None else order["stop_loss"])
                tp = None if clear_take_profit else (take_profit if take_profit is not None else order["take_profit"])
                ref = order["limit_price"] or order["stop_price"]
                self._check_levels(order["symbol"], Side(order["side"]), ref, sl, tp)
                row = self.repo.set_order_levels(c, order_id, sl, tp, now)
                self._append(
                    c,
                    ctx,
                    [
                        Entry(
                            EntryKind.ORDER_MODIFIED,
                            evidence={"order_id": str(order_id), "stop_loss": _s(sl), "take_profit": _s(tp)},
                            order_id=str(order_id),
                        )
                    ],
                    now,
                )
                return row
            if symbol is None:
                raise InvalidInput("modify needs a symbol (position) or an order_id", code="invalid_input")
            pos = ctx.positions.get(symbol)
            if pos is None:
                raise Conflict(f"no open {symbol} position", code="no_position", details={"symbol": symbol})
            sl = None if clear_stop_loss else (stop_loss if stop_loss is not None else pos.stop_loss)
            tp = None if clear_take_profit else (take_profit if take_profit is not None else pos.take_profit)
            quote = self.prices.latest(symbol)
            if quote is None:
                raise Conflict(f"no quote for {symbol}", code="missing_price")
            self._check_levels(symbol, pos.side, quote.bid if pos.quantity > 0 else quote.ask, sl, tp)
            new = replace(pos, stop_loss=sl, take_profit=tp)
            self._write_position(c, ctx, symbol, new, now)
            self._append(
                c,
                ctx,
                [
                    Entry(
                        EntryKind.POSITION_MODIFIED,
                        evidence={
                            "symbol": symbol,
                            "before": _pos_evidence(pos),
                            "after": _pos_evidence(new),
                            "quote": quote.evidence(),
                        },
                    )
                ],
                now,
            )
            return self.repo.position(c, account_id, symbol)

    def _check_levels(self, symbol: str, side: Side, ref: Decimal, sl: Decimal | None, tp: Decimal | None) -> None:
        inst = self._inst(symbol)
        # Levels read back from NUMERIC(28,10) columns carry trailing zeros; judge their value, not the padding.
        ref, sl, tp = ref.normalize(CTX), _plain(sl), _plain(tp)
        probe = OrderRequest(symbol, side, inst.min_lot, OrderType.LIMIT, limit_price=ref, stop_loss=sl, take_profit=tp)
        rej = G._check_size_and_prices(probe, inst) or G._check_protective(probe, ref)
        if rej is not None:
            raise InvalidInput(rej.message, code=rej.code, details=rej.details)

    # ------------------------------------------------------------------ quotes, triggers, marking
    def on_quote(self, quote: Quote) -> dict[str, int]:
        """React to a new quote at once: fire crossing limit/stop orders and SL/TP, the safety net, rule floors.

        With a risk engine (``engine.live.RiskEngine``, wired by bootstrap unless ``PROPDESK_RISK_ENGINE=off``) the
        engine's book finds the candidates and hands each to ``process_triggers`` at this quote. Without one, a
        cheap unlocked scan finds accounts that might be affected; each is then locked and re-checked, so a
        trigger fires exactly once even if two quotes race.
        """
        if self.risk_engine is not None:
            return dict(self.risk_engine.on_quote(quote))
        return self.on_quote_per_account(quote)

    def on_quote_per_account(self, quote: Quote) -> dict[str, int]:
        """The per-account path (``PROPDESK_RISK_ENGINE=off``): every holder of the symbol, one after another."""
        with self.db.read() as c:
            rows = c.execute(
                "SELECT DISTINCT a.id FROM accounts a WHERE a.status = ANY(%s) AND (EXISTS (SELECT 1 FROM orders o"
                " WHERE o.account_id = a.id AND o.status = 'open' AND o.symbol = %s) OR EXISTS (SELECT 1 FROM"
                " positions p WHERE p.account_id = a.id AND p.symbol = %s))",
                ([s.value for s in MARKED], quote.symbol, quote.symbol),
            ).fetchall()
        fired = {"accounts": len(rows), "orders": 0, "protective": 0, "liquidations": 0}
        for r in rows:
            try:
                res = self.process_triggers(r["id"])
            except Exception as exc:  # one account's failure must not stop the others
                self._log("trigger_failed", account_id=str(r["id"]), error=repr(exc))
                continue
            for k in ("orders", "protective", "liquidations"):
                fired[k] += res[k]
        return fired

    def process_triggers(
        self,
        account_id: uuid.UUID,
        *,
        conn: Any | None = None,
        at_quote: Quote | Sequence[Quote] | None = None,
    ) -> dict[str, int]:
        """Under the account lock: fill crossing resting orders, close positions at SL/TP, apply the safety net
        and the rulebook's floors.

        With ``at_quote`` (the quote, or quotes, that made the risk book hand this account over), the account is
        judged first at those quotes, each standing for its symbol, and what they trigger fills at them (the price
        that caused it, recorded as evidence); then, when the latest prices differ, again at the latest. So a dip
        that recovered before the lock was taken is still judged at the dip, and the outcome is the worst of the
        two. A triggering quote older than the account's newest position or resting order is ignored (it cannot
        judge exposure that did not exist yet)."""
        now = self.clock.now()
        out = {"orders": 0, "protective": 0, "liquidations": 0}
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            self.rules.sync(c, ctx, now)
            if ctx.status not in MARKED:
                return out
            at = self._judging_quotes(ctx, at_quote)
            if not at:
                self._judge_triggers(c, ctx, now, out)
                return out
            token = _JUDGING_AT.set(at)
            try:
                ctx.valuation = None
                self._judge_triggers(c, ctx, now, out)
            finally:
                _JUDGING_AT.reset(token)
            ctx.valuation = None
            if ctx.status in MARKED and any(self.prices.latest(s) != q for s, q in at.items()):
                self._judge_triggers(c, ctx, now, out)
        return out

    def _judging_quotes(self, ctx: AccountCtx, at_quote: Quote | Sequence[Quote] | None) -> dict[str, Quote]:
        """The triggering quotes that may judge this account (per symbol, the last given wins)."""
        if at_quote is None:
            return {}
        quotes = [at_quote] if isinstance(at_quote, Quote) else list(at_quote)
        if not quotes:
            return {}
        newest: datetime | None = None
        for p in ctx.positions.values():
            if p.opened_at is not None and (newest is None or p.opened_at > newest):
                newest = p.opened_at
        for o in ctx.resting:
            t = o.get("created_at")
            if t is not None and (newest is None or t > newest):
                newest = t
        at: dict[str, Quote] = {}
        for q in quotes:
            if self.catalogue.get(q.symbol) is None or q.stale:
                continue
            if newest is not None and q.ts < newest:
                continue
            at[q.symbol] = q
        return at

    def _judge_triggers(self, c: Any, ctx: AccountCtx, now: datetime, out: dict[str, int]) -> None:
        """One judging pass at the prices in force (the latest, or the triggering quotes while they are set)."""
        for order in list(ctx.resting):
            q = self._tradeable_quote(order["symbol"], now)
            if q is None or ctx.status is not Status.ACTIVE:
                continue
            px = order["limit_price"] if order["order_type"] == "limit" else order["stop_price"]
            if not crosses(OrderType(order["order_type"]), Side(order["side"]), px, q.bid, q.ask):
                continue
            self._trigger_resting(c, ctx, order, now)
            out["orders"] += 1
        for symbol, pos in list(ctx.positions.items()):
            q = self._tradeable_quote(symbol, now)
            if q is None:
                continue
            hit = protective_trigger(pos.quantity, pos.stop_loss, pos.take_profit, q.bid, q.ask)
            if hit is None:
                continue
            req = OrderRequest(symbol, pos.side.opposite, abs(pos.quantity), reduce_only=True, purpose=hit)
            self._submit(c, ctx, req, now, allowed=MARKED)
            out["protective"] += 1
        if self._safety_net(c, ctx, now):
            out["liquidations"] += 1
        elif ctx.status in MARKED:
            self.rules.on_equity(c, ctx, now)  # every quote that moves equity is judged by the rulebook

    def _trigger_resting(self, c: Any, ctx: AccountCtx, order: Row, now: datetime) -> None:
        """Fill a resting order whose price was crossed; the gates run again on today's state first."""
        req = _request_from_row(order)
        ctx.resting = [o for o in ctx.resting if o["id"] != order["id"]]
        inst = self.catalogue.get(req.symbol)
        mkt = self._market(req.symbol, inst, ctx, now)
        market_req = replace(req, order_type=OrderType.MARKET, limit_price=None, stop_price=None)
        rejection = G.check_order(market_req, self._gate_state(ctx), inst, mkt)
        if rejection is None:
            rejection = self._kill_switch(c, ctx, market_req)
        if rejection is not None:
            self.metrics.rejection(rejection.code)
            self.repo.reject_order(c, order["id"], rejection, now)
            self._append(
                c,
                ctx,
                [
                    Entry(
                        EntryKind.ORDER_REJECTED,
                        evidence={
                            "order_id": str(order["id"]),
                            "rejection": rejection.to_json(),
                            "at_trigger": True,
                            "quote": mkt.quote.evidence() if mkt.quote else None,
                        },
                        order_id=str(order["id"]),
                    )
                ],
                now,
            )
            return
        assert inst is not None and mkt.quote is not None and mkt.rate is not None
        row = self.repo.mark_order_filled(c, order["id"], now)
        self._fill(c, ctx, row["id"], req, inst, mkt.quote, mkt.rate, now)

    def _safety_net(self, c: Any, ctx: AccountCtx, now: datetime) -> bool:
        """Liquidate when equity falls to the policy's auto-liquidation level (default: 50% drawdown)."""
        if not ctx.positions or ctx.status not in MARKED:
            return False
        val = self._valuate(ctx)
        if val.missing or self._stale_symbols(list(ctx.positions), now):
            return False  # never judge equity on a guessed (or stale, in an open market) price
        threshold = ctx.policy.liquidation_equity
        if val.equity > threshold:
            return False
        self._liquidate(
            c,
            ctx,
            now,
            reason="auto-liquidation: equity at or below the policy threshold",
            actor="policy",
            evidence={
                "equity": fmt(money(val.equity)),
                "threshold": fmt(threshold),
                "drawdown_pct": fmt(ctx.policy.auto_liquidation_drawdown_pct),
            },
        )
        return True

    def _flatten(
        self, c: Any, ctx: AccountCtx, now: datetime, *, reason: str, purpose: OrderPurpose = OrderPurpose.LIQUIDATION
    ) -> list[str]:
        """Cancel every resting order and close every position at market; returns the symbols closed.

        Rule decisions produced by these fills are recorded but take no effect here: the caller decides the
        resulting status (liquidated, failed, expired, day-paused, passed).
        """
        missing = [s for s in ctx.positions if self.prices.latest(s) is None]
        if missing:
            raise Conflict(
                "cannot close positions without a price for every one of them",
                code="missing_price",
                details={"symbols": missing},
            )
        stale = self._stale_symbols(list(ctx.positions), now)
        if stale:
            raise Conflict(
                "cannot close positions on a stale price (the market is open but its quote is old)",
                code="stale_price",
                details={"symbols": stale},
            )
        for order in list(ctx.resting):
            self.repo.cancel_order(c, order["id"], now)
            self._append(
                c,
                ctx,
                [
                    Entry(
                        EntryKind.ORDER_CANCELLED,
                        evidence={"order_id": str(order["id"]), "reason": reason},
                        order_id=str(order["id"]),
                    )
                ],
                now,
            )
        ctx.resting = []
        closed: list[str] = []
        was_applying = ctx.rule_applying
        ctx.rule_applying = True
        try:
            for symbol in list(ctx.positions):
                pos = ctx.positions.get(symbol)
                if pos is None or pos.quantity == 0:
                    continue
                req = OrderRequest(symbol, pos.side.opposite, abs(pos.quantity), reduce_only=True, purpose=purpose)
                inst = self._inst(symbol)
                q = self.prices.latest(symbol)
                rate = self._rate(inst.quote_currency, ctx.policy.currency)
                if q is None or rate is None:
                    raise Conflict(f"cannot close {symbol} without a price", code="missing_price")
                self._fill_new_order(c, ctx, _uuid(), req, inst, q, rate, now)
                closed.append(symbol)
        finally:
            ctx.rule_applying = was_applying
        return closed

    def _stale_symbols(self, symbols: list[str], now: datetime) -> list[str]:
        """Symbols whose market is open but whose quote is older than the asset-class threshold."""
        if self.sessions is None:
            return []
        out = []
        for s in symbols:
            q = self.prices.latest(s)
            sess = self._session(self.catalogue.get(s), now)
            if q is not None and sess is not None and sess.open and q.age_seconds(now) > sess.stale_after_seconds:
                out.append(s)
        return out

    def _liquidate(
        self, c: Any, ctx: AccountCtx, now: datetime, *, reason: str, actor: str, evidence: dict[str, Any] | None = None
    ) -> None:
        """Close everything at market, then set status ``liquidated``."""
        closed = self._flatten(c, ctx, now, reason=reason)
        self._append(
            c,
            ctx,
            [
                Entry(
                    EntryKind.LIQUIDATION,
                    evidence={"reason": reason, "actor": actor, "closed": closed, **(evidence or {})},
                    equity_after=money(self._valuate(ctx).equity),
                )
            ],
            now,
        )
        self._set_status(c, ctx, Trigger.LIQUIDATE, now, {"reason": reason}, actor=actor)

    def mark_to_market(self, account_id: uuid.UUID, *, conn: Any | None = None) -> Row:
        """Reprice open positions from the latest quotes, record a ``mark_to_market`` event, apply the safety net."""
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            if ctx.status in MARKED:
                val = self._valuate(ctx)
                evidence = {
                    "marks": [
                        {
                            "symbol": m.symbol,
                            "quantity": fmt(m.quantity),
                            "mark": fmt(m.mark),
                            "unrealized": fmt(money(m.unrealized)),
                        }
                        for m in val.marks
                    ],
                    "missing": list(val.missing),
                    "equity": fmt(money(val.equity)),
                    "unrealized": fmt(money(val.unrealized)),
                }
                self._append(
                    c,
                    ctx,
                    [
                        Entry(
                            EntryKind.MARK_TO_MARKET,
                            evidence=evidence,
                            equity_after=None if val.missing else money(val.equity),
                        )
                    ],
                    now,
                )
                self._write_balances(c, ctx, now, marked=True)
                if not self._safety_net(c, ctx, now):
                    self.rules.on_equity(c, ctx, now)
            return self.snapshot(account_id, conn=c)

    def roll_day(self, account_id: uuid.UUID, *, conn: Any | None = None) -> Row:
        """Process the rulebook's day boundaries and expiries up to now for one account (idempotent)."""
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            self.rules.sync(c, ctx, now)
            if ctx.status in MARKED and ctx.positions:
                self.rules.on_equity(c, ctx, now)  # carried positions meet the new day's floor at once
            return self._account_row(c, account_id)

    def roll_all(self) -> dict[str, Any]:
        """Roll the day for every live challenge account whose boundary, deadline, weekend start or scale-up check
        has come (``execution.bulk_roll``: one query finds them, the rest are not touched); one account's failure
        does not stop the rest."""
        from .bulk_roll import RollCache, roll_all_due

        if self._roll_cache is None:
            self._roll_cache = RollCache()
        return roll_all_due(
            self.db,
            self.clock.now(),
            self.rules.book_for,
            self.roll_day,
            self._roll_failed,
            self._roll_cache,
        )

    def _roll_failed(self, account_id: uuid.UUID, exc: Exception) -> None:
        self._log("roll_day_failed", account_id=str(account_id), error=repr(exc))
        self._record_failure(account_id, "roll_day", exc)

    def mark_all(self) -> dict[str, Any]:
        """Mark every account that holds positions, set-based: one bulk read and one bulk write for all of them
        (``execution.bulk_mark``), then the exact per-account command only for the accounts the mark may change
        (safety net, a rule floor, a day boundary, a pass); one account's failure is recorded and the rest go on."""
        from .bulk_mark import mark_all_then_exact

        return mark_all_then_exact(self)

    def _each_account(
        self, query: str, command: Callable[[uuid.UUID], Any], what: str
    ) -> tuple[int, list[dict[str, str]], int]:
        """Run ``command`` on every live account ``query`` selects, each in its own transaction; a failure is
        logged and recorded in the audit log, and the others go on."""
        with self.db.read() as c:
            ids = [r["id"] for r in c.execute(query, ([s.value for s in MARKED],)).fetchall()]
        ok, failed = 0, []
        for acc in ids:
            try:
                command(acc)
                ok += 1
            except Exception as exc:
                failed.append({"account_id": str(acc), "error": f"{type(exc).__name__}: {exc}"})
                self._log(f"{what}_failed", account_id=str(acc), error=repr(exc))
                self._record_failure(acc, what, exc)
        return ok, failed, len(ids)

    def _record_failure(self, account_id: uuid.UUID, what: str, exc: Exception) -> None:
        try:
            with self.db.tx() as c:
                c.execute(
                    "INSERT INTO admin_audit (actor, action, account_id, reason, details, created_at)"
                    " VALUES ('system', %s, %s, %s, %s, %s)",
                    (
                        f"{what}_failed",
                        account_id,
                        f"{type(exc).__name__}: {exc}"[:500],
                        Jsonb({"error": repr(exc)[:2000]}),
                        self.clock.now(),
                    ),
                )
        except Exception as inner:  # recording must never take the worker down
            self._log("failure_record_failed", account_id=str(account_id), error=repr(inner))

    # ------------------------------------------------------------------ admin corrections
    def void_fill(
        self, account_id: uuid.UUID, fill_id: uuid.UUID, *, actor: str, reason: str, conn: Any | None = None
    ) -> Row:
        """Void a fill by reversing entries (its fee and realized P&L) and re-deriving the position from the
        remaining fills. Nothing is deleted; the fill stays, with a ``fill_voids`` record beside it."""
        now = self.clock.now()
        with self._tx(conn) as c:
            ctx = self._load(c, account_id)
            fill = self.repo.fill(c, account_id, fill_id)
            if fill is None:
                raise NotFound(f"fill {fill_id} not found on this account", code="fill_not_found")
            if self.repo.fill_voided(c, fill_id):
                raise Conflict("fill is already voided", code="fill_already_voided")
            self.repo.insert_fill_void(c, fill_id, account_id, reason, actor, now)
            symbol = fill["symbol"]
            before = ctx.positions.get(symbol)
            after = self._replay_position(c, account_id, symbol)
            if after is not None and before is not None:
                after = replace(
                    after, stop_loss=before.stop_loss, take_profit=before.take_profit, opened_at=before.opened_at
                )
            self._write_position(c, ctx, symbol, after, now)
            entries = [
                Entry(
                    EntryKind.VOID_FILL,
                    evidence={
                        "fill_id": str(fill_id),
                        "actor": actor,
                        "reason": reason,
                        "position_before": _pos_evidence(before),
                        "position_after": _pos_evidence(after),
                    },
                )
            ]
            if fill["fee"]:
                entries.append(
                    Entry(
                        EntryKind.REVERSAL,
                        money(fill["fee"]),
                        Category.FEE,
                        {"reverses": "fee", "fill_id": str(fill_id)},
                    )
                )
            # Realized P&L is re-derived for the whole symbol: voiding an opening fill changes what every
            # later closing fill realized, not just the voided fill's own figure.
            expected = self._replayed_realized(c, account_id, symbol)
            booked = self._booked_realized(c, account_id, symbol)
            if expected != booked:
                entries.append(
                    Entry(
                        EntryKind.REVERSAL,
                        expected - booked,
                        Category.PNL,
                        {
                            "reverses": "realized_pnl",
                            "fill_id": str(fill_id),
                            "symbol": symbol,
                            "realized_before": fmt(booked),
                            "realized_after": fmt(expected),
                        },
                    )
                )
            self._append(c, ctx, entries, now)
            return fill

    def _replayed_realized(self, c: Any, account_id: uuid.UUID, symbol: str) -> Decimal:
        """Realized P&L of ``symbol`` re-derived from the non-voided fills, each at its own conversion rate."""
        inst = self._inst(symbol)
        rows = self.repo.live_fills_with_rates(c, account_id, symbol)
        pos: Position | None = None
        total = ZERO
        for r in rows:
            eff = apply_fill(pos, symbol, Side(r["side"]), r["quantity"], r["price"], inst.contract_size)
            pos = eff.position
            if eff.closed_quantity:
                total += money(CTX.multiply(eff.realized_quote, Decimal(r["rate"] or "1")))
        return total

    def _booked_realized(self, c: Any, account_id: uuid.UUID, symbol: str) -> Decimal:
        """Realized P&L of ``symbol`` as the ledger has it (fills' P&L plus every correction)."""
        return money(self.repo.booked_realized(c, account_id, symbol))

    def void_order(
        self, account_id: uuid.UUID, order_id: uuid.UUID, *, actor: str, reason: str, conn: Any | None = None
    ) -> Row:
        """Void an order: a resting one is voided; a filled one has each of its fills voided."""
        with self._tx(conn) as c:
            order = self.repo.order(c, account_id, order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found on this account", code="order_not_found")
            if order["status"] == "open":
                return self.cancel_order(account_id, order_id, conn=c, actor=actor, void=True, reason=reason)
            fills = self.repo.unvoided_fill_ids(c, order_id)
            if not fills:
                raise Conflict(f"order is {order['status']} and has no fill to void", code="nothing_to_void")
            for f in fills:
                self.void_fill(account_id, f["id"], actor=actor, reason=reason, conn=c)
            return self.repo.order_by_id(c, order_id)

    def _replay_position(self, c: Any, account_id: uuid.UUID, symbol: str) -> Position | None:
        """The position in ``symbol`` derived from the account's non-voided fills, in ledger order."""
        inst = self._inst(symbol)
        rows = self.repo.live_fills(c, account_id, symbol)
        return replay(symbol, [(Side(r["side"]), r["quantity"], r["price"]) for r in rows], inst.contract_size)

    def recompute(self, account_id: uuid.UUID, *, conn: Any | None = None) -> dict[str, Any]:
        """Fold the ledger and the fills back into balances and positions and compare with what is stored.

        On its own transaction the reads run in one REPEATABLE READ snapshot, so a concurrent writer can never
        make the ledger and the balances row look inconsistent."""
        with self._tx(conn) as c:
            if conn is None:
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            ctx = self._load(c, account_id, lock=False)
            rows = self.repo.ledger_totals_rows(c, account_id)
            totals = fold((r["amount"], r["category"], r["equity_after"]) for r in rows)
            bal = ctx.balance
            mismatches: list[dict[str, str]] = []
            for name, derived, stored in (
                ("cash", totals.cash, bal["cash"]),
                ("realized_pnl", totals.realized_pnl, bal["realized_pnl"]),
                ("fees", totals.fees, bal["fees"]),
                ("deposits", totals.deposits, bal["deposits"]),
                ("adjustments", totals.adjustments, bal["adjustments"]),
                ("high_watermark", totals.high_watermark, bal["high_watermark"]),
                ("ledger_seq", Decimal(totals.entries), Decimal(bal["ledger_seq"])),
            ):
                if derived != stored:
                    mismatches.append({"field": name, "ledger": fmt(derived), "stored": fmt(stored)})
            symbols = self.repo.fill_symbols(c, account_id) | set(ctx.positions)
            for s in sorted(symbols):
                derived_pos = self._replay_position(c, account_id, s)
                stored_pos = ctx.positions.get(s)
                dq = derived_pos.quantity if derived_pos else ZERO
                sq = stored_pos.quantity if stored_pos else ZERO
                dp = derived_pos.avg_price if derived_pos else ZERO
                sp = stored_pos.avg_price if stored_pos else ZERO
                if dq != sq or dp != sp:
                    mismatches.append(
                        {"field": f"position:{s}", "ledger": f"{fmt(dq)}@{fmt(dp)}", "stored": f"{fmt(sq)}@{fmt(sp)}"}
                    )
                replayed, booked = self._replayed_realized(c, account_id, s), self._booked_realized(c, account_id, s)
                if replayed != booked:
                    mismatches.append({"field": f"realized_pnl:{s}", "ledger": fmt(booked), "stored": fmt(replayed)})
            return {
                "account_id": str(account_id),
                "ok": not mismatches,
                "mismatches": mismatches,
                "entries": totals.entries,
                "cash": fmt(totals.cash),
                "realized_pnl": fmt(totals.realized_pnl),
                "fees": fmt(totals.fees),
                "deposits": fmt(totals.deposits),
            }

    # ------------------------------------------------------------------ reads
    def snapshot(self, account_id: uuid.UUID, *, conn: Any | None = None) -> Row:
        """Account, balances (equity marked at the latest quotes), positions with marks, and open orders."""
        with self._tx(conn) if conn is not None else self.db.read() as c:
            ctx = self._load(c, account_id, lock=False)
            val = ctx.valuation or self._valuate(ctx)
            marks = {m.symbol: m for m in val.marks}
            positions = []
            for s, p in sorted(ctx.positions.items()):
                m = marks.get(s)
                positions.append(
                    {
                        **_pos_json(p),
                        "mark_price": _s(m.mark) if m else None,
                        "unrealized_pnl": _s(money(m.unrealized)) if m else None,
                        "notional": _s(money(m.notional)) if m else None,
                    }
                )
            bal = ctx.balance
            equity = money(val.equity)
            return {
                "account": ctx.account,
                "status": ctx.status.value,
                "balance": {
                    "cash": bal["cash"],
                    "equity": equity,
                    "unrealized_pnl": money(val.unrealized),
                    "realized_pnl": bal["realized_pnl"],
                    "fees": bal["fees"],
                    "deposits": bal["deposits"],
                    "high_watermark": max(bal["high_watermark"], equity) if not val.missing else bal["high_watermark"],
                    "margin_used": money(CTX.divide(val.notional, ctx.policy.max_leverage)),
                    "ledger_seq": bal["ledger_seq"],
                    "marked_at": bal["marked_at"],
                },
                "positions": positions,
                "open_orders": ctx.resting,
                "missing_prices": list(val.missing),
                "as_of": self.clock.now(),
            }


def _s(d: Decimal | None) -> str | None:
    return fmt(d) if d is not None else None


def _pos_json(p: Position) -> dict[str, Any]:
    return {
        "symbol": p.symbol,
        "quantity": fmt(p.quantity),
        "side": "long" if p.quantity > 0 else "short",
        "avg_price": fmt(p.avg_price),
        "stop_loss": _s(p.stop_loss),
        "take_profit": _s(p.take_profit),
        "opened_at": p.opened_at,
    }


def _pos_evidence(p: Position | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "quantity": fmt(p.quantity),
        "avg_price": fmt(p.avg_price),
        "stop_loss": _s(p.stop_loss),
        "take_profit": _s(p.take_profit),
    }


def _order_evidence(req: OrderRequest) -> dict[str, Any]:
    return {
        "symbol": req.symbol,
        "side": req.side.value,
        "quantity": fmt(req.quantity),
        "order_type": req.order_type.value,
        "limit_price": _s(req.limit_price),
        "stop_price": _s(req.stop_price),
        "stop_loss": _s(req.stop_loss),
        "take_profit": _s(req.take_profit),
        "purpose": req.purpose.value,
    }


def _plain(d: Decimal | None) -> Decimal | None:
    """``d`` without the trailing zeros a NUMERIC(28,10) column adds (exact: such values have <= 28 digits), so
    the gates' decimal-places check sees the value a client sent, not the column's padding."""
    return d.normalize(CTX) if d is not None else None


def _request_from_row(o: Mapping[str, Any]) -> OrderRequest:
    return OrderRequest(
        o["symbol"],
        Side(o["side"]),
        o["quantity"],
        OrderType(o["order_type"]),
        _plain(o["limit_price"]),
        _plain(o["stop_price"]),
        _plain(o["stop_loss"]),
        _plain(o["take_profit"]),
        o["reduce_only"],
        OrderPurpose(o["purpose"]),
        o["client_order_id"],
    )


__all__ = [
    "AccountCtx",
    "CreateAccount",
    "ExecutionService",
    "JudgedPrices",
    "Metrics",
    "OrderOutcome",
    "Row",
    "SessionSource",
]
