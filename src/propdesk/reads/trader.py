"""What a trader (or an admin) reads, as plain functions over a ``user_conn`` connection.

Both the trader JSON API (api/routes/trader.py) and the pages (helpers C and D) call these, so a page and the
API can never disagree. Every function takes ``(platform, conn, ...)``, where ``conn`` comes from
``reads.access.user_conn``: row-level security decides which rows exist for the caller, so an account of another
trader is simply not found (``NotFound``, rendered 404: no enumeration). Nothing here writes, and nothing here
re-implements money or rule math:

- balances and open positions are valued by the execution core's own ``snapshot`` (domain/positions.valuate at
  the quote store's latest quotes: longs marked at the bid, shorts at the ask, converted into the account
  currency), run on the caller's connection;
- the rule panel is ``domain.rules.status.rules_status`` over the account's stored evaluator state, rolled
  forward in memory to now exactly as ``RulesBridge.status`` does (so today's floor shows before the day-roll
  worker ran), plus presentation: progress percentages, days left, and the next reset in the firm's and the
  trader's time zones.

Numbers are Decimals (rendered as strings by api/render.py), instants are aware datetimes (UTC).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..domain.errors import NotFound
from ..domain.money import money
from ..domain.rules.engine import Evaluator
from ..domain.rules.status import rules_status
from ..marketdata.calendar import IMPACTS, affected_symbols
from ..rulebooks.store import summary
from .present import present_account

if TYPE_CHECKING:
    from ..bootstrap import Platform

Row = dict[str, Any]
HUNDRED = Decimal(100)
MAX_LIMIT = 500
# Equity series: at most this many ledger points (the newest), enough for a dashboard curve.
MAX_SERIES_POINTS = 2000


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def _d(v: Any) -> Decimal | None:
    if v is None:
        return None
    return v if isinstance(v, Decimal) else Decimal(str(v))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# ---------------------------------------------------------------------------------------------- accounts
def require_account(conn: Any, account_id: uuid.UUID) -> Row:
    """The account row if the caller may see it, else ``NotFound`` (another trader's account included)."""
    row = conn.execute("SELECT * FROM accounts WHERE id=%s", (account_id,)).fetchone()
    if row is None:
        raise NotFound(f"account {account_id} not found", code="account_not_found")
    return row  # type: ignore[no-any-return]


def list_accounts(platform: Platform, conn: Any) -> list[Row]:
    """The caller's accounts (every account for an admin), newest first, with their stored balances and plan."""
    rows = conn.execute("SELECT * FROM accounts ORDER BY created_at DESC, id").fetchall()
    balances = {
        b["account_id"]: b
        for b in conn.execute(
            "SELECT * FROM balances WHERE account_id = ANY(%s)", ([r["id"] for r in rows],)
        ).fetchall()
    }
    out = []
    for r in rows:
        bal = balances.get(r["id"])
        acc = present_account({k: v for k, v in r.items() if k not in ("rulebook", "policy")})
        acc["plan"] = _plan_ref(r)
        acc["balance"] = (
            {
                k: bal.get(k)
                for k in ("cash", "equity", "unrealized_pnl", "realized_pnl", "high_watermark", "updated_at")
            }
            if bal
            else None
        )
        out.append(acc)
    return out


def _plan_ref(acc: Mapping[str, Any]) -> dict[str, Any] | None:
    if not acc.get("rulebook_id"):
        return None
    book = acc.get("rulebook") or {}
    return {
        "id": acc["rulebook_id"],
        "version": acc.get("rulebook_version"),
        "offer_id": acc.get("offer_id"),
        "name": book.get("name") if isinstance(book, Mapping) else None,
    }


def account_overview(platform: Platform, conn: Any, account_id: uuid.UUID, *, user_tz: str | None = None) -> Row:
    """One account for the dashboard: status, phase, plan, balances marked at the latest quotes, open P&L,
    open positions and orders, the rule panel, and counts for badges."""
    snap = platform.execution.snapshot(account_id, conn=conn)  # NotFound when RLS hides the account
    acc = snap["account"]
    rules = rules_panel(platform, conn, account_id, user_tz=user_tz, _snapshot=snap)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM violations WHERE account_id=%s AND kind IN ('breach','flag','warning'))"
        " AS violations, (SELECT count(*) FROM fills WHERE account_id=%s) AS fills",
        (account_id, account_id),
    ).fetchone()
    children = conn.execute(
        "SELECT id, phase, status FROM accounts WHERE parent_account_id=%s ORDER BY created_at", (account_id,)
    ).fetchall()
    return {
        "account": present_account({k: v for k, v in acc.items() if k not in ("rulebook",)}),
        "status": snap["status"],
        "phase": acc["phase"],
        "mode": acc["mode"],
        "currency": acc["currency"],
        "plan": _plan_ref(acc),
        "can_trade": snap["status"] == "active",
        "balance": snap["balance"],
        "positions": [present_position(p) for p in snap["positions"]],
        "open_orders": [_order(o) for o in snap["open_orders"]],
        "missing_prices": snap["missing_prices"],
        "rules": rules,
        "counts": {"violations": counts["violations"] if counts else 0, "fills": counts["fills"] if counts else 0},
        "next_phase_accounts": children,
        "as_of": snap["as_of"],
    }


