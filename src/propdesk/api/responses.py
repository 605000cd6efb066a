"""Response models: the documented shape of what the API answers (OpenAPI ``responses``).

Routes render their own JSON (``render.json_response``: decimals as strings, timestamps ISO-8601 with ``Z``) and
name these models as ``response_model`` for the document only; FastAPI passes a returned ``Response`` through
untouched. The models forbid unknown fields, so the schemathesis suite (tests/e2e/test_openapi_fuzz.py) fails as
soon as a new column reaches clients without being documented here.

Numbers are decimal strings, ids UUID strings, timestamps ISO-8601 strings. Nested documents whose shape is owned
elsewhere (an account's policy and rulebook, ledger evidence, a fill's quote) are objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Decimal = str  # a decimal number rendered as a string ("99754.2")
Timestamp = str  # ISO-8601 in UTC with "Z"


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BalanceOut(Out):
    cash: Decimal
    equity: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    deposits: Decimal
    adjustments: Decimal
    high_watermark: Decimal
    margin_used: Decimal
    ledger_seq: int
    marked_at: Timestamp | None
    updated_at: Timestamp


class AccountOut(Out):
    id: str
    owner_id: str
    clone_id: str | None
    parent_account_id: str | None
    mode: str
    phase: str
    status: str
    currency: str
    starting_balance: Decimal
    policy: dict[str, Any]
    rulebook: dict[str, Any] | None
    idempotency_key: str | None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    ended_at: Timestamp | None
    rulebook_id: str | None
    rulebook_version: int | None
    offer_id: str | None
    phase_started_at: Timestamp | None
    balance: BalanceOut | None = None


class OrderOut(Out):
    id: str
    account_id: str
    client_order_id: str | None
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    reduce_only: bool
    purpose: str
    status: str
    reject_code: str | None
    reject_reason: str | None
    reject_details: dict[str, Any] | None
    notional: Decimal | None
    decision_action_id: str | None
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp | None


class FillOut(Out):
    id: str
    order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    notional: Decimal
    fee: Decimal
    realized_pnl: Decimal
    slippage_bps: Decimal
    quote: dict[str, Any]
    created_at: Timestamp
    voided: bool = False  # in lists (a voided fill stays listed); absent from an order's answer


class PositionOut(Out):
    symbol: str
    quantity: Decimal
    side: str
    avg_price: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    opened_at: Timestamp
    mark_price: Decimal | None
    unrealized_pnl: Decimal | None
    notional: Decimal | None


class LedgerEntryOut(Out):
    seq: int
    kind: str
    category: str
    amount: Decimal
    balance_after: Decimal
    equity_after: Decimal | None
    order_id: str | None
    fill_id: str | None
    evidence: dict[str, Any]
    created_at: Timestamp


class InstrumentOut(Out):
    symbol: str
    asset_class: str
    contract_size: Decimal
    tick_size: Decimal
    price_precision: int
    quote_currency: str
    base_currency: str | None
    min_lot: Decimal
    lot_step: Decimal
    max_lot: Decimal
    enabled: bool
    description: str


class AccountPage(Out):
    items: list[AccountOut]
    next_cursor: str | None


class OrderPage(Out):
    items: list[OrderOut]
    next_cursor: str | None


class FillPage(Out):
    items: list[FillOut]
    next_cursor: str | None


class PositionPage(Out):
    items: list[PositionOut]
    next_cursor: str | None


class LedgerPage(Out):
    items: list[LedgerEntryOut]
    next_cursor: str | None


class InstrumentPage(Out):
    items: list[InstrumentOut]
    next_cursor: str | None


class OrderResultOut(Out):
    """An accepted order (201): the order and, when it filled, its fill. A gate rejection is the 422 envelope
    with the recorded ``order`` next to ``error``."""

    order: OrderOut
    fill: FillOut | None
    rejection: None


class SessionsEndedOut(Out):
    """``POST /api/v1/me/sessions/revocation``: how many sessions of the user were ended (this one included)."""

    sessions_ended: int
