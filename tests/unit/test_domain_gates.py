"""Safety gates: every rejection code carries the numbers that produced it; reducing a position always passes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from propdesk.domain.gates import AccountState, Code, MarketContext, RestingOrder, check_order
from propdesk.domain.instruments import DEFAULT_CATALOGUE, AssetClass, Instrument
from propdesk.domain.lifecycle import Status
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.positions import Position
from propdesk.domain.quotes import Quote

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D = Decimal
POLICY = ExecutionPolicy()
EURUSD = DEFAULT_CATALOGUE.get("EURUSD")
assert EURUSD is not None
QUOTE = Quote("EURUSD", D("1.10000"), D("1.10020"), T0, seq=7)
MKT = MarketContext(QUOTE, D(1), T0)


def inst(symbol: str) -> Instrument:
    i = DEFAULT_CATALOGUE.get(symbol)
    assert i is not None
    return i


def account(
    *,
    status: Status = Status.ACTIVE,
    policy: ExecutionPolicy = POLICY,
    equity: str = "100000",
    positions: Mapping[str, Position] | None = None,
    notional: Mapping[str, Decimal] | None = None,
    resting: tuple[RestingOrder, ...] = (),
) -> AccountState:
    return AccountState(status, policy, D(equity), D(equity), positions or {}, notional or {}, resting)


def buy(qty: str = "0.1", **kw: Any) -> OrderRequest:
    return OrderRequest("EURUSD", Side.BUY, D(qty), **kw)


def sell(qty: str = "0.1", **kw: Any) -> OrderRequest:
    return OrderRequest("EURUSD", Side.SELL, D(qty), **kw)


def others(n: int) -> tuple[dict[str, Position], dict[str, Decimal]]:
    """``n`` small open positions in symbols other than EURUSD."""
    symbols = ["GBPUSD", "AUDUSD", "NZDUSD", "USDCAD", "USDCHF", "AAPL", "MSFT", "NVDA"][:n]
    return ({s: Position(s, D(1), D(1)) for s in symbols}, {s: D(1000) for s in symbols})


def test_a_plain_small_market_order_passes_every_gate() -> None:
    assert check_order(buy(), account(), EURUSD, MKT) is None
    assert check_order(sell(), account(), EURUSD, MKT) is None


# ---------------------------------------------------------------- one test per rejection code
def test_account_not_active_names_the_status() -> None:
    rej = check_order(buy(), account(status=Status.PAUSED), EURUSD, MKT)

    assert rej is not None and rej.code == Code.ACCOUNT_NOT_ACTIVE
    assert rej.details == {"status": "paused"}


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.ACTIVE])
def test_only_active_accounts_place_orders(status: Status) -> None:
    rej = check_order(buy(), account(status=status), EURUSD, MKT)

    assert rej is not None and rej.code == Code.ACCOUNT_NOT_ACTIVE


@pytest.mark.parametrize("symbol", ["EURUSD ", "eurusd", "ＥURUSD", "NOPE"])
def test_unknown_symbol_names_the_symbol(symbol: str) -> None:
    req = OrderRequest(symbol, Side.BUY, D("0.1"))

    rej = check_order(req, account(), DEFAULT_CATALOGUE.get(symbol), MKT)

    assert rej is not None and rej.code == Code.UNKNOWN_SYMBOL
    assert rej.details == {"symbol": symbol}


def test_a_disabled_symbol_is_refused_as_unknown() -> None:
    rej = check_order(buy(), account(), replace(EURUSD, enabled=False), MKT)

    assert rej is not None and rej.code == Code.UNKNOWN_SYMBOL


def test_asset_not_allowed_lists_the_allowed_classes() -> None:
    policy = ExecutionPolicy(allowed_asset_classes=(AssetClass.FOREX, AssetClass.METAL))
    req = OrderRequest("AAPL", Side.BUY, D(1))

    rej = check_order(req, account(policy=policy), inst("AAPL"), MKT)

    assert rej is not None and rej.code == Code.ASSET_NOT_ALLOWED
    assert rej.details == {"asset_class": "equity", "allowed": ["forex", "metal"]}


@pytest.mark.parametrize("qty", ["0.001", "0.015", "0", "-0.1", "100.01", "0.10000001"])
def test_invalid_quantity_below_min_off_step_or_above_max_gives_the_lot_rules(qty: str) -> None:
    rej = check_order(buy(qty), account(), EURUSD, MKT)

    assert rej is not None and rej.code == Code.INVALID_QUANTITY
    assert rej.details == {"quantity": qty, "min_lot": "0.01", "max_lot": "100", "lot_step": "0.01"}


def test_equities_trade_in_whole_shares() -> None:
    rej = check_order(OrderRequest("AAPL", Side.BUY, D("0.5")), account(), inst("AAPL"), MKT)

    assert rej is not None and rej.code == Code.INVALID_QUANTITY
    assert rej.details["min_lot"] == "1"


@pytest.mark.parametrize(
    ("req", "details"),
    [
        (buy(order_type=OrderType.LIMIT), {}),
        (buy(order_type=OrderType.STOP), {}),
        (buy(order_type=OrderType.LIMIT, limit_price=D("-1.1")), {"limit_price": "-1.1"}),
        (buy(order_type=OrderType.LIMIT, limit_price=D("1.100001")), {"limit_price": "1.100001", "price_precision": 5}),
        (buy(stop_loss=D("1.090001")), {"stop_loss": "1.090001", "price_precision": 5}),
        (sell(take_profit=D("1.0900000")), {"take_profit": "1.0900000", "price_precision": 5}),
        (buy(order_type=OrderType.STOP, stop_price=D(0)), {"stop_price": "0"}),
    ],
    ids=[
        "limit-without-price",
        "stop-without-price",
        "negative",
        "too-many-decimals",
        "sl-too-many-decimals",
        "tp-trailing-zeros-beyond-precision",
        "zero",
    ],
)
def test_invalid_price_says_which_price_and_why(req: OrderRequest, details: dict[str, Any]) -> None:
    rej = check_order(req, account(), EURUSD, MKT)

    assert rej is not None and rej.code == Code.INVALID_PRICE
    assert rej.details == details


def test_missing_price_never_fills_on_a_guess() -> None:
    rej = check_order(buy(), account(), EURUSD, MarketContext(None, D(1), T0))

    assert rej is not None and rej.code == Code.MISSING_PRICE
    assert rej.details == {"symbol": "EURUSD"}


def test_stale_price_reports_the_quote_its_age_and_the_limit() -> None:
    now = T0 + timedelta(seconds=61)

    rej = check_order(buy(), account(), EURUSD, MarketContext(QUOTE, D(1), now))

    assert rej is not None and rej.code == Code.STALE_PRICE
    assert rej.details == {
        "symbol": "EURUSD",
        "quote": QUOTE.evidence(),
        "age_seconds": 61.0,
        "max_quote_age_seconds": 60,
    }


def test_a_quote_exactly_at_the_age_limit_is_still_fresh() -> None:
    assert check_order(buy(), account(), EURUSD, MarketContext(QUOTE, D(1), T0 + timedelta(seconds=60))) is None


def test_missing_conversion_price_names_both_currencies() -> None:
    q = Quote("USDJPY", D("150.000"), D("150.020"), T0)
    req = OrderRequest("USDJPY", Side.BUY, D("0.1"))

    rej = check_order(req, account(), inst("USDJPY"), MarketContext(q, None, T0))

    assert rej is not None and rej.code == Code.MISSING_CONVERSION_PRICE
    assert rej.details == {"from": "JPY", "to": "USD"}


def test_direction_not_allowed_for_shorts_and_longs() -> None:
    no_short = account(policy=ExecutionPolicy(allow_short=False))
    no_long = account(policy=ExecutionPolicy(allow_long=False))

    rej_s = check_order(sell(), no_short, EURUSD, MKT)
    rej_l = check_order(buy(), no_long, EURUSD, MKT)

    assert rej_s is not None and rej_s.code == Code.DIRECTION_NOT_ALLOWED and rej_s.details == {"side": "sell"}
    assert rej_l is not None and rej_l.code == Code.DIRECTION_NOT_ALLOWED and rej_l.details == {"side": "buy"}


def test_selling_out_of_a_long_is_allowed_when_shorts_are_not_but_flipping_is_not() -> None:
    state = account(
        policy=ExecutionPolicy(allow_short=False), positions={"EURUSD": Position("EURUSD", D("0.2"), D("1.1"))}
    )

    assert check_order(sell("0.2"), state, EURUSD, MKT) is None
    rej = check_order(sell("0.3"), state, EURUSD, MKT)
    assert rej is not None and rej.code == Code.DIRECTION_NOT_ALLOWED


@pytest.mark.parametrize(
    ("req", "code", "details"),
    [
        (
            buy(stop_loss=D("1.10020")),
            Code.INVALID_STOP_LOSS,
            {"stop_loss": "1.10020", "reference_price": "1.10020", "side": "buy"},
        ),
        (
            buy(take_profit=D("1.10010")),
            Code.INVALID_TAKE_PROFIT,
            {"take_profit": "1.10010", "reference_price": "1.10020", "side": "buy"},
        ),
        (
            sell(stop_loss=D("1.09990")),
            Code.INVALID_STOP_LOSS,
            {"stop_loss": "1.09990", "reference_price": "1.10000", "side": "sell"},
        ),
        (
            sell(take_profit=D("1.10000")),
            Code.INVALID_TAKE_PROFIT,
            {"take_profit": "1.10000", "reference_price": "1.10000", "side": "sell"},
        ),
        (
            buy(order_type=OrderType.LIMIT, limit_price=D("1.09000"), stop_loss=D("1.09500")),
            Code.INVALID_STOP_LOSS,
            {"stop_loss": "1.09500", "reference_price": "1.09000", "side": "buy"},
        ),
        (
            sell(order_type=OrderType.STOP, stop_price=D("1.09000"), take_profit=D("1.09500")),
            Code.INVALID_TAKE_PROFIT,
            {"take_profit": "1.09500", "reference_price": "1.09000", "side": "sell"},
        ),
    ],
    ids=[
        "buy-sl-at-ask",
        "buy-tp-below-ask",
        "sell-sl-below-bid",
        "sell-tp-at-bid",
        "buy-limit-sl-above-limit",
        "sell-stop-tp-above-stop",
    ],
)
def test_stop_loss_and_take_profit_on_the_wrong_side_are_refused_with_the_reference_price(
    req: OrderRequest, code: str, details: dict[str, Any]
) -> None:
    rej = check_order(req, account(), EURUSD, MKT)

    assert rej is not None and rej.code == code
    assert rej.details == details


def test_protective_levels_on_the_right_side_pass() -> None:
    assert check_order(buy(stop_loss=D("1.09"), take_profit=D("1.12")), account(), EURUSD, MKT) is None
    assert check_order(sell(stop_loss=D("1.12"), take_profit=D("1.09")), account(), EURUSD, MKT) is None


def test_notional_exceeded_gives_the_order_notional_and_the_limit() -> None:
    rej = check_order(buy("1"), account(), EURUSD, MKT)  # 1 lot x 100,000 x 1.10020

    assert rej is not None and rej.code == Code.NOTIONAL_EXCEEDED
    assert rej.details == {"notional": "110020.00", "limit": "50000.00"}


def test_notional_is_converted_into_the_account_currency() -> None:
    q = Quote("USDJPY", D("150.000"), D("150.000"), T0)
    req = OrderRequest("USDJPY", Side.BUY, D("1"))  # 100,000 USD = 15,000,000 JPY

    rej = check_order(req, account(), inst("USDJPY"), MarketContext(q, D(1) / D(150), T0))

    assert rej is not None and rej.code == Code.NOTIONAL_EXCEEDED
    assert rej.details == {"notional": "100000.00", "limit": "50000.00"}


def test_aggregate_notional_exceeded_adds_the_other_open_positions() -> None:
    policy = ExecutionPolicy(max_aggregate_notional=D(20000))
    state = account(
        policy=policy, positions={"GBPUSD": Position("GBPUSD", D("0.1"), D("1.3"))}, notional={"GBPUSD": D(15000)}
    )

    rej = check_order(buy(), state, EURUSD, MKT)

    assert rej is not None and rej.code == Code.AGGREGATE_NOTIONAL_EXCEEDED
    assert rej.details == {"aggregate_notional": "26002.00", "limit": "20000.00"}


def test_leverage_exceeded_gives_leverage_equity_and_aggregate() -> None:
    state = account(policy=ExecutionPolicy(max_position_equity_pct=D(1000)), equity="8000")

    rej = check_order(buy("0.4"), state, EURUSD, MKT)

    assert rej is not None and rej.code == Code.LEVERAGE_EXCEEDED
    assert rej.details == {"leverage": "5.5010", "limit": "5", "aggregate_notional": "44008.00", "equity": "8000.00"}


def test_position_equity_exceeded_gives_the_share_of_equity() -> None:
    rej = check_order(buy(), account(equity="20000"), EURUSD, MKT)

    assert rej is not None and rej.code == Code.POSITION_EQUITY_EXCEEDED
    assert rej.details == {
        "position_notional": "11002.00",
        "equity": "20000.00",
        "position_equity_pct": "55.0100",
        "limit_pct": "50",
    }


def test_insufficient_margin_counts_margin_reserved_by_resting_orders() -> None:
    resting = (RestingOrder("GBPUSD", Side.BUY, D("0.3"), D("1.3"), D(40000)),)
    state = account(policy=ExecutionPolicy(max_position_equity_pct=D(200)), equity="10000", resting=resting)

    rej = check_order(buy(), state, EURUSD, MKT)

    assert rej is not None and rej.code == Code.INSUFFICIENT_MARGIN
    assert rej.details == {
        "required_margin": "2200.40",
        "free_margin": "2000.00",
        "used_margin": "8000.00",
        "equity": "10000.00",
    }


def test_insufficient_margin_when_equity_is_not_positive() -> None:
    rej = check_order(buy(), account(equity="0"), EURUSD, MKT)

    assert rej is not None and rej.code == Code.INSUFFICIENT_MARGIN
    assert rej.details == {"equity": "0"}


def test_max_open_positions_counts_the_positions_already_open() -> None:
    positions, notional = others(5)

    rej = check_order(buy(), account(positions=positions, notional=notional), EURUSD, MKT)

    assert rej is not None and rej.code == Code.MAX_OPEN_POSITIONS
    assert rej.details == {"open_positions": 5, "limit": 5}


def test_adding_to_an_open_position_does_not_count_as_a_new_position() -> None:
    positions, notional = others(4)
    positions["EURUSD"] = Position("EURUSD", D("0.1"), D("1.1"))

    assert check_order(buy(), account(positions=positions, notional=notional), EURUSD, MKT) is None


def test_a_marketable_limit_order_fills_now_so_it_counts_against_max_open_positions() -> None:
    positions, notional = others(5)
    req = buy(order_type=OrderType.LIMIT, limit_price=D("1.10100"))  # above the ask: executes at once

    rej = check_order(req, account(positions=positions, notional=notional), EURUSD, MKT)

    assert rej is not None and rej.code == Code.MAX_OPEN_POSITIONS


def test_a_resting_limit_order_is_not_a_position_yet() -> None:
    positions, notional = others(5)
    req = buy(order_type=OrderType.LIMIT, limit_price=D("1.09000"))

    assert check_order(req, account(positions=positions, notional=notional), EURUSD, MKT) is None


def test_max_open_orders_counts_resting_orders() -> None:
    resting = tuple(RestingOrder("GBPUSD", Side.BUY, D("0.01"), D("1.2"), D(1)) for _ in range(10))
    req = buy(order_type=OrderType.LIMIT, limit_price=D("1.09000"))

    rej = check_order(req, account(resting=resting), EURUSD, MKT)

    assert rej is not None and rej.code == Code.MAX_OPEN_ORDERS
    assert rej.details == {"open_orders": 10, "limit": 10}


def test_reduce_only_without_a_position_is_refused_as_no_position() -> None:
    rej = check_order(sell(reduce_only=True), account(), EURUSD, MKT)

    assert rej is not None and rej.code == Code.NO_POSITION
    assert rej.details == {"symbol": "EURUSD", "position": "0", "order": "-0.1"}


def test_reduce_only_larger_than_the_position_is_refused() -> None:
    state = account(positions={"EURUSD": Position("EURUSD", D("0.1"), D("1.1"))})

    rej = check_order(sell("0.2", reduce_only=True), state, EURUSD, MKT)

    assert rej is not None and rej.code == Code.NO_POSITION
    assert rej.details == {"symbol": "EURUSD", "position": "0.1", "order": "-0.2"}


# ---------------------------------------------------------------- reducing always passes exposure gates
@pytest.mark.parametrize("reduce_only", [True, False])
def test_reducing_a_position_passes_every_exposure_gate_even_when_all_limits_are_blown(reduce_only: bool) -> None:
    positions, notional = others(7)  # above max_open_positions
    positions["EURUSD"] = Position("EURUSD", D("5"), D("1.1"))
    notional["EURUSD"] = D(550000)  # above max_notional, leverage and position share
    policy = ExecutionPolicy(max_aggregate_notional=D(1000), max_open_positions=1, max_open_orders=0)
    resting = (RestingOrder("GBPUSD", Side.BUY, D(1), D("1.2"), D(10**6)),)
    state = account(policy=policy, equity="-5000", positions=positions, notional=notional, resting=resting)

    assert check_order(sell("2", reduce_only=reduce_only), state, EURUSD, MKT) is None
    assert check_order(sell("5", reduce_only=reduce_only), state, EURUSD, MKT) is None


def test_a_flip_is_gated_on_the_far_side_only() -> None:
    state = account(positions={"EURUSD": Position("EURUSD", D("0.5"), D("1.1"))})

    # 0.5 closes the long, 0.4 opens a short of 44,008: within the 50,000 per-order limit.
    assert check_order(sell("0.9"), state, EURUSD, MKT) is None
    rej = check_order(sell("1.0"), state, EURUSD, MKT)  # far side 0.5 lots = 55,000 > 50,000
    assert rej is not None and rej.code == Code.NOTIONAL_EXCEEDED
    assert rej.details == {"notional": "55000.00", "limit": "50000.00"}


def test_every_code_check_order_can_return_is_covered_here() -> None:
    """The codes above are all of ``Code`` except those produced outside ``check_order``."""
    # The kill switch's codes come from check_trading_mode (tested below and in test_kill_switch.py).
    produced_elsewhere = {Code.UNSUPPORTED_ACTION, Code.RULE_VIOLATION, Code.TRADING_HALTED, Code.TRADING_REDUCE_ONLY}
    tested = {
        Code.ACCOUNT_NOT_ACTIVE,
        Code.UNKNOWN_SYMBOL,
        Code.ASSET_NOT_ALLOWED,
        Code.INVALID_QUANTITY,
        Code.INVALID_PRICE,
        Code.MISSING_PRICE,
        Code.STALE_PRICE,
        Code.MISSING_CONVERSION_PRICE,
        Code.MARKET_CLOSED,  # covered in tests/integration/test_market_hours_gates.py
        Code.DIRECTION_NOT_ALLOWED,
        Code.INVALID_STOP_LOSS,
        Code.INVALID_TAKE_PROFIT,
        Code.NOTIONAL_EXCEEDED,
        Code.AGGREGATE_NOTIONAL_EXCEEDED,
        Code.LEVERAGE_EXCEEDED,
        Code.POSITION_EQUITY_EXCEEDED,
        Code.INSUFFICIENT_MARGIN,
        Code.MAX_OPEN_POSITIONS,
        Code.MAX_OPEN_ORDERS,
        Code.NO_POSITION,
    }
    all_codes = {v for k, v in vars(Code).items() if k.isupper()}

    assert tested | produced_elsewhere == all_codes


def test_a_rejection_serializes_code_message_and_details() -> None:
    rej = check_order(buy("1"), account(), EURUSD, MKT)

    assert rej is not None
    assert rej.to_json() == {"code": "notional_exceeded", "message": rej.message, "details": rej.details}
    assert "110020.00" in rej.message and "50000.00" in rej.message


def test_the_kill_switch_gate_halts_everything_and_under_reduce_only_passes_only_reductions() -> None:
    from propdesk.domain.gates import check_trading_mode, stricter_mode

    long = Position("EURUSD", D("0.5"), D("1.1"))
    assert check_trading_mode(sell("0.1"), "active", long, "platform") is None
    rej = check_trading_mode(sell("0.1"), "halted", long, "EURUSD")
    assert rej is not None and rej.code == Code.TRADING_HALTED and rej.details["scope"] == "EURUSD"
    assert check_trading_mode(sell("0.5"), "reduce_only", long, "platform") is None
    for req, pos in ((sell("0.6"), long), (buy("0.1"), long), (sell("0.1"), None)):
        rej = check_trading_mode(req, "reduce_only", pos, "platform")
        assert rej is not None and rej.code == Code.TRADING_REDUCE_ONLY
    assert (
        stricter_mode("reduce_only", "halted") == "halted" and stricter_mode("active", "reduce_only") == "reduce_only"
    )
