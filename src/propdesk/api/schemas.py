"""Request models. Strict by default: unknown fields are refused (a client cannot slip in a fill price), strings
have bounded lengths and character sets, numbers are exact finite decimals with bounded decimal places, and
enums accept only their listed values."""

from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from ..domain.lifecycle import Mode
from ..domain.money import DECIMAL_GRAMMAR, DECIMAL_GRAMMAR_HINT, check_finite, decimals_of
from ..domain.orders import OrderRequest, OrderType, Side

PRICE_DECIMALS = 10  # NUMERIC(28,10): more digits would be rounded silently by the database
QUANTITY_DECIMALS = 8


def _decimal(v: Any) -> Decimal:
    """An exact decimal from a JSON number (already a Decimal from our decoder), an int or a decimal string."""
    if isinstance(v, bool):
        raise ValueError("must be a decimal number, not a boolean")
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, float):
        d = Decimal(repr(v))  # the shortest repr round-trips: exactly what the client wrote
    elif isinstance(v, str):
        if not DECIMAL_GRAMMAR.fullmatch(v):
            raise ValueError(f"must be {DECIMAL_GRAMMAR_HINT}")
        d = Decimal(v)
    else:
        raise ValueError("must be a decimal number")
    return check_finite(d, field="number")


def _positive(d: Decimal) -> Decimal:
    if d <= 0:
        raise ValueError("must be greater than zero")
    return d


def _places(limit: int) -> Any:
    def check(d: Decimal) -> Decimal:
        if decimals_of(d) > limit:
            n = d.normalize()
            if decimals_of(n) > limit:
                raise ValueError(f"at most {limit} decimal places")
            return n
        return d

    return check


def _plain_text(s: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in s):
        raise ValueError("control characters are not allowed")
    return s


# pydantic alone would also read "0.5" or "1700000000" as a Unix time: a timestamp is ISO 8601 text, always.
_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)


def _iso_string(v: Any) -> Any:
    if not isinstance(v, str):
        raise ValueError("must be an ISO-8601 timestamp string with a UTC offset")
    if len(v) > 40:
        raise ValueError("timestamp too long")
    if not _ISO_TIMESTAMP.fullmatch(v):
        raise ValueError("must be an ISO-8601 timestamp such as 2026-03-02T10:00:00Z")
    return v


