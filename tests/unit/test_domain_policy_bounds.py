"""Every numeric execution-policy key has a range that keeps fill prices positive and amounts storable."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.policy import BOUNDS, INT_BOUNDS, ExecutionPolicy


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_each_decimal_policy_key_accepts_its_range_ends_and_refuses_beyond_them(key: str) -> None:
    low, high = BOUNDS[key]
    extra = {"slippage_bps_max": "1000"} if key == "slippage_bps_min" else {}
    for ok in (low, high):
        if key == "slippage_bps_max" and ok < ExecutionPolicy().slippage_bps_min:
            continue
        assert getattr(ExecutionPolicy.from_json({key: str(ok), **extra}), key) == ok
    with pytest.raises(ValueError, match=key):
        ExecutionPolicy.from_json({key: str(high + Decimal("0.01")), **extra})


@pytest.mark.parametrize("key", sorted(INT_BOUNDS))
def test_each_integer_policy_key_refuses_values_beyond_its_range(key: str) -> None:
    low, high = INT_BOUNDS[key]
    assert getattr(ExecutionPolicy.from_json({key: high}), key) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=key):
            ExecutionPolicy.from_json({key: bad})


def test_a_policy_built_directly_is_held_to_the_same_ranges() -> None:
    with pytest.raises(ValueError, match="fee_bps"):
        ExecutionPolicy(fee_bps=Decimal(5000)).validate()


@given(
    bps=st.decimals(min_value=0, max_value=1000, places=2),
    mid=st.decimals(min_value=Decimal("0.0001"), max_value=10**6, places=4),
)
def test_the_worst_allowed_slippage_never_makes_a_sell_price_negative(bps: Decimal, mid: Decimal) -> None:
    policy = ExecutionPolicy.from_json({"slippage_bps_min": "0", "slippage_bps_max": str(bps)})
    assert mid * (1 - policy.slippage_bps_max / Decimal(10_000)) >= 0
