"""The trader app's pages: ``/app`` (accounts + checkout), ``/app/accounts/{id}`` (dashboard and trading screen)
and ``/app/accounts/{id}/journal``.

Reads go through ``reads.access.user_conn`` (app role, row-level security as the signed-in user) and the shared
``reads.trader`` functions, so the pages show exactly what the trader JSON API answers. An account the user may not
see is a 404 page (never a hint that it exists): every account-scoped read opens ``reads.access.owned_conn``, the
one owner rule (404 for anyone but the owner, admins included). ``admin_view=True`` (only the admin panel's
read-only, audited ``/admin/accounts/{id}/as-trader`` page passes it) opens ``admin_view_conn`` instead. Writes
are not here: the page's scripts call the trader JSON API (``api/routes/trader.py``) with ``fetch``.

``account_state`` + ``fragments`` are shared with the live stream (``web/live.py``): the dashboard's changing
parts (summary, alerts, rule panels, positions, orders, history) are server-rendered partial templates, sent
again over SSE whenever they change, so the first render and every live update come from the same template.
The news panel (``app/_news.html``, ``reads.trader.news_panel``): its countdowns and the ticket's blackout notice are
computed in the browser from the events' instants (dashboard.js), so time passing needs no server round trip;
the live stream sends it on connect and re-reads it every ``live.NEWS_SECONDS``, sending a ``news`` event only
when the events themselves changed (``news_payload``: an event added, moved or dropped, or the window moved past
one).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..domain.errors import NotFound
from ..reads import trader as reads
from ..reads.access import admin_view_conn, owned_conn, user_conn
from .pages import catalogue_view, current_user, redirect, render, to_json

# A drawdown warning is shown once this share of a loss limit is used (the rulebook's own drawdown_warning rule,
# when set, records its warning as a violation; this is the page's early heads-up).
WARN_USED_PCT = Decimal(70)
HISTORY_ROWS = 50
VIOLATION_ROWS = 50
# The dashboard's news panel looks this far ahead (the JSON route takes ?hours=1..168).
NEWS_HOURS = 24
FRAGMENTS = ("summary", "alerts", "rules", "positions", "orders", "history")

_STATUS_BADGE = {
    "active": "badge-ok",
    "passed": "badge-info",
    "funded": "badge-ok",
    "failed": "badge-bad",
    "breached": "badge-bad",
    "paused": "badge-warn",
    "locked": "badge-bad",
    "closed": "badge-muted",
    "pending": "badge-muted",
}
_KIND_BADGE = {
    "breach": "badge-bad",
    "warning": "badge-warn",
    "flag": "badge-warn",
    "reject": "badge-muted",
    "pass": "badge-ok",
}


def status_badge(status: str | None) -> str:
    return _STATUS_BADGE.get(str(status or ""), "badge-muted")


def kind_badge(kind: str | None) -> str:
    return _KIND_BADGE.get(str(kind or ""), "badge-muted")


_IMPACT_BADGE = {"high": "badge-bad", "medium": "badge-warn", "low": "badge-muted"}
_NEWS_ACTION_WORDS = {
    "reject_order": "orders are refused",
    "flag": "trades are flagged for review",
    "deduct_profit": "trades are flagged and their profit deducted",
}


def impact_badge(impact: str | None) -> str:
    return _IMPACT_BADGE.get(str(impact or ""), "badge-muted")


def _duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``12m 04s``: the same text as app.js's ``fmtDuration`` (so the first render and the
    browser's 1 s ticks agree)."""
    if seconds <= 0:
        return "now"
    s = int(seconds)
    h, m, sec = s // 3600, (s % 3600) // 60, s % 60
    return (f"{h}h " if h else "") + f"{m:02d}m {sec:02d}s"


def news_countdown(event: dict[str, Any], now: datetime) -> str:
    """Where ``now`` stands against one event's blackout: ``blackout in 12m 04s``, ``blackout now, ends in 1m
    10s``, ``passed``; without a news rule just the time to the release (``in 12m 04s``). dashboard.js
    re-computes the same text every second from the same instants."""
    start, end = event.get("blackout_from"), event.get("blackout_to")
    if start is None or end is None:
        left = (event["at"] - now).total_seconds()
        return f"in {_duration(left)}" if left > 0 else "passed"
    if now < start:
        return f"blackout in {_duration((start - now).total_seconds())}"
    if now <= end:
        return f"blackout now, ends in {_duration((end - now).total_seconds())}"
    return "passed"