# ---------------------------------------------------------------------------------------------- rules
def rules_panel(
    platform: Platform, conn: Any, account_id: uuid.UUID, *, user_tz: str | None = None, _snapshot: Row | None = None
) -> Row:
    """The rule panel: ``rules_status`` (limits with floors, anchors and how they are computed, progress,
    deadlines, next reset) plus a ``panel`` summary the page draws directly."""
    ex = platform.execution
    now = platform.clock.now()
    ctx = ex._load(conn, account_id, lock=False)  # the core's own loader, on the caller's conn
    book = ex.rules.book(ctx)
    base: Row = {
        "account_id": str(account_id),
        "status": ctx.status.value,
        "phase": ctx.account["phase"],
        "rulebook": {
            "id": ctx.account.get("rulebook_id"),
            "version": ctx.account.get("rulebook_version"),
            "offer_id": ctx.account.get("offer_id"),
        }
        if book
        else None,
    }
    if book is None:
        return {**base, "started": False, "limits": [], "progress": {}, "deadlines": [], "rules": {}, "panel": None}
    ev = ex.rules.evaluator(conn, ctx)
    cash = ctx.balance["cash"]
    if ev is None:
        # Not started yet: show the rules as they will stand on the first day.
        ev = Evaluator(book, ctx.account["phase"], initial_balance=ctx.account["starting_balance"])
        ev.begin(now, cash, cash)
        status = {**base, "started": False, **rules_status(ev, cash, cash, now), "missing_prices": []}
    else:
        val = ex._valuate(ctx)  # the same valuation the rules judge by
        equity = money(val.equity)
        ev.advance(now, lambda _b: (cash, equity))  # in memory only: a reader never writes rule state
        status = {**base, "started": True, **rules_status(ev, cash, equity, now), "missing_prices": list(val.missing)}
    status["panel"] = _panel(status, ev, now, user_tz)
    return status


def _pct(value: Decimal, target: Decimal) -> Decimal:
    if target <= 0:
        return HUNDRED if value >= target else Decimal(0)
    return max(Decimal(0), min(HUNDRED, value * HUNDRED / target)).quantize(Decimal("0.01"))


