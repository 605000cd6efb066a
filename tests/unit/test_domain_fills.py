"""The fill simulator: mid, spread and reproducible random-bps slippage that always goes against the order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.fills import execution_price, fee_for, random_bps
from propdesk.domain.money import price
from propdesk.domain.orders import Side
from propdesk.domain.policy import ExecutionPolicy, SlippageModel
from propdesk.domain.quotes import Quote

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D = Decimal
QUOTE = Quote("EURUSD", D("1.10000"), D("1.10020"), T0)
RANDOM = ExecutionPolicy(slippage_model=SlippageModel.RANDOM_BPS, slippage_seed=42)


@pytest.mark.parametrize("side", list(Side))
def test_mid_price_fills_both_sides_at_the_mid(side: Side) -> None:
    px, bps = execution_price(side, QUOTE, ExecutionPolicy(slippage_model=SlippageModel.MID_PRICE), "o1")

    assert (px, bps) == (D("1.10010"), 0)


def test_spread_buys_at_the_ask_and_sells_at_the_bid() -> None:
    policy = ExecutionPolicy(slippage_model=SlippageModel.SPREAD)

    assert execution_price(Side.BUY, QUOTE, policy, "o1") == (D("1.10020"), 0)
    assert execution_price(Side.SELL, QUOTE, policy, "o1") == (D("1.10000"), 0)


def test_random_bps_is_reproducible_for_the_same_seed_and_key() -> None:
    first = execution_price(Side.BUY, QUOTE, RANDOM, "order-1")

    assert execution_price(Side.BUY, QUOTE, RANDOM, "order-1") == first
    assert random_bps(42, "order-1", D(1), D(3)) == first[1]
    # Different keys and seeds draw different slippage.
    draws = {random_bps(42, f"order-{i}", D(1), D(3)) for i in range(50)}
    assert len(draws) > 40
    assert random_bps(43, "order-1", D(1), D(3)) != random_bps(42, "order-1", D(1), D(3))


def test_random_bps_has_a_fixed_value_for_a_known_seed_and_key() -> None:
    """Pins the hash so a change in the algorithm (which would change replayed fills) is noticed."""
    assert random_bps(0, "k", D(1), D(3)) == D("2.6496")
    assert random_bps(42, "order-1", D(1), D(3)) == D("1.0611")
    assert random_bps(0, "k", D(2), D(2)) == D(2)


@given(
    st.integers(min_value=0, max_value=2**31),
    st.text(min_size=1, max_size=40),
    st.sampled_from(list(Side)),
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=0, max_value=10**4),
)
def test_random_bps_slippage_is_between_1_and_3_bps_against_the_order(
    seed: int, key: str, side: Side, bid_units: int, spread_units: int
) -> None:
    bid = D(bid_units).scaleb(-5)
    q = Quote("X", bid, bid + D(spread_units).scaleb(-5), T0)
    policy = ExecutionPolicy(slippage_model=SlippageModel.RANDOM_BPS, slippage_seed=seed)

    px, bps = execution_price(side, q, policy, key)

    assert D(1) <= bps <= D(3)
    assert px == price(q.mid * (1 + bps / D(10000) * side.sign))
    if side is Side.BUY:
        assert px > q.mid
    else:
        assert px < q.mid


def test_fee_is_fee_bps_of_the_absolute_notional() -> None:
    assert fee_for(D(110020), ExecutionPolicy()) == D("110.02")
    assert fee_for(D(-110020), ExecutionPolicy()) == D("110.02")
    assert fee_for(D(1000), ExecutionPolicy(fee_bps=D("2.5"))) == D("0.25")
    assert fee_for(D(1000), ExecutionPolicy(fee_bps=D(0))) == 0
