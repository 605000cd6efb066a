"""The trader API: what the browser app calls, authenticated by the user's session (``principal.user``).

- ``GET /api/v1/plans[/{id}]``: the public catalogue (no session needed).
- ``POST /api/v1/checkout``: buy a plan offer with the ``dev`` payment provider, which confirms at once (and
  says so: ``payment.provider = "dev"``, ``payment.test_mode = true``); a phase-1 account on that plan version is
  created through the execution core, owned by the user, in the same engine transaction as the purchase row.
  Idempotent with the ``Idempotency-Key`` header.
- Reads of the user's own accounts, all through ``reads.access.user_conn`` (app role, row-level security) and
  ``reads.trader``: overview, positions, orders, trades, violations, equity, rules, upcoming news and blackouts, daily
  stats, journal.
- Writes through the same ``ExecutionService`` and gates as every other door (orders, cancel, close / partial
  close, modify SL/TP), via ``Commands`` (one engine transaction, idempotent).
- Journal notes and notifications: the only app-role writes (own rows only, enforced by RLS ``WITH CHECK``).

Ownership: an account that is not the user's own is 404 ``account_not_found`` (never 403: ids are not
enumerable). That holds for admins too: an admin manages other traders' accounts through the admin API, and
sees a trader's screens on the read-only, audited ``/admin/accounts/{id}/as-trader`` page, never here. Every
account-scoped route opens ``reads.access.owned_conn`` (the one owner rule, shared with the pages and the
live stream).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from ...domain import gates as G
from ...domain.errors import NotFound
from ...domain.lifecycle import Mode
from ...domain.money import CTX, ZERO, money
from ...domain.orders import OrderType, Side
from ...domain.policy import ExecutionPolicy
from ...domain.rules.schema import RulebookError
from ...execution.service import CreateAccount
from ...reads import trader as reads
from ...reads.access import owned_conn, owner_key, user_conn
from ...rulebooks.store import summary
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api
from ..errors import ApiError
from ..idempotency import Outcome, parse_key, principal_of
from ..render import json_response
from ..responses import OrderOut, OrderResultOut
from ..schemas import (
    ClosePositionBody,
    LongText,
    ModifyPositionBody,
    OrderBody,
    OrderFields,
    PlanId,
    Strict,
)
from .trading import cancel_effect, close_effect, modify_effect, submit_effect

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
OrderId = Annotated[uuid.UUID, Path(description="Order id (UUID).")]
FillId = Annotated[uuid.UUID, Path(description="Fill id (UUID).")]
PathSymbol = Annotated[str, Path(pattern=r"^[A-Z0-9]{1,16}$", description="Instrument symbol, e.g. EURUSD.")]
PlanPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
ListLimit = Annotated[int, Query(ge=1, le=500, description="At most this many items (newest first).")]
NewsHours = Annotated[int, Query(ge=1, le=168, description="Look this many hours ahead (1..168).")]
PREFIX = "/api/v1"
PAYMENT_PROVIDERS = ("dev",)


class CheckoutBody(Strict):
    plan_id: PlanId
    offer_id: PlanId = Field(description="The plan's offer (account size), e.g. 100k.")
    payment_provider: Annotated[str, Field(pattern=r"^[a-z]{1,32}$")] = Field(
        default="dev", description="Only `dev` exists: a development provider that confirms at once."
    )
    plan_version: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | None = Field(
        default=None, description="Default: the latest active version."
    )


class NoteBody(Strict):
    note: LongText


class RiskPreviewBody(OrderFields):
    """The order a trader is about to send (no client order id: nothing is recorded)."""


def plan_policy(size: Decimal, currency: str) -> ExecutionPolicy:
    """The execution envelope of a purchased challenge account (the same as the demo's plan accounts): leverage
    up to 1:30, an order up to ten times the account size; the plan's rulebook does the rest."""
    return ExecutionPolicy(
        starting_balance=size,
        currency=currency,
        max_notional=size * 10,
        max_leverage=Decimal(30),
        max_position_equity_pct=Decimal(1000),
    )


def user_of(request: Request) -> Any:
    """The signed-in web user, or 403 (a bearer token has no user; the middleware normally refuses it first)."""
    user = getattr(principal_of(request), "user", None)
    if user is None:
        raise ApiError(403, "forbidden", "this route needs a signed-in user session")
    return user


def _tz(user: Any) -> str | None:
    return getattr(user, "timezone", None)


def _owned_read(platform: Any, request: Request, account_id: uuid.UUID, read: Callable[[Any, Any], Any]) -> Response:
    """``read(conn, user)`` over one of the caller's own accounts, through the app role under RLS; another
    trader's (or a missing) account is a 404."""
    user = user_of(request)
    with owned_conn(platform, user, account_id) as c:
        return json_response(read(c, user))


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["trader"])
    platform = api.platform
    ex = platform.execution

    def check_owner(request: Request, account_id: uuid.UUID) -> Any:
        user = user_of(request)
        with owned_conn(platform, user, account_id):
            pass
        return user

    # ------------------------------------------------------------------ public catalogue
    @router.get(f"{PREFIX}/plans", responses=READ_ERRORS)
    def list_plans() -> Response:
        """The plan catalogue (public): every active plan's latest version with phases, rules and offers
        (price, account size)."""
        return json_response({"items": platform.plans.catalogue(), "next_cursor": None})

    @router.get(f"{PREFIX}/plans/{{plan_id}}", responses=READ_ERRORS)
    def get_plan(plan_id: PlanPath) -> Response:
        """One active plan (latest version)."""
        return json_response(summary(platform.plans.get(plan_id)))

    # ------------------------------------------------------------------ checkout
    @router.post(f"{PREFIX}/checkout", status_code=201, responses=WRITE_ERRORS)
    def checkout(request: Request, body: CheckoutBody) -> Response:
        """Buy a plan offer. The ``dev`` provider confirms at once (no money moves: development and demo only)
        and a phase-1 challenge account on that plan version is opened, active, owned by the caller."""
        user = user_of(request)
        if body.payment_provider not in PAYMENT_PROVIDERS:
            raise ApiError(
                422,
                "unknown_payment_provider",
                f"payment provider {body.payment_provider!r} is not available",
                {"available": list(PAYMENT_PROVIDERS)},
            )
        book = platform.plans.get(body.plan_id, body.plan_version)
        try:
            offer = book.offer(body.offer_id)
            sized = book.for_offer(body.offer_id)
        except RulebookError as exc:
            raise ApiError(422, "invalid_offer", exc.reason, {"offers": [o.id for o in book.offers]}) from None
        key = parse_key(request) or uuid.uuid4().hex
        owner = owner_key(user)
        policy = plan_policy(sized.starting_balance, sized.currency)
        cmd = CreateAccount(
            owner_id=owner,
            mode=Mode.CHALLENGE,
            phase=sized.phases[0].id,
            policy=policy,
            rulebook=sized.to_json(),
            rulebook_id=sized.id,
            rulebook_version=sized.version,
            offer_id=offer.id,
            start=True,
            # Scoped to the user: another user's key can never collide with (or reveal) this.
            idempotency_key=f"checkout:{owner}:{key}",
        )

        def effect(conn: Any) -> Outcome:
            account, created = ex.create_account(cmd, conn=conn)
            purchase_id = uuid.uuid4()
            if created:
                conn.execute(
                    "INSERT INTO purchases (id, user_id, plan_id, plan_version, offer, amount, currency, provider,"
                    " status, account_id, idempotency, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,'dev','confirmed',"
                    "%s,%s,%s)",
                    (
                        purchase_id,
                        user.id,
                        book.id,
                        book.version,
                        offer.id,
                        offer.price,
                        offer.currency,
                        account["id"],
                        key,
                        platform.clock.now(),
                    ),
                )
            purchase = conn.execute(
                "SELECT * FROM purchases WHERE user_id=%s AND idempotency=%s", (user.id, key)
            ).fetchone()
            return Outcome(
                201 if created else 200,
                {
                    "purchase": purchase,
                    "payment": {
                        "provider": "dev",
                        "test_mode": True,
                        "status": "confirmed",
                        "note": "DEV PAYMENT PROVIDER: confirmed at once, no money moved",
                    },
                    "account": {
                        "id": account["id"],
                        "status": account["status"],
                        "phase": account["phase"],
                        "plan": {"id": book.id, "version": book.version, "offer_id": offer.id},
                        "starting_balance": account["starting_balance"],
                        "currency": account["currency"],
                    },
                },
            )

        return api.commands.run(request, effect)

    # ------------------------------------------------------------------ reads
    @router.get(f"{PREFIX}/accounts", responses=READ_ERRORS)
    def my_accounts(request: Request) -> Response:
        """The caller's accounts, newest first, with balances and plan."""
        user = user_of(request)
        with user_conn(platform, user) as c:
            items = [a for a in reads.list_accounts(platform, c) if a["owner_id"] == owner_key(user)]
        return json_response({"items": items, "next_cursor": None})

    @router.get(f"{PREFIX}/accounts/{{account_id}}", responses=READ_ERRORS)
    def overview(request: Request, account_id: AccountId) -> Response:
        """Dashboard data: status, phase, plan, balances and open P&L at the latest quotes, positions, orders and
        the rule panel."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: reads.account_overview(platform, c, account_id, user_tz=_tz(user)),
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/positions", responses=READ_ERRORS)
    def positions(request: Request, account_id: AccountId) -> Response:
        """Open positions with live P&L (the core's valuation at the latest quotes)."""
        return _owned_read(platform, request, account_id, lambda c, user: reads.open_positions(platform, c, account_id))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/orders", responses=READ_ERRORS)
    def orders(
        request: Request,
        account_id: AccountId,
        limit: ListLimit = 100,
        status: Annotated[str | None, Query(pattern=r"^(open|filled|cancelled|rejected|voided)$")] = None,
    ) -> Response:
        """Orders, newest first (``?status=open`` for the resting ones)."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: {"items": reads.orders(platform, c, account_id, status=status, limit=limit)},
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/trades", responses=READ_ERRORS)
    def trades(request: Request, account_id: AccountId, limit: ListLimit = 200) -> Response:
        """Trade history: fills, newest first, with realized P&L, fees, purpose and notes."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: {"items": reads.trade_history(platform, c, account_id, limit=limit)},
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/violations", responses=READ_ERRORS)
    def violations(request: Request, account_id: AccountId, limit: ListLimit = 100) -> Response:
        """Rule decisions with their evidence, newest first."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: {"items": reads.violations(platform, c, account_id, limit=limit)},
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/equity", responses=READ_ERRORS)
    def equity(request: Request, account_id: AccountId) -> Response:
        """The equity curve with the daily and max-loss floor series (see ``reads.trader.equity_series``)."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: reads.equity_series(platform, c, account_id, user_tz=_tz(user)),
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/rules", responses=READ_ERRORS)
    def rules(request: Request, account_id: AccountId) -> Response:
        """Every rule's standing: floors and how they are computed, progress, deadlines, the next day reset in
        the firm's and the trader's time zone."""
        return _owned_read(
            platform, request, account_id, lambda c, user: reads.rules_panel(platform, c, account_id, user_tz=_tz(user))
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/news", responses=READ_ERRORS)
    def news(request: Request, account_id: AccountId, hours: NewsHours = 24) -> Response:
        """Upcoming economic events for the account's instruments (impact at least the news rule's) and the
        rulebook's blackout window around each, whether it is running now, and the symbols blocked now."""
        return _owned_read(
            platform, request, account_id, lambda c, user: reads.news_panel(platform, c, account_id, hours=hours)
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/daily-stats", responses=READ_ERRORS)
    def daily_stats(request: Request, account_id: AccountId, limit: ListLimit = 100) -> Response:
        """Per trading day figures, newest first."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: {"items": reads.daily_stats(platform, c, account_id, limit=limit)},
        )

    @router.get(f"{PREFIX}/accounts/{{account_id}}/journal", responses=READ_ERRORS)
    def journal(request: Request, account_id: AccountId, limit: ListLimit = 200) -> Response:
        """Closed trades with the trader's notes, newest first."""
        return _owned_read(
            platform,
            request,
            account_id,
            lambda c, user: {"items": reads.journal(platform, c, account_id, limit=limit)},
        )

    @router.put(f"{PREFIX}/accounts/{{account_id}}/journal/{{fill_id}}", responses=WRITE_ERRORS)
    def put_note(request: Request, account_id: AccountId, fill_id: FillId, body: NoteBody) -> Response:
        """Set the note on one of the account's fills (an empty note clears it). Idempotent by nature (PUT)."""
        user = user_of(request)
        now = platform.clock.now()
        with owned_conn(platform, user, account_id, write=True) as c:
            fill = c.execute("SELECT id FROM fills WHERE id=%s AND account_id=%s", (fill_id, account_id)).fetchone()
            if fill is None:
                raise NotFound(f"fill {fill_id} not found on this account", code="fill_not_found")
            row = c.execute(
                "INSERT INTO trade_notes (user_id, fill_id, account_id, note, created_at, updated_at)"
                " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (user_id, fill_id) DO UPDATE SET note=EXCLUDED.note,"
                " updated_at=EXCLUDED.updated_at RETURNING fill_id, account_id, note, created_at, updated_at",
                (user.id, fill_id, account_id, body.note, now, now),
            ).fetchone()
        return json_response(row)

    # ------------------------------------------------------------------ notifications
    @router.get(f"{PREFIX}/notifications", responses=READ_ERRORS)
    def list_notifications(
        request: Request, limit: ListLimit = 50, unread: Annotated[bool, Query(description="Only unread ones.")] = False
    ) -> Response:
        """The caller's notifications (breaches, warnings, flags, passes, status changes), newest first."""
        user = user_of(request)
        with user_conn(platform, user) as c:
            return json_response(reads.notifications(platform, c, unread_only=unread, limit=limit))

    @router.post(f"{PREFIX}/notifications/{{notification_id}}/read", responses=WRITE_ERRORS)
    def mark_read(
        request: Request, notification_id: Annotated[int, Path(ge=1, le=2**62, description="Notification id.")]
    ) -> Response:
        """Mark one of the caller's notifications read (idempotent: the first read time is kept)."""
        user = user_of(request)
        with user_conn(platform, user, write=True) as c:
            row = c.execute(
                "UPDATE notifications SET read_at = coalesce(read_at, %s) WHERE id=%s"
                " AND user_id::text = current_setting('propdesk.user_id', true)"
                " RETURNING id, account_id, kind, title, body, evidence, created_at, read_at",
                (platform.clock.now(), notification_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"notification {notification_id} not found", code="notification_not_found")
        return json_response(row)

    # ------------------------------------------------------------------ trading
    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/orders",
        status_code=201,
        response_model=OrderResultOut,
        responses=WRITE_ERRORS,
    )
    def submit_order(request: Request, account_id: AccountId, body: OrderBody) -> Response:
        """Submit a market, limit or stop order with optional SL/TP, through the execution core's gates and the
        rulebook's pre-trade rules. 201 accepted; 422 with the rule's code, message and numbers when refused
        (the refusal is recorded)."""
        user = check_owner(request, account_id)
        wait = platform.ratelimits.check("orders_user", owner_key(user))
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                "too many orders; retry after the indicated seconds",
                {"retry_after_seconds": wait},
                headers={"Retry-After": str(wait)},
            )
        return api.commands.run(request, submit_effect(ex, account_id, body.to_request()))

    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/orders/{{order_id}}/cancel", response_model=OrderOut, responses=WRITE_ERRORS
    )
    def cancel_order(request: Request, account_id: AccountId, order_id: OrderId) -> Response:
        """Cancel a resting limit/stop order."""
        user = check_owner(request, account_id)
        return api.commands.run(request, cancel_effect(ex, account_id, order_id, f"user:{user.id}"))

    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/positions/{{symbol}}/close",
        status_code=201,
        response_model=OrderResultOut,
        responses=WRITE_ERRORS,
    )
    def close_position(
        request: Request, account_id: AccountId, symbol: PathSymbol, body: ClosePositionBody | None = None
    ) -> Response:
        """Close the position at market, or ``quantity`` lots of it (partial close). Answers like an order."""
        check_owner(request, account_id)
        return api.commands.run(request, close_effect(ex, account_id, symbol, body))

    @router.post(f"{PREFIX}/accounts/{{account_id}}/positions/{{symbol}}/modify", responses=WRITE_ERRORS)
    def modify_position(
        request: Request, account_id: AccountId, symbol: PathSymbol, body: ModifyPositionBody
    ) -> Response:
        """Set or clear the stop loss / take profit of an open position (checked against the current quote)."""
        check_owner(request, account_id)
        return api.commands.run(request, modify_effect(ex, account_id, symbol, body))

    @router.post(f"{PREFIX}/accounts/{{account_id}}/risk-preview", responses=WRITE_ERRORS)
    def risk_preview(request: Request, account_id: AccountId, body: RiskPreviewBody) -> Response:
        """What an order would risk before it is sent: the loss at the stop loss in money and in % of equity
        (the same formula the ``max_risk_per_trade`` rule applies), the reward at the take profit, notional and
        margin, and the execution gates' verdict on it now (nothing is recorded; the rulebook's pre-trade rules
        are judged when the order is submitted)."""
        user = user_of(request)
        with owned_conn(platform, user, account_id) as c:
            ctx = ex._load(c, account_id, lock=False)
            now = platform.clock.now()
            inst = platform.catalogue.get(body.symbol)
            if inst is None:
                raise ApiError(422, "unknown_symbol", f"unknown symbol {body.symbol}")
            if body.quantity > inst.max_lot:
                raise ApiError(
                    422,
                    "quantity_out_of_range",
                    f"{body.symbol} trades at most {inst.max_lot} lots per order",
                    {"max_lot": inst.max_lot, "quantity": body.quantity},
                )
            quote = platform.quotes.latest(body.symbol)
            rate = ex._rate(inst.quote_currency, ctx.policy.currency)
            req = body.to_request()
            gate = G.check_order(req, ex._gate_state(ctx), inst, G.MarketContext(quote, rate, now))
            val = ctx.valuation or ex._valuate(ctx)
            equity = money(val.equity)
            entry: Decimal | None = (
                req.trigger_price
                if body.order_type is not OrderType.MARKET
                else ((quote.ask if body.side is Side.BUY else quote.bid) if quote is not None else None)
            )
            out: dict[str, Any] = {
                "symbol": body.symbol,
                "side": body.side,
                "quantity": body.quantity,
                "entry_price": entry,
                "equity": equity,
                "currency": ctx.policy.currency,
                "risk": None,
                "risk_pct": None,
                "reward": None,
                "reward_pct": None,
                "notional": None,
                "margin": None,
                "gate": gate.to_json() if gate is not None else None,
                "max_risk_per_trade": None,
            }
            if entry is not None and rate is not None:
                notional = money(CTX.multiply(inst.contract_value(body.quantity, entry), rate))
                out["notional"] = notional
                out["margin"] = money(CTX.divide(notional, ctx.policy.max_leverage))

                def pct(v: Decimal) -> Decimal:
                    # In the wide context: a level far from the price makes v huge, and the default 28 digits
                    # cannot quantize it (InvalidOperation, a 500 before).
                    if equity <= 0:
                        return ZERO
                    return CTX.divide(CTX.multiply(v, Decimal(100)), equity).quantize(Decimal("0.01"), context=CTX)

                if body.stop_loss is not None:
                    risk = money(CTX.multiply(inst.contract_value(body.quantity, abs(entry - body.stop_loss)), rate))
                    out["risk"], out["risk_pct"] = risk, pct(risk)
                if body.take_profit is not None:
                    reward = money(
                        CTX.multiply(inst.contract_value(body.quantity, abs(body.take_profit - entry)), rate)
                    )
                    out["reward"], out["reward_pct"] = reward, pct(reward)
            ev = ex.rules.evaluator(c, ctx)
            rule = ev.rules.get("max_risk_per_trade") if ev is not None else None
            if rule is not None:
                out["max_risk_per_trade"] = {
                    "pct": rule["pct"],
                    "amount": money(rule["pct"] * equity / 100),
                    "require_stop_loss": rule.get("require_stop_loss", False),
                }
        return json_response(out)

    return router