def news_words(rule: dict[str, Any] | None) -> str:
    """The plan's news rule in one sentence (empty without one)."""
    if not rule:
        return ""
    impact = "high-impact" if rule.get("impact") == "high" else f"{rule.get('impact')}-or-higher-impact"
    scope = "opening or closing" if rule.get("scope") == "open_and_close" else "opening"
    action = _NEWS_ACTION_WORDS.get(str(rule.get("action")), str(rule.get("action") or "").replace("_", " "))
    return (
        f"From {rule.get('minutes_before')} min before to {rule.get('minutes_after')} min after each {impact}"
        f" event, {scope} a position in an affected symbol: {action}."
    )


def news_boot(news: dict[str, Any], user_tz: str | None = None) -> dict[str, Any]:
    """What dashboard.js needs for the ticket's blackout notice: instants, symbols, the rule's action, and the
    blackout's end in the trader's zone (the notice names a fixed end time, so it does not re-announce every
    second to a screen reader)."""
    from .pages import fmt_dt

    rule = news.get("rule")
    return {
        "rule": {k: rule.get(k) for k in ("action", "scope", "minutes_before", "minutes_after", "impact")}
        if rule
        else None,
        "events": [
            {
                "id": e["id"],
                "title": e["title"],
                "currency": e["currency"],
                "at": e["at"],
                "blackout_from": e.get("blackout_from"),
                "blackout_to": e.get("blackout_to"),
                "ends_local": fmt_dt(e["blackout_to"], user_tz or "UTC", "%H:%M") if e.get("blackout_to") else None,
                "symbols": e["symbols"],
            }
            for e in news.get("events", [])
        ],
    }


def _dec(v: Any) -> Decimal | None:
    if v is None or v == "":
        return None
    try:
        return v if isinstance(v, Decimal) else Decimal(str(v))
    except ArithmeticError:
        return None


def rule_words(rule: str | None) -> str:
    return str(rule or "").replace("_", " ")


