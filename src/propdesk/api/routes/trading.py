"""Trading: direct orders, cancel, close, modify, decision-action batches, and quotes.

A direct order answers 201 ``{"order", "fill", "rejection": null}`` when accepted (filled, or resting for a
limit/stop that the quote does not cross yet). A gate rejection is a recorded outcome, not a failed request:
the rejected order and its ``order_rejected`` ledger entry are committed, and the answer is 422 with the gate's
code, message and numbers in the error envelope plus the recorded order:
``{"error": {"code": "<gate code>", "message": ..., "details": {...}}, "order": {...}}``.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Path
from starlette.requests import Request
from starlette.responses import Response

from ...domain.errors import NotFound
from ...domain.orders import OrderRequest
from ...domain.quotes import Quote
from ...execution.decisions import DecisionAction, present
from ...execution.service import ExecutionService, OrderOutcome
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api
from ..errors import ApiError, validation_details
from ..idempotency import Effect, Outcome, principal_of
from ..render import dumps, json_response
from ..responses import OrderOut, OrderResultOut
from ..schemas import (
    ClosePositionBody,
    DecisionBatchBody,
    ModifyPositionBody,
    OrderBody,
    QuoteBatch,
    QuoteIn,
)

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
OrderId = Annotated[uuid.UUID, Path(description="Order id (UUID).")]
PathSymbol = Annotated[str, Path(pattern=r"^[A-Z0-9]{1,16}$", description="Instrument symbol, e.g. EURUSD.")]
PREFIX = "/api/v1/prop"
MAX_QUOTE_SKEW_SECONDS = 86400


def order_outcome(out: OrderOutcome, accepted_status: int = 201) -> Outcome:
    """201 with order and fill when accepted; 422 with the gate's reason (and the recorded order) when not."""
    if out.rejection is None:
        return Outcome(accepted_status, {"order": out.order, "fill": out.fill, "rejection": None})
    rej = out.rejection
    return Outcome(
        422, {"error": {"code": rej.code, "message": rej.message, "details": rej.details}, "order": out.order}
    )


# The trading commands, shared by the machine routes here and the trader's session routes (routes/trader.py):
# each door checks its own caller, then runs the same effect through ``api.commands`` (idempotency, one
# transaction, a refused command leaves nothing behind).
def submit_effect(ex: ExecutionService, account_id: uuid.UUID, req: OrderRequest) -> Effect:
    return lambda conn: order_outcome(ex.submit_order(account_id, req, conn=conn))


def cancel_effect(ex: ExecutionService, account_id: uuid.UUID, order_id: uuid.UUID, actor: str) -> Effect:
    return lambda conn: Outcome(200, ex.cancel_order(account_id, order_id, conn=conn, actor=actor))


def close_effect(ex: ExecutionService, account_id: uuid.UUID, symbol: str, body: ClosePositionBody | None) -> Effect:
    quantity = body.quantity if body is not None else None
    return lambda conn: order_outcome(ex.close_position(account_id, symbol, quantity, conn=conn))


