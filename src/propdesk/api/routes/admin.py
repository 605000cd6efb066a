"""Admin controls, each audited: pause, resume, lock, liquidate, void order, void fill, recompute; audit log.

Every action writes one ``admin_audit`` row (actor = the admin principal, action, account, reason, before/after
= account status and balances, details) in the same transaction as its effect. A refused action (an illegal
transition, an unknown fill, ...) is audited too, with ``details.outcome = "refused"`` and the error, and
answers with that error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response

from ...domain.errors import DomainError
from ...domain.lifecycle import Trigger
from ...reads.present import present_account, present_audit
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api, balance_of, require_account
from ..errors import describe
from ..idempotency import Outcome, principal_of
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, decode_int_cursor, page
from ..render import dec, dumps, json_response
from ..schemas import AdminBody, VoidFillBody, VoidOrderBody

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
PREFIX = "/api/v1/admin/prop/accounts"
_BALANCE_FIELDS = (
    "cash",
    "equity",
    "unrealized_pnl",
    "realized_pnl",
    "fees",
    "deposits",
    "adjustments",
    "high_watermark",
    "margin_used",
    "ledger_seq",
)


def account_state(conn: Any, account_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any]:
    """Status and balances as JSON-ready data (the audit row's before/after)."""
    acc = require_account(conn, account_id, lock=lock)
    bal = balance_of(conn, account_id) or {}
    return {
        "status": acc["status"],
        "balance": {k: (dec(bal[k]) if k != "ledger_seq" else bal[k]) for k in _BALANCE_FIELDS if k in bal},
    }


def write_audit(
    conn: Any,
    *,
    actor: str,
    action: str,
    account_id: uuid.UUID | None,
    reason: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    details: dict[str, Any],
    at: Any,
) -> dict[str, Any]:
    row = conn.execute(
        "INSERT INTO admin_audit (actor, action, account_id, reason, before, after, details, created_at)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
        (actor, action, account_id, reason, Jsonb(before), Jsonb(after), Jsonb(details), at),
    ).fetchone()
    return row  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    """Rows to JSON-ready values for the audit details (psycopg's Jsonb cannot dump Decimal/UUID/datetime)."""
    return orjson.loads(dumps(value))


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["admin"])
    platform = api.platform
    ex = platform.execution

    def audited(
        request: Request,
        action: str,
        account_id: uuid.UUID,
        reason: str,
        apply: Callable[[Any, str], dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> Response:
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            before = account_state(conn, account_id, lock=True)
            now = platform.clock.now()
            try:
                with conn.transaction():
                    result = apply(conn, principal.id)
            except DomainError as exc:
                status, err = describe(exc)
                write_audit(
                    conn,
                    actor=principal.id,
                    action=action,
                    account_id=account_id,
                    reason=reason,
                    before=before,
                    after=before,
                    details={**(extra or {}), "outcome": "refused", "error": err["error"]},
                    at=now,
                )
                return Outcome(status, err)
            after = account_state(conn, account_id)
            audit = write_audit(
                conn,
                actor=principal.id,
                action=action,
                account_id=account_id,
                reason=reason,
                before=before,
                after=after,
                details={**(extra or {}), "outcome": "applied", "result": _jsonable(result)},
                at=now,
            )
            account = require_account(conn, account_id)
            return Outcome(
                200,
                {
                    "action": action,
                    "account": present_account(account, balance_of(conn, account_id)),
                    "result": result,
                    "audit": present_audit(audit),
                },
            )

        return api.commands.run(request, effect)

    def lifecycle(trigger: Trigger) -> None:
        @router.post(
            f"{PREFIX}/{{account_id}}/{trigger.value}",
            responses=WRITE_ERRORS,
            name=f"admin_{trigger.value}",
            summary=f"Admin: {trigger.value} an account (audited)",
        )
        def move(request: Request, account_id: AccountId, body: AdminBody) -> Response:
            def apply(conn: Any, actor: str) -> dict[str, Any]:
                row = ex.apply_trigger(account_id, trigger, actor=actor, reason=body.reason, conn=conn)
                return {"status": row["status"]}

            return audited(request, trigger.value, account_id, body.reason, apply)

    for trig in (Trigger.PAUSE, Trigger.RESUME, Trigger.LOCK, Trigger.LIQUIDATE):
        lifecycle(trig)

    @router.post(f"{PREFIX}/{{account_id}}/void-order", responses=WRITE_ERRORS)
    def void_order(request: Request, account_id: AccountId, body: VoidOrderBody) -> Response:
        """Void an order: a resting one is voided; a filled one has each of its fills voided (reversing
        entries, never deletes)."""

        def apply(conn: Any, actor: str) -> dict[str, Any]:
            return {"order": ex.void_order(account_id, body.order_id, actor=actor, reason=body.reason, conn=conn)}

        return audited(request, "void_order", account_id, body.reason, apply, {"order_id": str(body.order_id)})

    @router.post(f"{PREFIX}/{{account_id}}/void-fill", responses=WRITE_ERRORS)
    def void_fill(request: Request, account_id: AccountId, body: VoidFillBody) -> Response:
        """Void a fill by reversing its fee and realized P&L and re-deriving the position."""

        def apply(conn: Any, actor: str) -> dict[str, Any]:
            return {"fill": ex.void_fill(account_id, body.fill_id, actor=actor, reason=body.reason, conn=conn)}

        return audited(request, "void_fill", account_id, body.reason, apply, {"fill_id": str(body.fill_id)})

    @router.post(f"{PREFIX}/{{account_id}}/recompute", responses=WRITE_ERRORS)
    def recompute(request: Request, account_id: AccountId, body: AdminBody) -> Response:
        """Fold the ledger and fills back into balances and positions and compare with what is stored."""

        def apply(conn: Any, actor: str) -> dict[str, Any]:
            return ex.recompute(account_id, conn=conn)

        return audited(request, "recompute", account_id, body.reason, apply)

    @router.get(f"{PREFIX}/{{account_id}}/audit-log", responses=READ_ERRORS)
    def audit_log(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """The account's admin audit entries, oldest first."""
        after = decode_int_cursor("audit", cursor)
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT * FROM admin_audit WHERE account_id=%s AND id > %s ORDER BY id LIMIT %s",
                (account_id, after, limit + 1),
            ).fetchall()
        return json_response(page("audit", rows, limit, lambda r: [r["id"]], present_audit))

    return router
