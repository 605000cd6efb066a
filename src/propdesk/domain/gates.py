"""Safety gates: pure checks that decide whether an order may execute, and say why not.

``check_order`` returns ``None`` (the order may execute) or a ``Rejection`` with a stable code, a message and
the numbers behind it. Rejections are data: the caller records them; nothing here raises for a refusal.
Order of checks: account, symbol and asset, size and prices, market session (closed), price availability and
freshness (the asset class's threshold when the caller knows the session), direction, protective levels,
then exposure (only for the part of an order that adds exposure; reducing a position is always allowed while
the account trades).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .instruments import Instrument
from .lifecycle import TRADING, Status
from .money import CTX, ZERO, decimals_of, fmt, is_multiple
from .orders import OrderRequest, OrderType, Side, crosses
from .policy import ExecutionPolicy
from .positions import Position
from .quotes import Quote

HUNDRED = Decimal(100)


class Code:
    """Stable rejection codes (also the Prometheus label values)."""

    UNSUPPORTED_ACTION = "unsupported_action"
    ACCOUNT_NOT_ACTIVE = "account_not_active"
    UNKNOWN_SYMBOL = "unknown_symbol"
    ASSET_NOT_ALLOWED = "asset_not_allowed"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    MISSING_PRICE = "missing_price"
    STALE_PRICE = "stale_price"
    MARKET_CLOSED = "market_closed"
    MISSING_CONVERSION_PRICE = "missing_conversion_price"
    DIRECTION_NOT_ALLOWED = "direction_not_allowed"
    INVALID_STOP_LOSS = "invalid_stop_loss"
    INVALID_TAKE_PROFIT = "invalid_take_profit"
    NOTIONAL_EXCEEDED = "notional_exceeded"
    AGGREGATE_NOTIONAL_EXCEEDED = "aggregate_notional_exceeded"
    LEVERAGE_EXCEEDED = "leverage_exceeded"
    POSITION_EQUITY_EXCEEDED = "position_equity_exceeded"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_OPEN_ORDERS = "max_open_orders"
    NO_POSITION = "no_position"
    RULE_VIOLATION = "rule_violation"
    TRADING_HALTED = "trading_halted"
    TRADING_REDUCE_ONLY = "trading_reduce_only"


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """An open limit/stop order as the gates see it (for counts and reserved margin)."""

    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    notional: Decimal  # account currency at placement


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything the gates need about an account, loaded under the account lock."""

    status: Status
    policy: ExecutionPolicy
    cash: Decimal
    equity: Decimal
    positions: Mapping[str, Position]
    position_notional: Mapping[str, Decimal]  # account currency, absolute, at current marks
    resting_orders: tuple[RestingOrder, ...] = ()


@dataclass(frozen=True, slots=True)
class MarketSession:
    """The symbol's trading session at ``now`` as the gates see it (plain data: the caller owns the calendar).

    ``stale_after_seconds``: a quote older than this while the market is open is stale (per asset class)."""

    open: bool
    reason: str
    next_open: datetime | None
    asset_class: str
    stale_after_seconds: float


@dataclass(frozen=True, slots=True)
class MarketContext:
    """Prices for one order: its quote (or None), the quote-currency conversion rate (or None), and now; plus the
    symbol's session when a calendar is known (None: no session gate, the policy's quote-age limit applies)."""

    quote: Quote | None
    rate: Decimal | None
    now: datetime
    session: MarketSession | None = None


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _d(x: Decimal) -> str:
    return fmt(x.quantize(Decimal("0.01")) if abs(x) >= 1 else x)


