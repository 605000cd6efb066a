"""Position math (netting: one signed position per account and symbol) and valuation.

A position is a signed quantity in lots and an average entry price. A fill either increases it (weighted
average price), reduces it (realizing P&L on the closed part at the average price), or flips it (closes all,
opens the remainder at the fill price).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from .instruments import Instrument
from .money import CTX, ZERO, price
from .orders import Side
from .quotes import Quote


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    quantity: Decimal  # signed lots: > 0 long, < 0 short
    avg_price: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    opened_at: datetime | None = None

    @property
    def side(self) -> Side:
        return Side.BUY if self.quantity > 0 else Side.SELL

    @property
    def is_flat(self) -> bool:
        return self.quantity == 0


@dataclass(frozen=True, slots=True)
class FillEffect:
    """What one fill does to a position. ``realized_quote`` is in the instrument's quote currency."""

    position: Position | None  # None when the fill leaves the account flat in the symbol
    closed_quantity: Decimal  # lots closed (>= 0)
    opened_quantity: Decimal  # lots added to exposure (>= 0)
    realized_quote: Decimal  # P&L realized on the closed part, quote currency, unrounded


def apply_fill(
    position: Position | None,
    symbol: str,
    side: Side,
    quantity: Decimal,
    fill_price: Decimal,
    contract_size: Decimal,
    at: datetime | None = None,
) -> FillEffect:
    """Apply a fill of ``quantity`` (> 0) lots on ``side`` at ``fill_price`` to ``position``."""
    if quantity <= 0:
        raise ValueError("fill quantity must be positive")
    delta = quantity if side is Side.BUY else -quantity
    old_q = position.quantity if position is not None else ZERO
    if position is None or old_q == 0:
        return FillEffect(Position(symbol, delta, fill_price, None, None, at), ZERO, quantity, ZERO)
    assert position is not None
    new_q = old_q + delta
    if (old_q > 0) == (delta > 0):
        # Increase: weighted average entry.
        total_cost = CTX.add(CTX.multiply(abs(old_q), position.avg_price), CTX.multiply(quantity, fill_price))
        avg = price(CTX.divide(total_cost, abs(new_q)))
        return FillEffect(replace(position, quantity=new_q, avg_price=avg), ZERO, quantity, ZERO)
    closed = min(abs(old_q), quantity)
    direction = Decimal(1) if old_q > 0 else Decimal(-1)
    realized = CTX.multiply(
        CTX.multiply(CTX.multiply(fill_price - position.avg_price, closed), contract_size), direction
    )
    if new_q == 0:
        return FillEffect(None, closed, ZERO, realized)
    if (new_q > 0) == (old_q > 0):
        # Partial reduce: the average entry of what remains is unchanged.
        return FillEffect(replace(position, quantity=new_q), closed, ZERO, realized)
    # Flip: the remainder opens a new position at the fill price; protective levels do not carry over.
    return FillEffect(Position(symbol, new_q, fill_price, None, None, at), closed, abs(new_q), realized)


def mark_price(position: Position, quote: Quote) -> Decimal:
    """The price a position would close at now: longs at the bid, shorts at the ask."""
    return quote.bid if position.quantity > 0 else quote.ask


def unrealized_quote(position: Position, quote: Quote, contract_size: Decimal) -> Decimal:
    """Floating P&L in the quote currency, unrounded."""
    return CTX.multiply(
        CTX.multiply(mark_price(position, quote) - position.avg_price, position.quantity), contract_size
    )


@dataclass(frozen=True, slots=True)
class PositionMark:
    symbol: str
    quantity: Decimal
    mark: Decimal
    unrealized: Decimal  # account currency, unrounded
    notional: Decimal  # account currency, absolute


@dataclass(frozen=True, slots=True)
class Valuation:
    """Equity of an account at a set of quotes. ``missing`` lists symbols with no usable quote/conversion."""

    cash: Decimal
    unrealized: Decimal
    equity: Decimal
    notional: Decimal
    marks: tuple[PositionMark, ...]
    missing: tuple[str, ...]


QuoteLookup = Callable[[str], Quote | None]
RateLookup = Callable[[str], Decimal | None]  # quote currency -> rate into the account currency


def valuate(
    cash: Decimal,
    positions: Iterable[Position],
    instruments: Mapping[str, Instrument],
    quotes: QuoteLookup,
    rate: RateLookup,
) -> Valuation:
    """Mark every open position; a position without a quote or conversion rate is listed in ``missing``."""
    unreal = ZERO
    notional = ZERO
    marks: list[PositionMark] = []
    missing: list[str] = []
    for pos in positions:
        if pos.quantity == 0:
            continue
        inst = instruments[pos.symbol]
        q = quotes(pos.symbol)
        r = rate(inst.quote_currency)
        if q is None or r is None:
            missing.append(pos.symbol)
            continue
        u = CTX.multiply(unrealized_quote(pos, q, inst.contract_size), r)
        mp = mark_price(pos, q)
        n = CTX.multiply(inst.contract_value(abs(pos.quantity), mp), r)
        unreal = CTX.add(unreal, u)
        notional = CTX.add(notional, n)
        marks.append(PositionMark(pos.symbol, pos.quantity, mp, u, n))
    return Valuation(cash, unreal, CTX.add(cash, unreal), notional, tuple(marks), tuple(missing))


def replay(symbol: str, fills: Iterable[tuple[Side, Decimal, Decimal]], contract_size: Decimal) -> Position | None:
    """Fold ``(side, quantity, price)`` fills into the position they produce (used by recompute and voids)."""
    pos: Position | None = None
    for side, qty, px in fills:
        pos = apply_fill(pos, symbol, side, qty, px, contract_size).position
    return pos
