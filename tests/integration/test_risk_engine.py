"""The live risk engine (engine/live.py) on a real PostgreSQL: the book finds candidates, the execution core decides.

Every kind of trigger is executed exactly once through the engine; a dip inside a window (or one that recovered
before the lock) is judged at the dip; a change event brings a new position into the book; two engines racing on
one candidate execute it once; and a random scenario ends with the same fills and statuses as the per-account path.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from propdesk.clock import ManualClock
from propdesk.db.database import Database
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.lifecycle import Trigger
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.engine.live import RiskEngine
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore
from propdesk.rulebooks import parse_text

pytestmark = pytest.mark.integration

D = Decimal
ROLE_PREFIX = "pdtest"
SYMBOLS = ("EURUSD", "GBPUSD")
START = {"EURUSD": ("1.10000", "1.10020"), "GBPUSD": ("1.30000", "1.30020")}

DAILY = """
id: engine-daily
starting_balance: "10000"
timezone: Europe/Prague
rules:
  max_daily_loss: {pct: 3, base: initial_balance}
  max_loss: {pct: 6, mode: static}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 50}}
"""


# ---------------------------------------------------------------- helpers
def rows(db: Database, query: str, *args: Any) -> list[dict[str, Any]]:
    with db.read() as c:
        return c.execute(query, args).fetchall()  # type: ignore[no-any-return]


def put(quotes: QuoteStore, clock: ManualClock, symbol: str, bid: str, ask: str, advance: float = 1.0) -> Quote:
    clock.advance(advance)
    q = quotes.put(Quote(symbol, D(bid), D(ask), clock.now()))
    assert q is not None
    return q


def open_account(service: ExecutionService, policy: ExecutionPolicy | None = None, **kw: Any) -> uuid.UUID:
    acc, created = service.create_account(
        CreateAccount(owner_id=f"o-{uuid.uuid4().hex[:8]}", policy=policy or ExecutionPolicy(), start=True, **kw)
    )
    assert created
    return acc["id"]  # type: ignore[no-any-return]


def fills(db: Database, account_id: uuid.UUID) -> list[dict[str, Any]]:
    return rows(
        db,
        "SELECT f.symbol, f.side, f.quantity, f.price, o.purpose FROM fills f JOIN orders o ON o.id = f.order_id"
        " WHERE f.account_id=%s ORDER BY f.created_at, f.id",
        account_id,
    )


def status(db: Database, account_id: uuid.UUID) -> str:
    return str(rows(db, "SELECT status FROM accounts WHERE id=%s", account_id)[0]["status"])


def engine_for(service: ExecutionService, quotes: QuoteStore, **kw: Any) -> RiskEngine:
    latest = [q for q in (quotes.latest(s) for s in DEFAULT_CATALOGUE.symbols()) if q is not None]
    return RiskEngine.open(service, service.db, DEFAULT_CATALOGUE, latest, **kw)


@pytest.fixture
def market(quotes: QuoteStore, clock: ManualClock) -> QuoteStore:
    for s, (b, a) in START.items():
        assert quotes.put(Quote(s, D(b), D(a), clock.now())) is not None
    return quotes


@pytest.fixture
def wired(service: ExecutionService, market: QuoteStore) -> Iterator[RiskEngine]:
    """The in-process wiring: the engine follows the outbox and ``service.on_quote`` delegates to it."""
    engine = engine_for(service, market, follow_outbox=True)
    service.risk_engine = engine
    yield engine
    engine.close()


@pytest.fixture(autouse=True)
def _recompute_every_account_after_the_test(database: Database, service: ExecutionService) -> Iterator[None]:
    yield
    for a in rows(database, "SELECT id FROM accounts"):
        report = service.recompute(a["id"])
        assert report["ok"], report


# ---------------------------------------------------------------- each kind, exactly once
def test_a_stop_loss_is_executed_once_through_the_engine(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))

    out = service.on_quote(put(market, clock, "EURUSD", "1.09850", "1.09870"))
    again = service.on_quote(put(market, clock, "EURUSD", "1.09800", "1.09820"))

    assert out["protective"] == 1 and out["executed"] == 1 and out["failed"] == 0
    assert again["protective"] == 0
    closing = [f for f in fills(database, acc) if f["purpose"] == "stop_loss"]
    assert len(closing) == 1 and closing[0]["price"] == D("1.09860")
    assert rows(database, "SELECT 1 FROM positions WHERE account_id=%s", acc) == []
    assert wired.stats.price_to_committed and wired.stats.price_to_candidate


def test_a_take_profit_is_executed_once(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("GBPUSD", Side.SELL, D("0.1"), take_profit=D("1.2950")))

    out = service.on_quote(put(market, clock, "GBPUSD", "1.29400", "1.29420"))
    service.on_quote(put(market, clock, "GBPUSD", "1.29300", "1.29320"))

    assert out["protective"] == 1
    assert [f["purpose"] for f in fills(database, acc)] == ["client", "take_profit"]


def test_a_resting_order_is_filled_once(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    placed = service.submit_order(
        acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), OrderType.LIMIT, limit_price=D("1.0950"))
    )
    assert placed.order["status"] == "open"

    out = service.on_quote(put(market, clock, "EURUSD", "1.09400", "1.09450"))
    service.on_quote(put(market, clock, "EURUSD", "1.09300", "1.09350"))

    assert out["orders"] == 1
    assert rows(database, "SELECT status FROM orders WHERE id=%s", placed.order["id"])[0]["status"] == "filled"
    assert len(fills(database, acc)) == 1


def test_the_safety_net_liquidates_once(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    policy = ExecutionPolicy(
        starting_balance=D(10000), max_notional=D(10) ** 9, max_position_equity_pct=D(100000), max_leverage=D(200)
    )
    acc = open_account(service, policy)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("5")))  # 550,000 EUR: 1% is 5,500 USD

    out = service.on_quote(put(market, clock, "EURUSD", "1.09000", "1.09020"))
    service.on_quote(put(market, clock, "EURUSD", "1.08000", "1.08020"))

    assert out["liquidations"] == 1
    assert status(database, acc) == "liquidated"
    assert [f["purpose"] for f in fills(database, acc)] == ["client", "liquidation"]


def challenge(service: ExecutionService) -> uuid.UUID:
    book = parse_text(DAILY, "engine-daily")
    policy = ExecutionPolicy(
        starting_balance=D(10000), max_notional=D(10) ** 9, max_position_equity_pct=D(100000), max_leverage=D(200)
    )
    return open_account(service, policy, rulebook=book.to_json(), rulebook_id=book.id, rulebook_version=book.version)


def test_a_daily_floor_breach_fails_the_account_once(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = challenge(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.4")))  # 40,000 EUR; the daily floor is 9,700

    service.on_quote(put(market, clock, "EURUSD", "1.09500", "1.09520"))  # -0.45%: about -200
    assert status(database, acc) == "active"
    out = service.on_quote(put(market, clock, "EURUSD", "1.09000", "1.09020"))  # -0.9%: about -400 < -300
    service.on_quote(put(market, clock, "EURUSD", "1.08500", "1.08520"))

    assert out["executed"] == 1
    assert status(database, acc) == "failed"
    assert len(rows(database, "SELECT 1 FROM violations WHERE account_id=%s AND kind='breach'", acc)) == 1
    assert [f["purpose"] for f in fills(database, acc)][-1] != "client"


# ---------------------------------------------------------------- the dip counts
def test_a_dip_inside_a_window_that_recovers_is_judged_at_the_dip(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    engine = engine_for(service, market)
    dip = put(market, clock, "EURUSD", "1.09850", "1.09870")
    back = put(market, clock, "EURUSD", "1.10050", "1.10070")  # the latest: far above the stop

    out = engine.on_quotes([dip, back])

    assert out["protective"] == 1
    closing = fills(database, acc)[-1]
    assert closing["purpose"] == "stop_loss" and closing["price"] == D("1.09860")  # at the dip, not the latest
    evidence = rows(database, "SELECT evidence FROM ledger WHERE account_id=%s AND kind='fill'", acc)[-1]
    assert evidence["evidence"]["quote"] == dip.evidence()
    engine.close()


def test_a_dip_that_recovered_before_the_lock_is_still_judged_at_the_dip(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    dip = put(market, clock, "EURUSD", "1.09850", "1.09870")
    put(market, clock, "EURUSD", "1.10050", "1.10070")

    assert service.process_triggers(acc)["protective"] == 0  # at the latest alone: nothing
    assert service.process_triggers(acc, at_quote=dip)["protective"] == 1
    assert service.process_triggers(acc, at_quote=dip)["protective"] == 0  # exactly once
    assert fills(database, acc)[-1]["price"] == D("1.09860")


def test_a_triggering_quote_older_than_the_position_is_ignored(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    dip = put(market, clock, "EURUSD", "1.09850", "1.09870")
    put(market, clock, "EURUSD", "1.10050", "1.10070")
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))

    assert service.process_triggers(acc, at_quote=dip)["protective"] == 0
    assert len(fills(database, acc)) == 1


# ---------------------------------------------------------------- change events
def test_an_account_changed_event_brings_a_new_position_into_the_book(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    engine = engine_for(service, market)  # follows nothing by itself: events are handed in
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    assert engine.book.slot(acc) is None

    event = {"event_id": str(uuid.uuid4()), "type": "account.changed", "version": 1, "payload": {}}
    event["account_id"] = str(acc)
    engine.on_event(event)
    engine.on_event(event)  # redelivered: harmless
    engine.on_event({**event, "type": "order.filled"})  # not for the book
    assert engine.book.slot(acc) is not None

    out = engine.on_quote(put(market, clock, "EURUSD", "1.09850", "1.09870"))
    assert out["protective"] == 1
    assert [f["purpose"] for f in fills(database, acc)] == ["client", "stop_loss"]
    engine.close()


def test_events_of_accounts_another_shard_owns_are_ignored(
    service: ExecutionService, market: QuoteStore, database: Database
) -> None:
    engine = engine_for(service, market, owns=lambda a: False)
    acc = open_account(service)
    engine.on_event({"event_id": str(uuid.uuid4()), "type": "account.changed", "account_id": str(acc), "payload": {}})
    assert engine.book.slot(acc) is None and len(engine.book) == 0
    engine.close()


def test_resync_rebuilds_the_book_from_postgresql(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    engine = engine_for(service, market)
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    assert engine.resync() == 1
    assert engine.book.slot(acc) is not None
    assert engine.on_quote(put(market, clock, "EURUSD", "1.09850", "1.09870"))["protective"] == 1
    engine.close()


def test_a_failure_is_isolated_to_its_account(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    a, b = open_account(service), open_account(service)
    for acc in (a, b):
        service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    engine = engine_for(service, market)
    real = service.process_triggers

    def flaky(account_id: uuid.UUID, **kw: Any) -> dict[str, int]:
        if account_id == a:
            raise RuntimeError("boom")
        return real(account_id, **kw)

    engine.execution = type("Core", (), {"process_triggers": staticmethod(flaky), "db": service.db})()
    out = engine.on_quote(put(market, clock, "EURUSD", "1.09850", "1.09870"))

    assert out["failed"] == 1 and out["executed"] == 1
    assert len(fills(database, a)) == 1 and len(fills(database, b)) == 2
    engine.close()


# ---------------------------------------------------------------- races
def test_two_engines_racing_on_one_candidate_execute_it_once(
    service: ExecutionService, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    accounts = [open_account(service) for _ in range(6)]
    for acc in accounts:
        service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    one, two = engine_for(service, market), engine_for(service, market)
    dip = put(market, clock, "EURUSD", "1.09850", "1.09870")
    start = threading.Barrier(2)
    results: list[dict[str, int]] = []

    def run(engine: RiskEngine) -> None:
        start.wait()
        results.append(engine.on_quote(dip))

    threads = [threading.Thread(target=run, args=(e,)) for e in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r["protective"] for r in results) == len(accounts)
    assert sum(r["candidates"] for r in results) == 2 * len(accounts)
    for acc in accounts:
        assert [f["purpose"] for f in fills(database, acc)] == ["client", "stop_loss"]
    one.close()
    two.close()


# ---------------------------------------------------------------- equivalence with the per-account path
@pytest.fixture
def second_database(pg_admin_url: str, template_db: str) -> Iterator[Database]:
    name = f"pdt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
        )
    params = conninfo_to_dict(pg_admin_url)
    params["dbname"] = name
    db = Database(make_conninfo(**params), ROLE_PREFIX, pool_size=12)  # type: ignore[arg-type]
    yield db
    db.close()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def scenario(
    db: Database, t0: datetime, seed: int, *, engine: bool
) -> list[tuple[list[tuple[Any, ...]], str, Decimal]]:
    """The same random accounts, orders and price path; per account (in creation order): fills, status, cash."""
    rnd = random.Random(seed)
    clock = ManualClock(t0)
    quotes = QuoteStore(db)
    service = ExecutionService(db, clock, DEFAULT_CATALOGUE, quotes)
    mids = {"EURUSD": D("1.10000"), "GBPUSD": D("1.30000")}

    def tick(symbol: str) -> Quote:
        clock.advance(1)
        q = quotes.put(Quote(symbol, mids[symbol], mids[symbol] + D("0.0002"), clock.now()))
        assert q is not None
        return q

    for s in SYMBOLS:
        tick(s)
    policy = ExecutionPolicy(
        starting_balance=D(20000), max_notional=D(10) ** 9, max_position_equity_pct=D(100000), max_leverage=D(200)
    )
    accounts = []
    for _ in range(12):
        acc = open_account(service, policy)
        accounts.append(acc)
        for s in rnd.sample(SYMBOLS, rnd.randint(1, 2)):
            side = rnd.choice([Side.BUY, Side.SELL])
            qty = D(rnd.choice(["0.1", "0.5", "1", "2"]))
            off = D(rnd.choice([30, 60, 100])) / 10000
            sl = mids[s] - side.sign * off if rnd.random() < 0.6 else None
            tp = mids[s] + side.sign * off if rnd.random() < 0.4 else None
            service.submit_order(acc, OrderRequest(s, side, qty, stop_loss=sl, take_profit=tp))
        if rnd.random() < 0.5:
            s = rnd.choice(SYMBOLS)
            px = mids[s] - D(rnd.choice([20, 50, 80])) / 10000
            service.submit_order(acc, OrderRequest(s, Side.BUY, D("0.2"), OrderType.LIMIT, limit_price=px))
    live: RiskEngine | None = None
    if engine:
        live = engine_for(service, quotes, follow_outbox=True)
        service.risk_engine = live
    for _ in range(40):
        s = rnd.choice(SYMBOLS)
        mids[s] = (mids[s] * (1 + D(rnd.randint(-40, 40)) / 10000)).quantize(D("0.00001"))
        service.on_quote(tick(s))
    if live is not None:
        live.close()
    out = []
    for acc in accounts:
        fs = sorted((f["symbol"], f["side"], f["quantity"], f["price"], f["purpose"]) for f in fills(db, acc))
        bal = rows(db, "SELECT cash FROM balances WHERE account_id=%s", acc)[0]["cash"]
        out.append((fs, status(db, acc), bal))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engine_path_ends_where_the_per_account_path_does(
    database: Database, second_database: Database, clock: ManualClock, seed: int
) -> None:
    old = scenario(database, clock.now(), seed, engine=False)
    new = scenario(second_database, clock.now(), seed, engine=True)

    assert new == old
    assert any(len(fs) > 2 for fs, _, _ in old) or any(st != "active" for _, st, _ in old)  # something fired


def test_complete_with_flatten_keeps_the_book_in_step(
    service: ExecutionService, wired: RiskEngine, market: QuoteStore, clock: ManualClock, database: Database
) -> None:
    acc = open_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
    service.apply_trigger(acc, Trigger.COMPLETE, actor="test", flatten=True)
    out = service.on_quote(put(market, clock, "EURUSD", "1.09850", "1.09870"))
    assert out["protective"] == 0 and wired.book.slot(acc) is None


# ---------------------------------------------------------------- wiring
def test_a_platform_runs_the_engine_in_process_by_default_and_not_when_off(db_url: str, clock: ManualClock) -> None:
    from tests.web_kit import open_test_platform

    platform = open_test_platform(db_url, clock)
    try:
        engine = platform.execution.risk_engine
        assert isinstance(engine, RiskEngine) and engine.follow_outbox
        platform.quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now()))
        acc = open_account(platform.execution)
        platform.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.0990")))
        out = platform.execution.on_quote(put(platform.quotes, clock, "EURUSD", "1.09850", "1.09870"))
        assert out["protective"] == 1 and out["executed"] == 1
        assert b"propdesk_risk_price_to_committed_seconds_count 1.0" in platform.metrics.render()
    finally:
        platform.close()
    off = open_test_platform(db_url, clock, risk_engine="off")
    try:
        assert off.execution.risk_engine is None
    finally:
        off.close()