def _panel(status: Row, ev: Evaluator, now: datetime, user_tz: str | None) -> Row:
    """Presentation of the engine's status: one entry per panel row, numbers as the engine reported them."""
    limits = {lim["rule"]: lim for lim in status["limits"]}
    progress = status["progress"]
    panel: Row = {}
    pt = progress.get("profit_target")
    if pt is not None:
        value, target = Decimal(pt["value"]), Decimal(pt["target"])
        panel["profit_target"] = {
            **pt,
            "progress_pct": _pct(value, target),
            "remaining": max(Decimal(0), target - value),
        }
    dl = limits.get("max_daily_loss")
    if dl is not None:
        panel["daily_loss"] = {
            k: dl.get(k)
            for k in (
                "floor",
                "anchor",
                "anchor_value",
                "value",
                "room",
                "used_pct",
                "checked",
                "computation",
                "paused_today",
            )
        }
    ml = limits.get("max_loss")
    if ml is not None:
        panel["max_loss"] = {
            k: ml.get(k)
            for k in ("floor", "initial_floor", "mode", "value", "room", "used_pct", "locked", "lock_at", "computation")
        }
    mtd = progress.get("min_trading_days")
    panel["trading_days"] = {
        "done": len(ev.s.trading_days),
        "required": mtd["target"] if mtd else None,
        "met": mtd["met"] if mtd else True,
    }
    deadline = next((d for d in status["deadlines"] if d["rule"] == "max_trading_days"), None)
    if deadline is not None:
        at = datetime.fromisoformat(deadline["deadline"].replace("Z", "+00:00"))
        # Whole calendar days until the phase's deadline in the firm's zone (0 on the last day).
        firm = _zone(ev.book.timezone)
        panel["days_left"] = {
            "days": max(0, (at.astimezone(firm).date() - now.astimezone(firm).date()).days),
            "deadline": at,
            "seconds_left": deadline["seconds_left"],
        }
    else:
        panel["days_left"] = None
    cons = progress.get("consistency")
    if cons is not None:
        panel["consistency"] = {"share_pct": cons["value"], "max_share_pct": cons["target"], "met": cons["met"]}
    elif "consistency" in ev.rules:
        panel["consistency"] = {
            "share_pct": None,
            "max_share_pct": ev.rules["consistency"].get("max_share_pct"),
            "met": True,
            "mode": ev.rules["consistency"].get("mode"),
        }
    reset = datetime.fromisoformat(status["next_day_reset"].replace("Z", "+00:00")).astimezone(UTC)
    firm_zone, trader_zone = _zone(ev.book.timezone), _zone(user_tz)
    panel["next_reset"] = {
        "at": reset,
        "seconds": status["seconds_to_reset"],
        "firm": {"timezone": firm_zone.key, "local": reset.astimezone(firm_zone).isoformat()},
        "trader": {"timezone": trader_zone.key, "local": reset.astimezone(trader_zone).isoformat()},
    }
    return panel


# ---------------------------------------------------------------------------------------------- news
# Impacts from the lowest up; an event counts when it is at least the rule's impact (as the news rule's IMPACTS).
NEWS_IMPACTS = IMPACTS
# Without a news rule there is no blackout to still be inside: show events from this long ago.
NEWS_LOOKBACK_NO_RULE = timedelta(hours=1)
NEWS_MAX_EVENTS = 200


def news_rule(platform: Platform, conn: Any, account_id: uuid.UUID) -> Row | None:
    """The ``news_trading`` rule of the account's current phase (the phase's rules merged over the plan's, as
    the evaluator and the rule panel read them), or None when the plan has none (or the account has no rulebook)."""
    account = require_account(conn, account_id)  # on the caller's conn: NotFound if hidden
    book = platform.execution.rules.book_for(account)
    if book is None:
        return None
    p = book.phase(account["phase"]).rules.get("news_trading")
    if p is None:
        return None
    return {k: p.get(k) for k in ("minutes_before", "minutes_after", "impact", "scope", "action")}


