"""Plans, rule status, violations, daily statistics, the day roll, external trade checks, calendar entry."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from ...execution.external import ExternalTrade
from ...marketdata.calendar import affected_symbols
from ...rulebooks.store import summary
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api, require_account
from ..idempotency import Outcome, principal_of
from ..pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, decode_int_cursor, page
from ..render import json_response
from ..schemas import CalendarEventBody, ExternalTradeBody, PlanBody
from .admin import write_audit

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
PlanPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


def present_violation(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "account_id": r["account_id"],
        "rule": r["rule"],
        "kind": r["kind"],
        "severity": r["severity"],
        "action": r["action"],
        "at": r["at"],
        "value": r["value"],
        "limit": r["limit_value"],
        "evidence": r["evidence"],
        "inputs_hash": r["inputs_hash"],
        "phase": r["phase"],
        "order_id": r["order_id"],
        "created_at": r["created_at"],
    }


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["rules"])
    platform = api.platform

    # ------------------------------------------------------------------ plans
    @router.get("/api/v1/prop/plans", responses=READ_ERRORS)
    def list_plans() -> Response:
        """The plan catalogue: the latest active version of every plan, with phases, rules and offers."""
        return json_response({"items": platform.plans.catalogue(), "next_cursor": None})

    @router.get("/api/v1/prop/plans/{plan_id}", responses=READ_ERRORS)
    def get_plan(plan_id: PlanPath) -> Response:
        """A plan's latest active version and the list of all its versions."""
        book = platform.plans.get(plan_id)
        return json_response({**summary(book), "versions": platform.plans.versions(plan_id)})

    @router.post("/api/v1/admin/plans", status_code=201, responses=WRITE_ERRORS)
    def create_plan_version(request: Request, body: PlanBody) -> Response:
        """Validate a plan file (YAML or JSON) and store it as a new version; running accounts keep theirs."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            book = platform.plans.create_version(body.text, actor=principal.id)
            write_audit(
                conn,
                actor=principal.id,
                action="plan_version",
                account_id=None,
                reason=f"plan {book.id} v{book.version}",
                before=None,
                after={"version": book.version},
                details={"plan_id": book.id, "digest": book.digest()},
                at=platform.clock.now(),
            )
            return Outcome(201, summary(book))

        return api.commands.run(request, effect)

    @router.post("/api/v1/admin/plans/{plan_id}/retire", responses=WRITE_ERRORS)
    def retire_plan(request: Request, plan_id: PlanPath) -> Response:
        """Retire a plan: it leaves the catalogue; accounts on it are untouched."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            n = platform.plans.retire(plan_id)
            write_audit(
                conn,
                actor=principal.id,
                action="plan_retire",
                account_id=None,
                reason=f"retire plan {plan_id}",
                before=None,
                after={"retired_versions": n},
                details={"plan_id": plan_id},
                at=platform.clock.now(),
            )
            return Outcome(200, {"plan_id": plan_id, "retired_versions": n})

        return api.commands.run(request, effect)

    # ------------------------------------------------------------------ account rule views
    @router.get("/api/v1/prop/accounts/{account_id}/rules", responses=READ_ERRORS)
    def account_rules(account_id: AccountId) -> Response:
        """Each limit (floor, how it is computed, current value, room left, % used), each progress rule (value
        against target), deadlines, and the time to the next day reset."""
        return json_response(platform.execution.rules.status(account_id))

    @router.get("/api/v1/prop/accounts/{account_id}/violations", responses=READ_ERRORS)
    def violations(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """Every rule decision recorded for the account (breaches, warnings, flags, refusals, passes), newest
        first, with the evidence and a hash of it."""
        before = decode_int_cursor("violations", cursor) or 2**62
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT * FROM violations WHERE account_id=%s AND id < %s ORDER BY id DESC LIMIT %s",
                (account_id, before, limit + 1),
            ).fetchall()
        return json_response(page("violations", rows, limit, lambda r: [r["id"]], present_violation))

    @router.get("/api/v1/prop/accounts/{account_id}/daily-stats", responses=READ_ERRORS)
    def daily_stats(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """Per trading day (rulebook timezone): start-of-day balance and equity, day high/low equity, closed
        P&L, trades, the day's floor. Newest first."""
        after = decode_cursor("daily_stats", cursor, 1)
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT * FROM daily_stats WHERE account_id=%s AND (%s::date IS NULL OR trading_day < %s)"
                " ORDER BY trading_day DESC LIMIT %s",
                (account_id, after[0] if after else None, after[0] if after else None, limit + 1),
            ).fetchall()
        return json_response(
            page(
                "daily_stats",
                rows,
                limit,
                lambda r: [r["trading_day"].isoformat()],
                lambda r: {k: v for k, v in r.items() if k != "account_id"},
            )
        )

    @router.get("/api/v1/prop/accounts/{account_id}/consistency-snapshots", responses=READ_ERRORS)
    def consistency_snapshots(account_id: AccountId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """A snapshot per winning trade: its share of all winning profit so far (per-trade consistency)."""
        after = decode_int_cursor("snapshots", cursor)
        with api.read() as c:
            require_account(c, account_id)
            rows = c.execute(
                "SELECT * FROM consistency_snapshots WHERE account_id=%s AND id > %s ORDER BY id LIMIT %s",
                (account_id, after, limit + 1),
            ).fetchall()
        return json_response(page("snapshots", rows, limit, lambda r: [r["id"]]))

    # ------------------------------------------------------------------ day roll
    @router.post("/api/v1/admin/eod", responses=WRITE_ERRORS)
    def end_of_day(request: Request) -> Response:
        """Roll every challenge account's trading day at its rulebook's day start (DST-correct), re-checking
        carried positions against the new floors at once. Rolling twice is harmless. Accepts the
        ``PROPDESK_CRON_SECRET`` as a bearer token, or an admin token."""

        def effect(conn: Any) -> Outcome:
            # Each account rolls in its own transaction: one failure must not hold back the others.
            return Outcome(200, {**platform.execution.roll_all(), "at": platform.clock.now()})

        return api.commands.run(request, effect)

    # ------------------------------------------------------------------ external trades
    @router.post("/api/v1/risk/check-trade", responses=WRITE_ERRORS)
    def check_trade(request: Request, body: ExternalTradeBody) -> Response:
        """Check a trade executed on another platform against the account's rulebook (idempotent by ticket):
        records violations and consistency snapshots, books its P&L at close, answers pass/warning/breach."""
        trade = ExternalTrade(
            body.ticket,
            body.symbol,
            body.side.value,
            body.lots,
            body.open_time,
            body.open_price,
            body.close_time,
            body.close_price,
            body.sl,
            body.tp,
            body.commission,
            body.swap,
            body.profit,
        )

        def effect(conn: Any) -> Outcome:
            return Outcome(200, platform.external.check(body.account_id, trade, conn=conn))

        return api.commands.run(request, effect)

    # ------------------------------------------------------------------ calendar
    @router.post("/api/v1/admin/calendar/events", status_code=201, responses=WRITE_ERRORS)
    def add_event(request: Request, body: CalendarEventBody) -> Response:
        """Enter an economic calendar event by hand (the news rule reads these). The entry is in the admin audit
        trail with the acting admin; the answer carries the catalogue symbols the event affects."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            now = platform.clock.now()
            row = conn.execute(
                "INSERT INTO economic_events (at, currency, country, impact, title, source, created_at)"
                " VALUES (%s,%s,%s,%s,%s,'admin',%s) RETURNING *",
                (body.at, body.currency, body.country, body.impact, body.title, now),
            ).fetchone()
            event = {
                "id": row["id"],
                "at": row["at"].isoformat(),
                "currency": row["currency"],
                "country": row["country"],
                "impact": row["impact"],
                "title": row["title"],
            }
            write_audit(
                conn,
                actor=principal.id,
                action="calendar_event_add",
                account_id=None,
                reason=f"calendar: {row['impact']} {row['currency']} {row['title']}"[:500],
                before=None,
                after=event,
                details={"event_id": row["id"], "source": "admin"},
                at=now,
            )
            symbols = affected_symbols(platform.catalogue, row["currency"], row["country"])
            return Outcome(201, {**dict(row), "symbols": symbols})

        return api.commands.run(request, effect)

    return router
