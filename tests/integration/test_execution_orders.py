"""The execution service on a real PostgreSQL: orders, triggers, protective levels, lifecycle and corrections.

Every test ends with ``recompute`` over every account in its database (an autouse fixture): whatever a scenario
did, balances equal the fold of the ledger and positions equal the replay of the fills.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from propdesk.clock import ManualClock
from propdesk.domain.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from propdesk.domain.gates import Code
from propdesk.domain.lifecycle import Trigger
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration

D = Decimal
START = D(100000)


# ---------------------------------------------------------------- helpers
def tick(
    quotes: QuoteStore,
    service: ExecutionService,
    clock: ManualClock,
    symbol: str,
    bid: str,
    ask: str,
    *,
    advance: float = 1.0,
) -> dict[str, int]:
    """Move the clock, store a quote and let the service react to it (as the market-data worker does)."""
    clock.advance(advance)
    stored = quotes.put(Quote(symbol, D(bid), D(ask), clock.now()))
    assert stored is not None
    return service.on_quote(stored)


def rows(service: ExecutionService, query: str, *args: Any) -> list[dict[str, Any]]:
    with service.db.read() as c:
        return c.execute(query, args).fetchall()  # type: ignore[no-any-return]


def one(service: ExecutionService, query: str, *args: Any) -> dict[str, Any] | None:
    found = rows(service, query, *args)
    assert len(found) <= 1
    return found[0] if found else None


def ledger(service: ExecutionService, account_id: uuid.UUID, kind: str | None = None) -> list[dict[str, Any]]:
    if kind is None:
        return rows(service, "SELECT * FROM ledger WHERE account_id=%s ORDER BY seq", account_id)
    return rows(service, "SELECT * FROM ledger WHERE account_id=%s AND kind=%s ORDER BY seq", account_id, kind)


def cash(service: ExecutionService, account_id: uuid.UUID) -> Decimal:
    row = one(service, "SELECT cash FROM balances WHERE account_id=%s", account_id)
    assert row is not None
    return row["cash"]  # type: ignore[no-any-return]


def position(service: ExecutionService, account_id: uuid.UUID, symbol: str) -> dict[str, Any] | None:
    return one(service, "SELECT * FROM positions WHERE account_id=%s AND symbol=%s", account_id, symbol)


def order_row(service: ExecutionService, order_id: uuid.UUID) -> dict[str, Any]:
    row = one(service, "SELECT * FROM orders WHERE id=%s", order_id)
    assert row is not None
    return row


def open_account(
    service: ExecutionService, policy: ExecutionPolicy | None = None, *, owner: str = "alice", start: bool = True
) -> uuid.UUID:
    acc, created = service.create_account(
        CreateAccount(owner_id=owner, policy=policy or ExecutionPolicy(), start=start)
    )
    assert created
    return acc["id"]  # type: ignore[no-any-return]


def buy(symbol: str, qty: str, **kw: Any) -> OrderRequest:
    return OrderRequest(symbol, Side.BUY, D(qty), **kw)


def sell(symbol: str, qty: str, **kw: Any) -> OrderRequest:
    return OrderRequest(symbol, Side.SELL, D(qty), **kw)


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def market(quotes: QuoteStore, clock: ManualClock) -> QuoteStore:
    """Fresh quotes at T0 for the symbols these tests trade."""
    for symbol, bid, ask in (
        ("EURUSD", "1.10000", "1.10020"),
        ("GBPUSD", "1.30000", "1.30020"),
        ("USDJPY", "150.000", "150.000"),
        ("AAPL", "200.00", "200.10"),
        ("BTCUSD", "50000.00", "50000.00"),
    ):
        assert quotes.put(Quote(symbol, D(bid), D(ask), clock.now())) is not None
    return quotes


@pytest.fixture
def acc(service: ExecutionService, market: QuoteStore) -> uuid.UUID:
    return open_account(service)


@pytest.fixture(autouse=True)
def _recompute_every_account_after_the_test(service: ExecutionService) -> Iterator[None]:
    yield
    accounts = rows(service, "SELECT id FROM accounts ORDER BY created_at")
    for a in accounts:
        report = service.recompute(a["id"])
        assert report["ok"], report


# ---------------------------------------------------------------- accounts
def test_a_new_account_is_funded_by_a_deposit_entry_and_starts_pending(service: ExecutionService) -> None:
    acc_id = open_account(service, start=False)

    snap = service.snapshot(acc_id)
    assert snap["status"] == "pending"
    assert snap["balance"]["cash"] == START
    assert [e["kind"] for e in ledger(service, acc_id)] == ["account_created", "deposit"]
    assert ledger(service, acc_id, "deposit")[0]["amount"] == START


# ---------------------------------------------------------------- market orders
def test_a_market_order_fills_at_the_mid_with_the_quote_as_evidence(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore
) -> None:
    quote = market.latest("EURUSD")
    assert quote is not None

    out = service.submit_order(acc, buy("EURUSD", "0.1", client_order_id="c-1"))

    assert out.accepted and out.fill is not None
    assert out.order["status"] == "filled"
    fill = out.fill
    assert fill["price"] == D("1.10010")
    assert fill["quote"] == quote.evidence()
    assert fill["notional"] == D("11001.00")
    assert fill["fee"] == D("11.00")  # 10 bps
    fill_entry = ledger(service, acc, "fill")[0]
    assert fill_entry["fill_id"] == fill["id"]
    assert fill_entry["evidence"]["quote"] == quote.evidence()
    assert fill_entry["evidence"]["price"] == "1.1001000000"
    assert [e["amount"] for e in ledger(service, acc, "fee")] == [D("-11.00")]
    assert cash(service, acc) == START - D("11.00")
    pos = position(service, acc, "EURUSD")
    assert pos is not None and (pos["quantity"], pos["avg_price"]) == (D("0.1"), D("1.1001"))


def test_a_rejected_order_is_recorded_with_its_reason_and_changes_no_money(
    service: ExecutionService, acc: uuid.UUID
) -> None:
    out = service.submit_order(acc, buy("EURUSD", "1"))  # 110,020 notional > 50,000

    assert out.rejection is not None and out.rejection.code == Code.NOTIONAL_EXCEEDED
    assert out.order["status"] == "rejected"
    assert out.order["reject_code"] == "notional_exceeded"
    assert out.order["reject_details"] == {"notional": "110020.00", "limit": "50000.00"}
    entry = ledger(service, acc, "order_rejected")[0]
    assert entry["evidence"]["rejection"]["code"] == "notional_exceeded"
    assert cash(service, acc) == START
    assert position(service, acc, "EURUSD") is None


def test_a_duplicate_client_order_id_is_a_conflict_and_changes_nothing(
    service: ExecutionService, acc: uuid.UUID
) -> None:
    first = service.submit_order(acc, buy("EURUSD", "0.1", client_order_id="same"))
    before = len(ledger(service, acc))

    with pytest.raises(Conflict) as excinfo:
        service.submit_order(acc, buy("EURUSD", "0.2", client_order_id="same"))

    assert excinfo.value.code == "duplicate_client_order_id"
    assert excinfo.value.details == {"order_id": str(first.order["id"])}
    assert len(ledger(service, acc)) == before
    assert len(rows(service, "SELECT id FROM orders WHERE account_id=%s", acc)) == 1


def test_missing_price_refuses_to_fill_and_says_so(service: ExecutionService, acc: uuid.UUID) -> None:
    out = service.submit_order(acc, buy("MSFT", "1"))  # no MSFT quote anywhere

    assert out.rejection is not None and out.rejection.code == Code.MISSING_PRICE
    assert out.rejection.details == {"symbol": "MSFT"}
    assert out.fill is None
    assert not rows(service, "SELECT id FROM fills WHERE account_id=%s", acc)
    assert cash(service, acc) == START


def test_a_stale_price_refuses_to_fill_and_reports_its_age(
    service: ExecutionService, acc: uuid.UUID, clock: ManualClock, market: QuoteStore
) -> None:
    policy = ExecutionPolicy()
    quote = market.latest("EURUSD")
    assert quote is not None
    clock.advance(policy.max_quote_age_seconds + 1)

    out = service.submit_order(acc, buy("EURUSD", "0.1"))

    assert out.rejection is not None and out.rejection.code == Code.STALE_PRICE
    assert out.rejection.details == {
        "symbol": "EURUSD",
        "quote": quote.evidence(),
        "age_seconds": 61.0,
        "max_quote_age_seconds": 60,
    }
    assert out.fill is None
    assert position(service, acc, "EURUSD") is None


def test_usdjpy_profit_is_converted_into_usd(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    opened = service.submit_order(acc, buy("USDJPY", "0.1"))
    assert opened.fill is not None
    assert opened.fill["notional"] == D("10000.00")  # 10,000 USD = 1,500,000 JPY at 150
    tick(market, service, clock, "USDJPY", "151.000", "151.000")

    closed = service.close_position(acc, "USDJPY")

    assert closed.fill is not None
    # 1 yen x 0.1 lot x 100,000 = 10,000 JPY, at 1/151 = 66.23 USD
    assert closed.fill["realized_pnl"] == D("66.23")
    pnl = ledger(service, acc, "realized_pnl")[0]
    assert pnl["amount"] == D("66.23")
    assert pnl["evidence"]["conversion_rate"] == "0.0066225166"
    assert position(service, acc, "USDJPY") is None
    assert cash(service, acc) == START + D("66.23") - opened.fill["fee"] - closed.fill["fee"]


# ---------------------------------------------------------------- resting orders
@pytest.mark.parametrize(
    ("req", "far", "cross"),
    [
        (
            buy("EURUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.09500")),
            ("1.09600", "1.09620"),
            ("1.09480", "1.09500"),
        ),
        (
            sell("EURUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.10500")),
            ("1.10400", "1.10420"),
            ("1.10500", "1.10520"),
        ),
        (
            buy("EURUSD", "0.1", order_type=OrderType.STOP, stop_price=D("1.10500")),
            ("1.10400", "1.10490"),
            ("1.10490", "1.10510"),
        ),
        (
            sell("EURUSD", "0.1", order_type=OrderType.STOP, stop_price=D("1.09500")),
            ("1.09510", "1.09530"),
            ("1.09490", "1.09510"),
        ),
    ],
    ids=["buy-limit", "sell-limit", "buy-stop", "sell-stop"],
)
def test_a_limit_or_stop_order_rests_until_a_quote_crosses_it(
    service: ExecutionService,
    acc: uuid.UUID,
    market: QuoteStore,
    clock: ManualClock,
    req: OrderRequest,
    far: tuple[str, str],
    cross: tuple[str, str],
) -> None:
    out = service.submit_order(acc, req)
    assert out.accepted and out.fill is None
    assert out.order["status"] == "open"
    assert req.trigger_price is not None
    assert out.order["notional"] == req.trigger_price * 10000  # 0.1 lot x 100,000 at the order's price
    assert ledger(service, acc, "order_accepted")[0]["order_id"] == out.order["id"]

    fired = tick(market, service, clock, "EURUSD", *far)

    assert fired["orders"] == 0
    assert order_row(service, out.order["id"])["status"] == "open"
    assert position(service, acc, "EURUSD") is None

    fired = tick(market, service, clock, "EURUSD", *cross)

    assert fired["orders"] == 1
    assert order_row(service, out.order["id"])["status"] == "filled"
    fill = one(service, "SELECT * FROM fills WHERE order_id=%s", out.order["id"])
    assert fill is not None
    assert fill["quote"]["bid"] == cross[0] and fill["quote"]["ask"] == cross[1]
    assert fill["price"] == (D(cross[0]) + D(cross[1])) / 2
    pos = position(service, acc, "EURUSD")
    assert pos is not None and pos["quantity"] == (D("0.1") if req.side is Side.BUY else D("-0.1"))
    # A second crossing quote does not fire it again.
    assert tick(market, service, clock, "EURUSD", *cross)["orders"] == 0
    assert len(rows(service, "SELECT id FROM fills WHERE order_id=%s", out.order["id"])) == 1


def test_a_marketable_limit_order_fills_at_once(service: ExecutionService, acc: uuid.UUID) -> None:
    out = service.submit_order(acc, buy("EURUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.10100")))

    assert out.fill is not None and out.order["status"] == "filled"


def test_a_marketable_limit_order_cannot_open_a_position_beyond_the_limit(
    service: ExecutionService, market: QuoteStore
) -> None:
    acc_id = open_account(service, ExecutionPolicy(max_open_positions=1))
    service.submit_order(acc_id, buy("GBPUSD", "0.01"))

    out = service.submit_order(acc_id, buy("EURUSD", "0.01", order_type=OrderType.LIMIT, limit_price=D("1.10100")))

    assert out.rejection is not None and out.rejection.code == Code.MAX_OPEN_POSITIONS
    assert position(service, acc_id, "EURUSD") is None


def test_a_resting_order_carries_its_protective_levels_into_the_position(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    service.submit_order(
        acc,
        buy(
            "EURUSD",
            "0.1",
            order_type=OrderType.LIMIT,
            limit_price=D("1.09500"),
            stop_loss=D("1.09000"),
            take_profit=D("1.10000"),
        ),
    )

    tick(market, service, clock, "EURUSD", "1.09480", "1.09500")

    pos = position(service, acc, "EURUSD")
    assert pos is not None and (pos["stop_loss"], pos["take_profit"]) == (D("1.09"), D("1.1"))


def test_a_resting_order_that_would_exceed_max_open_positions_is_rejected_when_it_fires(
    service: ExecutionService, market: QuoteStore, clock: ManualClock
) -> None:
    acc_id = open_account(service, ExecutionPolicy(max_open_positions=1))
    service.submit_order(acc_id, buy("GBPUSD", "0.01"))
    resting = service.submit_order(acc_id, buy("EURUSD", "0.01", order_type=OrderType.LIMIT, limit_price=D("1.09500")))
    assert resting.order["status"] == "open"

    tick(market, service, clock, "EURUSD", "1.09480", "1.09500")

    row = order_row(service, resting.order["id"])
    assert row["status"] == "rejected"
    assert row["reject_code"] == "max_open_positions"
    assert row["reject_details"] == {"open_positions": 1, "limit": 1}
    assert position(service, acc_id, "EURUSD") is None
    assert ledger(service, acc_id, "order_rejected")[0]["evidence"]["at_trigger"] is True


def test_cancel_stops_a_resting_order_from_firing(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    out = service.submit_order(acc, buy("EURUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.09500")))

    row = service.cancel_order(acc, out.order["id"])

    assert row["status"] == "cancelled"
    assert ledger(service, acc, "order_cancelled")[0]["order_id"] == out.order["id"]
    assert tick(market, service, clock, "EURUSD", "1.09480", "1.09500")["orders"] == 0
    assert position(service, acc, "EURUSD") is None
    with pytest.raises(Conflict) as excinfo:
        service.cancel_order(acc, out.order["id"])
    assert excinfo.value.code == "order_not_open"
    with pytest.raises(NotFound):
        service.cancel_order(acc, uuid.uuid4())


# ---------------------------------------------------------------- protective levels
@pytest.mark.parametrize(
    ("side", "sl", "tp", "quiet", "hit", "purpose"),
    [
        (Side.BUY, "1.09500", "1.10500", ("1.09510", "1.09530"), ("1.09500", "1.09520"), "stop_loss"),
        (Side.BUY, "1.09500", "1.10500", ("1.10490", "1.10510"), ("1.10500", "1.10520"), "take_profit"),
        (Side.SELL, "1.10500", "1.09500", ("1.10470", "1.10490"), ("1.10480", "1.10500"), "stop_loss"),
        (Side.SELL, "1.10500", "1.09500", ("1.09490", "1.09510"), ("1.09480", "1.09500"), "take_profit"),
    ],
    ids=["long-stop-loss", "long-take-profit", "short-stop-loss", "short-take-profit"],
)
def test_stop_loss_and_take_profit_close_the_position_on_a_crossing_quote(
    service: ExecutionService,
    acc: uuid.UUID,
    market: QuoteStore,
    clock: ManualClock,
    side: Side,
    sl: str,
    tp: str,
    quiet: tuple[str, str],
    hit: tuple[str, str],
    purpose: str,
) -> None:
    opened = service.submit_order(acc, OrderRequest("EURUSD", side, D("0.1"), stop_loss=D(sl), take_profit=D(tp)))
    assert opened.fill is not None
    entry = opened.fill["price"]

    assert tick(market, service, clock, "EURUSD", *quiet)["protective"] == 0
    assert position(service, acc, "EURUSD") is not None

    assert tick(market, service, clock, "EURUSD", *hit)["protective"] == 1

    assert position(service, acc, "EURUSD") is None
    close = one(service, "SELECT * FROM orders WHERE account_id=%s AND purpose=%s", acc, purpose)
    assert close is not None and close["status"] == "filled" and close["reduce_only"]
    fill = one(service, "SELECT * FROM fills WHERE order_id=%s", close["id"])
    assert fill is not None
    exit_px = (D(hit[0]) + D(hit[1])) / 2
    assert fill["price"] == exit_px
    sign = 1 if side is Side.BUY else -1
    assert fill["realized_pnl"] == ((exit_px - entry) * D("0.1") * 100000 * sign).quantize(D("0.01"))
    assert (fill["realized_pnl"] > 0) == (purpose == "take_profit")


def test_a_partial_close_realizes_the_closed_part_and_keeps_the_rest(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    service.submit_order(acc, buy("EURUSD", "0.3", stop_loss=D("1.09")))
    tick(market, service, clock, "EURUSD", "1.10100", "1.10120")

    out = service.close_position(acc, "EURUSD", D("0.1"))

    assert out.fill is not None and out.order["purpose"] == "close" and out.order["reduce_only"]
    assert out.fill["realized_pnl"] == D("10.00")  # (1.10110 - 1.10010) x 0.1 x 100,000
    pos = position(service, acc, "EURUSD")
    assert pos is not None
    assert (pos["quantity"], pos["avg_price"], pos["stop_loss"]) == (D("0.2"), D("1.1001"), D("1.09"))
    with pytest.raises(InvalidInput):
        service.close_position(acc, "EURUSD", D("0.5"))
    with pytest.raises(Conflict):
        service.close_position(acc, "GBPUSD")


def test_stop_loss_and_take_profit_can_be_modified_on_the_right_side_only(
    service: ExecutionService, acc: uuid.UUID
) -> None:
    service.submit_order(acc, buy("EURUSD", "0.1"))

    row = service.modify(acc, symbol="EURUSD", stop_loss=D("1.09"), take_profit=D("1.12"))

    assert (row["stop_loss"], row["take_profit"]) == (D("1.09"), D("1.12"))
    assert ledger(service, acc, "position_modified")[-1]["evidence"]["after"]["stop_loss"] == "1.09"
    with pytest.raises(InvalidInput) as excinfo:
        service.modify(acc, symbol="EURUSD", stop_loss=D("1.10500"))  # above the bid of a long
    assert excinfo.value.code == "invalid_stop_loss"
    row = service.modify(acc, symbol="EURUSD", clear_take_profit=True)
    assert (row["stop_loss"], row["take_profit"]) == (D("1.09"), None)

    resting = service.submit_order(acc, sell("GBPUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.31")))
    row = service.modify(acc, order_id=resting.order["id"], stop_loss=D("1.32"))
    assert row["stop_loss"] == D("1.32")
    with pytest.raises(InvalidInput) as excinfo:
        service.modify(acc, order_id=resting.order["id"], take_profit=D("1.32"))  # above a sell's entry
    assert excinfo.value.code == "invalid_take_profit"


# ---------------------------------------------------------------- safety net and lifecycle
def test_auto_liquidation_when_equity_falls_to_half_the_starting_balance(
    service: ExecutionService, market: QuoteStore, clock: ManualClock
) -> None:
    policy = ExecutionPolicy(max_notional=D(10**6), max_leverage=D(10), max_position_equity_pct=D(1000))
    acc_id = open_account(service, policy)
    resting = service.submit_order(acc_id, buy("AAPL", "10", order_type=OrderType.LIMIT, limit_price=D(150)))
    opened = service.submit_order(acc_id, buy("BTCUSD", "10"))  # 500,000 notional, fee 500
    assert opened.fill is not None and opened.fill["fee"] == D(500)

    assert tick(market, service, clock, "BTCUSD", "45100.00", "45100.00")["liquidations"] == 0  # equity 50,500
    fired = tick(market, service, clock, "BTCUSD", "44900.00", "44900.00")  # equity 48,500

    assert fired["liquidations"] == 1
    snap = service.snapshot(acc_id)
    assert snap["status"] == "liquidated"
    assert snap["positions"] == [] and snap["open_orders"] == []
    assert order_row(service, resting.order["id"])["status"] == "cancelled"
    liq = ledger(service, acc_id, "liquidation")
    assert len(liq) == 1
    assert liq[0]["evidence"]["equity"] == "48500.00"
    assert liq[0]["evidence"]["threshold"] == "50000"
    assert liq[0]["evidence"]["closed"] == ["BTCUSD"]
    assert liq[0]["evidence"]["actor"] == "policy"
    close = one(service, "SELECT * FROM orders WHERE account_id=%s AND purpose='liquidation'", acc_id)
    assert close is not None
    fill = one(service, "SELECT * FROM fills WHERE order_id=%s", close["id"])
    assert fill is not None and fill["realized_pnl"] == D(-51000)
    status = ledger(service, acc_id, "status_changed")[-1]["evidence"]
    assert (status["from"], status["to"], status["trigger"]) == ("active", "liquidated", "liquidate")
    # A liquidated account trades no more and is not marked again.
    assert service.submit_order(acc_id, buy("EURUSD", "0.01")).rejection is not None
    assert tick(market, service, clock, "BTCUSD", "40000.00", "40000.00")["accounts"] == 0


def test_mark_to_market_records_equity_and_raises_the_watermark(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    opened = service.submit_order(acc, buy("AAPL", "100"))  # at the mid, 200.05
    assert opened.fill is not None
    clock.advance(1)
    market.put(Quote("AAPL", D("210.00"), D("210.10"), clock.now()))

    snap = service.mark_to_market(acc)

    mark = ledger(service, acc, "mark_to_market")[-1]
    [m] = mark["evidence"]["marks"]
    assert (m["symbol"], D(m["quantity"]), D(m["mark"]), m["unrealized"]) == ("AAPL", 100, D(210), "995.00")
    assert mark["equity_after"] == START - opened.fill["fee"] + D("995.00")
    assert snap["balance"]["equity"] == mark["equity_after"]
    bal = one(service, "SELECT * FROM balances WHERE account_id=%s", acc)
    assert bal is not None
    assert bal["high_watermark"] == mark["equity_after"]
    assert bal["marked_at"] == clock.now()


def test_the_account_lifecycle_through_apply_trigger(service: ExecutionService, market: QuoteStore) -> None:
    acc_id = open_account(service, start=False)
    rejected = service.submit_order(acc_id, buy("EURUSD", "0.1"))
    assert rejected.rejection is not None and rejected.rejection.details == {"status": "pending"}

    assert service.apply_trigger(acc_id, Trigger.START, actor="service")["status"] == "active"
    assert service.apply_trigger(acc_id, Trigger.PAUSE, actor="admin:bob", reason="review")["status"] == "paused"
    assert service.submit_order(acc_id, buy("EURUSD", "0.1")).rejection is not None
    assert service.apply_trigger(acc_id, Trigger.RESUME, actor="admin:bob")["status"] == "active"
    assert service.apply_trigger(acc_id, Trigger.LOCK, actor="admin:bob")["status"] == "locked"
    assert service.apply_trigger(acc_id, Trigger.RESUME, actor="admin:bob")["status"] == "active"
    done = service.apply_trigger(acc_id, Trigger.COMPLETE, actor="service")
    assert done["status"] == "completed" and done["ended_at"] is not None and done["started_at"] is not None

    with pytest.raises(IllegalTransition) as excinfo:
        service.apply_trigger(acc_id, Trigger.START, actor="service")
    assert excinfo.value.details == {"status": "completed", "trigger": "start", "allowed": []}

    moves = [
        (e["evidence"]["from"], e["evidence"]["to"], e["evidence"]["actor"])
        for e in ledger(service, acc_id, "status_changed")
    ]
    assert moves == [
        ("pending", "active", "service"),
        ("active", "paused", "admin:bob"),
        ("paused", "active", "admin:bob"),
        ("active", "locked", "admin:bob"),
        ("locked", "active", "admin:bob"),
        ("active", "completed", "service"),
    ]
    assert ledger(service, acc_id, "status_changed")[1]["evidence"]["reason"] == "review"


def test_an_illegal_move_changes_nothing(service: ExecutionService, acc: uuid.UUID) -> None:
    before = len(ledger(service, acc))

    with pytest.raises(IllegalTransition):
        service.apply_trigger(acc, Trigger.RESUME, actor="admin")

    assert service.snapshot(acc)["status"] == "active"
    assert len(ledger(service, acc)) == before


def test_no_command_can_pass_an_account(service: ExecutionService, acc: uuid.UUID) -> None:
    with pytest.raises(Conflict) as excinfo:
        service.apply_trigger(acc, Trigger.PASS, actor="admin")

    assert excinfo.value.code == "illegal_transition"
    assert service.snapshot(acc)["status"] == "active"
    assert not ledger(service, acc, "status_changed")[1:]


def test_a_liquidate_command_closes_positions_at_market(service: ExecutionService, acc: uuid.UUID) -> None:
    service.submit_order(acc, sell("EURUSD", "0.1"))

    row = service.apply_trigger(acc, Trigger.LIQUIDATE, actor="admin:bob", reason="fraud review")

    assert row["status"] == "liquidated"
    assert position(service, acc, "EURUSD") is None
    assert ledger(service, acc, "liquidation")[0]["evidence"]["reason"] == "fraud review"
    with pytest.raises(IllegalTransition):
        service.apply_trigger(acc, Trigger.LIQUIDATE, actor="admin:bob")


# ---------------------------------------------------------------- corrections
def test_voiding_a_closing_fill_reverses_its_fee_and_pnl_and_reopens_the_position(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    opened = service.submit_order(acc, buy("EURUSD", "0.1", stop_loss=D("1.09")))
    tick(market, service, clock, "EURUSD", "1.10100", "1.10120")
    closed = service.close_position(acc, "EURUSD")
    assert opened.fill is not None and closed.fill is not None
    assert closed.fill["realized_pnl"] == D("10.00")
    cash_before = cash(service, acc)

    service.void_fill(acc, closed.fill["id"], actor="admin:bob", reason="bad tick")

    reversals = ledger(service, acc, "reversal")
    assert [(r["category"], r["amount"]) for r in reversals] == [("fee", closed.fill["fee"]), ("pnl", D("-10.00"))]
    assert cash(service, acc) == cash_before + closed.fill["fee"] - D("10.00")
    pos = position(service, acc, "EURUSD")
    assert pos is not None and (pos["quantity"], pos["avg_price"]) == (D("0.1"), opened.fill["price"])
    void = ledger(service, acc, "void_fill")[0]["evidence"]
    assert void["position_before"] is None and D(void["position_after"]["quantity"]) == D("0.1")
    assert one(service, "SELECT * FROM fill_voids WHERE fill_id=%s", closed.fill["id"]) is not None
    # The fill itself is kept (append-only), and voiding twice is refused.
    assert one(service, "SELECT id FROM fills WHERE id=%s", closed.fill["id"]) is not None
    with pytest.raises(Conflict) as excinfo:
        service.void_fill(acc, closed.fill["id"], actor="admin:bob", reason="again")
    assert excinfo.value.code == "fill_already_voided"
    with pytest.raises(NotFound):
        service.void_fill(acc, uuid.uuid4(), actor="admin:bob", reason="nothing")


def test_voiding_an_opening_fill_removes_the_position_and_refunds_the_fee(
    service: ExecutionService, acc: uuid.UUID
) -> None:
    opened = service.submit_order(acc, buy("GBPUSD", "0.1"))
    assert opened.fill is not None

    service.void_order(acc, opened.order["id"], actor="admin:bob", reason="test trade")

    assert position(service, acc, "GBPUSD") is None
    assert cash(service, acc) == START


def test_voiding_a_resting_order_marks_it_voided(service: ExecutionService, acc: uuid.UUID) -> None:
    out = service.submit_order(acc, buy("EURUSD", "0.1", order_type=OrderType.LIMIT, limit_price=D("1.09")))

    row = service.void_order(acc, out.order["id"], actor="admin:bob", reason="mistake")

    assert row["status"] == "voided"
    assert ledger(service, acc, "void_order")[0]["evidence"]["actor"] == "admin:bob"


def test_voiding_an_opening_fill_also_corrects_the_pnl_of_the_fill_that_closed_it(
    service: ExecutionService, acc: uuid.UUID, market: QuoteStore, clock: ManualClock
) -> None:
    opened = service.submit_order(acc, buy("EURUSD", "0.1"))
    tick(market, service, clock, "EURUSD", "1.10100", "1.10120")
    closed = service.close_position(acc, "EURUSD")
    assert opened.fill is not None and closed.fill is not None and closed.fill["realized_pnl"] == D("10.00")

    service.void_fill(acc, opened.fill["id"], actor="admin:bob", reason="bad tick")

    # What is left is one sell that opened a short: it realized nothing and paid one fee.
    pos = position(service, acc, "EURUSD")
    assert pos is not None and pos["quantity"] == D("-0.1")
    assert cash(service, acc) == START - closed.fill["fee"]
