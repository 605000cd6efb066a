"""The admin panel in the browser: ``/admin`` (metrics, live activity, trader table), ``/admin/accounts/{id}``
(one account with the admin controls), ``/admin/accounts/{id}/as-trader`` (the trader's dashboard and journal,
read-only, each view audited as ``view_as_trader``), ``/admin/violations`` (flags & violations), ``/admin/plans``
(presets, versions, new version from an edited plan file, retire) and ``/admin/calendar`` (the economic calendar
the news rule reads: a window of events with the symbols they affect, per-source freshness, and an "Add event" form).

Every page reads through ``reads.access.user_conn`` as the signed-in admin (app role; the ``is_admin()`` RLS
policies open every trader's rows). The middleware lets only admin sessions reach ``/admin``. The pages never
write: the controls call the audited admin JSON routes (``api/routes/admin.py``, ``rules.py``) from
``static/admin*.js`` with ``fetch`` (same origin: the browser's Origin header satisfies the CSRF check), and
live updates arrive over ``GET /api/v1/admin/stream`` (server-sent events).

The trader table is re-rendered as an HTML fragment (``/admin/partials/traders``) by htmx when the search,
filters, sort or page change; sorting and paging happen in SQL (``admin_reads.traders``).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..api.errors import ApiError
from ..api.pagination import decode_int_cursor, encode_cursor
from ..api.routes.admin import write_audit
from ..api.routes.admin_panel import (
    CALENDAR_DEFAULT_AHEAD,
    CALENDAR_DEFAULT_BACK,
    account_overview,
    calendar_page,
    check_sort,
    traders_page,
    violations_page,
)
from ..domain.errors import NotFound
from ..reads import admin as reads
from ..reads.access import user_conn
from ..rulebooks import preset_ids
from .pages import catalogue_view, current_principal, current_user, render
from .trader_views import account_state, dashboard_context, journal_state

PAGE_SIZE = 25

STATUS_BADGE = {
    "active": "badge-ok",
    "passed": "badge-ok",
    "day_paused": "badge-warn",
    "paused": "badge-warn",
    "locked": "badge-warn",
    "pending": "badge-muted",
    "failed": "badge-bad",
    "expired": "badge-bad",
    "liquidated": "badge-bad",
    "completed": "badge-muted",
}
KIND_BADGE = {
    "breach": "badge-bad",
    "flag": "badge-warn",
    "warning": "badge-warn",
    "reject": "badge-muted",
    "pass": "badge-ok",
    "order": "badge-info",
    "fill": "badge-info",
    "status": "badge-muted",
    "admin": "badge-dev",
}
# Columns of the trader table: (sort key, header, numeric?).
TRADER_COLUMNS = [
    ("trader", "Trader", False),
    ("plan", "Plan", False),
    ("phase", "Phase", False),
    ("status", "Status", False),
    ("balance", "Balance", True),
    ("equity", "Equity", True),
    ("daily_used", "Daily loss used", True),
    ("max_used", "Max loss used", True),
    ("violations", "Violations", True),
    ("last_activity", "Last activity", False),
]
# The admin controls on an account page: (action, label, css, statuses it applies to).
CONTROLS = [
    ("pause", "Pause", "btn", ("active", "day_paused")),
    ("resume", "Resume", "btn", ("paused", "locked")),
    ("lock", "Lock", "btn", ("active", "paused", "day_paused", "pending")),
    ("liquidate", "Liquidate", "btn btn-danger", ("active", "paused", "day_paused", "locked", "pending")),
    ("recompute", "Recompute", "btn btn-ghost", None),
]

IMPACT_BADGE = {"high": "badge-bad", "medium": "badge-warn", "low": "badge-muted"}
NEW_YORK = ZoneInfo("America/New_York")
# The calendar page's window presets: (key, label). The default (no preset) is the API's: now - 1 day .. now + 7 days.
CALENDAR_PRESETS = [
    ("", "Default (−1 day … +7 days)"),
    ("today", "Today (UTC)"),
    ("next7", "Next 7 days"),
    ("last7", "Last 7 days"),
]
CALENDAR_PAGE_LIMIT = 500
# "Upcoming" high-impact events (highlighted): the ones still ahead within this horizon.
UPCOMING_HORIZON = timedelta(hours=24)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def calendar_preset_window(now: datetime, preset: str) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of a window preset at ``now`` (UTC); an unknown preset is the default window."""
    if preset == "today":
        start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if preset == "next7":
        return now, now + timedelta(days=7)
    if preset == "last7":
        return now - timedelta(days=7), now
    return now - CALENDAR_DEFAULT_BACK, now + CALENDAR_DEFAULT_AHEAD


