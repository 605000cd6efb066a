"""Read queries behind the admin panel: platform metrics, the activity feed, the trader table, flags & violations,
the pieces of one account's page, and the economic calendar (events in a window with the symbols they affect,
per-source freshness).

Every function takes a connection and runs plain SQL on it. In the web layer that connection is an APP-role
connection acting as an admin user (``reads.access.user_conn``), so row-level security (the ``is_admin()``
policies) is what lets the admin see every trader; nothing here needs the engine role. Nothing here writes.

Definitions the panel shows (also in its tooltips and in ``METRIC_DEFINITIONS``):

* *Live* accounts: status ``active``, ``day_paused``, ``paused`` or ``locked`` (started, not ended).
* *Challenge* accounts: accounts on a plan whose current phase has a profit target (an evaluation phase).
* *Ended* challenge accounts: challenge accounts in a terminal status (passed, failed, expired, liquidated,
  completed). Each phase is its own account, so a trader who passes phase 1 and phase 2 counts two passes.
* *Pass rate* = passed / ended challenge accounts; *breach rate* = failed / ended challenge accounts (an expiry
  is neither: it has its own count). ``None`` while no challenge account has ended.
* *Funded* accounts: live accounts whose current phase has no profit target (the funded phase).
* *Pending payouts*: payout requests awaiting payment. There is no payout table yet, so the query answers 0 and
  ``enabled`` is false ("payouts not enabled"); alongside it, the profit split accrued on live funded accounts
  (the trader's share of their closed profit above deposits), computed from balances and the plan.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..domain.instruments import Instrument
from ..domain.lifecycle import Status
from ..marketdata.calendar import affected_symbols

LIVE_STATUSES = ("active", "day_paused", "paused", "locked")
ENDED_STATUSES = ("passed", "failed", "expired", "liquidated", "completed")

METRIC_DEFINITIONS: dict[str, str] = {
    "active_by_phase": "Live accounts (active, paused for the day, paused or locked) counted by their current phase.",
    "pass_rate": "Passed ÷ ended challenge accounts. A challenge account is one whose phase has a profit target; "
    "ended means passed, failed, expired, liquidated or completed. Each phase counts on its own.",
    "breach_rate": "Failed ÷ ended challenge accounts (a hard breach ended the phase). Expiries are counted "
    "separately and are not breaches.",
    "funded": "Live accounts in a funded phase (a phase with no profit target).",
    "pending_payouts": "Payout requests awaiting payment. Payouts are not enabled yet, so this is 0 from the "
    "query; the accrued profit split is the traders' share of the closed profit above deposits "
    "on live funded accounts.",
    "email": "Emails in the outbox: sent, failed (gave up) and pending (not yet sent).",
    "notifications": "In-app notifications to traders: total and still unread.",
    "daily_used_pct": "(daily anchor − equity) ÷ (daily anchor − daily floor), from the rules engine's stored "
    "anchor and floor (balance instead of equity when the rule ignores floating P&L).",
    "max_used_pct": "(highest allowed level − equity) ÷ the max-loss allowance, where the highest level is the "
    "current max-loss floor plus the allowance.",
    "violations": "Breaches and flags recorded for the account.",
}

# What the execution core did, automatically, for each rule action (shown in the flags & violations view).
ACTION_TAKEN: dict[str, str] = {
    "fail": "phase failed: open positions flattened, account closed",
    "expire": "phase expired: open positions flattened, account closed",
    "pause_day": "open positions flattened, trading paused until the next day start",
    "flag": "flagged for review (no automatic action)",
    "deduct_profit": "flagged; the trade's profit does not count towards the target",
    "warn": "warning shown to the trader",
    "block": "order refused",
    "reject_order": "order refused",
    "pass": "phase passed: positions closed, next phase opened",
}

# ------------------------------------------------------------------------------------------------ shared SQL
# One row per account with what the table and the metrics need. The phase's rules sit inside the frozen
# rulebook (``rulebook->'phases'``); the evaluator's floors and anchors inside ``rule_states.state->'engine'``.
_ACCOUNT_CTE = """
acct AS (
  SELECT a.id, a.owner_id, a.mode, a.phase, a.status, a.currency, a.rulebook_id, a.rulebook_version, a.offer_id,
         a.starting_balance, a.created_at, a.updated_at, a.ended_at, a.parent_account_id,
         b.cash AS balance, b.equity, b.deposits,
         u.email, u.display_name,
         a.rulebook IS NOT NULL AS on_plan,
         coalesce(a.rulebook->'rules', '{}'::jsonb) AS book_rules,
         coalesce(ph.rules, '{}'::jsonb) AS phase_rules,
         ph.split_pct,
         rs.state->'engine' AS st
  FROM accounts a
  JOIN balances b ON b.account_id = a.id
  LEFT JOIN users u ON u.id::text = a.owner_id
  LEFT JOIN rule_states rs ON rs.account_id = a.id
  LEFT JOIN LATERAL (
    SELECT p->'rules' AS rules, nullif(p->>'profit_split_pct', '')::numeric AS split_pct
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(a.rulebook->'phases') = 'array'
                                   THEN a.rulebook->'phases' ELSE '[]'::jsonb END) p
    WHERE p->>'id' = a.phase LIMIT 1) ph ON true
),
calc AS (
  SELECT acct.*,
         acct.on_plan AND (acct.phase_rules ? 'profit_target' OR acct.book_rules ? 'profit_target') AS evaluation,
         CASE
           WHEN acct.phase_rules->'max_loss' ? 'amount' THEN (acct.phase_rules->'max_loss'->>'amount')::numeric
           WHEN acct.phase_rules->'max_loss' ? 'pct'
             THEN (acct.phase_rules->'max_loss'->>'pct')::numeric * (acct.st->>'initial')::numeric / 100
           WHEN acct.book_rules->'max_loss' ? 'amount' THEN (acct.book_rules->'max_loss'->>'amount')::numeric
           WHEN acct.book_rules->'max_loss' ? 'pct'
             THEN (acct.book_rules->'max_loss'->>'pct')::numeric * (acct.st->>'initial')::numeric / 100
         END AS max_allowance,
         coalesce((acct.phase_rules->'max_daily_loss'->>'include_floating')::boolean,
                  (acct.book_rules->'max_daily_loss'->>'include_floating')::boolean, true) AS daily_floating,
         (acct.st->>'daily_anchor')::numeric AS daily_anchor,
         (acct.st->>'daily_floor')::numeric AS daily_floor,
         (acct.st->>'max_floor')::numeric AS max_floor
  FROM acct
),
arows AS (
  SELECT calc.*,
         CASE WHEN calc.daily_anchor > calc.daily_floor AND calc.status = ANY(%(live)s)
              THEN round(greatest(0, (calc.daily_anchor - CASE WHEN calc.daily_floating THEN calc.equity
                                                               ELSE calc.balance END)
                                  * 100 / (calc.daily_anchor - calc.daily_floor)), 2) END AS daily_used_pct,
         CASE WHEN calc.max_allowance > 0 AND calc.max_floor IS NOT NULL AND calc.status = ANY(%(live)s)
              THEN round(greatest(0, (calc.max_floor + calc.max_allowance - calc.equity) * 100
                                  / calc.max_allowance), 2) END AS max_used_pct
  FROM calc
)"""


def _pct(num: int, den: int) -> Decimal | None:
    if den == 0:
        return None
    return (Decimal(num) * 100 / Decimal(den)).quantize(Decimal("0.01"))


def _table_exists(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"public.{name}",)).fetchone()
    return bool(row["present"])


# ------------------------------------------------------------------------------------------------ metrics
def metrics(conn: Any) -> dict[str, Any]:
    """Platform metrics: live accounts by phase, pass/breach rates, funded, pending payouts, email and
    notification delivery. Every number comes from a query (see the module docstring for the definitions)."""
    base = "WITH " + _ACCOUNT_CTE
    by_phase = conn.execute(
        base + " SELECT phase, count(*) AS n, count(*) FILTER (WHERE status = 'active') AS trading,"
        " count(*) FILTER (WHERE status = 'day_paused') AS day_paused,"
        " count(*) FILTER (WHERE status = 'paused') AS paused,"
        " count(*) FILTER (WHERE status = 'locked') AS locked"
        " FROM arows WHERE status = ANY(%(live)s) GROUP BY phase ORDER BY phase",
        {"live": list(LIVE_STATUSES)},
    ).fetchall()
    agg = conn.execute(
        base + " SELECT"
        " count(*) FILTER (WHERE evaluation AND status = ANY(%(ended)s)) AS ended,"
        " count(*) FILTER (WHERE evaluation AND status = 'passed') AS passed,"
        " count(*) FILTER (WHERE evaluation AND status = 'failed') AS failed,"
        " count(*) FILTER (WHERE evaluation AND status = 'expired') AS expired,"
        " count(*) FILTER (WHERE on_plan AND NOT evaluation AND status = ANY(%(live)s)) AS funded,"
        " coalesce(sum(greatest(0, balance - deposits) * split_pct / 100)"
        "   FILTER (WHERE on_plan AND NOT evaluation AND status = ANY(%(live)s)), 0) AS accrued_split,"
        " count(*) FILTER (WHERE status = ANY(%(live)s)) AS live,"
        " count(*) AS total"
        " FROM arows",
        {"live": list(LIVE_STATUSES), "ended": list(ENDED_STATUSES)},
    ).fetchone()
    ended, passed, failed = int(agg["ended"]), int(agg["passed"]), int(agg["failed"])
    return {
        "live_accounts": int(agg["live"]),
        "total_accounts": int(agg["total"]),
        "active_by_phase": [
            {
                "phase": r["phase"],
                "count": int(r["n"]),
                "active": int(r["trading"]),
                "day_paused": int(r["day_paused"]),
                "paused": int(r["paused"]),
                "locked": int(r["locked"]),
            }
            for r in by_phase
        ],
        "challenges": {
            "ended": ended,
            "passed": passed,
            "failed": failed,
            "expired": int(agg["expired"]),
            "pass_rate_pct": _pct(passed, ended),
            "breach_rate_pct": _pct(failed, ended),
        },
        "funded": int(agg["funded"]),
        "pending_payouts": _pending_payouts(conn, Decimal(agg["accrued_split"]).quantize(Decimal("0.01"))),
        "email": _email_delivery(conn),
        "notifications": _notification_delivery(conn),
        "definitions": METRIC_DEFINITIONS,
    }


def _pending_payouts(conn: Any, accrued: Decimal) -> dict[str, Any]:
    if _table_exists(conn, "payouts"):
        row = conn.execute(
            "SELECT count(*) AS n, coalesce(sum(amount), 0) AS amount FROM payouts WHERE status = 'pending'"
        ).fetchone()
        return {
            "enabled": True,
            "count": int(row["n"]),
            "amount": Decimal(row["amount"]),
            "accrued_profit_split": accrued,
            "note": "",
        }
    return {
        "enabled": False,
        "count": 0,
        "amount": Decimal(0),
        "accrued_profit_split": accrued,
        "note": "payouts not enabled",
    }


def _email_delivery(conn: Any) -> dict[str, Any]:
    if not _table_exists(conn, "email_outbox"):
        return {"enabled": False, "sent": 0, "failed": 0, "pending": 0}
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,"
        " count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NOT NULL) AS failed,"
        " count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL) AS pending FROM email_outbox"
    ).fetchone()
    return {"enabled": True, "sent": int(row["sent"]), "failed": int(row["failed"]), "pending": int(row["pending"])}


def _notification_delivery(conn: Any) -> dict[str, Any]:
    if not _table_exists(conn, "notifications"):
        return {"enabled": False, "total": 0, "unread": 0}
    row = conn.execute(
        "SELECT count(*) AS total, count(*) FILTER (WHERE read_at IS NULL) AS unread FROM notifications"
    ).fetchone()
    return {"enabled": True, "total": int(row["total"]), "unread": int(row["unread"])}


# ------------------------------------------------------------------------------------------------ activity
@dataclass(frozen=True)
class ActivityKey:
    """The position of an activity item in the feed's order (time, kind, reference): a cursor."""

    at: datetime
    kind: str
    ref: str

    def to_list(self) -> list[str]:
        return [self.at.isoformat(), self.kind, self.ref]