def check_order(
    req: OrderRequest,
    account: AccountState,
    inst: Instrument | None,
    mkt: MarketContext,
    *,
    allowed_statuses: frozenset[Status] = TRADING,
) -> Rejection | None:
    """Run every execution-policy gate for ``req``; ``None`` means it may execute."""
    policy = account.policy
    if account.status not in allowed_statuses:
        return Rejection(
            Code.ACCOUNT_NOT_ACTIVE,
            f"account is {account.status.value}; orders need an active account",
            {"status": account.status.value},
        )
    if inst is None or not inst.enabled:
        return Rejection(Code.UNKNOWN_SYMBOL, f"unknown or disabled symbol {req.symbol!r}", {"symbol": req.symbol})
    if inst.asset_class not in policy.allowed_asset_classes:
        return Rejection(
            Code.ASSET_NOT_ALLOWED,
            f"{inst.asset_class.value} is not allowed on this account",
            {"asset_class": inst.asset_class.value, "allowed": [a.value for a in policy.allowed_asset_classes]},
        )
    rej = _check_size_and_prices(req, inst)
    if rej is not None:
        return rej
    session = mkt.session
    if session is not None and not session.open:
        nxt = _iso(session.next_open)
        why = session.reason.removeprefix("closed: ")
        return Rejection(
            Code.MARKET_CLOSED,
            f"the {req.symbol} market is closed ({why})" + (f"; it opens at {nxt}" if nxt else ""),
            {"symbol": req.symbol, "asset_class": session.asset_class, "reason": session.reason, "next_open": nxt},
        )
    quote = mkt.quote
    if quote is None:
        return Rejection(
            Code.MISSING_PRICE,
            f"no quote for {req.symbol}; an order never fills on a guessed price",
            {"symbol": req.symbol},
        )
    if quote.stale:  # the process is cut off from the price bus: no price of it can be trusted now
        return Rejection(
            Code.STALE_PRICE,
            f"no live price for {req.symbol}: this process is cut off from the price "
            "bus, so all its prices are stale until it reconnects",
            {"symbol": req.symbol, "quote": quote.evidence(), "reason": "price_bus_disconnected"},
        )
    age = quote.age_seconds(mkt.now)
    limit: float = session.stale_after_seconds if session is not None else policy.max_quote_age_seconds
    if age > limit:
        details: dict[str, Any] = {
            "symbol": req.symbol,
            "quote": quote.evidence(),
            "age_seconds": round(age, 3),
            "max_quote_age_seconds": limit,
        }
        if session is not None:
            details.update(threshold_seconds=limit, asset_class=session.asset_class)
        return Rejection(
            Code.STALE_PRICE,
            f"the last quote for {req.symbol} is {age:.1f}s old "
            f"(limit {limit:g}s" + (f" for {session.asset_class}" if session is not None else "") + ")",
            details,
        )
    if mkt.rate is None:
        return Rejection(
            Code.MISSING_CONVERSION_PRICE,
            f"no quote converts {inst.quote_currency} into {policy.currency}",
            {"from": inst.quote_currency, "to": policy.currency},
        )

    current = account.positions.get(req.symbol)
    cur_q = current.quantity if current is not None else ZERO
    delta = req.quantity if req.side is Side.BUY else -req.quantity
    new_q = cur_q + delta
    same_way = cur_q == 0 or (cur_q > 0) == (delta > 0)
    # Lots that add exposure: all of an increase, only the far side of a flip, nothing of a reduction.
    opening = abs(delta) if same_way else max(ZERO, abs(delta) - abs(cur_q))
    if req.reduce_only and (same_way or abs(delta) > abs(cur_q)):
        return Rejection(
            Code.NO_POSITION,
            f"reduce-only order would not reduce the {req.symbol} position",
            {"symbol": req.symbol, "position": fmt(cur_q), "order": fmt(delta)},
        )

    if opening > 0:
        if req.side is Side.BUY and not policy.allow_long:
            return Rejection(
                Code.DIRECTION_NOT_ALLOWED, "long positions are not allowed on this account", {"side": "buy"}
            )
        if req.side is Side.SELL and not policy.allow_short:
            return Rejection(
                Code.DIRECTION_NOT_ALLOWED, "short positions are not allowed on this account", {"side": "sell"}
            )

    ref = (
        req.trigger_price
        if req.order_type is not OrderType.MARKET
        else (quote.ask if req.side is Side.BUY else quote.bid)
    )
    assert ref is not None
    rej = _check_protective(req, ref)
    if rej is not None:
        return rej

    if opening == 0:
        return None
    return _check_exposure(req, account, inst, mkt, ref, opening, new_q, cur_q)