def news_panel(platform: Platform, conn: Any, account_id: uuid.UUID, *, hours: int = 24) -> Row:
    """Upcoming economic events for the account's instruments and when the plan's news blackout applies.

    - ``rule``: the phase's ``news_trading`` rule (minutes_before, minutes_after, impact, scope, action), or None.
    - ``events``: from now - ``minutes_after`` (an event whose blackout may still be running; 1 h without a rule)
      to now + ``hours``, oldest first, whose impact is at least the rule's (``high`` without a rule). Each has
      at, currency, country, impact, title, ``symbols`` (the enabled catalogue symbols whose base or quote
      currency is the event's currency or country, as ``domain.rules.pretrade.news_hits`` matches them; an event
      that touches no symbol is left out), and, with a rule, ``blackout_from`` / ``blackout_to`` (event -
      minutes_before, event + minutes_after; both ends inside, as the rule checks) and ``active`` (now inside).
    - ``blackout_now``: the symbols inside a blackout right now (orders on them are refused when the rule's action
      is ``reject_order``, flagged otherwise; ``scope`` says whether closing counts too).

    Events are public data (the app role reads every row of ``economic_events``); the account is read first so
    another trader's account is ``NotFound``.
    """
    rule = news_rule(platform, conn, account_id)
    now = platform.clock.now()
    hours = max(1, min(int(hours), 168))
    if rule is not None:
        before, after = timedelta(minutes=rule["minutes_before"]), timedelta(minutes=rule["minutes_after"])
        impact = rule["impact"] if rule["impact"] in NEWS_IMPACTS else "high"
        lookback = after
    else:
        before = after = timedelta(0)
        impact, lookback = "high", NEWS_LOOKBACK_NO_RULE
    levels = list(NEWS_IMPACTS[NEWS_IMPACTS.index(impact) :])
    rows = conn.execute(
        "SELECT id, at, currency, country, impact, title FROM economic_events"
        " WHERE at BETWEEN %s AND %s AND impact = ANY(%s) ORDER BY at, id LIMIT %s",
        (now - lookback, now + timedelta(hours=hours), levels, NEWS_MAX_EVENTS),
    ).fetchall()
    events: list[Row] = []
    blocked: set[str] = set()
    for r in rows:
        symbols = affected_symbols(platform.catalogue, r["currency"], r["country"])
        if not symbols:
            continue  # touches nothing the account can trade: the news rule can never refuse an order for it
        ev: Row = {
            "id": r["id"],
            "at": r["at"],
            "currency": r["currency"],
            "country": r["country"],
            "impact": r["impact"],
            "title": r["title"],
            "symbols": symbols,
        }
        if rule is not None:
            ev["blackout_from"], ev["blackout_to"] = r["at"] - before, r["at"] + after
            ev["active"] = ev["blackout_from"] <= now <= ev["blackout_to"]
            if ev["active"]:
                blocked.update(symbols)
        else:
            ev["blackout_from"] = ev["blackout_to"] = None
            ev["active"] = False
        events.append(ev)
    return {
        "account_id": account_id,
        "rule": rule,
        "impact": impact,
        "hours": hours,
        "window": {"from": now - lookback, "to": now + timedelta(hours=hours)},
        "events": events,
        "blackout_now": sorted(blocked),
        "as_of": now,
    }


# ---------------------------------------------------------------------------------------------- positions, orders
_POSITION_NUMBERS = ("quantity", "avg_price", "stop_loss", "take_profit", "mark_price", "unrealized_pnl", "notional")


def present_position(p: Mapping[str, Any]) -> Row:
    """The core formats position numbers as strings with the column's padding ("0.5000000000"): give their
    value as a Decimal (rendered "0.5")."""
    return {k: (Decimal(v) if k in _POSITION_NUMBERS and isinstance(v, str) else v) for k, v in p.items()}


def open_positions(platform: Platform, conn: Any, account_id: uuid.UUID) -> Row:
    """Open positions with mark price, open P&L and notional valued by the core (see the module doc), plus the
    mid of the quote each one was marked at."""
    snap = platform.execution.snapshot(account_id, conn=conn)
    items = []
    for p in snap["positions"]:
        q = platform.quotes.latest(p["symbol"])
        items.append(
            {
                **present_position(p),
                "mid": q.mid if q else None,
                "bid": q.bid if q else None,
                "ask": q.ask if q else None,
                "quote_ts": q.ts if q else None,
            }
        )
    return {
        "items": items,
        "balance": snap["balance"],
        "missing_prices": snap["missing_prices"],
        "as_of": snap["as_of"],
    }


