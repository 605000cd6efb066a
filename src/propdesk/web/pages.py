"""Server-rendered pages: the Jinja2 environment, ``render``, the static mount, the landing page and the trader app.

Every page module (the auth pages, the admin panel, the trader app) renders through ``render(request, template,
**ctx)``, which adds what ``base.html`` needs: the signed-in user (``request.state.principal.user``, set by the
Authentication middleware from the session cookie), the public URL, ``static_url(path)`` (a cache-busting URL
per file content) and ``assets_missing`` (the vendored libraries not built yet: the layout shows a banner).

Templates autoescape; there is no inline script or style anywhere (the CSP is ``script-src 'self'; style-src
'self'``): pages pass data to their scripts through ``data-*`` attributes or a ``<script type="application/json">``
block read with ``JSON.parse`` (not executed, so the CSP allows it).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .. import logs
from ..api.sse import json_default
from . import assets

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = assets.STATIC_DIR
FIRM_NAME = "PropDesk"
LONG_CACHE = "public, max-age=31536000, immutable"

log = logs.get("propdesk.web")

_env: Environment | None = None
_hashes: dict[str, tuple[int, int, str]] = {}


# ----- formatting filters (Decimal in, text out; never float arithmetic on money) --------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        return None


def fmt_money(value: Any, places: int = 2, signed: bool = False) -> str:
    """``12345.6`` -> ``12,345.60`` (``+12,345.60`` when ``signed``); ``—`` for nothing."""
    d = _dec(value)
    if d is None:
        return "—"
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{q:,.{places}f}"
    return ("+" + text) if signed and q > 0 else text


def fmt_num(value: Any, places: int | None = None) -> str:
    """A plain number, trailing zeros trimmed unless ``places`` is given."""
    d = _dec(value)
    if d is None:
        return "—"
    if places is not None:
        return f"{d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"
    text = format(d.normalize(), "f")
    return text


def fmt_pct(value: Any, places: int = 2) -> str:
    d = _dec(value)
    if d is None:
        return "—"
    return f"{d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)}%"


def fmt_dt(value: Any, tz: str | tzinfo | None = None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A timestamp in ``tz`` (a zone name or tzinfo; UTC when none), with the zone's abbreviation."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        text: str = value
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return str(value)
    zone: tzinfo
    if tz is None:
        zone = ZoneInfo("UTC")
    elif isinstance(tz, str):
        try:
            zone = ZoneInfo(tz)
        except Exception:
            zone = ZoneInfo("UTC")
    else:
        zone = tz
    local = value.astimezone(zone)
    return f"{local.strftime(fmt)} {local.tzname() or ''}".strip()


def fmt_iso(value: Any) -> str:
    """An instant as ISO-8601 UTC with ``Z`` (for ``datetime`` attributes and scripts)."""
    if isinstance(value, datetime):
        return value.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")
    return "" if value is None else str(value)


def pnl_class(value: Any) -> str:
    """``pos`` / ``neg`` / empty: the colour class of a signed amount."""
    d = _dec(value)
    if d is None or d == 0:
        return ""
    return "pos" if d > 0 else "neg"


def to_json(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>``, ``&`` escaped so no tag can close it."""
    text = json.dumps(value, default=json_default, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704  (escaped above; JSON never executes under the CSP)


# ----- static files -------------------------------------------------------------------------------------------


def static_url(path: str) -> str:
    """``/static/<path>?v=<content hash>``: browsers may cache it for a year; a changed file gets a new URL."""
    full = STATIC_DIR / path
    try:
        st = full.stat()
    except OSError:
        return f"/static/{path}"
    cached = _hashes.get(path)
    if cached is None or cached[0] != st.st_mtime_ns or cached[1] != st.st_size:
        digest = hashlib.sha256(full.read_bytes()).hexdigest()[:12]
        cached = (st.st_mtime_ns, st.st_size, digest)
        _hashes[path] = cached
    return f"/static/{path}?v={cached[2]}"


class CachedStatic(StaticFiles):
    """Static files with cache headers: vendored libraries and versioned URLs (``?v=``) are immutable for a
    year; anything else is revalidated every time (ETag)."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        path = scope.get("path", "")
        versioned = b"v=" in scope.get("query_string", b"")
        response.headers["Cache-Control"] = LONG_CACHE if ("/vendor/" in path or versioned) else "no-cache"
        return response


def mount_static(app: FastAPI) -> None:
    """Serve ``web/static`` at ``/static``; log an error (once, at start-up) when the vendored files are missing."""
    gone = assets.missing()
    if gone:
        log.error(
            "web_assets_missing",
            missing=gone,
            hint="run ./start or python -m propdesk.web.assets build; pages show a banner until then",
        )
    app.mount("/static", CachedStatic(directory=str(STATIC_DIR), check_dir=True), name="static")


# ----- templates ----------------------------------------------------------------------------------------------


def environment() -> Environment:
    """The one Jinja2 environment (autoescape on for every template), with the formatting filters."""
    global _env
    if _env is None:
        env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            money=fmt_money, num=fmt_num, pct=fmt_pct, dt=fmt_dt, pnl=pnl_class, tojson_safe=to_json, iso=fmt_iso
        )
        env.globals.update(static_url=static_url, firm_name=FIRM_NAME)
        _env = env
    return _env


def current_principal(request: Request) -> Any:
    """The authenticated principal (session or token) the middleware put on the request, or None."""
    return getattr(request.state, "principal", None)


def current_user(request: Request) -> Any:
    """The signed-in ``WebUser`` (None for anonymous visitors and bearer tokens)."""
    return getattr(current_principal(request), "user", None)


def render(
    request: Request, template: str, status_code: int = 200, headers: dict[str, str] | None = None, **ctx: Any
) -> HTMLResponse:
    """Render ``template`` with the layout's context plus ``ctx``; pages are never cached by browsers or proxies
    (they carry per-user data)."""
    platform = getattr(request.app.state, "platform", None)
    settings = getattr(platform, "settings", None)
    base: dict[str, Any] = {
        "request": request,
        "principal": current_principal(request),
        "user": current_user(request),
        "public_url": getattr(settings, "public_url", ""),
        "assets_missing": assets.missing(),
        "nav_active": "",
    }
    base.update(ctx)
    html = environment().get_template(template).render(base)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def redirect(url: str, status_code: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status_code)


# ----- the plan catalogue in plain words ------------------------------------------------------------------------

_ANCHORS = {
    "start_of_day_balance": "the day's starting balance",
    "start_of_day_equity": "the day's starting equity",
    "start_of_day_max": "the higher of the day's starting balance and equity",
}
_BASES = {"initial_balance": "of the initial balance", "start_of_day": "of the day's starting value"}
_MODES = {
    "static": "below the initial balance (static)",
    "trailing": "trailing the highest equity",
    "trailing_lock": "trailing the highest equity, locking at the initial balance",
    "eod_trailing": "trailing the highest end-of-day balance",
}


def rules_in_words(rules: dict[str, Any]) -> list[str]:
    """The key rules of one phase, one sentence each, for the catalogue. Unknown rule kinds are named, not hidden."""
    out: list[str] = []
    pt = rules.get("profit_target")
    if pt:
        out.append(f"Profit target {fmt_num(pt.get('pct'))}%" + (", flat at the end" if pt.get("require_flat") else ""))
    mdl = rules.get("max_daily_loss")
    if mdl:
        anchor = _ANCHORS.get(str(mdl.get("anchor")), str(mdl.get("anchor", "")).replace("_", " "))
        base = _BASES.get(str(mdl.get("base")), "")
        floating = " (open P&L counts)" if mdl.get("include_floating") else ""
        out.append(
            f"Daily loss limit {fmt_num(mdl.get('pct'))}% {base}, measured from {anchor}{floating}".replace("  ", " ")
        )
    ml = rules.get("max_loss")
    if ml:
        mode = _MODES.get(str(ml.get("mode")), str(ml.get("mode", "")).replace("_", " "))
        out.append(f"Maximum loss {fmt_num(ml.get('pct'))}% {mode}")
    if rules.get("min_trading_days"):
        out.append(f"At least {rules['min_trading_days'].get('days')} trading days")
    if rules.get("max_trading_days"):
        out.append(f"At most {rules['max_trading_days'].get('days')} trading days")
    cons = rules.get("consistency") or rules.get("best_day_consistency")
    if cons:
        share = cons.get("max_day_share_pct") or cons.get("pct") or cons.get("max_share_pct")
        out.append(f"Consistency: no single day above {fmt_num(share)}% of the profit" if share else "Consistency rule")
    if rules.get("news_trading"):
        nt = rules["news_trading"]
        out.append(
            f"High-impact news: no trading {nt.get('minutes_before')} min before to {nt.get('minutes_after')}"
            f" min after ({nt.get('action', 'flag')})"
        )
    known = {
        "profit_target",
        "max_daily_loss",
        "max_loss",
        "min_trading_days",
        "max_trading_days",
        "consistency",
        "best_day_consistency",
        "news_trading",
        "drawdown_warning",
        "ea_detection",
        "tick_scalping",
    }
    extra = sorted(k for k in rules if k not in known)
    if extra:
        out.append("Also: " + ", ".join(k.replace("_", " ") for k in extra))
    return out


def catalogue_view(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``PlanStore.catalogue()`` shaped for the templates: phases with their rules in words, offers sorted."""
    view = []
    for plan in sorted(plans, key=lambda p: p["name"]):
        phases = [
            {
                "id": ph["id"],
                "name": ph["name"],
                "rules": rules_in_words(ph["rules"]),
                "profit_split_pct": ph.get("profit_split_pct"),
            }
            for ph in plan["phases"]
        ]
        offers = sorted(plan["offers"], key=lambda o: Decimal(str(o["starting_balance"])))
        view.append({**plan, "phase_views": phases, "offers": offers})
    return view


# ----- routes ---------------------------------------------------------------------------------------------------


def build(api: Any) -> APIRouter:
    """The public pages (landing). Trader pages are in ``trader_views.build``."""
    router = APIRouter(include_in_schema=False)
    platform = api.platform

    @router.get("/", response_class=HTMLResponse)
    def landing(request: Request) -> HTMLResponse:
        plans = catalogue_view(platform.plans.catalogue())
        sizes = [Decimal(str(o["starting_balance"])) for p in plans for o in p["offers"]]
        splits = [
            Decimal(str(ph["profit_split_pct"]))
            for p in plans
            for ph in p["phase_views"]
            if ph["profit_split_pct"] is not None
        ]
        return render(
            request, "landing.html", plans=plans, sizes=sizes, max_split=max(splits, default=None), nav_active="home"
        )

    return router
