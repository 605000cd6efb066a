"""The admin panel's JSON reads and its live stream (``/api/v1/admin/...``; an admin token or an admin session).

Reads run on an APP-role connection acting as the admin user (``reads.access.user_conn``): the ``is_admin()``
row-level security policies are what let the panel see every trader. A bearer admin token has no web user, so
its reads use the engine pool's read-only connection, as every other admin route of the token API does.

Responses are validated against the pydantic models below (they document the shapes in OpenAPI) and rendered by
the API's one JSON renderer (decimal strings, ISO-8601 UTC timestamps).

``GET /api/v1/admin/stream`` is server-sent events: ``activity`` events (new feed items, oldest first) and
``metrics`` events (when a figure changed; checked every few seconds and after new activity), re-queried on the
server once a second, plus a heartbeat comment every 15 seconds. The browser holds one connection; nothing polls.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...domain.errors import NotFound
from ...reads import admin as reads
from ...reads import trader as trader_reads
from ...reads.access import user_conn
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, WRITE_ERRORS, Api
from ..errors import ApiError
from ..idempotency import Outcome, principal_of
from ..pagination import Cursor, decode_cursor, decode_int_cursor, encode_cursor
from ..render import json_response
from ..responses import HeldQuoteAccepted, HeldQuotePage
from ..schemas import AdminBody, Timestamp
from ..sse import HEARTBEAT_SECONDS, sse
from .admin import write_audit

AccountId = Annotated[uuid.UUID, Path(description="Account id (UUID).")]
HeldSymbol = Annotated[str, Path(pattern=r"^[A-Z0-9]{1,16}$", description="Instrument symbol, e.g. EURUSD.")]
PlanPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
PanelLimit = Annotated[int, Query(ge=1, le=200, description="Page size (1..200).")]
SORT_HELP = "Sort key, '-' prefix for descending: " + ", ".join(reads.TRADER_SORTS)

STREAM_INTERVAL_S = 1.0
METRICS_EVERY_S = 5.0


# ------------------------------------------------------------------------------------------------ models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhaseCount(_Model):
    phase: str
    count: int
    active: int
    day_paused: int
    paused: int
    locked: int


class ChallengeOutcomes(_Model):
    ended: int
    passed: int
    failed: int
    expired: int
    pass_rate_pct: Decimal | None
    breach_rate_pct: Decimal | None


class PendingPayouts(_Model):
    enabled: bool
    count: int
    amount: Decimal
    accrued_profit_split: Decimal
    note: str


class EmailDelivery(_Model):
    enabled: bool
    sent: int
    failed: int
    pending: int


class NotificationDelivery(_Model):
    enabled: bool
    total: int
    unread: int


class MetricsOut(_Model):
    live_accounts: int
    total_accounts: int
    active_by_phase: list[PhaseCount]
    challenges: ChallengeOutcomes
    funded: int
    pending_payouts: PendingPayouts
    email: EmailDelivery
    notifications: NotificationDelivery
    definitions: dict[str, str]


class ActivityItem(_Model):
    at: datetime
    kind: str
    ref: str
    account_id: uuid.UUID | None
    trader: str | None
    display_name: str
    plan: str | None
    phase: str | None
    account_status: str | None
    summary: str
    data: dict[str, Any]


class ActivityPage(_Model):
    items: list[ActivityItem]
    next_cursor: str | None


class TraderRow(_Model):
    account_id: uuid.UUID
    owner_id: str
    trader: str
    display_name: str
    plan: str | None
    plan_version: int | None
    offer: str | None
    mode: str
    phase: str
    status: str
    currency: str
    balance: Decimal
    equity: Decimal
    daily_used_pct: Decimal | None
    max_used_pct: Decimal | None
    violations: int
    last_activity: datetime
    created_at: datetime


class TraderPage(_Model):
    items: list[TraderRow]
    total: int
    next_cursor: str | None
    filters: dict[str, list[str]]


class ViolationItem(_Model):
    id: int
    account_id: uuid.UUID
    trader: str | None
    display_name: str
    plan: str | None
    account_status: str | None
    rule: str
    kind: str
    severity: str
    action: str
    action_taken: str
    phase: str
    at: datetime
    value: Decimal | None
    limit: Decimal | None
    evidence: dict[str, Any]
    order_id: uuid.UUID | None
    created_at: datetime


class ViolationPage(_Model):
    items: list[ViolationItem]
    next_cursor: str | None
    rules: list[str]


class AccountOverview(_Model):
    account: dict[str, Any]
    rules: dict[str, Any]
    equity: dict[str, Any]
    positions: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    violations: list[ViolationItem]
    daily_stats: list[dict[str, Any]]
    audit: list[dict[str, Any]]


class CalendarEventItem(_Model):
    id: int
    at: datetime
    currency: str
    country: str
    impact: str
    title: str
    source: str
    created_at: datetime
    symbols: list[str]


class CalendarSource(_Model):
    source: str
    events: int
    in_window: int
    newest_created_at: datetime | None


class CalendarWindow(_Model):
    start: datetime
    end: datetime


class CalendarPage(_Model):
    items: list[CalendarEventItem]
    next_cursor: str | None
    limit: int
    window: CalendarWindow
    impact: str
    currency: str | None
    sources: list[CalendarSource]


def _out(model: type[BaseModel], data: Any) -> Response:
    """Validate ``data`` against ``model`` (the documented shape) and render it with the API's renderer."""
    return json_response(model.model_validate(data).model_dump())


