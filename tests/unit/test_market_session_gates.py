"""The session-aware gates: a closed market is refused before any price question, and freshness is judged by the
asset class's threshold when the session is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from propdesk.domain.gates import AccountState, Code, MarketContext, MarketSession, check_order
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.lifecycle import Status
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote

D = Decimal
T0 = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # a Saturday
MONDAY = datetime(2026, 3, 8, 22, 0, tzinfo=UTC)
ACCOUNT = AccountState(Status.ACTIVE, ExecutionPolicy(), D(100000), D(100000), {}, {})
EURUSD = DEFAULT_CATALOGUE.get("EURUSD")
BTCUSD = DEFAULT_CATALOGUE.get("BTCUSD")


def closed() -> MarketSession:
    return MarketSession(False, "closed: weekend", MONDAY, "forex", 60.0)


def test_a_closed_market_is_refused_before_asking_for_a_price() -> None:
    rej = check_order(
        OrderRequest("EURUSD", Side.BUY, D("0.1")), ACCOUNT, EURUSD, MarketContext(None, None, T0, closed())
    )
    assert rej is not None and rej.code == Code.MARKET_CLOSED
    assert rej.details == {
        "symbol": "EURUSD",
        "asset_class": "forex",
        "reason": "closed: weekend",
        "next_open": "2026-03-08T22:00:00Z",
    }
    assert rej.message == "the EURUSD market is closed (weekend); it opens at 2026-03-08T22:00:00Z"


def test_freshness_uses_the_asset_class_threshold_not_the_policy_when_the_session_is_known() -> None:
    quote = Quote("BTCUSD", D("65000.00"), D("65010.00"), T0)
    session = MarketSession(True, "open: trades 24/7", None, "crypto", 30.0)
    req = OrderRequest("BTCUSD", Side.BUY, D("0.01"))
    assert check_order(req, ACCOUNT, BTCUSD, MarketContext(quote, D(1), T0 + timedelta(seconds=30), session)) is None
    rej = check_order(req, ACCOUNT, BTCUSD, MarketContext(quote, D(1), T0 + timedelta(seconds=31), session))
    assert rej is not None and rej.code == Code.STALE_PRICE
    assert (rej.details["threshold_seconds"], rej.details["asset_class"], rej.details["age_seconds"]) == (
        30.0,
        "crypto",
        31.0,
    )
    assert rej.message == "the last quote for BTCUSD is 31.0s old (limit 30s for crypto)"