def _check_size_and_prices(req: OrderRequest, inst: Instrument) -> Rejection | None:
    q = req.quantity
    if q <= 0 or q < inst.min_lot or q > inst.max_lot or not is_multiple(q, inst.lot_step):
        return Rejection(
            Code.INVALID_QUANTITY,
            f"quantity {fmt(q)} must be between {fmt(inst.min_lot)} and {fmt(inst.max_lot)} lots "
            f"in steps of {fmt(inst.lot_step)}",
            {
                "quantity": fmt(q),
                "min_lot": fmt(inst.min_lot),
                "max_lot": fmt(inst.max_lot),
                "lot_step": fmt(inst.lot_step),
            },
        )
    if req.order_type is OrderType.LIMIT and req.limit_price is None:
        return Rejection(Code.INVALID_PRICE, "a limit order needs limit_price", {})
    if req.order_type is OrderType.STOP and req.stop_price is None:
        return Rejection(Code.INVALID_PRICE, "a stop order needs stop_price", {})
    for name, value in (
        ("limit_price", req.limit_price),
        ("stop_price", req.stop_price),
        ("stop_loss", req.stop_loss),
        ("take_profit", req.take_profit),
    ):
        if value is None:
            continue
        if value <= 0:
            return Rejection(Code.INVALID_PRICE, f"{name} must be positive", {name: fmt(value)})
        if decimals_of(value) > inst.price_precision:
            return Rejection(
                Code.INVALID_PRICE,
                f"{name} {fmt(value)} has more than {inst.price_precision} decimals for {inst.symbol}",
                {name: fmt(value), "price_precision": inst.price_precision},
            )
    return None


def _check_protective(req: OrderRequest, ref: Decimal) -> Rejection | None:
    """A buy's stop loss is below its entry and its take profit above; a sell's the other way round."""
    sl, tp = req.stop_loss, req.take_profit
    if req.side is Side.BUY:
        if sl is not None and sl >= ref:
            return Rejection(
                Code.INVALID_STOP_LOSS,
                f"a buy's stop loss must be below the entry {fmt(ref)}",
                {"stop_loss": fmt(sl), "reference_price": fmt(ref), "side": "buy"},
            )
        if tp is not None and tp <= ref:
            return Rejection(
                Code.INVALID_TAKE_PROFIT,
                f"a buy's take profit must be above the entry {fmt(ref)}",
                {"take_profit": fmt(tp), "reference_price": fmt(ref), "side": "buy"},
            )
    else:
        if sl is not None and sl <= ref:
            return Rejection(
                Code.INVALID_STOP_LOSS,
                f"a sell's stop loss must be above the entry {fmt(ref)}",
                {"stop_loss": fmt(sl), "reference_price": fmt(ref), "side": "sell"},
            )
        if tp is not None and tp >= ref:
            return Rejection(
                Code.INVALID_TAKE_PROFIT,
                f"a sell's take profit must be below the entry {fmt(ref)}",
                {"take_profit": fmt(tp), "reference_price": fmt(ref), "side": "sell"},
            )
    return None