_ORDER_COLUMNS = (
    "id",
    "account_id",
    "client_order_id",
    "symbol",
    "side",
    "order_type",
    "quantity",
    "limit_price",
    "stop_price",
    "stop_loss",
    "take_profit",
    "reduce_only",
    "purpose",
    "status",
    "reject_code",
    "reject_reason",
    "reject_details",
    "notional",
    "created_at",
    "updated_at",
    "closed_at",
)


def _order(r: Mapping[str, Any]) -> Row:
    return {k: r.get(k) for k in _ORDER_COLUMNS}


def orders(
    platform: Platform, conn: Any, account_id: uuid.UUID, *, status: str | None = None, limit: int = 100
) -> list[Row]:
    """Orders of the account, newest first (optionally only one status: open, filled, cancelled, ...)."""
    require_account(conn, account_id)
    rows = conn.execute(
        "SELECT * FROM orders WHERE account_id=%s AND (%s::text IS NULL OR status=%s)"
        " ORDER BY created_at DESC, id DESC LIMIT %s",
        (account_id, status, status, _limit(limit)),
    ).fetchall()
    return [_order(r) for r in rows]


def trade_history(platform: Platform, conn: Any, account_id: uuid.UUID, *, limit: int = 200) -> list[Row]:
    """Fills, newest first: price, fee, realized P&L, what the fill did (open / close, the order's purpose:
    client, close, stop_loss, take_profit, liquidation...), whether it was voided, and the journal note."""
    require_account(conn, account_id)
    rows = conn.execute(
        "SELECT f.id, f.order_id, f.symbol, f.side, f.quantity, f.price, f.notional, f.fee, f.realized_pnl,"
        " f.created_at, o.purpose, o.order_type, (v.fill_id IS NOT NULL) AS voided,"
        " coalesce((l.evidence->>'closed_quantity')::numeric, 0) AS closed_quantity,"
        " l.evidence->'position_after' AS position_after, n.note, n.updated_at AS note_updated_at"
        " FROM fills f JOIN orders o ON o.id = f.order_id"
        " LEFT JOIN fill_voids v ON v.fill_id = f.id"
        " LEFT JOIN ledger l ON l.fill_id = f.id"
        " LEFT JOIN trade_notes n ON n.fill_id = f.id"
        " WHERE f.account_id=%s ORDER BY f.created_at DESC, l.seq DESC NULLS LAST, f.id DESC LIMIT %s",
        (account_id, _limit(limit)),
    ).fetchall()
    out = []
    for r in rows:
        r["closes"] = r["closed_quantity"] > 0
        out.append(dict(r))
    return out


def journal(platform: Platform, conn: Any, account_id: uuid.UUID, *, limit: int = 200) -> list[Row]:
    """Closed trades (fills that closed some quantity) with their notes, newest first."""
    return [r for r in trade_history(platform, conn, account_id, limit=MAX_LIMIT) if r["closes"]][: _limit(limit)]


# ---------------------------------------------------------------------------------------------- rules history
def present_violation(r: Mapping[str, Any]) -> Row:
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
        "phase": r["phase"],
        "order_id": r["order_id"],
        "created_at": r["created_at"],
    }


def violations(
    platform: Platform, conn: Any, account_id: uuid.UUID, *, kinds: tuple[str, ...] | None = None, limit: int = 100
) -> list[Row]:
    """Rule decisions recorded for the account (breach, warning, flag, reject, pass), newest first, with their
    evidence."""
    require_account(conn, account_id)
    rows = conn.execute(
        "SELECT * FROM violations WHERE account_id=%s AND (%s::text[] IS NULL OR kind = ANY(%s))"
        " ORDER BY id DESC LIMIT %s",
        (account_id, list(kinds) if kinds else None, list(kinds) if kinds else None, _limit(limit)),
    ).fetchall()
    return [present_violation(r) for r in rows]


