"""Position math: increase, reduce, flip and replay, checked on examples and as properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.instruments import DEFAULT_CATALOGUE, instruments_by_symbol
from propdesk.domain.money import CTX
from propdesk.domain.orders import Side
from propdesk.domain.positions import Position, apply_fill, mark_price, replay, unrealized_quote, valuate
from propdesk.domain.quotes import Quote

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D = Decimal

lots = st.integers(min_value=1, max_value=50_000).map(lambda n: D(n).scaleb(-2))  # 0.01 .. 500.00
prices = st.integers(min_value=1, max_value=20_000_000).map(lambda n: D(n).scaleb(-4))  # 0.0001 .. 2000.0000
contracts = st.sampled_from([D(1), D(100), D(1000), D(100000)])
sides = st.sampled_from([Side.BUY, Side.SELL])
fills = st.lists(st.tuples(sides, lots, prices), min_size=1, max_size=25)


def _signed(side: Side, qty: Decimal) -> Decimal:
    return qty if side is Side.BUY else -qty


# ---------------------------------------------------------------- examples
def test_a_first_fill_opens_a_position_at_the_fill_price() -> None:
    eff = apply_fill(None, "EURUSD", Side.SELL, D("1.5"), D("1.1"), D(100000), T0)

    assert eff.position == Position("EURUSD", D("-1.5"), D("1.1"), None, None, T0)
    assert (eff.opened_quantity, eff.closed_quantity, eff.realized_quote) == (D("1.5"), 0, 0)


def test_an_increase_averages_the_entry_price_by_quantity() -> None:
    pos = Position("XAUUSD", D(1), D(2000), D(1900), D(2100), T0)

    eff = apply_fill(pos, "XAUUSD", Side.BUY, D(3), D(2100), D(100))

    assert eff.position is not None
    assert eff.position.quantity == 4
    assert eff.position.avg_price == D(2075)
    assert (eff.position.stop_loss, eff.position.take_profit, eff.position.opened_at) == (D(1900), D(2100), T0)
    assert (eff.opened_quantity, eff.closed_quantity, eff.realized_quote) == (3, 0, 0)


def test_a_partial_reduce_realizes_the_closed_part_and_keeps_the_average_entry() -> None:
    pos = Position("XAUUSD", D(4), D(2000), D(1900), None, T0)

    eff = apply_fill(pos, "XAUUSD", Side.SELL, D(1), D(2010), D(100))

    assert eff.position == Position("XAUUSD", D(3), D(2000), D(1900), None, T0)
    assert eff.realized_quote == D(1000)  # (2010 - 2000) x 1 lot x 100 oz
    assert (eff.closed_quantity, eff.opened_quantity) == (1, 0)


def test_a_short_profits_when_the_price_falls() -> None:
    pos = Position("EURUSD", D(-2), D("1.1000"))

    eff = apply_fill(pos, "EURUSD", Side.BUY, D(2), D("1.0950"), D(100000))

    assert eff.position is None
    assert eff.realized_quote == D(1000)  # 50 pips x 2 lots x 100,000


def test_a_flip_closes_everything_and_opens_the_remainder_at_the_fill_price_without_protective_levels() -> None:
    pos = Position("EURUSD", D(1), D("1.1000"), D("1.0900"), D("1.1200"), T0)
    later = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)

    eff = apply_fill(pos, "EURUSD", Side.SELL, D("2.5"), D("1.1050"), D(100000), later)

    assert eff.position == Position("EURUSD", D("-1.5"), D("1.1050"), None, None, later)
    assert eff.closed_quantity == 1
    assert eff.opened_quantity == D("1.5")
    assert eff.realized_quote == D(500)


def test_a_fill_needs_a_positive_quantity() -> None:
    with pytest.raises(ValueError, match="positive"):
        apply_fill(None, "EURUSD", Side.BUY, D(0), D(1), D(1))


def test_positions_are_marked_at_the_price_they_would_close_at() -> None:
    q = Quote("EURUSD", D("1.1000"), D("1.1002"), T0)
    long, short = Position("EURUSD", D(1), D("1.0990")), Position("EURUSD", D(-1), D("1.0990"))

    assert mark_price(long, q) == D("1.1000")
    assert mark_price(short, q) == D("1.1002")
    assert unrealized_quote(long, q, D(100000)) == D(100)
    assert unrealized_quote(short, q, D(100000)) == D(-120)


def test_valuation_converts_into_the_account_currency_and_lists_symbols_without_prices() -> None:
    insts = instruments_by_symbol(DEFAULT_CATALOGUE)
    jpy = Quote("USDJPY", D("150.000"), D("150.000"), T0)
    positions = [Position("USDJPY", D(1), D("149.000")), Position("AAPL", D(10), D(200))]

    val = valuate(
        D(1000),
        positions,
        insts,
        lambda s: jpy if s == "USDJPY" else None,
        lambda ccy: D(1) / D(150) if ccy == "JPY" else D(1),
    )

    assert val.missing == ("AAPL",)
    # 1 yen x 100,000 = 100,000 JPY = 666.67 USD
    assert round(val.unrealized, 6) == round(D(100000) / D(150), 6)
    assert val.equity == CTX.add(val.cash, val.unrealized)


# ---------------------------------------------------------------- properties
@given(fills, contracts)
def test_position_quantity_is_the_signed_sum_of_its_fills(
    seq: list[tuple[Side, Decimal, Decimal]], contract: Decimal
) -> None:
    pos: Position | None = None
    for side, qty, px in seq:
        pos = apply_fill(pos, "X", side, qty, px, contract).position

    expected = sum((_signed(s, q) for s, q, _ in seq), D(0))
    assert (pos.quantity if pos is not None else D(0)) == expected
    assert pos is None or pos.quantity != 0  # a flat position is None, never a zero row


@given(sides, lots, prices, prices, contracts)
def test_a_round_trip_realizes_exit_minus_entry_times_signed_quantity_times_contract(
    side: Side, qty: Decimal, entry: Decimal, exit_: Decimal, contract: Decimal
) -> None:
    opened = apply_fill(None, "X", side, qty, entry, contract)

    closed = apply_fill(opened.position, "X", side.opposite, qty, exit_, contract)

    assert closed.position is None
    assert closed.closed_quantity == qty
    assert closed.realized_quote == (exit_ - entry) * _signed(side, qty) * contract


@given(sides, lots, lots, prices, prices, contracts)
def test_a_flip_opens_the_remainder_at_the_fill_price(
    side: Side, first: Decimal, second: Decimal, entry: Decimal, px: Decimal, contract: Decimal
) -> None:
    opened = apply_fill(None, "X", side, first, entry, contract).position
    assert opened is not None

    eff = apply_fill(opened, "X", side.opposite, first + second, px, contract)

    assert eff.position is not None
    assert eff.position.quantity == _signed(side.opposite, second)
    assert eff.position.avg_price == px
    assert (eff.closed_quantity, eff.opened_quantity) == (first, second)
    assert eff.realized_quote == (px - entry) * _signed(side, first) * contract


@given(fills, contracts)
def test_replaying_fills_equals_applying_them_one_by_one(
    seq: list[tuple[Side, Decimal, Decimal]], contract: Decimal
) -> None:
    pos: Position | None = None
    for side, qty, px in seq:
        pos = apply_fill(pos, "X", side, qty, px, contract).position

    assert replay("X", seq, contract) == pos


@given(fills, contracts)
def test_realized_plus_open_cost_matches_the_cash_flow_of_the_fills(
    seq: list[tuple[Side, Decimal, Decimal]], contract: Decimal
) -> None:
    """Money is conserved by the position math: realized P&L plus the open position valued at its entry equals
    what the fills paid and received (up to the 10-dp rounding of average prices)."""
    pos: Position | None = None
    realized = D(0)
    for side, qty, px in seq:
        eff = apply_fill(pos, "X", side, qty, px, contract)
        pos = eff.position
        realized += eff.realized_quote
    cash_flow = sum((-_signed(s, q) * p * contract for s, q, p in seq), D(0))
    open_value = pos.quantity * pos.avg_price * contract if pos is not None else D(0)
    traded = sum((q for _, q, _ in seq), D(0))

    assert abs(cash_flow + open_value - realized) <= traded * contract * D("1e-10") * len(seq)
