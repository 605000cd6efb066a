"""No limit is exceeded by concurrency: orders released together behind a barrier against one account.

The account row lock (``SELECT ... FOR UPDATE``) serializes commands per account, so 50 simultaneous orders on
an account limited to 5 open positions end with exactly 5, every other order rejected with the reason, and the
ledger still folding into the balances.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from propdesk.clock import ManualClock
from propdesk.domain.errors import Conflict
from propdesk.domain.gates import Code
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService, OrderOutcome
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration

D = Decimal
ORDERS = 50
ROUNDS = 5
LIMIT = 5
# Notional, leverage and concentration limits far away, so the position count is the binding limit.
POLICY = ExecutionPolicy(
    max_open_positions=LIMIT, max_notional=D(10**9), max_leverage=D(10**4), max_position_equity_pct=D(10**6)
)
PRICES = {
    "EURUSD": "1.1",
    "GBPUSD": "1.3",
    "USDJPY": "150",
    "AUDUSD": "0.65",
    "USDCAD": "1.35",
    "USDCHF": "0.9",
    "NZDUSD": "0.6",
    "EURGBP": "0.85",
    "EURJPY": "165",
    "GBPJPY": "190",
    "XAUUSD": "2000",
    "XAGUSD": "25",
    "WTIUSD": "75",
    "US500": "5000",
    "US100": "18000",
    "US30": "39000",
    "AAPL": "200",
    "MSFT": "400",
    "NVDA": "900",
    "AMZN": "180",
    "TSLA": "200",
    "BTCUSD": "50000",
    "ETHUSD": "3000",
}
SYMBOLS = sorted(PRICES)

R = TypeVar("R")


def race(n: int, fn: Callable[[int], R]) -> list[R | BaseException]:
    """Run ``fn(0..n-1)`` on ``n`` threads released together by a barrier; exceptions are returned, not raised."""
    barrier = threading.Barrier(n)

    def run(i: int) -> R | BaseException:
        barrier.wait(timeout=30)
        try:
            return fn(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


@pytest.fixture
def market(quotes: QuoteStore, clock: ManualClock) -> QuoteStore:
    assert {i.symbol for i in DEFAULT_CATALOGUE} == set(PRICES)
    for symbol, px in PRICES.items():
        quotes.put(Quote(symbol, D(px), D(px), clock.now()))
    return quotes


def new_account(service: ExecutionService, policy: ExecutionPolicy = POLICY) -> uuid.UUID:
    acc, _ = service.create_account(CreateAccount(owner_id="racer", policy=policy, start=True))
    return acc["id"]  # type: ignore[no-any-return]


def min_lot(symbol: str) -> Decimal:
    inst = DEFAULT_CATALOGUE.get(symbol)
    assert inst is not None
    return inst.min_lot


def count(service: ExecutionService, query: str, *args: Any) -> int:
    with service.db.read() as c:
        row = c.execute(query, args).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def peak_open_positions(service: ExecutionService, acc: uuid.UUID) -> int:
    """The most positions the account ever held at once, replayed from its fills in ledger order."""
    with service.db.read() as c:
        fills = c.execute(
            "SELECT f.symbol, f.side, f.quantity FROM fills f JOIN ledger l ON l.fill_id = f.id"
            " WHERE f.account_id=%s ORDER BY l.seq",
            (acc,),
        ).fetchall()
    held: Counter[str] = Counter()
    peak = 0
    for f in fills:
        held[f["symbol"]] += f["quantity"] if f["side"] == "buy" else -f["quantity"]
        peak = max(peak, sum(1 for q in held.values() if q != 0))
    return peak


@pytest.mark.parametrize("round_no", range(ROUNDS))
def test_fifty_simultaneous_orders_never_open_more_positions_than_the_limit(
    service: ExecutionService, market: QuoteStore, round_no: int
) -> None:
    acc = new_account(service)
    # Each round spreads the orders differently over the symbols; some orders add to a position, some sell
    # out of one (freeing a slot for another symbol while the race is on).
    symbols = [SYMBOLS[(i * (round_no + 1)) % len(SYMBOLS)] for i in range(ORDERS)]
    sides = [Side.SELL if i % 3 == 2 else Side.BUY for i in range(ORDERS)]

    results = race(ORDERS, lambda i: service.submit_order(acc, OrderRequest(symbols[i], sides[i], min_lot(symbols[i]))))

    errors = [r for r in results if not isinstance(r, OrderOutcome)]
    assert errors == []
    outcomes = [r for r in results if isinstance(r, OrderOutcome)]
    open_now = count(service, "SELECT count(*) FROM positions WHERE account_id=%s", acc)
    peak = peak_open_positions(service, acc)
    violations = max(0, peak - LIMIT) + max(0, open_now - LIMIT)
    assert violations == 0
    assert peak == LIMIT  # the limit was reached, so it was the binding constraint
    codes = Counter(o.rejection.code for o in outcomes if o.rejection is not None)
    assert set(codes) == {Code.MAX_OPEN_POSITIONS}
    for o in outcomes:
        if o.rejection is not None:
            assert o.rejection.details == {"open_positions": LIMIT, "limit": LIMIT}
        else:
            assert o.fill is not None
    assert count(service, "SELECT count(*) FROM orders WHERE account_id=%s", acc) == ORDERS
    assert count(service, "SELECT count(*) FROM fills WHERE account_id=%s", acc) == ORDERS - sum(codes.values())
    report = service.recompute(acc)
    assert report["ok"], report


def test_simultaneous_orders_on_one_symbol_lose_no_update(service: ExecutionService, market: QuoteStore) -> None:
    acc = new_account(service)

    results = race(ORDERS, lambda i: service.submit_order(acc, OrderRequest("AAPL", Side.BUY, D(i + 1))))

    assert all(isinstance(r, OrderOutcome) and r.accepted for r in results), results
    with service.db.read() as c:
        row = c.execute("SELECT quantity, avg_price FROM positions WHERE account_id=%s", (acc,)).fetchone()
    assert row is not None
    assert row["quantity"] == sum(range(1, ORDERS + 1))
    assert row["avg_price"] == D(200)
    assert service.recompute(acc)["ok"]


def test_simultaneous_closes_close_a_position_once(service: ExecutionService, market: QuoteStore) -> None:
    acc = new_account(service)
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.5")))

    results = race(8, lambda i: service.close_position(acc, "EURUSD"))

    closed = [r for r in results if isinstance(r, OrderOutcome) and r.fill is not None]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(closed) == 1
    assert len(refused) == 7 and all(r.code == "no_position" for r in refused)
    assert count(service, "SELECT count(*) FROM fills WHERE account_id=%s", acc) == 2
    assert service.recompute(acc)["ok"]


@pytest.mark.parametrize("attempt", range(3))
def test_simultaneous_account_creation_with_one_idempotency_key_creates_one_account(
    service: ExecutionService, attempt: int
) -> None:
    key = f"signup-{uuid.uuid4()}"
    cmd = CreateAccount(owner_id="alice", idempotency_key=key, request_hash="h1", start=True)

    results = race(2, lambda i: service.create_account(cmd))

    assert not [r for r in results if isinstance(r, BaseException)], results
    pairs = [r for r in results if isinstance(r, tuple)]
    assert sorted(created for _, created in pairs) == [False, True]
    assert len({acc["id"] for acc, _ in pairs}) == 1
    assert count(service, "SELECT count(*) FROM accounts WHERE idempotency_key=%s", key) == 1
    acc_id = pairs[0][0]["id"]
    assert count(service, "SELECT count(*) FROM ledger WHERE account_id=%s AND kind='deposit'", acc_id) == 1
    assert service.recompute(acc_id)["ok"]


def test_an_idempotency_key_reused_with_another_request_is_a_conflict(service: ExecutionService) -> None:
    service.create_account(CreateAccount(owner_id="alice", idempotency_key="k-1", request_hash="h1"))

    again, created = service.create_account(CreateAccount(owner_id="alice", idempotency_key="k-1", request_hash="h1"))
    assert not created
    with pytest.raises(Conflict) as excinfo:
        service.create_account(CreateAccount(owner_id="alice", idempotency_key="k-1", request_hash="h2"))

    assert excinfo.value.code == "idempotency_key_reused"
    assert count(service, "SELECT count(*) FROM accounts") == 1
    assert again["idempotency_key"] == "k-1"
