"""Exact money and quantities.

Amounts are ``decimal.Decimal`` everywhere; floats never enter the ledger. Money in the account currency is
quantized to cents (``MONEY_QUANT``) with banker's rounding at the moment a ledger amount is created, so a
fold over the ledger is an exact sum. Prices and average prices keep more digits (``PRICE_QUANT``).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

# A context wide enough that no product of a price, a size and a contract size ever rounds implicitly.
CTX = Context(prec=50, rounding=ROUND_HALF_EVEN)

MONEY_QUANT = Decimal("0.01")
PRICE_QUANT = Decimal("0.0000000001")  # 10 dp: average prices and conversion rates
QTY_QUANT = Decimal("0.00000001")  # 8 dp: lots

ZERO = Decimal(0)

# Column limits (NUMERIC(28, 10) in the database): anything larger is refused at the edge.
MAX_ABS_AMOUNT = Decimal("1e17")

#: The one grammar of a decimal written as text, everywhere a client sends one (order fields, policy overrides,
#: admin amounts): ASCII digits, an optional leading "-", an optional fraction and exponent. ``Decimal()`` alone
#: would also take Unicode digits, "_" separators, a "+" sign, surrounding spaces, "Infinity" and "NaN".
DECIMAL_GRAMMAR = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?", re.ASCII)
DECIMAL_GRAMMAR_HINT = 'a decimal number such as "1.25" (ASCII digits; no spaces, "_", or signs other than "-")'


def money(value: Decimal | int | str) -> Decimal:
    """Round an amount in the account currency to cents (half-even)."""
    return Decimal(value).quantize(MONEY_QUANT, rounding=ROUND_HALF_EVEN, context=CTX)


def price(value: Decimal | int | str) -> Decimal:
    """Round a derived price (average price, conversion rate) to ``PRICE_QUANT``."""
    return Decimal(value).quantize(PRICE_QUANT, rounding=ROUND_HALF_EVEN, context=CTX)


def parse_decimal(value: object, *, field: str = "value") -> Decimal:
    """Parse a finite decimal from a string, int or Decimal. Floats are refused: they are not exact.

    Raises ``ValueError`` with a reason for NaN, infinities, floats, booleans and absurdly large values.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{field}: must be a decimal string or integer, not {type(value).__name__}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"{field}: {value[:50]!r} is not {DECIMAL_GRAMMAR_HINT}") from exc
        check_finite(d, field=field)  # names NaN, infinities and huge magnitudes for what they are
        if not DECIMAL_GRAMMAR.fullmatch(value):
            raise ValueError(f"{field}: {value[:50]!r} is not {DECIMAL_GRAMMAR_HINT}")
    else:
        raise ValueError(f"{field}: must be a decimal string or integer")
    return check_finite(d, field=field)


def check_finite(d: Decimal, *, field: str = "value") -> Decimal:
    """Refuse NaN, infinities and magnitudes the database columns cannot hold."""
    if not d.is_finite():
        raise ValueError(f"{field}: must be finite (got {d})")
    # copy_abs, not abs(): abs() applies the thread's decimal context, and '1e1000000' would raise Overflow.
    if d.copy_abs() >= MAX_ABS_AMOUNT:
        raise ValueError(f"{field}: magnitude too large (limit {MAX_ABS_AMOUNT:.0E})")
    return d


def decimals_of(d: Decimal) -> int:
    """Number of digits after the decimal point in ``d`` as written (``1.50`` -> 2, ``100`` -> 0)."""
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """True when ``value`` is an exact multiple of ``step``."""
    if step == 0:
        return True
    return (value % step) == 0


def fmt(d: Decimal) -> str:
    """Canonical string of a Decimal for JSON: no exponent, no trailing noise beyond its quantum."""
    return format(d, "f")
