"""The risk book built from a real PostgreSQL with set-based reads equals the exact per-account path.

Accounts are made through the execution service (challenge accounts on preset rulebooks, a bare execution account,
a JPY-quoted position in a USD account, SL/TP, resting limit and stop orders, a paused and a pending account):
``load`` reads them in five statements, every account's equity in the book equals the service's own valuation
(``valuate``), the levels equal the evaluator's stored state, and a later price judged by the book finds the
triggers the service then executes.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from propdesk.clock import ManualClock
from propdesk.domain.lifecycle import Mode, Trigger
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.domain.rules.engine import EngineState
from propdesk.engine.book import Kind, RiskBook
from propdesk.engine.load import load, read_specs
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore
from propdesk.rulebooks import load_rulebook

pytestmark = pytest.mark.integration

D = Decimal
MARKET = (
    ("EURUSD", "1.10000", "1.10020"),
    ("GBPUSD", "1.30000", "1.30020"),
    ("USDJPY", "150.000", "150.020"),
    ("EURJPY", "165.000", "165.030"),
    ("XAUUSD", "2000.00", "2000.50"),
)


def policy(start: Decimal = D(100000)) -> ExecutionPolicy:
    return ExecutionPolicy(
        starting_balance=start,
        max_notional=D(10) ** 9,
        max_position_equity_pct=D(100000),
        max_leverage=D(200),
        max_open_positions=10,
    )


@pytest.fixture
def market(quotes: QuoteStore, clock: ManualClock) -> QuoteStore:
    for symbol, bid, ask in MARKET:
        assert quotes.put(Quote(symbol, D(bid), D(ask), clock.now())) is not None
    return quotes


def challenge(service: ExecutionService, ref: str) -> uuid.UUID:
    book = load_rulebook(ref)
    acc, created = service.create_account(
        CreateAccount(
            owner_id=f"b-{uuid.uuid4().hex[:6]}",
            policy=policy(book.starting_balance),
            rulebook=book.to_json(),
            rulebook_id=book.id,
            rulebook_version=book.version,
            start=True,
        )
    )
    assert created
    return acc["id"]  # type: ignore[no-any-return]


def bare(service: ExecutionService, *, start: bool = True) -> uuid.UUID:
    acc, _ = service.create_account(CreateAccount(owner_id="bare", mode=Mode.AUDITION, policy=policy(), start=start))
    return acc["id"]  # type: ignore[no-any-return]


def latest(quotes: QuoteStore) -> list[Quote]:
    out = []
    for s, _, _ in MARKET:
        q = quotes.latest(s)
        assert q is not None
        out.append(q)
    return out


def exact_equity(service: ExecutionService, account_id: uuid.UUID) -> Decimal:
    with service.db.read() as c:
        ctx = service._load(c, account_id, lock=False)
        return service._valuate(ctx).equity


def test_load_reads_every_live_account_in_five_statements_and_equals_the_exact_valuation(
    service: ExecutionService, market: QuoteStore, clock: ManualClock
) -> None:
    a = challenge(service, "classic-2step@10k")
    b = challenge(service, "futures-trailing@50k")
    c = bare(service)
    paused = bare(service)
    pending = bare(service, start=False)
    for acc, reqs in (
        (
            a,
            [
                OrderRequest("EURUSD", Side.BUY, D("0.5"), stop_loss=D("1.09000"), take_profit=D("1.12000")),
                OrderRequest("EURJPY", Side.SELL, D("0.3")),
                OrderRequest("GBPUSD", Side.BUY, D("0.2"), OrderType.LIMIT, limit_price=D("1.29000")),
            ],
        ),
        (
            b,
            [
                OrderRequest("XAUUSD", Side.SELL, D("1"), stop_loss=D("2030.00")),
                OrderRequest("EURUSD", Side.SELL, D("0.4"), OrderType.STOP, stop_price=D("1.09500")),
            ],
        ),
        (c, [OrderRequest("USDJPY", Side.BUY, D("2")), OrderRequest("EURJPY", Side.BUY, D("1"))]),
        (paused, [OrderRequest("GBPUSD", Side.SELL, D("1"))]),
    ):
        for req in reqs:
            out = service.submit_order(acc, req)
            assert out.rejection is None, out.rejection
    service.apply_trigger(paused, Trigger.PAUSE, actor="admin", reason="hold")
    clock.advance(5)
    for symbol, bid, ask in (
        ("USDJPY", "151.500", "151.520"),
        ("EURJPY", "163.000", "163.030"),
        ("EURUSD", "1.10300", "1.10320"),
    ):
        market.put(Quote(symbol, D(bid), D(ask), clock.now()))

    statements: list[str] = []

    class Counting:
        def __init__(self, cur: Any) -> None:
            self.cur = cur

        def execute(self, query: Any, params: Any = None) -> Any:
            statements.append(str(query))
            return self.cur.execute(query, params)

    class CountingConn:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def cursor(self, **kw: Any) -> Counting:
            return Counting(self.conn.cursor(**kw))

    with service.db.read() as conn:
        book = load(CountingConn(conn), quotes=latest(market))
    assert len(statements) == 5
    assert len(book) == 4  # the pending account is not marked
    assert book.slot(pending) is None
    assert book.rulebooks == 2
    for acc in (a, b, c, paused):
        assert book.equity(acc) == pytest.approx(float(exact_equity(service, acc)), abs=1e-6)
    with service.db.read() as conn:
        specs = {s.account_id: s for s in read_specs(conn)}
        row = conn.execute("SELECT state FROM rule_states WHERE account_id=%s", (a,)).fetchone()
    st = EngineState.from_json(row["state"]["engine"])
    slot = book.slot(a)
    assert slot is not None
    assert st.daily_floor is not None and st.max_floor is not None
    assert book.daily[slot] == float(st.daily_floor)
    assert book.max_floor[slot] == float(st.max_floor)
    assert specs[a].state is not None and specs[a].state.initial == st.initial
    assert len(specs[a].orders) == 1 and len(specs[b].orders) == 1 and not specs[paused].orders
    # resting orders are held only for active accounts; the paused account's position is still marked
    assert book.positions == 6

    # a later price: the book's candidates are what the service then executes
    clock.advance(1)
    q = market.put(Quote("EURUSD", D("1.08990"), D("1.09000"), clock.now()))
    assert q is not None
    found = book.on_price("EURUSD", 1.0899, 1.09)
    got = {(book.account_id(int(x)), Kind(int(k))) for x, k in zip(found.account, found.kind, strict=True)}
    assert (a, Kind.SL) in got  # 1.0899 <= 1.09000
    assert (b, Kind.ORDER) in got  # sell stop at 1.09500: bid at or below it
    fired = service.on_quote(q)
    assert fired["protective"] >= 1 and fired["orders"] >= 1
    for acc in (a, b):
        assert book.equity(acc) is not None


def test_apply_account_after_a_command_equals_a_fresh_load(service: ExecutionService, market: QuoteStore) -> None:
    a = challenge(service, "classic-2step@10k")
    service.submit_order(a, OrderRequest("EURUSD", Side.BUY, D("0.5")))
    with service.db.read() as conn:
        book = load(conn, quotes=latest(market))
    service.submit_order(a, OrderRequest("USDJPY", Side.SELL, D("0.7"), take_profit=D("140.000")))
    service.close_position(a, "EURUSD")
    with service.db.read() as conn:
        spec = next(s for s in read_specs(conn) if s.account_id == a)
        fresh = RiskBook.load(conn, quotes=latest(market))
    book.apply_account(spec)
    x, y = book.slot(a), fresh.slot(a)
    assert x is not None and y is not None
    assert book.equity(a) == pytest.approx(fresh.equity(a), abs=1e-9)
    assert book.equity(a) == pytest.approx(float(exact_equity(service, a)), abs=1e-6)
    for name in ("cash", "daily", "max_floor", "lo_thr", "hi_thr", "npos"):
        u, v = getattr(book, name)[x], getattr(fresh, name)[y]
        assert u == v or (np.isnan(u) and np.isnan(v)), name
    assert book.positions == fresh.positions == 1
