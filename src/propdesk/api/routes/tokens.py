"""API tokens and web sessions, for admins: list and revoke tokens, log a user out everywhere (each audited).

- ``GET /api/v1/admin/tokens``: every stored token, newest first, with its status (active, expired, revoked),
  expiry, revocation and ``last_used_at`` (never a hash), plus the roles of the environment tokens this process
  accepts (``PROPDESK_SERVICE_TOKEN``/``ADMIN_TOKEN``/``CRON_SECRET``: not stored, so not revocable here; rotate the
  variable and restart).
- ``POST /api/v1/admin/tokens/{id}/revocation`` with a reason: the token is refused by this process at once and by
  every other running process within ``identity.auth.CACHE_TTL_SECONDS`` (5 s); one ``admin_audit`` row
  (``token_revoke``) in the same transaction.
- ``POST /api/v1/admin/users/{id}/sessions/revocation`` with a reason: every web session of the user ends ("log
  out everywhere", the admin's side); ``admin_audit`` ``sessions_revoke`` and an ``auth_events`` row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from ...domain.errors import NotFound
from ...identity.auth import TokenNotRevocable
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api
from ..errors import ApiError
from ..idempotency import Outcome, principal_of
from ..render import json_response
from ..schemas import AdminBody
from .admin import write_audit

TokenId = Annotated[uuid.UUID, Path(description="API token id (UUID).")]
UserId = Annotated[uuid.UUID, Path(description="User id (UUID).")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenOut(_Model):
    id: uuid.UUID
    name: str
    role: str
    status: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    last_used_at: datetime | None


class EnvironmentToken(_Model):
    id: str
    role: str
    revocable: bool


class TokenList(_Model):
    items: list[TokenOut]
    environment: list[EnvironmentToken]
    next_cursor: None = None


class TokenRevocation(_Model):
    token: TokenOut


class SessionsRevocation(_Model):
    user_id: uuid.UUID
    sessions_ended: int


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["admin"])
    platform = api.platform

    @router.get("/api/v1/admin/tokens", responses=READ_ERRORS, response_model=TokenList)
    def list_tokens() -> Response:
        """Every stored API token (no hash), newest first, with status, expiry, revocation and last use; the
        environment tokens configured in this process are listed apart, as not revocable."""
        items = platform.tokens.list()
        env = [{"id": f"env:{r.value}", "role": r.value, "revocable": False} for r in platform.tokens.static_roles]
        return json_response(TokenList.model_validate({"items": items, "environment": env}).model_dump())

    @router.post("/api/v1/admin/tokens/{token_id}/revocation", responses=WRITE_ERRORS, response_model=TokenRevocation)
    def revoke_token(request: Request, token_id: TokenId, body: AdminBody) -> Response:
        """Revoke an API token (audited with the reason). Refused by every running process within 5 s; revoking
        a revoked token keeps the first revocation."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            try:
                row = platform.tokens.revoke(str(token_id), actor=principal.id, reason=body.reason, conn=conn)
            except TokenNotRevocable:  # pragma: no cover - the path only takes UUIDs
                raise ApiError(409, "token_not_revocable", "environment tokens are rotated, not revoked") from None
            if row is None:
                raise NotFound(f"token {token_id} not found", code="token_not_found")
            token = TokenOut.model_validate(row).model_dump()
            write_audit(
                conn,
                actor=principal.id,
                action="token_revoke",
                account_id=None,
                reason=body.reason,
                before=None,
                after={"status": row["status"], "revoked_at": row["revoked_at"].isoformat()},
                details={"token_id": str(token_id), "name": row["name"], "role": row["role"]},
                at=platform.clock.now(),
            )
            return Outcome(200, {"token": token})

        return api.commands.run(request, effect)

    @router.post(
        "/api/v1/admin/users/{user_id}/sessions/revocation", responses=WRITE_ERRORS, response_model=SessionsRevocation
    )
    def revoke_sessions(request: Request, user_id: UserId, body: AdminBody) -> Response:
        """Log a user out everywhere: every web session of the user ends (audited with the reason)."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            if conn.execute("SELECT 1 FROM users WHERE id=%s", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            ended = platform.identity.end_all_sessions(
                user_id, kind="sessions_revoked", detail={"by": principal.id}, conn=conn
            )
            write_audit(
                conn,
                actor=principal.id,
                action="sessions_revoke",
                account_id=None,
                reason=body.reason,
                before=None,
                after={"sessions_ended": ended},
                details={"user_id": str(user_id)},
                at=platform.clock.now(),
            )
            return Outcome(200, {"user_id": user_id, "sessions_ended": ended})

        return api.commands.run(request, effect)

    return router
