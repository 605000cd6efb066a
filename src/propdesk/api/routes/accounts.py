"""Accounts: create, read, lifecycle, the paginated lists, snapshots, the decision context, marking."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from ...domain.instruments import Instrument
from ...domain.lifecycle import Mode, Status, Trigger
from ...domain.money import CTX, ZERO
from ...domain.orders import OrderStatus
from ...domain.policy import ExecutionPolicy
from ...domain.quotes import Quote
from ...domain.rules.schema import RulebookError
from ...execution.decisions import SUPPORTED
from ...execution.service import CreateAccount
from ...reads.present import present_account, present_fill
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api, balance_of, require_account, ts_id_key
from ..errors import ApiError
from ..idempotency import Outcome, principal_of
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, decode_int_cursor, page
from ..render import dec, json_response, ts
from ..responses import AccountOut, AccountPage, FillPage, InstrumentPage, LedgerPage, OrderPage, PositionPage
from ..schemas import CompleteBody, CreateAccountBody, ReasonBody

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
CloneId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:@+\-]{1,200}$")]
PREFIX = "/api/v1/prop"


def instrument_json(i: Instrument) -> dict[str, Any]:
    return {
        "symbol": i.symbol,
        "asset_class": i.asset_class.value,
        "contract_size": i.contract_size,
        "tick_size": i.tick_size,
        "price_precision": i.price_precision,
        "quote_currency": i.quote_currency,
        "base_currency": i.base_currency,
        "min_lot": i.min_lot,
        "lot_step": i.lot_step,
        "max_lot": i.max_lot,
        "enabled": i.enabled,
        "description": i.description,
    }


_POSITION_NUMBERS = ("quantity", "avg_price", "stop_loss", "take_profit", "mark_price", "unrealized_pnl", "notional")


def present_position(p: dict[str, Any]) -> dict[str, Any]:
    """The core formats position numbers with the column's padding ("0.1000000000"); show their value."""
    return {k: (dec(Decimal(v)) if k in _POSITION_NUMBERS and isinstance(v, str) else v) for k, v in p.items()}


