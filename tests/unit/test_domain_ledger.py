"""The ledger fold: balances are a pure function of the entries."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.ledger import Category, Entry, EntryKind, Totals, fold

D = Decimal


def test_an_empty_ledger_folds_to_zero() -> None:
    assert fold([]) == Totals()


def test_cash_is_the_sum_and_each_category_has_its_running_total() -> None:
    entries = [
        (D(100000), "deposit", D(100000)),
        (D("-11.00"), "fee", None),
        (D("250.50"), "pnl", D("100239.50")),
        (D("-80.25"), "pnl", None),
        (D("-5.00"), "fee", None),
        (D(0), "none", None),
        (D("10.00"), "adjustment", None),
    ]

    totals = fold(entries)

    assert totals.cash == D("100164.25")
    assert totals.deposits == D(100000)
    assert totals.fees == D("16.00")  # a positive number: commissions paid
    assert totals.realized_pnl == D("170.25")
    assert totals.adjustments == D("10.00")
    assert totals.entries == 7
    assert totals.high_watermark == D("100239.50")


def test_the_high_watermark_follows_cash_and_recorded_equity() -> None:
    totals = fold(
        [
            (D(1000), Category.DEPOSIT, None),
            (D(0), Category.NONE, D(1500)),
            (D(-600), Category.PNL, D(400)),
            (D(700), Category.PNL, None),
        ]
    )

    assert totals.high_watermark == D(1500)
    assert fold([(D(1000), "deposit", None), (D(600), "pnl", None)]).high_watermark == D(1600)


def test_an_entry_without_a_category_cannot_move_cash() -> None:
    with pytest.raises(ValueError, match="moves cash"):
        fold([(D(1), "none", None)])
    with pytest.raises(ValueError, match="cannot move cash"):
        Entry(EntryKind.FILL, D(1))


def test_ledger_amounts_are_whole_cents() -> None:
    with pytest.raises(ValueError, match="cents"):
        Entry(EntryKind.FEE, D("-0.001"), Category.FEE)
    assert Entry(EntryKind.FEE, D("-0.01"), Category.FEE).amount == D("-0.01")


cents = st.integers(min_value=-(10**9), max_value=10**9).map(lambda n: D(n).scaleb(-2))
entries = st.lists(
    st.tuples(cents, st.sampled_from(["deposit", "pnl", "fee", "adjustment"]), st.one_of(st.none(), cents)), max_size=60
)


@given(entries)
def test_the_fold_conserves_money(rows: list[tuple[Decimal, str, Decimal | None]]) -> None:
    totals = fold(rows)

    assert totals.cash == sum((a for a, _, _ in rows), D(0))
    assert totals.cash == totals.deposits + totals.realized_pnl - totals.fees + totals.adjustments
    assert totals.entries == len(rows)
    running = D(0)
    for amount, _, equity in rows:
        running += amount
        assert totals.high_watermark >= running
        assert equity is None or totals.high_watermark >= equity


@given(entries, entries)
def test_folding_is_incremental(
    a: list[tuple[Decimal, str, Decimal | None]], b: list[tuple[Decimal, str, Decimal | None]]
) -> None:
    whole, left, right = fold(a + b), fold(a), fold(b)

    assert whole.cash == left.cash + right.cash
    assert whole.fees == left.fees + right.fees
    assert whole.realized_pnl == left.realized_pnl + right.realized_pnl
    assert whole.deposits == left.deposits + right.deposits
    assert whole.entries == left.entries + right.entries
    assert whole.high_watermark >= left.high_watermark
