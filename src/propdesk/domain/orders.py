"""Orders: sides, types, statuses and the validated request the gates check."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class OrderStatus(StrEnum):
    OPEN = "open"  # resting limit/stop order
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    VOIDED = "voided"


OPEN_ORDER_STATUSES = frozenset({OrderStatus.OPEN})


class OrderPurpose(StrEnum):
    """Why an order exists: a client's order, or one the engine made (SL/TP, liquidation, close)."""

    CLIENT = "client"
    CLOSE = "close"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    LIQUIDATION = "liquidation"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A proposed order after parsing; the gates decide whether it may execute."""

    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reduce_only: bool = False
    purpose: OrderPurpose = OrderPurpose.CLIENT
    client_order_id: str | None = None

    @property
    def trigger_price(self) -> Decimal | None:
        if self.order_type is OrderType.LIMIT:
            return self.limit_price
        if self.order_type is OrderType.STOP:
            return self.stop_price
        return None


def crosses(order_type: OrderType, side: Side, price: Decimal, bid: Decimal, ask: Decimal) -> bool:
    """Does a quote make a resting order executable?

    A buy limit executes when the ask is at or below its price, a sell limit when the bid is at or above it;
    a buy stop when the ask is at or above its price, a sell stop when the bid is at or below it.
    """
    if order_type is OrderType.LIMIT:
        return ask <= price if side is Side.BUY else bid >= price
    if order_type is OrderType.STOP:
        return ask >= price if side is Side.BUY else bid <= price
    return True


def protective_trigger(
    quantity: Decimal, stop_loss: Decimal | None, take_profit: Decimal | None, bid: Decimal, ask: Decimal
) -> OrderPurpose | None:
    """Which protective level (if any) a quote hits for a position of signed ``quantity``.

    A long position closes at the bid: stop loss when bid <= SL, take profit when bid >= TP. A short closes
    at the ask: stop loss when ask >= SL, take profit when ask <= TP. When a gap hits both, the stop loss wins
    (the conservative reading).
    """
    if quantity > 0:
        if stop_loss is not None and bid <= stop_loss:
            return OrderPurpose.STOP_LOSS
        if take_profit is not None and bid >= take_profit:
            return OrderPurpose.TAKE_PROFIT
    elif quantity < 0:
        if stop_loss is not None and ask >= stop_loss:
            return OrderPurpose.STOP_LOSS
        if take_profit is not None and ask <= take_profit:
            return OrderPurpose.TAKE_PROFIT
    return None