def present_snapshot(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        **snap,
        "account": present_account(snap["account"]),
        "positions": [present_position(p) for p in snap["positions"]],
    }


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["accounts"])
    platform = api.platform
    ex = platform.execution

    # ------------------------------------------------------------------ create / read
    @router.post(
        f"{PREFIX}/accounts",
        status_code=201,
        response_model=AccountOut,
        responses={
            200: {
                "description": "Replay of a body idempotency_key with the same body: the existing account",
                "model": AccountOut,
            },
            **WRITE_ERRORS,
        },
    )
    def create_account(request: Request, body: CreateAccountBody) -> Response:
        """Create an account. Idempotent by body ``idempotency_key``: the same key with the same body returns
        the existing account (200); with another body, 409 ``idempotency_key_reused``."""
        overrides: dict[str, Any] = dict(body.policy or {})
        for name in ("starting_balance", "currency"):
            value = getattr(body, name)
            if value is not None:
                if name in overrides:
                    raise ApiError(422, "invalid_policy", f"give {name} at the top level or in policy, not both")
                overrides[name] = value
        book = None
        phase = body.phase
        if body.plan_id is not None:
            if body.mode is not Mode.CHALLENGE:
                raise ApiError(422, "invalid_plan", "a plan's rulebook governs challenge accounts (mode: challenge)")
            if "starting_balance" in overrides or "currency" in overrides:
                raise ApiError(422, "invalid_plan", "a plan's offer sets the starting balance and currency")
            book = platform.plans.get(body.plan_id, body.plan_version)
            if body.offer_id is not None:
                try:
                    book = book.for_offer(body.offer_id)
                except RulebookError as exc:
                    raise ApiError(422, "invalid_offer", exc.reason) from None
            if "phase" not in body.model_fields_set:
                phase = book.phases[0].id
            elif phase not in [p.id for p in book.phases]:
                raise ApiError(
                    422,
                    "invalid_phase",
                    f"plan {book.id} has no phase {phase!r}",
                    {"phases": [p.id for p in book.phases]},
                )
            overrides["starting_balance"] = str(book.starting_balance)
            overrides["currency"] = book.currency
        elif body.offer_id is not None or body.plan_version is not None:
            raise ApiError(422, "invalid_plan", "offer_id and plan_version need plan_id")
        try:
            policy = ExecutionPolicy.from_json(overrides)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ApiError(422, "invalid_policy", str(exc)[:300]) from None
        cmd = CreateAccount(
            owner_id=body.owner_id,
            mode=body.mode,
            phase=phase,
            clone_id=body.clone_id,
            parent_account_id=body.parent_account_id,
            policy=policy,
            idempotency_key=body.idempotency_key,
            request_hash=request.state.body_hash if body.idempotency_key else None,
            start=body.start,
            rulebook=book.to_json() if book else None,
            rulebook_id=book.id if book else None,
            rulebook_version=book.version if book else None,
            offer_id=body.offer_id,
        )

        def effect(conn: Any) -> Outcome:
            row, created = ex.create_account(cmd, conn=conn)
            return Outcome(201 if created else 200, present_account(row, balance_of(conn, row["id"])))

        return api.commands.run(request, effect)

    @router.get(f"{PREFIX}/accounts/{{account_id}}", response_model=AccountOut, responses=READ_ERRORS)
    def get_account(account_id: AccountId) -> Response:
        with api.read() as c:
            row = require_account(c, account_id)
            return json_response(present_account(row, balance_of(c, account_id)))

    @router.get(f"{PREFIX}/clones/{{clone_id}}/accounts", response_model=AccountPage, responses=READ_ERRORS)
    def clone_accounts(clone_id: CloneId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """The accounts of an AI agent instance, oldest first."""
        after = ts_id_key(decode_cursor("clone_accounts", cursor, 2))
        at, ident = after if after else (None, None)
        with api.read() as c:
            rows = c.execute(
                "SELECT * FROM accounts WHERE clone_id=%s AND (%s::timestamptz IS NULL OR"
                " (created_at, id) > (%s::timestamptz, %s::uuid)) ORDER BY created_at, id LIMIT %s",
                (clone_id, at, at, ident, limit + 1),
            ).fetchall()
            balances = {
                b["account_id"]: b
                for b in c.execute(
                    "SELECT * FROM balances WHERE account_id = ANY(%s)", ([r["id"] for r in rows],)
                ).fetchall()
            }
        return json_response(
            page(
                "clone_accounts",
                rows,
                limit,
                lambda r: [ts(r["created_at"]), str(r["id"])],
                lambda r: present_account(r, balances.get(r["id"])),
            )
        )

    # ------------------------------------------------------------------ lifecycle
    def lifecycle(trigger: Trigger, doc: str) -> None:
        @router.post(
            f"{PREFIX}/accounts/{{account_id}}/{trigger.value}",
            response_model=AccountOut,
            responses=WRITE_ERRORS,
            name=f"{trigger.value}_account",
            summary=f"{trigger.value.capitalize()} an account",
            description=doc,
        )
        def move(request: Request, account_id: AccountId, body: ReasonBody | None = None) -> Response:
            principal = principal_of(request)
            reason = body.reason if body is not None and body.reason else ""

            def effect(conn: Any) -> Outcome:
                row = ex.apply_trigger(account_id, trigger, actor=principal.id, reason=reason, conn=conn)
                return Outcome(200, present_account(row, balance_of(conn, account_id)))

            return api.commands.run(request, effect)

    lifecycle(Trigger.START, "Start trading (idempotent when already active).")

    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/complete",
        response_model=AccountOut,
        responses=WRITE_ERRORS,
        name="complete_account",
        summary="Complete an account",
    )
    def complete(request: Request, account_id: AccountId, body: CompleteBody | None = None) -> Response:
        """End the account without a verdict (terminal, never a pass). An account with open positions or resting
        orders is 409 ``account_has_exposure`` (details: ``symbols``, ``order_ids``); with ``{"flatten": true}``
        the orders are cancelled and the positions closed at market with their evidence, then the account
        completes, all in one transaction."""
        principal = principal_of(request)
        reason = body.reason if body is not None and body.reason else ""
        flatten = body.flatten if body is not None else False

        def effect(conn: Any) -> Outcome:
            row = ex.apply_trigger(
                account_id, Trigger.COMPLETE, actor=principal.id, reason=reason, conn=conn, flatten=flatten
            )
            return Outcome(200, present_account(row, balance_of(conn, account_id)))

        return api.commands.run(request, effect)

    lifecycle(Trigger.LIQUIDATE, "Cancel resting orders, close every position at market, status liquidated.")

    # ------------------------------------------------------------------ reads
    @router.get(f"{PREFIX}/accounts/{{account_id}}/ledger", response_model=LedgerPage, responses=READ_ERRORS)
    def ledger(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """The append-only ledger in sequence order."""
        after = decode_int_cursor("ledger", cursor)
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT seq, kind, category, amount, balance_after, equity_after, order_id, fill_id, evidence,"
                " created_at FROM ledger WHERE account_id=%s AND seq > %s ORDER BY seq LIMIT %s",
                (account_id, after, limit + 1),
            ).fetchall()
        return json_response(page("ledger", rows, limit, lambda r: [r["seq"]]))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/snapshot", responses=READ_ERRORS)
    def snapshot(account_id: AccountId) -> Response:
        """Balances (equity at the latest quotes), positions with marks, open orders."""
        return json_response(present_snapshot(ex.snapshot(account_id)))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/orders", response_model=OrderPage, responses=READ_ERRORS)
    def orders(
        account_id: AccountId,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
    ) -> Response:
        after = ts_id_key(decode_cursor("orders", cursor, 2))
        at, ident = after if after else (None, None)
        wanted = status.value if status else None
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT * FROM orders WHERE account_id=%s AND (%s::text IS NULL OR status=%s)"
                " AND (%s::timestamptz IS NULL OR (created_at, id) > (%s::timestamptz, %s::uuid))"
                " ORDER BY created_at, id LIMIT %s",
                (account_id, wanted, wanted, at, at, ident, limit + 1),
            ).fetchall()
        return json_response(page("orders", rows, limit, lambda r: [ts(r["created_at"]), str(r["id"])]))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/fills", response_model=FillPage, responses=READ_ERRORS)
    def fills(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        after = ts_id_key(decode_cursor("fills", cursor, 2))
        at, ident = after if after else (None, None)
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT f.*, (v.fill_id IS NOT NULL) AS voided FROM fills f LEFT JOIN fill_voids v"
                " ON v.fill_id = f.id WHERE f.account_id=%s AND (%s::timestamptz IS NULL OR (f.created_at, f.id)"
                " > (%s::timestamptz, %s::uuid)) ORDER BY f.created_at, f.id LIMIT %s",
                (account_id, at, at, ident, limit + 1),
            ).fetchall()
        return json_response(page("fills", rows, limit, lambda r: [ts(r["created_at"]), str(r["id"])], present_fill))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/positions", response_model=PositionPage, responses=READ_ERRORS)
    def positions(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """Open positions with marks, by symbol."""
        after = decode_cursor("positions", cursor, 1)
        snap = ex.snapshot(account_id)
        rows = [p for p in snap["positions"] if after is None or p["symbol"] > str(after[0])][: limit + 1]
        return json_response(page("positions", rows, limit, lambda r: [r["symbol"]], present_position))

    @router.get(f"{PREFIX}/accounts/{{account_id}}/decision-context", responses=READ_ERRORS)
    def decision_context(account_id: AccountId) -> Response:
        """Everything an agent needs to decide: the snapshot, the policy, the instruments it may trade, the
        latest quotes of held and allowed symbols, and the room left under every policy limit."""
        snap = ex.snapshot(account_id)
        policy = ExecutionPolicy.from_json(snap["account"]["policy"])
        allowed = [i for i in platform.catalogue if i.enabled and i.asset_class in policy.allowed_asset_classes]
        symbols = sorted(
            {i.symbol for i in allowed}
            | {p["symbol"] for p in snap["positions"]}
            | {o["symbol"] for o in snap["open_orders"]}
        )
        now = platform.clock.now()
        quotes = []
        for q in _latest_quotes(api, symbols):
            age = q.age_seconds(now)
            # The same verdict the execution gate gives: the asset class's threshold while its market is open.
            quotes.append(
                {
                    **q.evidence(),
                    "mid": q.mid,
                    "age_seconds": round(age, 3),
                    "stale": platform.sessions.is_stale(q, now),
                    "market_open": platform.sessions.is_open(q.symbol, now),
                }
            )
        return json_response(
            {
                "account_id": account_id,
                "as_of": now,
                "status": snap["status"],
                "can_trade": snap["status"] == Status.ACTIVE.value,
                "supported_actions": list(SUPPORTED),
                "snapshot": present_snapshot(snap),
                "policy": policy.to_json(),
                "instruments": [instrument_json(i) for i in allowed],
                "quotes": quotes,
                "missing_quotes": [s for s in symbols if s not in {q["symbol"] for q in quotes}],
                "limits": _room(policy, snap),
            }
        )

    # ------------------------------------------------------------------ marking
    @router.post(f"{PREFIX}/accounts/{{account_id}}/mark-to-market", responses=WRITE_ERRORS)
    def mark_to_market(request: Request, account_id: AccountId) -> Response:
        """Reprice open positions at the latest quotes, record the mark, apply the auto-liquidation net."""

        def effect(conn: Any) -> Outcome:
            return Outcome(200, present_snapshot(ex.mark_to_market(account_id, conn=conn)))

        return api.commands.run(request, effect)

    @router.post(f"{PREFIX}/mark-to-market-all", responses=WRITE_ERRORS)
    def mark_to_market_all(request: Request) -> Response:
        """Mark every account holding positions; one account's failure is recorded and the rest go on."""

        def effect(conn: Any) -> Outcome:
            started = time.perf_counter()
            result = ex.mark_all()
            platform.metrics.mtm_cycle_seconds.observe(time.perf_counter() - started)
            platform.metrics.mtm_accounts.set(result["marked"])
            if result["failed"]:
                platform.metrics.mtm_failures.inc(len(result["failed"]))
            return Outcome(200, result)

        return api.commands.run(request, effect)

    @router.get(f"{PREFIX}/instruments", response_model=InstrumentPage, responses=READ_ERRORS, tags=["market"])
    def instruments(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """The instruments catalogue, by symbol."""
        after = decode_cursor("instruments", cursor, 1)
        rows = [
            i for i in sorted(platform.catalogue, key=lambda i: i.symbol) if after is None or i.symbol > str(after[0])
        ][: limit + 1]
        return json_response(page("instruments", rows, limit, lambda i: [i.symbol], instrument_json))

    return router


def _latest_quotes(api: Api, symbols: list[str]) -> list[Quote]:
    """The newest quote per symbol from this process's store and the quotes table (other writers)."""
    best: dict[str, Quote] = {q.symbol: q for q in api.platform.quotes.all() if q.symbol in set(symbols)}
    with api.read() as c:
        rows = c.execute(
            "SELECT symbol, bid, ask, ts, seq, source FROM quotes WHERE symbol = ANY(%s)", (symbols,)
        ).fetchall()
    for r in rows:
        cur = best.get(r["symbol"])
        if cur is None or (r["ts"], r["seq"]) > (cur.ts, cur.seq):
            best[r["symbol"]] = Quote(r["symbol"], r["bid"], r["ask"], r["ts"], r["seq"], r["source"])
    return [best[s] for s in sorted(best)]


def _dec(v: Any) -> Decimal:
    return Decimal(str(v)) if v is not None else ZERO


def _room(policy: ExecutionPolicy, snap: dict[str, Any]) -> dict[str, Any]:
    """Room left under each policy limit, in the account currency (what the gates will check)."""
    bal = snap["balance"]
    equity = _dec(bal["equity"])
    positions = snap["positions"]
    resting = snap["open_orders"]
    pos_notional = sum((_dec(p["notional"]) for p in positions), ZERO)
    resting_notional = sum((_dec(o["notional"]) for o in resting), ZERO)
    lev = policy.max_leverage
    agg_limit = policy.max_aggregate_notional if policy.max_aggregate_notional is not None else lev * equity
    margin_used = CTX.divide(pos_notional + resting_notional, lev)
    free_margin = equity - margin_used
    position_cap = CTX.divide(equity * policy.max_position_equity_pct, Decimal(100))
    q = Decimal("0.01")
    new_position = max(ZERO, min(policy.max_notional, agg_limit - pos_notional, free_margin * lev, position_cap))
    return {
        "open_positions": {
            "used": len(positions),
            "limit": policy.max_open_positions,
            "room": max(0, policy.max_open_positions - len(positions)),
        },
        "open_orders": {
            "used": len(resting),
            "limit": policy.max_open_orders,
            "room": max(0, policy.max_open_orders - len(resting)),
        },
        "order_notional": {"limit": policy.max_notional},
        "aggregate_notional": {
            "used": pos_notional.quantize(q),
            "limit": agg_limit.quantize(q),
            "room": max(ZERO, agg_limit - pos_notional).quantize(q),
        },
        "leverage": {
            "used": (CTX.divide(pos_notional, equity) if equity > 0 else ZERO).quantize(Decimal("0.0001")),
            "limit": lev,
        },
        "margin": {"used": margin_used.quantize(q), "free": free_margin.quantize(q), "equity": equity},
        "position_equity_pct": {
            "limit_pct": policy.max_position_equity_pct,
            "max_position_notional": position_cap.quantize(q),
        },
        "max_new_position_notional": new_position.quantize(q),
        "unpriced_positions": list(snap.get("missing_prices", [])),
        "allow_long": policy.allow_long,
        "allow_short": policy.allow_short,
    }