ACTIVITY_KINDS = ("order", "fill", "breach", "flag", "pass", "status", "admin")

# One branch per source; each is limited on its own (and uses the cursor) so the union never scans more than
# ``limit`` rows per source beyond the index. ``ref`` is text that sorts like the source's own id.
_ACTIVITY_BRANCHES = {
    "order": """SELECT o.created_at AS at, 'order'::text AS kind, o.id::text AS ref, o.account_id,
       jsonb_build_object('order_id', o.id, 'symbol', o.symbol, 'side', o.side,
                          'quantity', trim_scale(o.quantity)::text,
                          'order_type', o.order_type, 'status', o.status, 'purpose', o.purpose,
                          'reject_code', o.reject_code) AS data
     FROM orders o WHERE {cond} ORDER BY o.created_at {dir}, o.id::text {dir} LIMIT %(n)s""",
    "fill": """SELECT f.created_at, 'fill'::text, f.id::text, f.account_id,
       jsonb_build_object('fill_id', f.id, 'order_id', f.order_id, 'symbol', f.symbol, 'side', f.side,
                          'quantity', trim_scale(f.quantity)::text, 'price', trim_scale(f.price)::text,
                          'realized_pnl', trim_scale(f.realized_pnl)::text)
     FROM fills f WHERE {cond} ORDER BY f.created_at {dir}, f.id::text {dir} LIMIT %(n)s""",
    "violation": """SELECT v.created_at, v.kind, lpad(v.id::text, 20, '0'), v.account_id,
       jsonb_build_object('violation_id', v.id, 'rule', v.rule, 'action', v.action, 'severity', v.severity,
                          'value', trim_scale(v.value)::text, 'limit', trim_scale(v.limit_value)::text,
                          'phase', v.phase)
     FROM violations v WHERE v.kind IN ('breach', 'flag', 'pass') AND {cond}
     ORDER BY v.created_at {dir}, v.kind {dir}, v.id {dir} LIMIT %(n)s""",
    "status": """SELECT l.created_at, 'status'::text, lpad(l.id::text, 20, '0'), l.account_id,
       jsonb_build_object('from', l.evidence->>'from', 'to', l.evidence->>'to', 'trigger', l.evidence->>'trigger',
                          'actor', l.evidence->>'actor', 'reason', l.evidence->>'reason')
     FROM ledger l WHERE l.kind = 'status_changed' AND {cond} ORDER BY l.created_at {dir}, l.id {dir} LIMIT %(n)s""",
    "admin": """SELECT x.created_at, 'admin'::text, lpad(x.id::text, 20, '0'), x.account_id,
       jsonb_build_object('audit_id', x.id, 'action', x.action, 'actor', x.actor, 'reason', x.reason,
                          'outcome', x.details->>'outcome')
     FROM admin_audit x WHERE {cond} ORDER BY x.created_at {dir}, x.id {dir} LIMIT %(n)s""",
}
_ACTIVITY_COLS = {
    "order": ("o.created_at", "'order'::text", "o.id::text"),
    "fill": ("f.created_at", "'fill'::text", "f.id::text"),
    "violation": ("v.created_at", "v.kind", "lpad(v.id::text, 20, '0')"),
    "status": ("l.created_at", "'status'::text", "lpad(l.id::text, 20, '0')"),
    "admin": ("x.created_at", "'admin'::text", "lpad(x.id::text, 20, '0')"),
}