def _check_exposure(
    req: OrderRequest,
    account: AccountState,
    inst: Instrument,
    mkt: MarketContext,
    ref: Decimal,
    opening: Decimal,
    new_q: Decimal,
    cur_q: Decimal,
) -> Rejection | None:
    policy = account.policy
    rate = mkt.rate
    assert rate is not None
    equity = account.equity
    order_notional = CTX.multiply(inst.contract_value(opening, ref), rate)
    if order_notional > policy.max_notional:
        return Rejection(
            Code.NOTIONAL_EXCEEDED,
            f"order notional {_d(order_notional)} exceeds the per-order limit {_d(policy.max_notional)}",
            {"notional": _d(order_notional), "limit": _d(policy.max_notional)},
        )
    # A limit/stop order that the current quote already crosses executes now: it is gated as a market order
    # (it counts against max_open_positions, not max_open_orders).
    quote = mkt.quote
    assert quote is not None
    is_resting = req.order_type is not OrderType.MARKET and not crosses(
        req.order_type, req.side, ref, quote.bid, quote.ask
    )
    if cur_q == 0 and not is_resting:
        open_count = sum(1 for p in account.positions.values() if p.quantity != 0)
        if open_count >= policy.max_open_positions:
            return Rejection(
                Code.MAX_OPEN_POSITIONS,
                f"{open_count} positions are open; the limit is {policy.max_open_positions}",
                {"open_positions": open_count, "limit": policy.max_open_positions},
            )
    if is_resting and len(account.resting_orders) >= policy.max_open_orders:
        return Rejection(
            Code.MAX_OPEN_ORDERS,
            f"{len(account.resting_orders)} orders are open; the limit is {policy.max_open_orders}",
            {"open_orders": len(account.resting_orders), "limit": policy.max_open_orders},
        )
    if equity <= 0:
        return Rejection(Code.INSUFFICIENT_MARGIN, "equity is not positive", {"equity": _d(equity)})
    # Exposure after the order: other symbols at their marks, this symbol at |new_q| valued at ref.
    others = sum((n for s, n in account.position_notional.items() if s != req.symbol), ZERO)
    this_after = CTX.multiply(inst.contract_value(abs(new_q), ref), rate)
    aggregate = CTX.add(others, this_after)
    agg_limit = policy.max_aggregate_notional
    if agg_limit is not None and aggregate > agg_limit:
        return Rejection(
            Code.AGGREGATE_NOTIONAL_EXCEEDED,
            f"open notional would be {_d(aggregate)}, above the aggregate limit {_d(agg_limit)}",
            {"aggregate_notional": _d(aggregate), "limit": _d(agg_limit)},
        )
    leverage = CTX.divide(aggregate, equity)
    if leverage > policy.max_leverage:
        return Rejection(
            Code.LEVERAGE_EXCEEDED,
            f"leverage would be {leverage:.2f}x, above {fmt(policy.max_leverage)}x",
            {
                "leverage": f"{leverage:.4f}",
                "limit": fmt(policy.max_leverage),
                "aggregate_notional": _d(aggregate),
                "equity": _d(equity),
            },
        )
    pos_pct = CTX.divide(CTX.multiply(this_after, HUNDRED), equity)
    if pos_pct > policy.max_position_equity_pct:
        return Rejection(
            Code.POSITION_EQUITY_EXCEEDED,
            f"the {req.symbol} position would be {pos_pct:.2f}% of equity, above "
            f"{fmt(policy.max_position_equity_pct)}%",
            {
                "position_notional": _d(this_after),
                "equity": _d(equity),
                "position_equity_pct": f"{pos_pct:.4f}",
                "limit_pct": fmt(policy.max_position_equity_pct),
            },
        )
    # Margin: positions and resting orders each reserve notional / max_leverage.
    used = CTX.divide(
        CTX.add(sum(account.position_notional.values(), ZERO), sum((o.notional for o in account.resting_orders), ZERO)),
        policy.max_leverage,
    )
    free = equity - used
    required = CTX.divide(order_notional, policy.max_leverage)
    if required > free:
        return Rejection(
            Code.INSUFFICIENT_MARGIN,
            f"the order needs {_d(required)} margin; {_d(free)} is free",
            {"required_margin": _d(required), "free_margin": _d(free), "used_margin": _d(used), "equity": _d(equity)},
        )
    return None


# ------------------------------------------------------------------------------------------------ kill switch
#: The platform kill switch's modes (``execution/trading_state.py``), strictest last.
TRADING_MODES = ("active", "reduce_only", "halted")


def stricter_mode(a: str, b: str) -> str:
    """The stricter of two trading modes (``halted`` > ``reduce_only`` > ``active``)."""
    return a if TRADING_MODES.index(a) >= TRADING_MODES.index(b) else b


def reduces_position(req: OrderRequest, current: Position | None) -> bool:
    """Does ``req`` only reduce the position held (never open, add to or flip it)?"""
    if current is None or current.quantity == 0:
        return False
    delta = req.quantity if req.side is Side.BUY else -req.quantity
    return (current.quantity > 0) != (delta > 0) and abs(delta) <= abs(current.quantity)


def check_trading_mode(req: OrderRequest, mode: str, current: Position | None, scope: str) -> Rejection | None:
    """The kill switch's gate for a trader's order (or a resting order firing): ``halted`` refuses it,
    ``reduce_only`` refuses it unless it only reduces the position held. ``scope`` is ``platform`` or the
    symbol whose switch decided."""
    if mode == "halted":
        return Rejection(
            Code.TRADING_HALTED,
            f"trading is halted ({scope}) by the risk desk",
            {"mode": mode, "scope": scope, "symbol": req.symbol},
        )
    if mode == "reduce_only" and not reduces_position(req, current):
        return Rejection(
            Code.TRADING_REDUCE_ONLY,
            f"trading is reduce-only ({scope}): only orders that reduce an open position are accepted",
            {"mode": mode, "scope": scope, "symbol": req.symbol},
        )
    return None