def modify_effect(ex: ExecutionService, account_id: uuid.UUID, symbol: str, body: ModifyPositionBody) -> Effect:
    return lambda conn: Outcome(
        200,
        ex.modify(
            account_id,
            symbol=symbol,
            stop_loss=body.stop_loss,
            take_profit=body.take_profit,
            clear_stop_loss=body.clear_stop_loss,
            clear_take_profit=body.clear_take_profit,
            conn=conn,
        ),
    )


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["trading"])
    platform = api.platform
    ex = platform.execution

    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/orders",
        status_code=201,
        response_model=OrderResultOut,
        responses=WRITE_ERRORS,
    )
    def submit_order(request: Request, account_id: AccountId, body: OrderBody) -> Response:
        """Submit a market, limit or stop order (optionally with stop loss / take profit).

        201: accepted (filled, or resting). 422 with the gate code: rejected, and the rejection is recorded.
        409 ``duplicate_client_order_id``: the client order id is already used on this account."""
        return api.commands.run(request, submit_effect(ex, account_id, body.to_request()))

    @router.post(
        f"{PREFIX}/accounts/{{account_id}}/orders/{{order_id}}/cancel", response_model=OrderOut, responses=WRITE_ERRORS
    )
    def cancel_order(request: Request, account_id: AccountId, order_id: OrderId) -> Response:
        """Cancel a resting limit/stop order."""
        return api.commands.run(request, cancel_effect(ex, account_id, order_id, principal_of(request).id))

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
        return api.commands.run(request, close_effect(ex, account_id, symbol, body))

    @router.post(f"{PREFIX}/accounts/{{account_id}}/positions/{{symbol}}/modify", responses=WRITE_ERRORS)
    def modify_position(
        request: Request, account_id: AccountId, symbol: PathSymbol, body: ModifyPositionBody
    ) -> Response:
        """Set or clear the stop loss / take profit of an open position (checked against the current quote)."""
        return api.commands.run(request, modify_effect(ex, account_id, symbol, body))

    # ------------------------------------------------------------------ decision actions
    @router.post(f"{PREFIX}/accounts/{{account_id}}/decision-actions", responses=WRITE_ERRORS, tags=["decisions"])
    def decision_actions(request: Request, account_id: AccountId, body: DecisionBatchBody) -> Response:
        """Submit a batch of up to 100 proposed actions (open, close, modify, cancel; anything else, including
        hold, is recorded as unsupported). Idempotent by (account, decision_run_id, decision_action_id): a
        retry returns the stored results without running the gates again; an id reused with another body is
        409 (numbers compare by value: "0.10" and 0.1 are the same); duplicate ids in one batch are 422. Each
        result links to the order and fill it produced."""
        actions = [
            DecisionAction(
                decision_action_id=a.decision_action_id,
                action=a.action,
                symbol=a.symbol,
                side=a.side,
                quantity=a.quantity,
                order_type=a.order_type,
                limit_price=a.limit_price,
                stop_price=a.stop_price,
                stop_loss=a.stop_loss,
                take_profit=a.take_profit,
                order_id=a.order_id,
                client_order_id=a.client_order_id,
                rationale=a.rationale,
                raw=orjson.loads(dumps(a.model_dump(exclude_none=True))),
            )
            for a in body.actions
        ]

        def effect(conn: Any) -> Outcome:
            results = platform.decisions.submit_batch(account_id, body.decision_run_id, actions, conn=conn)
            return Outcome(200, {"account_id": account_id, "decision_run_id": body.decision_run_id, "results": results})

        return api.commands.run(request, effect)

    @router.get(f"{PREFIX}/decision-actions/{{decision_action_uuid}}", responses=READ_ERRORS, tags=["decisions"])
    def get_decision_action(decision_action_uuid: Annotated[uuid.UUID, Path()]) -> Response:
        """One stored decision action (by its server id) with its result and links."""
        with api.read() as c:
            row = c.execute("SELECT * FROM decision_actions WHERE id=%s", (decision_action_uuid,)).fetchone()
        if row is None:
            raise NotFound(f"decision action {decision_action_uuid} not found", code="decision_action_not_found")
        return json_response(present(row))

    # ------------------------------------------------------------------ quotes
    @router.post(f"{PREFIX}/quotes", responses=WRITE_ERRORS, tags=["market"])
    def post_quotes(request: Request, body: Annotated[QuoteIn | QuoteBatch, Body()]) -> Response:
        """Set quotes (one, or a list of up to 1000). Each is stored if newer than the one held (older or
        duplicate ticks are dropped and reported); each accepted quote at once fires the limit/stop orders and
        stop losses / take profits it crosses. Timestamps need a UTC offset and must be within a day of now."""
        items = body if isinstance(body, list) else [body]
        now = platform.clock.now()
        errors = []
        for i, q in enumerate(items):
            loc: list[Any] = ["body", i] if isinstance(body, list) else ["body"]
            if platform.catalogue.get(q.symbol) is None:
                errors.append({"loc": [*loc, "symbol"], "msg": f"unknown symbol {q.symbol}", "type": "unknown_symbol"})
            if abs((q.ts - now).total_seconds()) > MAX_QUOTE_SKEW_SECONDS:
                errors.append(
                    {
                        "loc": [*loc, "ts"],
                        "msg": "timestamp is more than a day away from the server time",
                        "type": "timestamp_out_of_range",
                    }
                )
        if errors:
            raise ApiError(422, "validation_error", "invalid quotes", validation_details(errors))

        def effect(conn: Any) -> Outcome:
            results: list[dict[str, Any]] = []
            to_fire: dict[str, Quote] = {}
            for q in items:
                before = platform.quotes.stats.dropped_duplicate
                held_before = platform.quotes.stats.held_out_of_band
                stored = platform.quotes.put(
                    Quote(q.symbol, q.bid, q.ask, q.ts.astimezone(UTC), q.seq or 0, "api"), received_at=now
                )
                if stored is None and platform.quotes.stats.held_out_of_band > held_before:
                    # Too far from the last accepted price: held until a second quote confirms it (or an admin).
                    platform.metrics.quotes.labels(outcome="held").inc()
                    results.append({"symbol": q.symbol, "status": "held", "reason": "out_of_band"})
                    continue
                if stored is None:
                    reason = "duplicate" if platform.quotes.stats.dropped_duplicate > before else "out_of_order"
                    platform.metrics.quotes.labels(outcome="dropped").inc()
                    results.append({"symbol": q.symbol, "status": "dropped", "reason": reason})
                    continue
                platform.metrics.quotes.labels(outcome="accepted").inc()
                results.append({"symbol": q.symbol, "status": "accepted", "seq": stored.seq, "ts": stored.ts})
                to_fire[stored.symbol] = stored
            fired = {"accounts": 0, "orders": 0, "protective": 0, "liquidations": 0}
            for stored in to_fire.values():
                for k, v in ex.on_quote(stored).items():
                    fired[k] = fired.get(k, 0) + v
                platform.quotes.announce(stored)
            accepted = sum(1 for r in results if r["status"] == "accepted")
            return Outcome(
                200, {"accepted": accepted, "dropped": len(results) - accepted, "results": results, "triggers": fired}
            )

        return api.commands.run(request, effect)

    return router