def build_alerts(overview: dict[str, Any], violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the trader must see first: breaches (with their evidence), recorded warnings and flags, and live
    heads-ups when a loss limit is more than ``WARN_USED_PCT`` % used."""
    alerts: list[dict[str, Any]] = []
    for v in violations:
        if v["kind"] not in ("breach", "warning", "flag"):
            continue
        level = "error" if v["kind"] == "breach" else "warn"
        alerts.append(
            {
                "level": level,
                "kind": v["kind"],
                "rule": v["rule"],
                "id": v["id"],
                "at": v["at"],
                "title": f"{v['kind'].capitalize()}: {rule_words(v['rule'])}",
                "value": v.get("value"),
                "limit": v.get("limit"),
                "action": v.get("action"),
                "evidence": v.get("evidence"),
            }
        )
    panel = ((overview.get("rules") or {}).get("panel")) or {}
    if overview.get("status") == "active":
        for key, label in (("daily_loss", "daily loss limit"), ("max_loss", "maximum loss limit")):
            lim = panel.get(key)
            used = _dec(lim.get("used_pct")) if lim else None
            if lim and used is not None and used >= WARN_USED_PCT:
                alerts.insert(
                    0,
                    {
                        "level": "warn",
                        "kind": "drawdown",
                        "rule": key,
                        "id": f"live-{key}",
                        "at": overview.get("as_of"),
                        "title": f"Drawdown warning: {used}% of the {label} used",
                        "value": lim.get("value"),
                        "limit": lim.get("floor"),
                        "action": None,
                        "evidence": {
                            "room_left": lim.get("room"),
                            "floor": lim.get("floor"),
                            "computation": lim.get("computation"),
                        },
                    },
                )
    # Breaches first, then the rest by recency (violations come newest first already).
    alerts.sort(key=lambda a: 0 if a["level"] == "error" else 1)
    return alerts


def account_conn(platform: Any, user: Any, account_id: uuid.UUID, *, admin_view: bool = False) -> Any:
    """The connection of a trader screen: the owner's (``owned_conn``), or with ``admin_view`` an admin's
    read-only view (``admin_view_conn``). ``NotFound`` when the user may not see the account."""
    if admin_view:
        return admin_view_conn(platform, user, account_id)
    return owned_conn(platform, user, account_id)


def account_state(platform: Any, user: Any, account_id: uuid.UUID, *, admin_view: bool = False) -> dict[str, Any]:
    """Everything the dashboard shows that can change, read in one app-role transaction as ``user``.
    ``NotFound`` when the user may not see the account (anyone but its owner, unless ``admin_view``)."""
    tz = getattr(user, "timezone", None)
    with account_conn(platform, user, account_id, admin_view=admin_view) as c:
        overview = reads.account_overview(platform, c, account_id, user_tz=tz)
        history = reads.trade_history(platform, c, account_id, limit=HISTORY_ROWS)
        violations = reads.violations(
            platform, c, account_id, kinds=("breach", "warning", "flag"), limit=VIOLATION_ROWS
        )
    return {
        "account_id": account_id,
        "overview": overview,
        "history": history,
        "violations": violations,
        "alerts": build_alerts(overview, violations),
        "user_tz": tz or "UTC",
    }


def chart_data(state: dict[str, Any]) -> dict[str, Any]:
    """What the page's scripts need besides the HTML: status, balances, and the price lines for the chart."""
    ov = state["overview"]
    bal = ov.get("balance") or {}
    panel = ((ov.get("rules") or {}).get("panel")) or {}
    return {
        "status": ov.get("status"),
        "can_trade": bool(ov.get("can_trade")),
        "currency": ov.get("currency"),
        "balance": {k: bal.get(k) for k in ("cash", "equity", "unrealized_pnl", "realized_pnl")},
        "positions": [
            {
                k: p.get(k)
                for k in (
                    "symbol",
                    "side",
                    "quantity",
                    "avg_price",
                    "stop_loss",
                    "take_profit",
                    "unrealized_pnl",
                    "mark_price",
                )
            }
            for p in ov.get("positions", [])
        ],
        "orders": [
            {
                k: o.get(k)
                for k in (
                    "id",
                    "symbol",
                    "side",
                    "order_type",
                    "quantity",
                    "limit_price",
                    "stop_price",
                    "stop_loss",
                    "take_profit",
                )
            }
            for o in ov.get("open_orders", [])
        ],
        "floors": {
            "daily": (panel.get("daily_loss") or {}).get("floor"),
            "max": (panel.get("max_loss") or {}).get("floor"),
        },
        "last_alert": next((a["id"] for a in state["alerts"] if a["level"] == "error"), None),
    }


def dashboard_context(state: dict[str, Any], *, read_only: bool = False) -> dict[str, Any]:
    return {
        "read_only": read_only,
        "s": state,
        "ov": state["overview"],
        "panel": ((state["overview"].get("rules") or {}).get("panel")) or {},
        "rules": state["overview"].get("rules") or {},
        "status_badge": status_badge,
        "kind_badge": kind_badge,
        "rule_words": rule_words,
        "user_tz": state["user_tz"],
        "evidence_text": evidence_text,
    }


def fragments(state: dict[str, Any]) -> dict[str, str]:
    """The dashboard's live parts rendered from ``app/_<name>.html`` (the same partials the full page includes)."""
    from .pages import environment

    env = environment()
    ctx = dashboard_context(state)
    return {name: env.get_template(f"app/_{name}.html").render(ctx) for name in FRAGMENTS}


def live_payload(state: dict[str, Any]) -> dict[str, Any]:
    """The ``account`` event of the live stream: fragments + data, and a digest to send only what changed."""
    body = {"html": fragments(state), "data": chart_data(state)}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {**body, "digest": digest}


def news_payload(platform: Any, user: Any, account_id: uuid.UUID) -> dict[str, Any]:
    """The ``news`` event of the live stream: the panel rendered from ``app/_news.html``, the data dashboard.js
    counts down from, and a digest of the events (not of the countdown texts, which move every second).
    ``NotFound`` when the user may not see the account."""
    from .pages import environment

    tz = getattr(user, "timezone", None)
    with owned_conn(platform, user, account_id) as c:
        news = reads.news_panel(platform, c, account_id, hours=NEWS_HOURS)
    data = news_boot(news, tz)
    html = (
        environment()
        .get_template("app/_news.html")
        .render(
            news=news,
            news_now=news["as_of"],
            news_countdown=news_countdown,
            news_words=news_words(news["rule"]),
            impact_badge=impact_badge,
            user_tz=tz or "UTC",
        )
    )
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return {"html": html, "data": data, "digest": digest}


def journal_state(platform: Any, user: Any, account_id: uuid.UUID, *, admin_view: bool = False) -> dict[str, Any]:
    """The journal page's context: overview, closed trades, rule decisions and (for the owner) notifications.
    ``NotFound`` when the user may not see the account."""
    tz = getattr(user, "timezone", None)
    with account_conn(platform, user, account_id, admin_view=admin_view) as c:
        overview = reads.account_overview(platform, c, account_id, user_tz=tz)
        trades = reads.journal(platform, c, account_id, limit=200)
        violations = reads.violations(platform, c, account_id, limit=200)
        notes: dict[str, Any] = {"items": [], "unread": 0} if admin_view else reads.notifications(platform, c, limit=50)
    return {
        "ov": overview,
        "trades": trades,
        "violations": violations,
        "notifications": [n for n in notes["items"] if n.get("account_id") in (None, account_id)],
        "unread": notes["unread"],
        "account_id": str(account_id),
        "status_badge": status_badge,
        "kind_badge": kind_badge,
        "rule_words": rule_words,
        "evidence_text": evidence_text,
        "user_tz": tz or "UTC",
    }


def evidence_text(evidence: Any) -> str:
    """Evidence as readable ``key: value`` lines (nested objects inline as JSON)."""
    if not evidence:
        return ""
    if not isinstance(evidence, dict):
        return str(evidence)
    lines = []
    for k, v in evidence.items():
        if v is None:
            continue
        shown = json.dumps(v, default=str, separators=(", ", ": ")) if isinstance(v, dict | list) else v
        lines.append(f"{str(k).replace('_', ' ')}: {shown}")
    return "\n".join(lines)


def _symbols(platform: Any) -> list[dict[str, Any]]:
    out = []
    for inst in platform.catalogue:
        if inst.enabled:
            out.append(
                {
                    "symbol": inst.symbol,
                    "asset_class": inst.asset_class.value,
                    "precision": inst.price_precision,
                    "min_lot": str(inst.min_lot),
                    "lot_step": str(inst.lot_step),
                    "description": inst.description,
                }
            )
    return sorted(out, key=lambda s: (s["asset_class"], s["symbol"]))


def build(api: Any) -> APIRouter:
    """The trader pages (session required: the Authentication middleware sends anonymous visitors to /login)."""
    router = APIRouter(include_in_schema=False)
    platform = api.platform

    def signed_in(request: Request) -> Any:
        user = current_user(request)
        if user is None:
            return None
        return user

    def not_found(request: Request, what: str = "account") -> HTMLResponse:
        return render(request, "app/not_found.html", status_code=404, what=what, nav_active="app")

    @router.get("/app", response_class=HTMLResponse)
    def accounts_page(request: Request, plan: str | None = None) -> Response:
        user = signed_in(request)
        if user is None:
            return redirect("/login?next=/app")
        with user_conn(platform, user) as c:
            accounts = [a for a in reads.list_accounts(platform, c) if a.get("owner_id") == str(user.id)]
        plans = catalogue_view(platform.plans.catalogue())
        chosen = plan if any(p["id"] == plan for p in plans) else (plans[0]["id"] if plans else None)
        return render(
            request,
            "app/accounts.html",
            accounts=accounts,
            plans=plans,
            chosen_plan=chosen,
            plans_json=to_json(
                [{"id": p["id"], "name": p["name"], "currency": p["currency"], "offers": p["offers"]} for p in plans]
            ),
            status_badge=status_badge,
            nav_active="app",
        )

    @router.get("/app/accounts/{account_id}", response_class=HTMLResponse)
    def account_page(request: Request, account_id: str, symbol: str | None = None) -> Response:
        user = signed_in(request)
        if user is None:
            return redirect(f"/login?next=/app/accounts/{account_id}")
        try:
            aid = uuid.UUID(account_id)
            state = account_state(platform, user, aid)
            with owned_conn(platform, user, aid) as c:
                series = reads.equity_series(platform, c, aid, user_tz=getattr(user, "timezone", None))
                news = reads.news_panel(platform, c, aid, hours=NEWS_HOURS)
        except (ValueError, NotFound):
            return not_found(request)
        symbols = _symbols(platform)
        known = {s["symbol"] for s in symbols}
        held = [p["symbol"] for p in state["overview"].get("positions", [])]
        wanted = (symbol or "").upper()
        chart_symbol = (
            wanted
            if wanted in known
            else (held[0] if held else ("EURUSD" if "EURUSD" in known else (symbols[0]["symbol"] if symbols else "")))
        )
        boot = {
            "account_id": str(aid),
            "symbol": chart_symbol,
            "symbols": symbols,
            "data": chart_data(state),
            "equity": {
                "points": [{"t": p["t"], "equity": p["equity"], "balance": p["balance"]} for p in series["points"]],
                "daily_floor": [{"t": p["t"], "value": p["value"]} for p in series["daily_floor"]],
                "max_loss_floor": [{"t": p["t"], "value": p["value"]} for p in series["max_loss_floor"]],
            },
            "news": news_boot(news, getattr(user, "timezone", None)),
            "now": platform.clock.now(),
        }
        ctx = dashboard_context(state)
        return render(
            request,
            "app/account.html",
            boot=to_json(boot),
            symbols=symbols,
            chart_symbol=chart_symbol,
            server_now=platform.clock.now(),
            nav_active="app",
            news=news,
            news_now=news["as_of"],
            news_countdown=news_countdown,
            news_words=news_words(news["rule"]),
            impact_badge=impact_badge,
            **ctx,
        )

    @router.get("/app/accounts/{account_id}/journal", response_class=HTMLResponse)
    def journal_page(request: Request, account_id: str) -> Response:
        user = signed_in(request)
        if user is None:
            return redirect(f"/login?next=/app/accounts/{account_id}/journal")
        try:
            aid = uuid.UUID(account_id)
            journal = journal_state(platform, user, aid)
        except (ValueError, NotFound):
            return not_found(request)
        return render(request, "app/journal.html", nav_active="app", **journal)

    return router