def activity(
    conn: Any,
    *,
    before: ActivityKey | None = None,
    after: ActivityKey | None = None,
    limit: int = 50,
    account_id: uuid.UUID | None = None,
) -> tuple[list[dict[str, Any]], ActivityKey | None]:
    """The live activity feed: orders, fills, breaches/flags/passes, status changes and admin actions as one
    time-ordered list. Newest first with ``before`` (the next page is older than the cursor); with ``after``,
    the items newer than the cursor, oldest first (what a live stream sends next). Returns the items and the
    cursor of the last one when more may follow (``None`` when this was the last page)."""
    if before is not None and after is not None:
        raise ValueError("before and after are exclusive")
    newest_first = after is None
    key = before or after
    op, direction = ("<", "DESC") if newest_first else (">", "ASC")
    branches = []
    for name, sql in _ACTIVITY_BRANCHES.items():
        at_col, kind_col, ref_col = _ACTIVITY_COLS[name]
        conds = ["true"]
        if key is not None:
            conds.append(f"({at_col}, {kind_col}, {ref_col}) {op} (%(k_at)s::timestamptz, %(k_kind)s, %(k_ref)s)")
        if account_id is not None:
            alias = at_col.split(".", 1)[0]
            conds.append(f"{alias}.account_id = %(account)s")
        branches.append("(" + sql.format(cond=" AND ".join(conds), dir=direction) + ")")
    query = (
        "SELECT e.at, e.kind, e.ref, e.account_id, e.data, a.phase, a.status AS account_status,"
        " a.owner_id, a.rulebook_id, u.email, u.display_name"
        " FROM (" + " UNION ALL ".join(branches) + ") AS e (at, kind, ref, account_id, data)"
        " LEFT JOIN accounts a ON a.id = e.account_id LEFT JOIN users u ON u.id::text = a.owner_id"
        f" ORDER BY e.at {direction}, e.kind {direction}, e.ref {direction} LIMIT %(n)s"
    )
    params: dict[str, Any] = {"n": limit + 1, "account": account_id}
    if key is not None:
        params.update(k_at=key.at, k_kind=key.kind, k_ref=key.ref)
    rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_present_activity(r) for r in rows]
    last = ActivityKey(rows[-1]["at"], rows[-1]["kind"], rows[-1]["ref"]) if rows else None
    return items, (last if more else None) if newest_first else last


