"""Money parsing refuses everything that is not an exact, finite, storable decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.money import (
    MAX_ABS_AMOUNT,
    check_finite,
    decimals_of,
    fmt,
    is_multiple,
    money,
    parse_decimal,
    price,
)
from propdesk.domain.policy import ExecutionPolicy

D = Decimal


@pytest.mark.parametrize("text", ["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "+Inf"])
def test_nan_and_infinities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_decimal(text, field="quantity")


@pytest.mark.parametrize("value", [1.5, 0.1, float("nan"), float("inf"), True, False])
def test_floats_and_booleans_are_refused_because_they_are_not_exact(value: object) -> None:
    with pytest.raises(ValueError, match=r"not (float|bool)"):
        parse_decimal(value, field="quantity")


@pytest.mark.parametrize(
    "text", ["1e400", "-1e400", "1E+17", "100000000000000000", "1e1000000", "-1e999999999", "9" * 5000]
)
def test_strings_too_large_for_the_columns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_decimal(text, field="amount")


def test_huge_integers_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_decimal(10**5000, field="amount")
    with pytest.raises(ValueError, match="too large"):
        parse_decimal(-(10**17))


@pytest.mark.parametrize("value", ["", "  ", "abc", "1.2.3", "0x10", "1,5", None, [], {}, b"1"])
def test_non_numbers_are_refused_with_the_field_named(value: object) -> None:
    with pytest.raises(ValueError, match=r"^price: "):
        parse_decimal(value, field="price")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.50", D("1.50")),
        (" 2 ", D(2)),
        (7, D(7)),
        (D("-0.25"), D("-0.25")),
        ("99999999999999999.99", D("99999999999999999.99")),  # just under 1e17 is still storable
    ],
)
def test_finite_decimals_within_the_column_limit_parse_exactly(value: object, expected: Decimal) -> None:
    assert parse_decimal(value) == expected


def test_check_finite_uses_the_column_limit() -> None:
    assert check_finite(MAX_ABS_AMOUNT - 1) == MAX_ABS_AMOUNT - 1
    with pytest.raises(ValueError):
        check_finite(MAX_ABS_AMOUNT)


def test_money_rounds_to_cents_half_even_and_price_to_ten_decimals() -> None:
    assert money(D("0.125")) == D("0.12")
    assert money(D("0.135")) == D("0.14")
    assert price(D("1.00000000005")) == D("1.0000000000")
    assert price(D("1.00000000015")) == D("1.0000000002")


def test_decimals_and_multiples_are_read_as_written() -> None:
    assert decimals_of(D("1.50")) == 2
    assert decimals_of(D("100")) == 0
    assert decimals_of(D("1E+2")) == 0
    assert is_multiple(D("0.03"), D("0.01"))
    assert not is_multiple(D("0.015"), D("0.01"))
    assert fmt(D("1E+3")) == "1000"


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**16), max_value=10**16, places=4))
def test_any_storable_decimal_string_round_trips(d: Decimal) -> None:
    assert parse_decimal(fmt(d)) == d


def test_a_policy_from_json_refuses_floats_nan_and_unknown_keys_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="fee_bps"):
        ExecutionPolicy.from_json({"fee_bps": 1.5})
    with pytest.raises(ValueError, match="max_notional"):
        ExecutionPolicy.from_json({"max_notional": "NaN"})
    with pytest.raises(ValueError, match="bogus"):
        ExecutionPolicy.from_json({"bogus": 1})
    policy = ExecutionPolicy(max_notional=D(123), max_aggregate_notional=None)
    assert ExecutionPolicy.from_json(policy.to_json()) == policy