# ------------------------------------------------------------------------------------------------ helpers
@contextmanager
def admin_conn(api: Api, request: Request) -> Iterator[Any]:
    """The connection an admin read runs on: the app role as the admin user (RLS), or, for a bearer admin token
    (no web user), the engine pool's read-only connection."""
    principal = getattr(request.state, "principal", None)
    user = getattr(principal, "user", None)
    if user is not None:
        with user_conn(api.platform, user) as c:
            yield c
    else:
        with api.read() as c:
            yield c


def decode_activity_cursor(cursor: str | None) -> reads.ActivityKey | None:
    """An activity cursor back to its key (422 ``invalid_cursor`` when it is not one)."""
    values = decode_cursor("activity", cursor, 3)
    if values is None:
        return None
    at_text, kind, ref = values
    if kind not in reads.ACTIVITY_KINDS or not isinstance(ref, str) or len(ref) > 64:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return reads.ActivityKey(_cursor_time(at_text), kind, ref)


def _cursor_time(value: Any) -> datetime:
    """A cursor's aware timestamp (422 ``invalid_cursor`` for anything else)."""
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return at


def check_sort(sort: str) -> str:
    try:
        reads.parse_sort(sort)
    except KeyError:
        raise ApiError(
            422,
            "invalid_sort",
            f"cannot sort by {sort[:40]!r}",
            {"allowed": sorted(list(reads.TRADER_SORTS) + [f"-{k}" for k in reads.TRADER_SORTS])},
        ) from None
    return sort


