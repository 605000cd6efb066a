"""No money is created or lost: a hypothesis state machine drives random commands through the execution service
on a real PostgreSQL and checks after every step that the balances are the fold of the append-only ledger and the
positions the replay of the fills.

One database per test; each example gets a fresh account in ``initialize`` (and completes it in ``teardown`` so
the quote handler stops visiting it).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from propdesk.clock import ManualClock
from propdesk.db.database import Database
from propdesk.domain.errors import Conflict, IllegalTransition
from propdesk.domain.instruments import DEFAULT_CATALOGUE, Instrument
from propdesk.domain.ledger import fold
from propdesk.domain.lifecycle import TERMINAL, Status, Trigger
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.policy import ExecutionPolicy, SlippageModel
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration

D = Decimal
START_MIDS = {"EURUSD": D("1.10000"), "USDJPY": D("150.000"), "AAPL": D("200.00")}
SYMBOLS = sorted(START_MIDS)
# Lots per order, in lot steps: EURUSD/USDJPY 0.01-0.30, AAPL 1-100 shares.
STEPS_MAX = {"EURUSD": 30, "USDJPY": 30, "AAPL": 100}
# Spread fills: deterministic for a given example (random-bps slippage is keyed by the random order id, which would
# make a failing example impossible to replay and shrink).
POLICY = ExecutionPolicy(slippage_model=SlippageModel.SPREAD, max_open_orders=6)
STEP_COUNT = 15


def inst(symbol: str) -> Instrument:
    i = DEFAULT_CATALOGUE.get(symbol)
    assert i is not None
    return i


def on_grid(symbol: str, px: Decimal) -> Decimal:
    return px.quantize(D(1).scaleb(-inst(symbol).price_precision))


symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from([Side.BUY, Side.SELL])
steps = st.integers(min_value=1, max_value=100)
moves_bp = st.integers(min_value=-120, max_value=120)  # a tick moves the mid by up to 1.2%
protect_bp = st.one_of(st.none(), st.integers(min_value=-10, max_value=150))  # SL/TP distance (< 0: wrong side)
lifecycle_triggers = st.sampled_from(
    [Trigger.PAUSE, Trigger.RESUME, Trigger.LOCK, Trigger.DAY_PAUSE, Trigger.DAY_START, Trigger.START]
)
picks = st.integers(min_value=0, max_value=10**6)  # which of the existing rows a rule acts on (index modulo count)


@pytest.mark.timeout(120)
def test_balances_always_fold_from_the_ledger_whatever_the_commands(
    database: Database, quotes: QuoteStore, clock: ManualClock
) -> None:
    failures: list[tuple[str, dict[str, Any]]] = []

    def log(event: str, **kw: Any) -> None:
        failures.append((event, kw))

    service = ExecutionService(database, clock, DEFAULT_CATALOGUE, quotes, log=log)

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.acc: uuid.UUID = uuid.uuid4()
            self.mids = dict(START_MIDS)
            self.client_ids: list[str] = []

        # ------------------------------------------------------------ helpers
        def quote(self, symbol: str) -> Quote:
            mid = self.mids[symbol]
            half = inst(symbol).tick_size * 2
            clock.advance(1)
            stored = quotes.put(Quote(symbol, mid - half, mid + half, clock.now()))
            assert stored is not None
            return stored

        def rows(self, query: str, *args: Any) -> list[dict[str, Any]]:
            with database.read() as c:
                return c.execute(query, args).fetchall()

        def lots(self, symbol: str, n: int) -> Decimal:
            return inst(symbol).lot_step * min(n, STEPS_MAX[symbol])

        def state(self) -> tuple[Any, ...]:
            [bal] = self.rows("SELECT * FROM balances WHERE account_id=%s", self.acc)
            counts = self.rows(
                "SELECT (SELECT count(*) FROM ledger WHERE account_id=%s) AS l,"
                " (SELECT count(*) FROM orders WHERE account_id=%s) AS o,"
                " (SELECT count(*) FROM fills WHERE account_id=%s) AS f",
                self.acc,
                self.acc,
                self.acc,
            )
            positions = self.rows(
                "SELECT symbol, quantity, avg_price FROM positions WHERE account_id=%s ORDER BY symbol", self.acc
            )
            return bal["cash"], bal["ledger_seq"], counts[0]["l"], counts[0]["o"], counts[0]["f"], positions

        # ------------------------------------------------------------ lifecycle of an example
        @initialize()
        def open_account(self) -> None:
            for s in SYMBOLS:
                self.quote(s)
            acc, created = service.create_account(
                CreateAccount(owner_id=f"sm-{uuid.uuid4().hex[:8]}", policy=POLICY, start=True)
            )
            assert created
            self.acc = acc["id"]

        def teardown(self) -> None:
            status = Status(self.rows("SELECT status FROM accounts WHERE id=%s", self.acc)[0]["status"])
            if status not in TERMINAL:
                service.apply_trigger(self.acc, Trigger.COMPLETE, actor="test", flatten=True)

        # ------------------------------------------------------------ rules
        @rule(symbol=symbols, side=sides, n=steps, with_id=st.booleans(), sl_bp=protect_bp, tp_bp=protect_bp)
        def market_order(
            self, symbol: str, side: Side, n: int, with_id: bool, sl_bp: int | None, tp_bp: int | None
        ) -> None:
            cid = f"c-{len(self.client_ids)}" if with_id else None
            mid = self.mids[symbol]
            sl = on_grid(symbol, mid * (1 - D(side.sign * sl_bp) / 10000)) if sl_bp is not None else None
            tp = on_grid(symbol, mid * (1 + D(side.sign * tp_bp) / 10000)) if tp_bp is not None else None
            out = service.submit_order(
                self.acc,
                OrderRequest(symbol, side, self.lots(symbol, n), stop_loss=sl, take_profit=tp, client_order_id=cid),
            )
            if cid is not None:
                self.client_ids.append(cid)
            assert (out.fill is not None) == out.accepted
            if out.fill is not None:
                assert out.fill["quote"]["symbol"] == symbol

        @rule(symbol=symbols, fraction=st.sampled_from([D("0.25"), D("0.5"), D("0.75")]))
        def partial_close(self, symbol: str, fraction: Decimal) -> None:
            pos = self.rows("SELECT quantity FROM positions WHERE account_id=%s AND symbol=%s", self.acc, symbol)
            if not pos:
                with pytest.raises(Conflict):
                    service.close_position(self.acc, symbol, inst(symbol).min_lot)
                return
            step = inst(symbol).lot_step
            qty = max(step, (abs(pos[0]["quantity"]) * fraction / step).to_integral_value() * step)
            qty = min(qty, abs(pos[0]["quantity"]))
            service.close_position(self.acc, symbol, qty)

        @rule(symbol=symbols)
        def full_close(self, symbol: str) -> None:
            if not self.rows("SELECT 1 FROM positions WHERE account_id=%s AND symbol=%s", self.acc, symbol):
                with pytest.raises(Conflict, match="no open"):
                    service.close_position(self.acc, symbol)
                return
            out = service.close_position(self.acc, symbol)
            if out.accepted:
                assert not self.rows("SELECT 1 FROM positions WHERE account_id=%s AND symbol=%s", self.acc, symbol)

        @rule(symbol=symbols, side=sides, n=steps, away_bp=st.integers(min_value=-20, max_value=60), stop=st.booleans())
        def place_resting_order(self, symbol: str, side: Side, n: int, away_bp: int, stop: bool) -> None:
            # Limits below (buy) / above (sell) the market rest; stops the other way round. A negative distance
            # makes the order marketable at once.
            direction = -side.sign if not stop else side.sign
            px = on_grid(symbol, self.mids[symbol] * (1 + D(direction * away_bp) / 10000))
            order_type = OrderType.STOP if stop else OrderType.LIMIT
            kw = {"stop_price": px} if stop else {"limit_price": px}
            service.submit_order(self.acc, OrderRequest(symbol, side, self.lots(symbol, n), order_type, **kw))

        @rule(pick=picks)
        def cancel(self, pick: int) -> None:
            # Rows are ordered by their ledger sequence, never by random ids, so an example replays exactly.
            open_orders = self.rows(
                "SELECT o.id FROM orders o JOIN ledger l ON l.order_id = o.id AND"
                " l.kind = 'order_accepted' WHERE o.account_id=%s AND o.status='open'"
                " ORDER BY l.seq",
                self.acc,
            )
            if not open_orders:
                return
            order = open_orders[pick % len(open_orders)]
            assert service.cancel_order(self.acc, order["id"])["status"] == "cancelled"

        @rule(symbol=symbols, move=moves_bp)
        def tick(self, symbol: str, move: int) -> None:
            self.mids[symbol] = on_grid(symbol, self.mids[symbol] * (1 + D(move) / 10000))
            service.on_quote(self.quote(symbol))

        @rule(trigger=lifecycle_triggers)
        def lifecycle(self, trigger: Trigger) -> None:
            before = self.state()
            try:
                service.apply_trigger(self.acc, trigger, actor="admin:test")
            except IllegalTransition:
                assert self.state() == before

        @rule()
        def mark_to_market(self) -> None:
            service.mark_to_market(self.acc)

        @rule(pick=picks)
        def void_a_fill(self, pick: int) -> None:
            fills = self.rows(
                "SELECT f.id FROM fills f JOIN ledger l ON l.fill_id = f.id LEFT JOIN fill_voids v"
                " ON v.fill_id = f.id WHERE f.account_id=%s AND v.fill_id IS NULL ORDER BY l.seq",
                self.acc,
            )
            if not fills:
                return
            fill = fills[pick % len(fills)]
            service.void_fill(self.acc, fill["id"], actor="admin:test", reason="state machine")

        @rule(pick=picks, symbol=symbols, side=sides, n=steps)
        def duplicate_client_order_id(self, pick: int, symbol: str, side: Side, n: int) -> None:
            if not self.client_ids:
                return
            cid = self.client_ids[pick % len(self.client_ids)]
            before = self.state()
            with pytest.raises(Conflict) as excinfo:
                service.submit_order(self.acc, OrderRequest(symbol, side, self.lots(symbol, n), client_order_id=cid))
            assert excinfo.value.code == "duplicate_client_order_id"
            assert self.state() == before

        # ------------------------------------------------------------ invariants
        @invariant()
        def balances_fold_from_the_ledger(self) -> None:
            report = service.recompute(self.acc)
            assert report["ok"], report
            ledger = self.rows(
                "SELECT seq, amount, category, equity_after FROM ledger WHERE account_id=%s ORDER BY seq", self.acc
            )
            [bal] = self.rows("SELECT * FROM balances WHERE account_id=%s", self.acc)
            totals = fold((r["amount"], r["category"], r["equity_after"]) for r in ledger)
            assert bal["cash"] == totals.cash == sum((r["amount"] for r in ledger), D(0))
            assert (
                [r["seq"] for r in ledger] == list(range(1, len(ledger) + 1)) == list(range(1, bal["ledger_seq"] + 1))
            )
            assert bal["fees"] == totals.fees >= 0
            assert bal["deposits"] == POLICY.starting_balance

        @invariant()
        def no_trigger_failed_silently(self) -> None:
            assert failures == []

    run_state_machine_as_test(LedgerMachine, settings=settings(stateful_step_count=STEP_COUNT, deadline=None))