def daily_stats(platform: Platform, conn: Any, account_id: uuid.UUID, *, limit: int = 100) -> list[Row]:
    """Per trading day (the rulebook's zone): start balance/equity, high/low equity, close, P&L, the day's floor;
    newest first."""
    require_account(conn, account_id)
    rows = conn.execute(
        "SELECT * FROM daily_stats WHERE account_id=%s ORDER BY trading_day DESC LIMIT %s", (account_id, _limit(limit))
    ).fetchall()
    return [{k: v for k, v in r.items() if k != "account_id"} for r in rows]


def _step_series(values: list[tuple[int, Decimal]]) -> list[Row]:
    """``(t, value)`` pairs (t ascending, possibly repeated) as chart points: one point where the value changes,
    a later value at the same second replacing the earlier, and a closing point at the last ``t``."""
    out: list[Row] = []
    for t, value in values:
        if out and t <= out[-1]["t"]:
            out[-1]["value"] = value
        elif not out or out[-1]["value"] != value:
            out.append({"t": t, "at": datetime.fromtimestamp(t, UTC), "value": value})
    if values and out and out[-1]["t"] < values[-1][0]:
        t = values[-1][0]
        out.append({"t": t, "at": datetime.fromtimestamp(t, UTC), "value": out[-1]["value"]})
    return out


def equity_series(platform: Platform, conn: Any, account_id: uuid.UUID, *, user_tz: str | None = None) -> Row:
    """The equity curve and the floors to draw over it.

    - ``points``: one per ledger entry that moved cash or recorded an equity (fills with realised P&L, fees,
      deposits, marks), oldest first: ``balance`` is the balance after the entry, ``equity`` the equity the
      core recorded with it (the balance when it recorded none). Then a final point at now with the live equity.
      Several entries in one second collapse into the last one (charts want strictly increasing times).
    - ``days``: per trading day from ``daily_stats``: start, low, high and close equity, and the day's floor.
    - ``daily_floor``: a step series, the floor of each day from its day start (the current day's from the
      rule panel, which rolls to today even before the worker did).
    - ``max_loss_floor``: a step series of the max-loss floor: the floor each trading day ended on
      (``daily_stats.max_floor``, stepping at that day's last evaluation), then the engine's current floor at
      now, starting from the phase's initial floor (initial balance minus the allowance). A static floor is one
      flat line; a trailing floor climbs as it did.
    ``t`` is Unix seconds (what lightweight-charts takes); ``at`` the same instant as a datetime.
    """
    acc = require_account(conn, account_id)
    rows = conn.execute(
        "SELECT created_at, balance_after, equity_after FROM (SELECT * FROM ledger WHERE account_id=%s"
        " AND (category <> 'none' OR equity_after IS NOT NULL) ORDER BY seq DESC LIMIT %s) x ORDER BY seq",
        (account_id, MAX_SERIES_POINTS),
    ).fetchall()
    by_second: dict[int, Row] = {}
    for r in rows:
        t = int(r["created_at"].timestamp())
        by_second[t] = {
            "t": t,
            "at": r["created_at"],
            "balance": r["balance_after"],
            "equity": r["equity_after"] if r["equity_after"] is not None else r["balance_after"],
        }
    rules = rules_panel(platform, conn, account_id, user_tz=user_tz)
    now = platform.clock.now()
    snap = platform.execution.snapshot(account_id, conn=conn)
    t_now = int(now.timestamp())
    by_second[t_now] = {
        "t": t_now,
        "at": now,
        "balance": snap["balance"]["cash"],
        "equity": snap["balance"]["equity"],
        "live": True,
    }
    points = [by_second[t] for t in sorted(by_second)]
    days = conn.execute(
        "SELECT trading_day, day_start, start_equity, low_equity, high_equity, coalesce(end_equity, NULL) AS"
        " close_equity, daily_floor, max_floor, updated_at FROM daily_stats WHERE account_id=%s ORDER BY trading_day",
        (account_id,),
    ).fetchall()
    daily_floor: list[Row] = []
    for d in days:
        if d["daily_floor"] is not None:
            daily_floor.append({"t": int(d["day_start"].timestamp()), "at": d["day_start"], "value": d["daily_floor"]})
    limits = {lim["rule"]: lim for lim in rules.get("limits", [])}
    today_floor = limits.get("max_daily_loss", {}).get("floor")
    if today_floor is not None and rules.get("started"):
        value = Decimal(today_floor)
        if not daily_floor or daily_floor[-1]["value"] != value:
            daily_floor.append({"t": t_now, "at": now, "value": value})
    if daily_floor and daily_floor[-1]["t"] < t_now:
        daily_floor.append({"t": t_now, "at": now, "value": daily_floor[-1]["value"]})
    max_floor: list[Row] = []
    ml = limits.get("max_loss")
    if ml is not None and ml.get("floor") is not None:
        start = acc.get("phase_started_at") or acc.get("started_at") or acc["created_at"]
        current = Decimal(ml["floor"])
        steps = [
            (int(d["updated_at"].timestamp()), d["max_floor"])
            for d in days
            if d["max_floor"] is not None and d["updated_at"] >= start
        ]
        t0 = min(int(start.timestamp()), points[0]["t"]) if points else int(start.timestamp())
        first = Decimal(ml["initial_floor"]) if ml.get("initial_floor") is not None else current
        max_floor = _step_series([(t0, first), *steps, (t_now, current)])
    return {
        "account_id": account_id,
        "currency": acc["currency"],
        "points": points,
        "days": [{k: v for k, v in d.items() if k not in ("max_floor", "updated_at")} for d in days],
        "daily_floor": daily_floor,
        "max_loss_floor": max_floor,
        "max_loss_mode": ml.get("mode") if ml else None,
        "as_of": now,
    }