def traders_page(
    conn: Any,
    *,
    q: str | None,
    status: str | None,
    phase: str | None,
    plan: str | None,
    sort: str,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """One page of the trader table with its total, the next cursor and the filter menus."""
    items, total = reads.traders(
        conn, q=q, status=status, phase=phase, plan=plan, sort=sort, limit=limit, offset=offset
    )
    nxt = encode_cursor("traders", [offset + limit]) if offset + limit < total else None
    return {"items": items, "total": total, "next_cursor": nxt, "filters": reads.filter_options(conn)}


def violations_page(
    conn: Any, *, kinds: list[str], rule: str | None, account_id: uuid.UUID | None, before: int | None, limit: int
) -> dict[str, Any]:
    items, last = reads.violations(conn, kinds=kinds, rule=rule, account_id=account_id, before_id=before, limit=limit)
    return {
        "items": items,
        "next_cursor": encode_cursor("violations", [last]) if last is not None else None,
        "rules": reads.violation_rules(conn),
    }


def account_overview(api: Api, conn: Any, account_id: uuid.UUID) -> dict[str, Any]:
    """Everything the admin account page shows about one account."""
    account = reads.account_row(conn, account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found", code="account_not_found")
    items, _ = reads.violations(conn, kinds=list(reads.VIOLATION_KINDS), account_id=account_id, limit=200)
    return {
        "account": account,
        # The rule panel the trader sees (floors, anchors, how each is computed, rolled to now), read on this
        # connection (reads/trader.py).
        "rules": trader_reads.rules_panel(api.platform, conn, account_id),
        # The same curve and floors the trader's dashboard draws (reads/trader.py).
        "equity": trader_reads.equity_series(api.platform, conn, account_id),
        "positions": reads.positions(conn, account_id),
        "orders": reads.orders(conn, account_id),
        "ledger": reads.ledger(conn, account_id),
        "violations": items,
        "daily_stats": reads.daily_stats(conn, account_id),
        "audit": reads.audit_trail(conn, account_id),
    }


CALENDAR_MAX_SPAN = timedelta(days=62)
CALENDAR_DEFAULT_BACK = timedelta(days=1)
CALENDAR_DEFAULT_AHEAD = timedelta(days=7)
CALENDAR_LIMIT_MAX = 500


def calendar_window(now: datetime, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The calendar window ``[start, end)``: by default now - 1 day .. now + 7 days; a missing end is start + 7
    days, a missing start is end - 8 days. 422 for a naive time, an empty window or a span over 62 days (the
    panel shows a week or a month; a year of Finnhub rows is not a page)."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ApiError(
                422, "invalid_window", f"'{name}' needs a UTC offset (e.g. 2026-03-02T13:30:00Z)", {"param": name}
            )
    if start is None and end is None:
        start, end = now - CALENDAR_DEFAULT_BACK, now + CALENDAR_DEFAULT_AHEAD
    elif start is None:
        assert end is not None
        start = end - CALENDAR_DEFAULT_BACK - CALENDAR_DEFAULT_AHEAD
    elif end is None:
        end = start + CALENDAR_DEFAULT_AHEAD
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise ApiError(
            422, "invalid_window", "'to' must be after 'from'", {"from": start.isoformat(), "to": end.isoformat()}
        )
    if end - start > CALENDAR_MAX_SPAN:
        raise ApiError(
            422,
            "window_too_long",
            f"the window spans more than {CALENDAR_MAX_SPAN.days} days",
            {"from": start.isoformat(), "to": end.isoformat(), "max_days": CALENDAR_MAX_SPAN.days},
        )
    return start, end


def decode_calendar_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """A calendar cursor back to its ``(at, id)`` key (422 ``invalid_cursor`` when it is not one)."""
    values = decode_cursor("calendar", cursor, 2)
    if values is None:
        return None
    at_text, event_id = values
    if not isinstance(event_id, int):
        raise ApiError(422, "invalid_cursor", "the cursor is not valid")
    return _cursor_time(at_text), event_id


def calendar_page(
    api: Api,
    conn: Any,
    *,
    start: datetime,
    end: datetime,
    impact: str,
    currency: str | None,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> dict[str, Any]:
    """One page of the calendar window (oldest first) with the affected symbols, and the per-source summary."""
    items, last = reads.calendar_events(
        conn, api.platform.catalogue, start=start, end=end, impact=impact, currency=currency, after=after, limit=limit
    )
    return {
        "items": items,
        "next_cursor": encode_cursor("calendar", [last[0].isoformat(), last[1]]) if last else None,
        "limit": limit,
        "window": {"start": start, "end": end},
        "impact": impact,
        "currency": currency,
        "sources": reads.calendar_sources(conn, start=start, end=end),
    }


def _kinds(kind: str | None) -> list[str]:
    if kind is None or kind == "":
        return ["breach", "flag"]
    if kind == "all":
        return list(reads.VIOLATION_KINDS)
    parts = [k.strip() for k in kind.split(",") if k.strip()]
    bad = [k for k in parts if k not in reads.VIOLATION_KINDS]
    if bad or not parts:
        raise ApiError(
            422,
            "invalid_kind",
            f"unknown violation kind {bad[0] if bad else kind!r}",
            {"allowed": [*reads.VIOLATION_KINDS, "all"]},
        )
    return parts


# ------------------------------------------------------------------------------------------------ routes
def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["admin panel"])

    @router.get("/api/v1/admin/metrics", responses=READ_ERRORS, response_model=MetricsOut)
    def metrics(request: Request) -> Response:
        """Platform metrics: live accounts by phase, pass and breach rates, funded accounts, pending payouts,
        email and notification delivery. ``definitions`` says how each figure is computed."""
        with admin_conn(api, request) as c:
            return _out(MetricsOut, reads.metrics(c))

    @router.get("/api/v1/admin/activity", responses=READ_ERRORS, response_model=ActivityPage)
    def activity(
        request: Request,
        limit: PanelLimit = 50,
        cursor: Cursor = None,
        account_id: Annotated[uuid.UUID | None, Query(description="Only this account.")] = None,
    ) -> Response:
        """The activity feed, newest first: orders, fills, breaches, flags, passes, status changes, admin actions."""
        key = decode_activity_cursor(cursor)
        with admin_conn(api, request) as c:
            items, nxt = reads.activity(c, before=key, limit=limit, account_id=account_id)
        return _out(
            ActivityPage, {"items": items, "next_cursor": encode_cursor("activity", nxt.to_list()) if nxt else None}
        )

    @router.get("/api/v1/admin/traders", responses=READ_ERRORS, response_model=TraderPage)
    def traders(
        request: Request,
        q: Annotated[str | None, Query(max_length=100, description="Search trader, account id, plan.")] = None,
        status: Annotated[str | None, Query(pattern="^(" + "|".join(reads.TRADER_STATUSES) + ")?$")] = None,
        phase: Annotated[str | None, Query(max_length=64)] = None,
        plan: Annotated[str | None, Query(max_length=64)] = None,
        sort: Annotated[str, Query(max_length=40, description=SORT_HELP)] = "-last_activity",
        limit: PanelLimit = 50,
        cursor: Cursor = None,
    ) -> Response:
        """The per-trader status table: search, filter (status, phase, plan), sort (whitelisted keys) and pages,
        all in SQL. An unknown sort key is a 422 ``invalid_sort``."""
        check_sort(sort)
        offset = decode_int_cursor("traders", cursor)
        with admin_conn(api, request) as c:
            return _out(
                TraderPage,
                traders_page(
                    c,
                    q=q or None,
                    status=status or None,
                    phase=phase or None,
                    plan=plan or None,
                    sort=sort,
                    limit=limit,
                    offset=offset,
                ),
            )

    @router.get("/api/v1/admin/violations", responses=READ_ERRORS, response_model=ViolationPage)
    def violations(
        request: Request,
        kind: Annotated[
            str | None, Query(max_length=60, description="breach,flag (default), warning, reject, pass, or all")
        ] = None,
        rule: Annotated[str | None, Query(max_length=64)] = None,
        account_id: Annotated[uuid.UUID | None, Query()] = None,
        limit: PanelLimit = 50,
        cursor: Cursor = None,
    ) -> Response:
        """Flags & violations, newest first: rule, value and limit, evidence, and the action taken automatically."""
        kinds = _kinds(kind)
        before = decode_int_cursor("violations", cursor) or None
        with admin_conn(api, request) as c:
            return _out(
                ViolationPage,
                violations_page(c, kinds=kinds, rule=rule or None, account_id=account_id, before=before, limit=limit),
            )

    @router.get("/api/v1/admin/accounts/{account_id}/overview", responses=READ_ERRORS, response_model=AccountOverview)
    def overview(request: Request, account_id: AccountId) -> Response:
        """One account for the admin page: balances, rule status, equity curve, positions, orders with fills,
        ledger, violations, daily statistics and the admin audit trail."""
        with admin_conn(api, request) as c:
            return _out(AccountOverview, account_overview(api, c, account_id))

    @router.get("/api/v1/admin/calendar/events", responses=READ_ERRORS, response_model=CalendarPage)
    def calendar_events(
        request: Request,
        start: Annotated[
            Timestamp | None,
            Query(alias="from", description="Window start, ISO-8601 with a UTC offset (default: now - 1 day)."),
        ] = None,
        end: Annotated[
            Timestamp | None,
            Query(
                alias="to",
                description="Window end, exclusive (default: now + 7 days; at most 62 days after the start).",
            ),
        ] = None,
        impact: Annotated[str, Query(pattern="^(high|medium|low)$", description="Minimum impact.")] = "low",
        currency: Annotated[
            str | None, Query(pattern="^[A-Z]{3}$", description="Only this currency (ISO 4217, upper case).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=CALENDAR_LIMIT_MAX, description="Page size (1..500).")] = 200,
        cursor: Cursor = None,
    ) -> Response:
        """The economic calendar the news rule reads, in a window, oldest first: each event with the catalogue
        symbols it affects (its currency is the symbol's base or quote currency, as the news rule matches), and
        per source the number of events and when the newest arrived."""
        window = calendar_window(api.platform.clock.now(), start, end)
        after = decode_calendar_cursor(cursor)
        with admin_conn(api, request) as c:
            return _out(
                CalendarPage,
                calendar_page(
                    api, c, start=window[0], end=window[1], impact=impact, currency=currency, limit=limit, after=after
                ),
            )

    @router.get("/api/v1/admin/quotes/held", responses=READ_ERRORS, response_model=HeldQuotePage)
    def held_quotes() -> Response:
        """Quotes the sanity band holds (a mid too far from the last accepted one), each until a confirming quote
        arrives or an admin accepts it; from every process (they are kept in the database)."""
        rows = api.platform.quotes.held()
        items = [
            {
                "symbol": r["symbol"],
                "bid": r["bid"],
                "ask": r["ask"],
                "ts": r["ts"],
                "source": r.get("source"),
                "last_mid": r.get("last_mid"),
                "deviation_pct": r.get("deviation_pct"),
                "band_pct": r.get("band_pct"),
                "held_at": r.get("held_at"),
            }
            for r in rows
        ]
        return json_response({"items": items})

    @router.post(
        "/api/v1/admin/quotes/held/{symbol}/acceptance", responses=WRITE_ERRORS, response_model=HeldQuoteAccepted
    )
    def accept_held_quote(request: Request, symbol: HeldSymbol, body: AdminBody) -> Response:
        """Accept the quote the sanity band holds for ``symbol`` (the admin vouches for the price; audited as
        ``quote_band_override``). It is then stored, published and acted on like any accepted quote."""
        principal = principal_of(request)
        platform = api.platform

        def effect(conn: Any) -> Outcome:
            stored = platform.quotes.accept_held(symbol, conn=conn)
            if stored is None:
                raise NotFound(f"no quote is held for {symbol}", code="no_held_quote")
            write_audit(
                conn,
                actor=principal.id,
                action="quote_band_override",
                account_id=None,
                reason=body.reason,
                before=None,
                after={"symbol": stored.symbol, "bid": str(stored.bid), "ask": str(stored.ask)},
                details={"ts": stored.ts.isoformat(), "seq": stored.seq},
                at=platform.clock.now(),
            )
            return Outcome(
                200, {"symbol": stored.symbol, "bid": stored.bid, "ask": stored.ask, "ts": stored.ts, "seq": stored.seq}
            )

        response = api.commands.run(request, effect)
        if response.status_code == 200:
            stored = platform.quotes.latest(symbol)
            if stored is not None:  # the core reacts to it as to any accepted quote (SL/TP, orders, floors)
                platform.execution.on_quote(stored)
                platform.quotes.announce(stored)
        return response

    @router.post("/api/v1/admin/plans/{plan_id}/retirement", responses=WRITE_ERRORS)
    def retire_with_reason(request: Request, plan_id: PlanPath, body: AdminBody) -> Response:
        """Retire a plan with the admin's reason in the audit log (the panel's retire; the plan leaves the
        catalogue, accounts on it are untouched)."""
        principal = principal_of(request)

        def effect(conn: Any) -> Outcome:
            n = api.platform.plans.retire(plan_id)
            write_audit(
                conn,
                actor=principal.id,
                action="plan_retire",
                account_id=None,
                reason=body.reason,
                before=None,
                after={"retired_versions": n},
                details={"plan_id": plan_id},
                at=api.platform.clock.now(),
            )
            return Outcome(200, {"plan_id": plan_id, "retired_versions": n})

        return api.commands.run(request, effect)

    @router.get(
        "/api/v1/admin/stream",
        responses=READ_ERRORS,
        response_class=StreamingResponse,
        description="Server-sent events: `activity` (new feed items) and `metrics`; heartbeat comments.",
    )
    async def stream(request: Request) -> StreamingResponse:
        """Live activity and metrics for the admin panel (server-sent events)."""
        follower = ActivityFollower()

        def start() -> None:
            with admin_conn(api, request) as c:
                follower.prime(c)

        await run_in_threadpool(start)

        def poll() -> list[dict[str, Any]]:
            with admin_conn(api, request) as c:
                return follower.poll(c)

        async def events() -> AsyncIterator[bytes]:
            sent_metrics: bytes | None = None
            clock = asyncio.get_running_loop().time
            last_beat = last_metrics = clock()
            yield b"retry: 3000\n\n"
            while not await request.is_disconnected():
                now = clock()
                items = await run_in_threadpool(poll)
                if items:
                    yield sse("activity", {"items": [ActivityItem.model_validate(i).model_dump() for i in items]})
                if items or sent_metrics is None or now - last_metrics >= METRICS_EVERY_S:
                    last_metrics = now
                    fresh = await run_in_threadpool(lambda: _metrics(api, request))
                    body = sse("metrics", MetricsOut.model_validate(fresh).model_dump())
                    if body != sent_metrics:
                        sent_metrics = body
                        yield body
                if now - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = now
                    yield b": heartbeat\n\n"
                # The server re-queries at most once a second; the browser just listens.
                await asyncio.sleep(STREAM_INTERVAL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    return router


def _metrics(api: Api, request: Request) -> dict[str, Any]:
    with admin_conn(api, request) as c:
        return reads.metrics(c)


class ActivityFollower:
    """What a live stream sends next: the feed items it has not sent yet, oldest first.

    An item's time is the command's clock reading, taken before its transaction commits, and one transaction
    stamps several items with the same instant; so a new item can show up with a time equal to or a little older
    than one already sent. The follower therefore re-reads a window (``lookback``) behind the newest time it has
    seen and remembers which items of that window it already sent."""

    PAGE = 500
    MAX_PAGES = 20

    def __init__(self, lookback: timedelta = timedelta(seconds=30)):
        self.lookback = lookback
        self.newest: datetime | None = None
        self.seen: dict[tuple[str, str], datetime] = {}

    def _window(self, conn: Any) -> list[dict[str, Any]]:
        since = (self.newest - self.lookback) if self.newest is not None else datetime(1970, 1, 1, tzinfo=UTC)
        key = reads.ActivityKey(since, "", "")  # "" sorts before every kind: the window starts at ``since``
        out: list[dict[str, Any]] = []
        for _ in range(self.MAX_PAGES):
            items, last = reads.activity(conn, after=key, limit=self.PAGE)
            out.extend(items)
            if len(items) < self.PAGE or last is None:
                break
            key = last
        return out

    def _remember(self, items: list[dict[str, Any]]) -> None:
        for i in items:
            self.seen[(i["kind"], i["ref"])] = i["at"]
            if self.newest is None or i["at"] > self.newest:
                self.newest = i["at"]
        if self.newest is not None:
            horizon = self.newest - self.lookback
            self.seen = {k: at for k, at in self.seen.items() if at >= horizon}

    def prime(self, conn: Any) -> None:
        """Start from now: what exists already is not sent."""
        latest = reads.latest_activity_key(conn)
        if latest is not None:
            self.newest = latest.at
            self._remember(self._window(conn))

    def poll(self, conn: Any) -> list[dict[str, Any]]:
        """The items not sent yet (oldest first), remembered as sent."""
        fresh = [i for i in self._window(conn) if (i["kind"], i["ref"]) not in self.seen]
        self._remember(fresh)
        return fresh
