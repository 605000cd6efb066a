"""The execution core with the session calendar: closed markets are refused with market_closed, stale quotes are
judged by their asset class's threshold, and SL/TP wait for a fresh quote of an open market."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from propdesk.clock import ManualClock
from propdesk.domain.errors import Conflict
from propdesk.domain.gates import Code
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.lifecycle import Trigger
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.sessions import SessionCalendar
from propdesk.marketdata.store import QuoteStore

D = Decimal


@pytest.fixture
def gated(database: Any, clock: ManualClock, quotes: QuoteStore) -> ExecutionService:
    return ExecutionService(database, clock, DEFAULT_CATALOGUE, quotes, sessions=SessionCalendar())


@pytest.fixture
def acc(gated: ExecutionService) -> uuid.UUID:
    row, _ = gated.create_account(CreateAccount(owner_id="alice", policy=ExecutionPolicy(), start=True))
    return row["id"]  # type: ignore[no-any-return]


def put(quotes: QuoteStore, symbol: str, bid: str, ask: str, at: Any) -> None:
    assert quotes.put(Quote(symbol, D(bid), D(ask), at)) is not None


def test_an_equity_order_before_the_nyse_open_is_market_closed_with_the_reason_and_next_open(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "AAPL", "200.00", "200.02", clock.now())  # Monday 05:00 New York
    out = gated.submit_order(acc, OrderRequest("AAPL", Side.BUY, D(1)))
    assert out.rejection is not None and out.rejection.code == Code.MARKET_CLOSED
    assert out.rejection.details == {
        "symbol": "AAPL",
        "asset_class": "equity",
        "reason": "closed: before the open",
        "next_open": "2026-03-02T14:30:00Z",
    }
    assert "opens at 2026-03-02T14:30:00Z" in out.rejection.message


def test_an_index_cfd_trades_on_globex_hours_before_the_cash_open(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "US500", "5200.00", "5200.50", clock.now())
    out = gated.submit_order(acc, OrderRequest("US500", Side.BUY, D("0.1")))
    assert out.rejection is None and out.fill is not None


def test_a_stale_quote_uses_the_asset_class_threshold_and_says_so(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "BTCUSD", "65000.00", "65010.00", clock.now())
    clock.advance(31)  # crypto: 30 s (the policy's 60 s does not apply once a calendar is injected)
    out = gated.submit_order(acc, OrderRequest("BTCUSD", Side.BUY, D("0.01")))
    assert out.rejection is not None and out.rejection.code == Code.STALE_PRICE
    d = out.rejection.details
    assert (d["age_seconds"], d["threshold_seconds"], d["asset_class"]) == (31.0, 30.0, "crypto")


def test_stop_loss_waits_over_the_weekend_and_fires_on_the_first_fresh_quote_after_the_open(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "EURUSD", "1.10000", "1.10010", clock.now())
    out = gated.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"), stop_loss=D("1.09000")))
    assert out.fill is not None
    clock.set(clock.now() + timedelta(days=5, hours=2))  # Saturday: FX closed
    put(quotes, "EURUSD", "1.08000", "1.08010", clock.now())  # a stray weekend quote below the stop
    assert gated.on_quote(quotes.latest("EURUSD"))["protective"] == 0  # type: ignore[arg-type]
    closed = gated.submit_order(acc, OrderRequest("EURUSD", Side.SELL, D("0.1")))
    assert closed.rejection is not None and closed.rejection.code == Code.MARKET_CLOSED
    clock.set(clock.now() + timedelta(days=1, hours=12))  # Monday 00:00 UTC: open again
    put(quotes, "EURUSD", "1.08500", "1.08510", clock.now())
    assert gated.on_quote(quotes.latest("EURUSD"))["protective"] == 1  # type: ignore[arg-type]


def test_a_liquidation_on_a_stale_quote_in_an_open_market_is_refused_and_names_the_symbols(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "EURUSD", "1.10000", "1.10010", clock.now())
    assert gated.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"))).fill is not None
    clock.advance(61)  # forex: 60 s
    with pytest.raises(Conflict) as err:
        gated.apply_trigger(acc, Trigger.LIQUIDATE, actor="admin:test", reason="test")
    assert err.value.code == "stale_price" and err.value.details == {"symbols": ["EURUSD"]}
    put(quotes, "EURUSD", "1.10100", "1.10110", clock.now())  # fresh again: the liquidation goes through
    assert gated.apply_trigger(acc, Trigger.LIQUIDATE, actor="admin:test", reason="test")["status"] == "liquidated"


def test_a_liquidation_on_a_closed_market_closes_at_the_sessions_last_quote(
    gated: ExecutionService, acc: uuid.UUID, quotes: QuoteStore, clock: ManualClock
) -> None:
    put(quotes, "EURUSD", "1.10000", "1.10010", clock.now())
    assert gated.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1"))).fill is not None
    clock.set(clock.now() + timedelta(days=5, hours=2))  # Saturday: the Friday close is the market's price
    row = gated.apply_trigger(acc, Trigger.LIQUIDATE, actor="admin:test", reason="weekend test")
    assert row["status"] == "liquidated"
