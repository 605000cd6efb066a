"""The risk desk's kill switch: ``GET/POST /api/v1/admin/risk/trading-state`` (admin only, audited).

``GET`` lists the platform's mode and every symbol that is not ``active``. ``POST {"mode", "symbol"?, "reason"}``
sets the platform's mode (no symbol) or one symbol's, writing an ``admin_audit`` row (action ``trading_state``)
in the same transaction; every process enforces it within a second (``execution/trading_state.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from ...domain.errors import InvalidInput
from ...execution.trading_state import PLATFORM, read_all, set_mode
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api
from ..idempotency import Outcome, principal_of
from ..render import json_response
from ..responses import Out
from ..schemas import Reason, Strict

PATH = "/api/v1/admin/risk/trading-state"
Mode = Literal["active", "reduce_only", "halted"]


class TradingStateBody(Strict):
    mode: Mode
    reason: Reason
    symbol: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,16}$", description="Unset: the whole platform.")


class TradingScopeOut(Out):
    scope: str
    mode: str
    reason: str | None = None
    actor: str | None = None
    updated_at: str | None = None


class TradingStateOut(Out):
    platform: TradingScopeOut
    symbols: list[TradingScopeOut]


class TradingStateChange(Out):
    scope: str
    before: str
    mode: str
    reason: str
    actor: str
    updated_at: str


def _present(row: dict[str, Any]) -> dict[str, Any]:
    at = row.get("updated_at")
    return {
        "scope": "platform" if row["scope"] == PLATFORM else row["scope"],
        "mode": row["mode"],
        "reason": row.get("reason"),
        "actor": row.get("actor"),
        "updated_at": at.isoformat().replace("+00:00", "Z") if at is not None else None,
    }


def state_document(conn: Any) -> dict[str, Any]:
    """The kill switch as JSON: the platform's scope and every symbol's."""
    rows = read_all(conn)
    platform = next((r for r in rows if r["scope"] == PLATFORM), {"scope": PLATFORM, "mode": "active"})
    return {"platform": _present(platform), "symbols": [_present(r) for r in rows if r["scope"] != PLATFORM]}


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["admin"])
    platform = api.platform

    @router.get(PATH, responses=READ_ERRORS, response_model=TradingStateOut)
    def trading_state() -> Response:
        """The platform kill switch: the platform's mode and every symbol that is not active."""
        with api.read() as c:
            return json_response(state_document(c))

    @router.post(PATH, responses=WRITE_ERRORS, response_model=TradingStateChange)
    def set_trading_state(request: Request, body: TradingStateBody) -> Response:
        """Halt, make reduce-only or resume the platform (no symbol) or one symbol; audited with the reason and
        enforced by every process within a second."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            try:
                out = set_mode(
                    conn,
                    scope=body.symbol or PLATFORM,
                    mode=body.mode,
                    reason=body.reason,
                    actor=principal.id,
                    at=platform.clock.now(),
                    known_symbol=lambda s: platform.catalogue.get(s) is not None,
                )
            except ValueError as exc:
                raise InvalidInput(str(exc), code="invalid_trading_state") from None
            if platform.execution.trading_state is not None:
                platform.execution.trading_state.invalidate()
            return Outcome(
                200,
                {
                    **out,
                    "scope": "platform" if out["scope"] == PLATFORM else out["scope"],
                    "updated_at": out["updated_at"].isoformat().replace("+00:00", "Z"),
                },
            )

        return api.commands.run(request, effect)

    return router