Price = Annotated[
    Decimal, BeforeValidator(_decimal), AfterValidator(_positive), AfterValidator(_places(PRICE_DECIMALS))
]
Quantity = Annotated[
    Decimal, BeforeValidator(_decimal), AfterValidator(_positive), AfterValidator(_places(QUANTITY_DECIMALS))
]
Amount = Price
Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")]
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@+\-]{1,200}$")]
ClientOrderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]
ActionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
Phase = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
PlanId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
BodyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e][\x20-\x7e]{0,199}$")]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500), AfterValidator(_plain_text)]
LongText = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_plain_text)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_string)]
Seq = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- accounts
class CreateAccountBody(Strict):
    owner_id: Ident = Field(description="The trader or AI agent that owns the account.")
    clone_id: Ident | None = Field(default=None, description="An AI agent instance; lists its accounts.")
    parent_account_id: uuid.UUID | None = Field(default=None, description="The previous phase's account.")
    mode: Mode
    phase: Phase = "phase_1"
    starting_balance: Amount | None = None
    currency: Currency | None = None
    policy: dict[str, Any] | None = Field(default=None, description="Overrides of execution policy keys.")
    start: StrictBool = False
    idempotency_key: BodyKey | None = Field(default=None, description="Same key + same body returns the account.")
    plan_id: PlanId | None = Field(
        default=None, description="A challenge plan: its rulebook is frozen onto the account (mode must be challenge)."
    )
    plan_version: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="A plan version (default: the latest active one)."
    )
    offer_id: PlanId | None = Field(default=None, description="The plan's offer (size); sets the starting balance.")

    @field_validator("policy")
    @classmethod
    def _policy_size(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and len(v) > 32:
            raise ValueError("at most 32 policy keys")
        return v


class ReasonBody(Strict):
    reason: Reason | None = None


class CompleteBody(Strict):
    reason: Reason | None = None
    flatten: bool = Field(
        default=False,
        description="With open positions or resting orders: cancel the orders and close the positions at market"
        " (with their evidence), then complete, in one transaction. Without it such an account is 409"
        " `account_has_exposure`.",
    )


# ---------------------------------------------------------------------------------------------- orders
def _check_order_prices(order_type: OrderType, limit_price: Decimal | None, stop_price: Decimal | None) -> None:
    if order_type is OrderType.LIMIT and (limit_price is None or stop_price is not None):
        raise ValueError("a limit order needs limit_price and no stop_price")
    if order_type is OrderType.STOP and (stop_price is None or limit_price is not None):
        raise ValueError("a stop order needs stop_price and no limit_price")
    if order_type is OrderType.MARKET and (limit_price is not None or stop_price is not None):
        raise ValueError("a market order takes neither limit_price nor stop_price")


class OrderFields(Strict):
    """An order's fields as a client sends them (an order body, or a risk preview of one)."""

    symbol: Symbol
    side: Side
    quantity: Quantity = Field(description="Lots, a positive decimal (string or JSON number).")
    order_type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    stop_price: Price | None = None
    stop_loss: Price | None = None
    take_profit: Price | None = None

    def to_request(self, client_order_id: str | None = None) -> OrderRequest:
        """The execution core's order request for these fields."""
        return OrderRequest(
            self.symbol,
            self.side,
            self.quantity,
            self.order_type,
            self.limit_price,
            self.stop_price,
            self.stop_loss,
            self.take_profit,
            client_order_id=client_order_id,
        )


class OrderBody(OrderFields):
    client_order_id: ClientOrderId | None = None

    @model_validator(mode="after")
    def _prices(self) -> OrderBody:
        _check_order_prices(self.order_type, self.limit_price, self.stop_price)
        return self

    def to_request(self, client_order_id: str | None = None) -> OrderRequest:
        """The execution core's order request for this body (with its client order id)."""
        return super().to_request(client_order_id or self.client_order_id)


class ClosePositionBody(Strict):
    quantity: Quantity | None = Field(default=None, description="Lots to close; the whole position when absent.")


class ModifyPositionBody(Strict):
    stop_loss: Price | None = None
    take_profit: Price | None = None
    clear_stop_loss: StrictBool = False
    clear_take_profit: StrictBool = False

    @model_validator(mode="after")
    def _something(self) -> ModifyPositionBody:
        if self.stop_loss is None and self.take_profit is None and not (self.clear_stop_loss or self.clear_take_profit):
            raise ValueError("give stop_loss, take_profit, clear_stop_loss or clear_take_profit")
        if (self.stop_loss is not None and self.clear_stop_loss) or (
            self.take_profit is not None and self.clear_take_profit
        ):
            raise ValueError("a level cannot be both set and cleared")
        return self


# ---------------------------------------------------------------------------------------------- decisions
class DecisionActionItem(Strict):
    """One proposed action. ``action`` may be any name: unknown ones (and ``hold``) are recorded as
    unsupported. Parameters are validated whatever the action."""

    decision_action_id: Ident
    action: ActionName
    symbol: Symbol | None = None
    side: Side | None = None
    quantity: Quantity | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    stop_price: Price | None = None
    stop_loss: Price | None = None
    take_profit: Price | None = None
    order_id: uuid.UUID | None = None
    client_order_id: ClientOrderId | None = None
    rationale: LongText | None = None

    @model_validator(mode="after")
    def _prices(self) -> DecisionActionItem:
        if self.action == "open":
            _check_order_prices(self.order_type, self.limit_price, self.stop_price)
        return self


class DecisionBatchBody(Strict):
    decision_run_id: Ident
    actions: list[DecisionActionItem] = Field(min_length=1, max_length=100)


# ---------------------------------------------------------------------------------------------- quotes
class QuoteIn(Strict):
    symbol: Symbol
    bid: Price
    ask: Price
    ts: Timestamp = Field(description="ISO-8601 with a UTC offset; naive timestamps are refused.")
    seq: Seq | None = None

    @model_validator(mode="after")
    def _spread(self) -> QuoteIn:
        if self.ask < self.bid:
            raise ValueError("ask must be at or above bid")
        return self


QuoteBatch = Annotated[list[QuoteIn], Field(min_length=1, max_length=1000)]


# ---------------------------------------------------------------------------------------------- admin
class AdminBody(Strict):
    reason: Reason


class VoidOrderBody(Strict):
    reason: Reason
    order_id: uuid.UUID


class VoidFillBody(Strict):
    reason: Reason
    fill_id: uuid.UUID


# ---------------------------------------------------------------------------------------------- rules
class PlanBody(Strict):
    """A plan file (rulebook + offers) as YAML or JSON text; stored as the next version of its id."""

    text: Annotated[str, StringConstraints(min_length=2, max_length=200_000)]


class ExternalTradeBody(Strict):
    """A trade executed on another platform (MT5, cTrader), checked against the account's rulebook."""

    account_id: uuid.UUID
    ticket: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]
    symbol: Symbol
    side: Side
    lots: Quantity
    open_time: Timestamp
    open_price: Price
    close_time: Timestamp | None = None
    close_price: Price | None = None
    sl: Price | None = None
    tp: Price | None = None
    commission: Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_places(PRICE_DECIMALS))] = Decimal(0)
    swap: Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_places(PRICE_DECIMALS))] = Decimal(0)
    profit: Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_places(PRICE_DECIMALS))] | None = None

    @model_validator(mode="after")
    def _close_pair(self) -> ExternalTradeBody:
        if (self.close_time is None) != (self.close_price is None):
            raise ValueError("close_time and close_price must both be given or both be absent")
        if self.close_time is not None and self.close_time < self.open_time:
            raise ValueError("close_time is before open_time")
        return self


class CalendarEventBody(Strict):
    """An economic calendar event entered by an admin."""

    at: Timestamp
    currency: Currency
    impact: Annotated[str, StringConstraints(pattern=r"^(high|medium|low)$")]
    title: Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_plain_text)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{0,3}$")] = ""