def calendar_row(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A calendar item as the table shows it: UTC and New York times, and whether it is an upcoming high-impact
    event (highlighted: the news blackout is about to apply to its symbols)."""
    at: datetime = item["at"]
    ny = at.astimezone(NEW_YORK)
    return {
        **item,
        "at_utc": at.astimezone(UTC).strftime("%a %d %b %H:%M"),
        "at_ny": ny.strftime("%a %d %b %H:%M ") + (ny.tzname() or ""),
        "at_iso": at.astimezone(UTC).isoformat(),
        "past": at < now,
        "upcoming_high": item["impact"] == "high" and now <= at <= now + UPCOMING_HORIZON,
    }


def _traders_query(filters: dict[str, str], **changes: Any) -> str:
    """The partial's query string for the current filters with ``changes`` applied (empty values dropped)."""
    merged = {**filters, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def _table_context(
    conn: Any, *, q: str, status: str, phase: str, plan: str, sort: str, cursor: str | None
) -> dict[str, Any]:
    offset = decode_int_cursor("traders", cursor)
    page = traders_page(
        conn,
        q=q or None,
        status=status or None,
        phase=phase or None,
        plan=plan or None,
        sort=sort,
        limit=PAGE_SIZE,
        offset=offset,
    )
    filters = {"q": q, "status": status, "phase": phase, "plan": plan, "sort": sort}
    key, desc = reads.parse_sort(sort)
    columns = []
    for col, label, numeric in TRADER_COLUMNS:
        # Clicking the sorted column flips it; another column sorts descending first for numbers and time.
        first = f"-{col}" if numeric or col == "last_activity" else col
        nxt = (col if desc else f"-{col}") if col == key else first
        columns.append(
            {
                "key": col,
                "label": label,
                "numeric": numeric,
                "sorted": col == key,
                "desc": desc,
                "query": _traders_query(filters, sort=nxt),
            }
        )
    prev_offset = max(0, offset - PAGE_SIZE)
    return {
        "page": page,
        "filters": filters,
        "columns": columns,
        "offset": offset,
        "next_query": _traders_query(filters, cursor=page["next_cursor"]) if page["next_cursor"] else "",
        "prev_query": (
            _traders_query(filters, cursor=encode_cursor("traders", [prev_offset]) if prev_offset else "")
            if offset
            else ""
        ),
        "status_badge": STATUS_BADGE,
        "definitions": reads.METRIC_DEFINITIONS,
    }


def build(api: Any) -> APIRouter:
    """The admin pages (no OpenAPI schema: they are HTML)."""
    router = APIRouter(include_in_schema=False)
    platform = api.platform

    def conn_for(request: Request) -> Any:
        return user_conn(platform, current_user(request))

    @router.get("/admin", response_class=HTMLResponse)
    def overview(
        request: Request,
        q: str = "",
        status: str = "",
        phase: str = "",
        plan: str = "",
        sort: str = "-last_activity",
        cursor: str | None = None,
    ) -> Response:
        sort = _safe_sort(sort)
        status = status if status in reads.TRADER_STATUSES else ""
        with conn_for(request) as c:
            metrics = reads.metrics(c)
            feed, feed_next = reads.activity(c, limit=40)
            table = _table_context(
                c, q=q[:100], status=status, phase=phase[:64], plan=plan[:64], sort=sort, cursor=cursor
            )
        return render(
            request,
            "admin/overview.html",
            nav_active="admin",
            admin_tab="overview",
            metrics=metrics,
            feed=feed,
            feed_more=feed_next is not None,
            kind_badge=KIND_BADGE,
            **table,
        )

    @router.get("/admin/partials/traders", response_class=HTMLResponse)
    def traders_partial(
        request: Request,
        q: str = "",
        status: str = "",
        phase: str = "",
        plan: str = "",
        sort: str = "-last_activity",
        cursor: str | None = None,
    ) -> Response:
        sort = _safe_sort(sort)
        status = status if status in reads.TRADER_STATUSES else ""
        with conn_for(request) as c:
            table = _table_context(
                c, q=q[:100], status=status, phase=phase[:64], plan=plan[:64], sort=sort, cursor=cursor
            )
        return render(request, "admin/_traders.html", partial=True, **table)

    @router.get("/admin/accounts/{account_id}", response_class=HTMLResponse)
    def account_page(request: Request, account_id: uuid.UUID) -> Response:
        try:
            with conn_for(request) as c:
                data = account_overview(api, c, account_id)
        except NotFound:
            return render(
                request, "admin/not_found.html", status_code=404, nav_active="admin", what=f"account {account_id}"
            )
        status = data["account"]["status"]
        controls = [
            {"action": a, "label": label, "css": css}
            for a, label, css, applies in CONTROLS
            if applies is None or status in applies
        ]
        return render(
            request,
            "admin/account.html",
            nav_active="admin",
            admin_tab="overview",
            o=data,
            controls=controls,
            status_badge=STATUS_BADGE,
            kind_badge=KIND_BADGE,
            pretty=pretty,
            definitions=reads.METRIC_DEFINITIONS,
            chart=data["equity"],
        )

    @router.get("/admin/accounts/{account_id}/as-trader", response_class=HTMLResponse)
    def as_trader_page(request: Request, account_id: uuid.UUID) -> Response:
        """The trader's dashboard and journal, read-only, for an admin; every view is audited
        (``admin_audit`` action ``view_as_trader``). The trader pages themselves are the owner's only."""
        admin = current_user(request)
        try:
            state = account_state(platform, admin, account_id, admin_view=True)
            journal = journal_state(platform, admin, account_id, admin_view=True)
        except NotFound:
            return render(
                request, "admin/not_found.html", status_code=404, nav_active="admin", what=f"account {account_id}"
            )
        # Recorded before anything is shown: a view that cannot be audited is not rendered.
        with platform.db.tx() as c:
            write_audit(
                c,
                actor=current_principal(request).id,
                action="view_as_trader",
                account_id=account_id,
                reason="read-only view of the trader's dashboard and journal",
                before=None,
                after=None,
                details={"views": ["dashboard", "journal"], "path": request.url.path},
                at=platform.clock.now(),
            )
        return render(
            request,
            "admin/as_trader.html",
            nav_active="admin",
            admin_tab="overview",
            journal=journal,
            **dashboard_context(state, read_only=True),
        )

    @router.get("/admin/violations", response_class=HTMLResponse)
    def violations_view(
        request: Request, kind: str = "breach,flag", rule: str = "", cursor: str | None = None
    ) -> Response:
        kinds = [k for k in kind.split(",") if k in reads.VIOLATION_KINDS] or ["breach", "flag"]
        before = decode_int_cursor("violations", cursor) or None
        with conn_for(request) as c:
            page = violations_page(c, kinds=kinds, rule=rule[:64] or None, account_id=None, before=before, limit=50)
        kind_value = ",".join(kinds)
        return render(
            request,
            "admin/violations.html",
            nav_active="admin",
            admin_tab="violations",
            page=page,
            kind=kind_value,
            rule=rule[:64],
            kind_badge=KIND_BADGE,
            status_badge=STATUS_BADGE,
            pretty=pretty,
            next_query=urlencode({"kind": kind_value, "rule": rule[:64], "cursor": page["next_cursor"]})
            if page["next_cursor"]
            else "",
            kind_options=[
                ("breach,flag", "Breaches & flags"),
                ("breach", "Breaches"),
                ("flag", "Flags"),
                ("warning", "Warnings"),
                ("reject", "Refused orders"),
                ("pass", "Passes"),
                ("breach,flag,warning,reject,pass", "Everything"),
            ],
        )

    @router.get("/admin/plans", response_class=HTMLResponse)
    def plans_page(request: Request) -> Response:
        with conn_for(request) as c:
            versions = reads.plan_versions(c)
            bodies = {
                (r["id"], r["version"]): r["body"]
                for r in c.execute(
                    "SELECT DISTINCT ON (id) id, version, body FROM rulebooks ORDER BY id, version DESC"
                ).fetchall()
            }
        presets = set(preset_ids())
        plans: dict[str, dict[str, Any]] = {}
        for v in versions:
            plan = plans.setdefault(
                v["id"],
                {"id": v["id"], "name": v["name"], "preset": v["id"] in presets, "versions": [], "active": False},
            )
            plan["versions"].append(v)
            plan["active"] = plan["active"] or v["retired_at"] is None
        for plan in plans.values():
            latest = plan["versions"][0]
            body = bodies.get((plan["id"], latest["version"]))
            plan["latest"] = latest
            # The editable text: the latest version as YAML (the version number is assigned on save).
            plan["text"] = yaml.safe_dump(
                {k: v for k, v in (body or {}).items() if k != "version"}, sort_keys=False, allow_unicode=True
            )
        catalogue = {p["id"]: p for p in catalogue_view(platform.plans.catalogue())}
        return render(
            request,
            "admin/plans.html",
            nav_active="admin",
            admin_tab="plans",
            plans=sorted(plans.values(), key=lambda p: (not p["active"], p["id"])),
            catalogue=catalogue,
        )

    @router.get("/admin/calendar", response_class=HTMLResponse)
    def calendar_view(request: Request, preset: str = "", impact: str = "low", currency: str = "") -> Response:
        # A hand-edited query never fails the page: an unknown preset, impact or currency falls back.
        preset = preset if preset in dict(CALENDAR_PRESETS) else ""
        impact = impact if impact in reads.CALENDAR_IMPACTS else "low"
        currency = currency.strip().upper()
        currency = currency if _CURRENCY.match(currency) else ""
        now = platform.clock.now()
        start, end = calendar_preset_window(now, preset)
        with conn_for(request) as c:
            page = calendar_page(
                api, c, start=start, end=end, impact=impact, currency=currency or None, limit=CALENDAR_PAGE_LIMIT
            )
        rows = [calendar_row(i, now) for i in page["items"]]
        upcoming = [r for r in rows if r["upcoming_high"]]
        return render(
            request,
            "admin/calendar.html",
            nav_active="admin",
            admin_tab="calendar",
            page=page,
            rows=rows,
            next_high=upcoming[0] if upcoming else None,
            preset=preset,
            impact=impact,
            currency=currency,
            presets=CALENDAR_PRESETS,
            impact_badge=IMPACT_BADGE,
            now=now,
            capped=page["next_cursor"] is not None,
            limit=CALENDAR_PAGE_LIMIT,
            calendar_meta={
                "now": now.isoformat(),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "impact": impact,
                "currency": currency,
                "upcoming_hours": UPCOMING_HORIZON.total_seconds() / 3600,
            },
        )

    return router


def pretty(value: Any) -> str:
    """Evidence as indented JSON text (the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _safe_sort(sort: str) -> str:
    """A page never fails on a hand-edited sort: an unknown key falls back to the default order."""
    try:
        return check_sort(sort)
    except ApiError:
        return "-last_activity"


__all__ = ["build"]