def latest_activity_key(conn: Any) -> ActivityKey | None:
    """The key of the newest activity item (where a live stream starts)."""
    items, _ = activity(conn, limit=1)
    if not items:
        return None
    return ActivityKey(items[0]["at"], items[0]["kind"], items[0]["ref"])


def _present_activity(r: dict[str, Any]) -> dict[str, Any]:
    data = dict(r["data"] or {})
    return {
        "at": r["at"],
        "kind": r["kind"],
        "ref": r["ref"],
        "account_id": r["account_id"],
        "trader": r["email"] or r["owner_id"],
        "display_name": r["display_name"] or "",
        "plan": r["rulebook_id"],
        "phase": r["phase"],
        "account_status": r["account_status"],
        "summary": _summary(r["kind"], data),
        "data": data,
    }


def _summary(kind: str, d: dict[str, Any]) -> str:
    """One line a human reads in the feed."""
    if kind == "order":
        text = f"{d.get('side')} {_num(d.get('quantity'))} {d.get('symbol')} {d.get('order_type')} order"
        status = d.get("status")
        if status == "rejected":
            return f"{text} rejected ({d.get('reject_code')})"
        return f"{text} {status}"
    if kind == "fill":
        return f"filled {d.get('side')} {_num(d.get('quantity'))} {d.get('symbol')} at {_num(d.get('price'))}"
    if kind in ("breach", "flag"):
        return f"{kind} of {d.get('rule')}: {ACTION_TAKEN.get(str(d.get('action')), str(d.get('action')))}"
    if kind == "pass":
        return f"passed {d.get('phase')} ({d.get('rule')})"
    if kind == "status":
        who = d.get("actor") or "system"
        return f"status {d.get('from')} → {d.get('to')} by {who}" + (f": {d['reason']}" if d.get("reason") else "")
    if kind == "admin":
        outcome = d.get("outcome")
        return (
            f"admin {d.get('action')} by {d.get('actor')}"
            + (" (refused)" if outcome == "refused" else "")
            + (f": {d['reason']}" if d.get("reason") else "")
        )
    return kind