# ---------------------------------------------------------------------------------------------- notifications
def notifications(platform: Platform, conn: Any, *, unread_only: bool = False, limit: int = 50) -> Row:
    """The caller's notifications, newest first, and how many are unread."""
    rows = conn.execute(
        "SELECT id, account_id, kind, title, body, evidence, created_at, read_at FROM notifications"
        " WHERE user_id::text = current_setting('propdesk.user_id', true) AND (NOT %s OR read_at IS NULL)"
        " ORDER BY id DESC LIMIT %s",
        (unread_only, _limit(limit)),
    ).fetchall()
    unread = conn.execute(
        "SELECT count(*) AS n FROM notifications WHERE read_at IS NULL"
        " AND user_id::text = current_setting('propdesk.user_id', true)"
    ).fetchone()
    return {"items": [dict(r) for r in rows], "unread": unread["n"] if unread else 0}


# ---------------------------------------------------------------------------------------------- plans
def plan_catalogue(platform: Platform, conn: Any) -> list[Row]:
    """Active plans (latest version each) with phases, key rules and offers (price, account size)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (id) id, version, body FROM rulebooks WHERE retired_at IS NULL ORDER BY id, version DESC"
    ).fetchall()
    from ..domain.rules.rulebook import parse_rulebook

    return [summary(parse_rulebook(r["body"], where=r["id"])) for r in rows]


__all__ = [
    "account_overview",
    "daily_stats",
    "equity_series",
    "journal",
    "list_accounts",
    "news_panel",
    "news_rule",
    "notifications",
    "open_positions",
    "orders",
    "plan_catalogue",
    "present_violation",
    "require_account",
    "rules_panel",
    "trade_history",
    "violations",
]