def _num(v: Any) -> str:
    """A JSON number from jsonb (numeric) as plain text without trailing zeros."""
    if v is None:
        return ""
    try:
        d = Decimal(str(v))
    except ArithmeticError:
        return str(v)
    return format(d.normalize(), "f") if d != 0 else "0"


# ------------------------------------------------------------------------------------------------ traders
# Whitelisted sort keys -> SQL expressions over ``arows`` (never interpolated from input).
TRADER_SORTS: dict[str, str] = {
    "last_activity": "last_activity",
    "trader": "coalesce(email, owner_id)",
    "plan": "rulebook_id",
    "phase": "phase",
    "status": "status",
    "balance": "balance",
    "equity": "equity",
    "daily_used": "daily_used_pct",
    "max_used": "max_used_pct",
    "violations": "violations",
    "created": "created_at",
}
TRADER_STATUSES = tuple(s.value for s in Status)


def parse_sort(sort: str) -> tuple[str, bool]:
    """``"-equity"`` -> ("equity", descending). Raises ``KeyError`` for a key outside ``TRADER_SORTS``."""
    desc = sort.startswith("-")
    key = sort[1:] if desc else sort
    if key not in TRADER_SORTS:
        raise KeyError(key)
    return key, desc


def traders(
    conn: Any,
    *,
    q: str | None = None,
    status: str | None = None,
    phase: str | None = None,
    plan: str | None = None,
    sort: str = "-last_activity",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The per-trader status table: one row per account with its trader, plan, phase, status, balance, equity,
    daily and max loss used %, violations and last activity. Search (trader email/name, owner id, account id,
    plan), filters and sort are SQL; ``sort`` must be a key of ``TRADER_SORTS`` (``-`` for descending).
    Returns the page and the total number of matching rows."""
    key, desc = parse_sort(sort)
    where = ["true"]
    params: dict[str, Any] = {"live": list(LIVE_STATUSES), "n": limit, "off": offset}
    if q:
        params["q"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            "(email ILIKE %(q)s OR display_name ILIKE %(q)s OR owner_id ILIKE %(q)s"
            " OR id::text ILIKE %(q)s OR coalesce(rulebook_id, '') ILIKE %(q)s)"
        )
    if status:
        params["status"] = status
        where.append("status = %(status)s")
    if phase:
        params["phase"] = phase
        where.append("phase = %(phase)s")
    if plan:
        params["plan"] = plan
        where.append("rulebook_id = %(plan)s")
    direction = "DESC NULLS LAST" if desc else "ASC NULLS FIRST"
    query = (
        "WITH "
        + _ACCOUNT_CTE
        + """,
table_rows AS (
  SELECT arows.*, coalesce(vc.n, 0) AS violations,
         greatest(arows.updated_at, lo.last_order) AS last_activity
  FROM arows
  LEFT JOIN LATERAL (SELECT count(*) AS n FROM violations v
                     WHERE v.account_id = arows.id AND v.kind IN ('breach', 'flag')) vc ON true
  LEFT JOIN LATERAL (SELECT max(o.created_at) AS last_order FROM orders o WHERE o.account_id = arows.id) lo ON true
)
SELECT *, count(*) OVER () AS total FROM table_rows WHERE """
        + " AND ".join(where)
        + f" ORDER BY {TRADER_SORTS[key]} {direction}, id {'DESC' if desc else 'ASC'}"
        " LIMIT %(n)s OFFSET %(off)s"
    )
    rows = conn.execute(query, params).fetchall()
    total = int(rows[0]["total"]) if rows else (_count_only(conn, query, params) if offset else 0)
    return [_present_trader_row(r) for r in rows], total


def _count_only(conn: Any, query: str, params: dict[str, Any]) -> int:
    """The total when the page is past the end (the window count is only on returned rows)."""
    row = conn.execute(
        "SELECT count(*) AS n FROM (" + query.replace("LIMIT %(n)s OFFSET %(off)s", "") + ") t", params
    ).fetchone()
    return int(row["n"])


def _present_trader_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": r["id"],
        "owner_id": r["owner_id"],
        "trader": r["email"] or r["owner_id"],
        "display_name": r["display_name"] or "",
        "plan": r["rulebook_id"],
        "plan_version": r["rulebook_version"],
        "offer": r["offer_id"],
        "mode": r["mode"],
        "phase": r["phase"],
        "status": r["status"],
        "currency": r["currency"],
        "balance": r["balance"],
        "equity": r["equity"],
        "daily_used_pct": r["daily_used_pct"],
        "max_used_pct": r["max_used_pct"],
        "violations": int(r["violations"]),
        "last_activity": r["last_activity"],
        "created_at": r["created_at"],
    }


def filter_options(conn: Any) -> dict[str, list[str]]:
    """Distinct phases and plans present (the table's filter menus)."""
    phases = [r["phase"] for r in conn.execute("SELECT DISTINCT phase FROM accounts ORDER BY phase").fetchall()]
    plans = [
        r["rulebook_id"]
        for r in conn.execute(
            "SELECT DISTINCT rulebook_id FROM accounts WHERE rulebook_id IS NOT NULL ORDER BY rulebook_id"
        ).fetchall()
    ]
    return {"statuses": list(TRADER_STATUSES), "phases": phases, "plans": plans}


# ------------------------------------------------------------------------------------------------ violations
VIOLATION_KINDS = ("breach", "flag", "warning", "reject", "pass")


def violations(
    conn: Any,
    *,
    kinds: Sequence[str] = ("breach", "flag"),
    rule: str | None = None,
    account_id: uuid.UUID | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """Flags & violations, newest first: every recorded decision of the given kinds with its rule, value and
    limit, evidence, and the action the core took automatically. Returns the page and the id to continue
    before (``None`` at the end)."""
    where = ["v.kind = ANY(%(kinds)s)"]
    params: dict[str, Any] = {"kinds": list(kinds), "n": limit + 1}
    if rule:
        where.append("v.rule = %(rule)s")
        params["rule"] = rule
    if account_id is not None:
        where.append("v.account_id = %(account)s")
        params["account"] = account_id
    if before_id is not None:
        where.append("v.id < %(before)s")
        params["before"] = before_id
    rows = conn.execute(
        "SELECT v.*, a.owner_id, a.status AS account_status, a.rulebook_id, a.rulebook_version, u.email,"
        " u.display_name FROM violations v JOIN accounts a ON a.id = v.account_id"
        " LEFT JOIN users u ON u.id::text = a.owner_id WHERE "
        + " AND ".join(where)
        + " ORDER BY v.id DESC LIMIT %(n)s",
        params,
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [present_violation(r) for r in rows], (rows[-1]["id"] if more and rows else None)


def present_violation(r: dict[str, Any]) -> dict[str, Any]:
    """A violations row (optionally joined with its account and trader) for the panel."""
    return {
        "id": r["id"],
        "account_id": r["account_id"],
        "trader": r.get("email") or r.get("owner_id"),
        "display_name": r.get("display_name") or "",
        "plan": r.get("rulebook_id"),
        "account_status": r.get("account_status"),
        "rule": r["rule"],
        "kind": r["kind"],
        "severity": r["severity"],
        "action": r["action"],
        "action_taken": ACTION_TAKEN.get(r["action"], r["action"]),
        "phase": r["phase"],
        "at": r["at"],
        "value": r["value"],
        "limit": r["limit_value"],
        "evidence": r["evidence"],
        "order_id": r["order_id"],
        "created_at": r["created_at"],
    }


def violation_rules(conn: Any) -> list[str]:
    """Rules that have recorded decisions (the view's filter menu)."""
    return [r["rule"] for r in conn.execute("SELECT DISTINCT rule FROM violations ORDER BY rule").fetchall()]


# ------------------------------------------------------------------------------------------------ one account
def account_row(conn: Any, account_id: uuid.UUID) -> dict[str, Any] | None:
    """The account with its balances, trader and computed loss usage (``None`` when not visible)."""
    row = conn.execute(
        "WITH " + _ACCOUNT_CTE + " SELECT * FROM arows WHERE id = %(id)s",
        {"live": list(LIVE_STATUSES), "id": account_id},
    ).fetchone()
    if row is None:
        return None
    bal = conn.execute("SELECT * FROM balances WHERE account_id = %s", (account_id,)).fetchone()
    return {
        "id": row["id"],
        "owner_id": row["owner_id"],
        "trader": row["email"] or row["owner_id"],
        "display_name": row["display_name"] or "",
        "mode": row["mode"],
        "phase": row["phase"],
        "status": row["status"],
        "currency": row["currency"],
        "plan": row["rulebook_id"],
        "plan_version": row["rulebook_version"],
        "offer": row["offer_id"],
        "starting_balance": row["starting_balance"],
        "parent_account_id": row["parent_account_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "ended_at": row["ended_at"],
        "daily_used_pct": row["daily_used_pct"],
        "max_used_pct": row["max_used_pct"],
        "balance": {k: v for k, v in (bal or {}).items() if k != "account_id"},
    }


def ledger(conn: Any, account_id: uuid.UUID, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ledger entries, newest first."""
    return [
        dict(r)
        for r in conn.execute(
            "SELECT seq, kind, category, amount, balance_after, equity_after, order_id, fill_id, evidence, created_at"
            " FROM ledger WHERE account_id = %s ORDER BY seq DESC LIMIT %s",
            (account_id, limit),
        ).fetchall()
    ]


def positions(conn: Any, account_id: uuid.UUID) -> list[dict[str, Any]]:
    """Open positions with the latest stored quote (unrealized P&L is on the balances row)."""
    return [
        dict(r)
        for r in conn.execute(
            "SELECT p.symbol, p.quantity, p.avg_price, p.stop_loss, p.take_profit, p.opened_at, p.updated_at,"
            " q.bid, q.ask, q.ts AS quote_ts FROM positions p LEFT JOIN quotes q ON q.symbol = p.symbol"
            " WHERE p.account_id = %s ORDER BY p.symbol",
            (account_id,),
        ).fetchall()
    ]


def orders(conn: Any, account_id: uuid.UUID, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest orders with their fills (and whether each fill was voided), newest first."""
    rows = conn.execute(
        "SELECT o.id, o.symbol, o.side, o.order_type, o.quantity, o.limit_price, o.stop_price, o.stop_loss,"
        " o.take_profit, o.purpose, o.status, o.reject_code, o.reject_reason, o.created_at, o.closed_at,"
        # Numbers as text inside JSON: jsonb numbers would come back as floats.
        " coalesce((SELECT jsonb_agg(jsonb_build_object('id', f.id, 'price', trim_scale(f.price)::text,"
        "   'quantity', trim_scale(f.quantity)::text, 'realized_pnl', trim_scale(f.realized_pnl)::text,"
        "   'fee', trim_scale(f.fee)::text, 'voided', fv.fill_id IS NOT NULL) ORDER BY f.created_at)"
        "   FROM fills f LEFT JOIN fill_voids fv ON fv.fill_id = f.id WHERE f.order_id = o.id), '[]'::jsonb) AS fills"
        " FROM orders o WHERE o.account_id = %s ORDER BY o.created_at DESC, o.id DESC LIMIT %s",
        (account_id, limit),
    ).fetchall()
    return [dict(r) for r in rows]


def daily_stats(conn: Any, account_id: uuid.UUID, *, limit: int = 60) -> list[dict[str, Any]]:
    """Per trading day figures, newest first."""
    return [
        {k: v for k, v in r.items() if k != "account_id"}
        for r in conn.execute(
            "SELECT * FROM daily_stats WHERE account_id = %s ORDER BY trading_day DESC LIMIT %s", (account_id, limit)
        ).fetchall()
    ]


def audit_trail(conn: Any, account_id: uuid.UUID, *, limit: int = 100) -> list[dict[str, Any]]:
    """The account's admin audit entries, newest first."""
    return [
        dict(r)
        for r in conn.execute(
            "SELECT id, actor, action, reason, before, after, details, created_at FROM admin_audit"
            " WHERE account_id = %s ORDER BY id DESC LIMIT %s",
            (account_id, limit),
        ).fetchall()
    ]


def plan_versions(conn: Any) -> list[dict[str, Any]]:
    """Every stored plan version (presets and admin-created), grouped by plan id, newest version first, with
    how many accounts run on each."""
    rows = conn.execute(
        "SELECT r.id, r.version, r.name, r.digest, r.source, r.created_at, r.created_by, r.retired_at,"
        " (SELECT count(*) FROM accounts a WHERE a.rulebook_id = r.id AND a.rulebook_version = r.version) AS accounts"
        " FROM rulebooks r ORDER BY r.id, r.version DESC"
    ).fetchall()
    return [dict(r) for r in rows]


# ------------------------------------------------------------------------------------------------ calendar
# A minimum impact and the impacts it admits (the news rule's ``impact`` parameter means the same:
# domain/rules/pretrade.IMPACTS).
CALENDAR_IMPACTS: dict[str, tuple[str, ...]] = {
    "high": ("high",),
    "medium": ("high", "medium"),
    "low": ("high", "medium", "low"),
}


def calendar_events(
    conn: Any,
    catalogue: Iterable[Instrument],
    *,
    start: datetime,
    end: datetime,
    impact: str = "low",
    currency: str | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = 200,
) -> tuple[list[dict[str, Any]], tuple[datetime, int] | None]:
    """Events with ``start <= at < end`` of at least ``impact``, optionally of one currency, oldest first (ties
    by id), after the keyset cursor ``after``. Returns the page and the key of its last row when more follow."""
    instruments = list(catalogue)
    conds = ["at >= %(start)s", "at < %(end)s", "impact = ANY(%(impacts)s)"]
    params: dict[str, Any] = {"start": start, "end": end, "impacts": list(CALENDAR_IMPACTS[impact]), "n": limit + 1}
    if currency:
        conds.append("currency = %(currency)s")
        params["currency"] = currency
    if after is not None:
        conds.append("(at, id) > (%(after_at)s, %(after_id)s)")
        params.update(after_at=after[0], after_id=after[1])
    rows = conn.execute(
        "SELECT id, at, currency, country, impact, title, source, created_at FROM economic_events"
        f" WHERE {' AND '.join(conds)} ORDER BY at, id LIMIT %(n)s",
        params,
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{**dict(r), "symbols": affected_symbols(instruments, r["currency"], r["country"])} for r in rows]
    return items, ((rows[-1]["at"], rows[-1]["id"]) if more and rows else None)


def calendar_sources(conn: Any, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per source (finnhub, csv, ics, admin, demo...): all its events, those in the window, and when its newest
    row arrived (``created_at``), so staff can tell whether a feed has gone quiet."""
    rows = conn.execute(
        "SELECT source, count(*) AS events, count(*) FILTER (WHERE at >= %s AND at < %s) AS in_window,"
        " max(created_at) AS newest_created_at FROM economic_events GROUP BY source ORDER BY source",
        (start, end),
    ).fetchall()
    return [dict(r) for r in rows]


__all__ = [
    "ACTION_TAKEN",
    "ACTIVITY_KINDS",
    "CALENDAR_IMPACTS",
    "ENDED_STATUSES",
    "LIVE_STATUSES",
    "METRIC_DEFINITIONS",
    "TRADER_SORTS",
    "TRADER_STATUSES",
    "VIOLATION_KINDS",
    "ActivityKey",
    "account_row",
    "activity",
    "audit_trail",
    "calendar_events",
    "calendar_sources",
    "daily_stats",
    "filter_options",
    "latest_activity_key",
    "ledger",
    "metrics",
    "orders",
    "parse_sort",
    "plan_versions",
    "positions",
    "present_violation",
    "traders",
    "violation_rules",
    "violations",
]
