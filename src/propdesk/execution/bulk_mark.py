"""Set-based mark-to-market: every live account with positions, read in a handful of queries, valued exactly,
written with one statement.

``mark_all_bulk`` is the bulk replacement of ``ExecutionService.mark_all``'s per-account loop (14 statements and
a commit per account). It persists, for every account whose mark changed, exactly what the per-account
``mark_to_market`` would persist, except that the ledger does not grow with every price (issue 9, "Ledger
growth"):

- ``balances``: equity, unrealized P&L, margin used, high-water mark, ``marked_at``/``updated_at`` — the same
  numbers, from the same domain function (``domain.positions.valuate``) over the same rows and quotes;
- a ``mark_to_market`` ledger row (same evidence, same ``equity_after``) only when the high-water mark rises, so
  ``fold(ledger).high_watermark == balances.high_watermark`` stays the invariant ``propdesk verify`` checks, and
  ``ledger_seq`` moves with it. (At day end the existing roll path — ``roll_day``, a per-account command — records
  the day's close; the bulk mark leaves it to that path.)
- challenge accounts: the rules engine's state. Three tiers, each exact:

  1. *quiet* (almost every account on almost every cycle): the mark moves nothing the rulebook remembers — no day
     boundary, deadline, weekend start or scale-up is due, equity stays inside the day's range, under the peak and
     the recorded drawdown, above every realtime floor and under the warning level. Nothing is written to
     ``rule_states``/``daily_stats``. (The per-account path would rewrite them only to store the last equity
     seen and ``last_t``; neither is read before ``_limits``/``advance`` overwrite it, and a day boundary since
     ``last_t`` is exactly what sends an account to tier 3.)
  2. *extremes moved* (a new day high/low, a new peak, a deeper drawdown, a trailing floor that rises): the
     account's real ``Evaluator`` runs in memory on its stored state exactly as ``RulesBridge.on_equity`` runs it;
     when it decides nothing, its new state and the day's ``daily_stats`` row (high/low equity, floors) are
     written in the same bulk statement, with the values ``RulesBridge._save``/``_daily_stats`` would write.
  3. *candidates*: anything that must *change* the account — the safety net, a floor breach, a warning, a day
     roll, an expiry, a pass, a scale-up, a day-paused account — is not decided here. Such accounts are returned
     in ``candidates`` and nothing is written for them; the caller runs the existing exact per-account command
     (``ExecutionService.mark_to_market``) for only those (``mark_all_then_exact`` does both).

The read and the pre-pass (``bulk_fast``): two aggregated binary reads (one value per column, parsed with numpy)
give every account and position; a vectorized float valuation proves the cents of almost every account (an error
bound far above the real one, nothing within it of a half cent) and a vectorized quiet proof (tier 1, strict
comparisons, per distinct rulebook) clears almost every challenge account. Values on a half cent are valued exactly
from the positions read as integers of 1e-10 (``_settle_ambiguous``). Only what stays unproven — a rise of the
high-water mark (its ledger row), tier 2 and 3, a missing price, the safety net — is read again as Decimals in the
same snapshot and goes through the exact code below (``_exact``), unchanged. Every persisted number is the exact
path's: a proven cent is the integer ``money`` gives.

Concurrency: the read is one REPEATABLE READ snapshot and takes no lock. The write transaction first locks the
changed accounts' rows ``FOR UPDATE SKIP LOCKED`` (the lock every command takes first), then — in a fresh
statement, so its snapshot is after every lock was granted — updates ``balances`` only where ``ledger_seq`` and the
row version (``xmin``) of ``balances`` and of ``rule_states`` are still those read. A command that committed
between the read and the lock therefore makes the account drop out (a lost update is impossible), and an account
locked by a running command is skipped rather than waited for. Skipped accounts are read and marked again
(``retries``) and otherwise left to the next cycle. The ledger rows, rule states and daily stats are written by the
same statement, only for the accounts whose balances row was updated.
"""

from __future__ import annotations

import json
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from psycopg.rows import tuple_row

from ..domain.clock import Clock
from ..domain.instruments import Catalogue, Instrument, conversion_rate
from ..domain.lifecycle import MARKED, TERMINAL, Status
from ..domain.money import CTX, ZERO, fmt, money
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position, Valuation, valuate
from ..domain.quotes import PriceSource, Quote
from ..domain.rules.engine import EngineState, Evaluator, iso
from ..domain.rules.pretrade import weekend_holds
from ..domain.rules.rulebook import Rulebook, parse_rulebook
from . import bulk_fast as bf

HUNDRED = Decimal(100)

# ---------------------------------------------------------------------------------------------- reads
# One row per live account holding positions: the account, its balances row (with its row version) and the few
# rule-state fields the quiet check needs (extracted server-side: no JSON decoding of the whole state per row).
_ACCOUNTS = """
SELECT a.id, a.status, a.mode, a.phase, a.xmin::text AS ax, NULL AS unused,
       b.cash, b.equity, b.unrealized_pnl, b.margin_used, b.high_watermark, b.ledger_seq, b.xmin::text AS bx,
       r.xmin::text AS rx, e->>'verdict', e->>'last_t', e->>'start_day', e->>'started_at', e->>'last_open_at',
       e->>'day_high_equity', e->>'day_low_equity', e->>'peak_equity', e->>'max_dd_pct', e->>'daily_floor',
       e->>'daily_anchor', e->>'max_floor', e->>'day_paused', e->>'initial', r.state->'extras'->>'cycle_started_at'
FROM accounts a JOIN balances b ON b.account_id = a.id
LEFT JOIN rule_states r ON r.account_id = a.id AND a.mode = 'challenge' AND a.rulebook IS NOT NULL
LEFT JOIN LATERAL (SELECT r.state->'engine' AS e) s ON true
WHERE a.status = ANY(%(statuses)s) AND EXISTS (SELECT 1 FROM positions p WHERE p.account_id = a.id) {only}
"""
_POSITIONS = """
SELECT p.account_id, p.symbol, p.quantity, p.avg_price FROM positions p JOIN accounts a ON a.id = p.account_id
WHERE a.status = ANY(%(statuses)s) {only}
"""
# The frozen policy and rulebook of an account never change after it is opened; their digests are computed once per
# account row version (``xmin``) and kept (``_KeyCache``), never per row on every cycle.
_KEYS = (
    "SELECT id, xmin::text::int8 AS ax, md5(policy::text) AS pkey,"
    " CASE WHEN mode = 'challenge' AND rulebook IS NOT NULL THEN md5(rulebook::text) END AS rkey, phase, mode"
    " FROM accounts WHERE id IN {_IDS}"
)
_POLICIES = "SELECT DISTINCT ON (md5(policy::text)) md5(policy::text) AS k, policy FROM accounts WHERE id IN {_IDS}"
_RULEBOOKS = (
    "SELECT DISTINCT ON (md5(rulebook::text)) md5(rulebook::text) AS k, rulebook FROM accounts"
    " WHERE id IN {_IDS} AND mode = 'challenge' AND rulebook IS NOT NULL"
)
# Tier 2 reads only the few engine fields the extremes update and the day's statistics row need, as text.
_EXTREMES = """
SELECT r.account_id, e->>'balance', e->>'max_locked', e->>'day', e->'warned', e->>'sod_balance', e->>'sod_equity',
       e->'day_pnl'->>(e->>'day'), e->'day_closes'->>(e->>'day'),
       r.state->'extras'->'trades_opened'->>(e->>'day'), e->>'peak_equity', e->>'max_dd_pct', e->>'max_floor'
FROM rule_states r, LATERAL (SELECT r.state->'engine' AS e) s WHERE r.account_id IN {_IDS}
"""
_STATES = "SELECT account_id, state FROM rule_states WHERE account_id IN {_IDS}"
# Account ids travel as one bytea of 16-byte ids (no per-id Python adaptation of a uuid[] parameter), matched by a
# hash semi-join (an ``= ANY`` over thousands of ids is a linear scan per row).
_IDS = (
    "(SELECT encode(substring(%(ids)s::bytea FROM g * 16 + 1 FOR 16), 'hex')::uuid"
    " FROM generate_series(0, length(%(ids)s::bytea) / 16 - 1) g)"
)
_KEYS, _POLICIES, _RULEBOOKS, _EXTREMES, _STATES = (
    q.replace("{_IDS}", _IDS) for q in (_KEYS, _POLICIES, _RULEBOOKS, _EXTREMES, _STATES)
)


def _blob(ids: Iterable[uuid.UUID]) -> bytes:
    return b"".join(i.bytes for i in ids)


# ---------------------------------------------------------------------------------------------- pure helpers
@dataclass(frozen=True, slots=True)
class Candidate:
    """An account the bulk mark did not decide: the exact per-account command must run for it."""

    account_id: uuid.UUID
    reason: str


@dataclass(slots=True)
class Marked:
    """One account's new mark, ready to be written."""

    account_id: uuid.UUID
    seq: int
    bx: str
    rx: str | None
    equity: Decimal
    unrealized: Decimal
    margin: Decimal
    hwm: Decimal
    new_seq: int
    changed: bool
    ledger: tuple[Decimal, Decimal, str] | None = None  # (balance_after, equity_after, evidence JSON)
    rule_state: str | None = None
    rule_patch: str | None = None  # engine fields to set (the extremes update)
    daily: tuple[Any, ...] | None = None


@dataclass(slots=True)
class _RuleView:
    """The rule-state fields of one account the quiet check reads (decimal strings and ISO instants)."""

    verdict: str | None
    last_t: str | None
    start_day: str | None
    started_at: str | None
    last_open_at: str | None
    day_high: str | None
    day_low: str | None
    peak: str | None
    max_dd: str | None
    daily_floor: str | None
    daily_anchor: str | None
    max_floor: str | None
    day_paused: str | None
    initial: str | None
    cycle_started_at: str | None


@dataclass
class _Book:
    """A distinct frozen rulebook and phase: its rules, calendar and the instants that matter at ``now``."""

    book: Rulebook
    phase: str
    proto: Evaluator
    day_start: datetime  # the latest trading-day start at or before now


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None


def rate_lookup(catalogue: Catalogue, quote: Callable[[str], Quote | None]) -> Callable[[str, str], Decimal | None]:
    """``ExecutionService._rate``: a conversion rate from the catalogue's quotes only (cached per currency pair)."""
    cache: dict[tuple[str, str], Decimal | None] = {}

    def mid(symbol: str) -> Decimal | None:
        if catalogue.get(symbol) is None:
            return None
        q = quote(symbol)
        return q.mid if q is not None else None

    def rate(ccy: str, account_ccy: str) -> Decimal | None:
        key = (ccy, account_ccy)
        if key not in cache:
            cache[key] = conversion_rate(ccy, account_ccy, mid)
        return cache[key]

    return rate


def mark_evidence(val: Valuation) -> dict[str, Any]:
    """The ``mark_to_market`` ledger evidence, as ``ExecutionService.mark_to_market`` writes it."""
    return {
        "marks": [
            {
                "symbol": m.symbol,
                "quantity": fmt(m.quantity),
                "mark": fmt(m.mark),
                "unrealized": fmt(money(m.unrealized)),
            }
            for m in val.marks
        ],
        "missing": list(val.missing),
        "equity": fmt(money(val.equity)),
        "unrealized": fmt(money(val.unrealized)),
    }


def margin_of(val: Valuation, policy: ExecutionPolicy) -> Decimal:
    """``margin_used`` as ``ExecutionService._write_balances`` writes it."""
    return money(CTX.divide(val.notional, policy.max_leverage) if val.notional else ZERO)


def quiet_reason(
    bk: _Book,
    rv: _RuleView,
    status: Status,
    now: datetime,
    cash: Decimal,
    equity: Decimal | None,
) -> str | None:
    """None when the per-account path would change nothing the rulebook remembers for this mark (tier 1);
    otherwise why not: ``"tier3:<why>"`` for work that changes the account, ``"tier2:<why>"`` for moved extremes
    the exact evaluator must record. ``equity`` is the mark in cents, None when a price is missing.

    Conservative by construction: every test here is a sufficient condition for "nothing happens"; anything
    it cannot prove goes to the exact evaluator (tier 2), which decides exactly."""
    if rv.verdict is not None:
        return None  # an ended phase: RulesBridge.on_equity returns at once
    if status is Status.DAY_PAUSED:
        return "tier2:day_paused"  # the evaluator decides whether the day start un-pauses it
    last = _dt(rv.last_t)
    if last is None:
        return "tier2:no_last_t"
    if last < bk.day_start:
        return "tier3:day_boundary"
    rules = bk.proto.rules
    cal = bk.proto.cal
    if "max_trading_days" in rules and rv.start_day:
        n = rules["max_trading_days"]["days"]
        if cal.start_of(datetime.fromisoformat(rv.start_day).date() + timedelta(days=n)) <= now:
            return "tier3:deadline"
    if "inactivity" in rules and rv.started_at:
        lastopen = _dt(rv.last_open_at) or _dt(rv.started_at)
        assert lastopen is not None
        if lastopen + timedelta(hours=24 * rules["inactivity"]["days"]) <= now:
            return "tier3:deadline"
    wk = rules.get("weekend_trading")
    if wk is not None and not wk["hold_positions"] and weekend_holds(rules, cal, last, now, [("", "", "")]):
        return "tier3:weekend"
    sc = bk.proto.phase.scaling
    if sc and status is Status.ACTIVE:
        started = _dt(rv.cycle_started_at) or now
        if now >= started + timedelta(days=sc["every_days"]):
            return "tier3:scale_up"
    if equity is None:
        return None  # missing price: the rules never judge a guessed equity
    if rv.day_high is None or rv.day_low is None or rv.peak is None or rv.max_dd is None or rv.initial is None:
        return "tier2:state"
    if not Decimal(rv.day_low) <= equity <= Decimal(rv.day_high):
        return "tier2:day_range"
    peak = Decimal(rv.peak)
    if equity > peak:
        return "tier2:peak"
    if peak > 0 and (peak - equity) * HUNDRED / peak > Decimal(rv.max_dd):
        return "tier2:drawdown"
    paused = rv.day_paused == "true"
    dl = rules.get("max_daily_loss")
    ml = rules.get("max_loss")
    daily_floor = Decimal(rv.daily_floor) if rv.daily_floor is not None else None
    max_floor = Decimal(rv.max_floor) if rv.max_floor is not None else None
    if dl is not None and daily_floor is not None and not paused:
        v = equity if dl["include_floating"] else cash
        if v <= daily_floor:
            return "tier3:daily_floor"
    if ml is not None and max_floor is not None and equity <= max_floor:
        return "tier3:max_floor"
    dw = rules.get("drawdown_warning")
    if dw is not None:
        checks: list[tuple[Decimal, Decimal, Decimal]] = []
        if dl is not None and daily_floor is not None and rv.daily_anchor is not None and not paused:
            checks.append((equity if dl["include_floating"] else cash, Decimal(rv.daily_anchor), daily_floor))
        if ml is not None and max_floor is not None:
            initial = Decimal(rv.initial)
            allowance = ml["amount"] if "amount" in ml else ml["pct"] * initial / HUNDRED
            checks.append((equity, max_floor + allowance, max_floor))
        for v, top, floor in checks:
            room = top - floor
            if room > 0 and (top - v) * HUNDRED / room >= dw["used_pct"]:
                return "tier2:warning_level"  # the evaluator knows whether it was already warned today
    return None


def evaluate_rules(
    bk: _Book,
    state: Mapping[str, Any],
    status: Status,
    now: datetime,
    cash: Decimal,
    equity: Decimal | None,
    open_positions: int,
) -> tuple[str | None, dict[str, Any] | None, Evaluator | None]:
    """Tier 2: ``RulesBridge.on_equity`` in memory on the stored state. Returns ``(candidate reason, new state,
    evaluator)``: a reason when the exact command must run; else the state to store (None: nothing to store)."""
    ev = Evaluator(bk.book, bk.phase, EngineState.from_json(state["engine"]))
    extras = dict(state.get("extras") or {})
    if ev.ended or status in TERMINAL:
        return None, None, None
    # RulesBridge.sync
    last = ev.s.last_t
    if last is not None and now > last and ev.cal.boundaries(last, now):
        return "day_boundary", None, None
    bal_equity = equity if equity is not None else money(cash)
    if ev.advance(now, lambda _b: (cash, bal_equity)):
        return "deadline", None, None
    wk = ev.rules.get("weekend_trading")
    if (
        last is not None
        and not ev.ended
        and wk is not None
        and not wk["hold_positions"]
        and weekend_holds(ev.rules, ev.cal, last, now, [("", "", "")])
    ):
        return "weekend", None, None
    sc = ev.phase.scaling
    if sc and status is Status.ACTIVE:
        started = datetime.fromisoformat(extras.get("cycle_started_at") or now.isoformat())
        if now >= started + timedelta(days=sc["every_days"]):
            return "scale_up", None, None
    if status is Status.DAY_PAUSED and not ev.s.day_paused:
        return "day_start", None, None
    if ev.ended:
        return "ended", None, None
    if equity is None:
        return None, None, None
    decisions = ev.on_equity(now, cash, equity)
    decisions += ev.check_pass(now, open_positions)
    if decisions or ev.ended:
        return "rules:" + ",".join(sorted({d.rule for d in decisions})), None, None
    if status is Status.DAY_PAUSED and not ev.s.day_paused:
        return "day_start", None, None
    return None, {"engine": ev.s.to_json(), "extras": extras}, ev


@dataclass(slots=True)
class _Extremes:
    """The engine fields (as stored, text) the extremes update and the day's statistics row need."""

    balance: str | None
    max_locked: str | None
    day: str | None
    warned: list[str] | None
    sod_balance: str | None
    sod_equity: str | None
    day_pnl: str | None
    day_closes: str | None
    trades_opened: str | None
    peak: str | None
    max_dd: str | None
    max_floor: str | None


def extremes_update(
    bk: _Book,
    rv: _RuleView,
    f: _Extremes,
    status: Status,
    now: datetime,
    cash: Decimal,
    equity: Decimal,
) -> tuple[str | None, dict[str, Any] | None, tuple[Any, ...] | None] | None:
    """Tier 2 without the evaluator: what ``RulesBridge.on_equity`` stores when a mark moves only the extremes (the
    day's high/low equity, the peak, the deepest drawdown, an intraday trailing floor), computed with the same
    Decimal operations as ``Evaluator._limits``/``_raise_floor``/``_warnings``.

    Only for a state ``quiet_reason`` cleared of every day boundary, deadline, weekend and scale-up (so
    ``advance`` only moves ``last_t``), whose stored balance is the account's cash (so nothing ``check_pass``
    reads moves); anything else returns None and the full evaluator decides. Returns ``(candidate reason, engine
    fields to set, daily_stats row without the account id)``: a reason when a limit or a warning would fire."""
    if rv.verdict is not None or status is Status.DAY_PAUSED or status in TERMINAL:
        return None
    last = _dt(rv.last_t)
    if last is None or last < bk.day_start or rv.initial is None or rv.day_high is None or rv.day_low is None:
        return None
    if f.balance is None or f.peak is None or f.max_dd is None or f.day is None or Decimal(f.balance) != cash:
        return None
    rules = bk.proto.rules
    initial = Decimal(rv.initial)
    hi = max(Decimal(rv.day_high), equity)
    lo = min(Decimal(rv.day_low), equity)
    peak = Decimal(f.peak)
    if equity > peak:
        peak = equity
    max_dd = Decimal(f.max_dd)
    if peak > 0:
        max_dd = max(max_dd, (peak - equity) * HUNDRED / peak)
    max_floor = Decimal(f.max_floor) if f.max_floor is not None else None
    locked = f.max_locked == "true"
    ml = rules.get("max_loss")
    allowance: Decimal | None = None
    if ml is not None:
        allowance = ml["amount"] if "amount" in ml else ml["pct"] * initial / HUNDRED
    if ml is not None and ml["mode"] == "intraday_trailing" and not locked:
        assert allowance is not None
        candidate = peak - allowance
        lock = ml.get("lock_at")
        if lock is None and "lock_at_offset" in ml:
            lock = initial + ml["lock_at_offset"]
        if lock is not None and candidate >= lock:
            max_floor = lock if max_floor is None else max(lock, max_floor)
            locked = True
        elif max_floor is None or candidate > max_floor:
            max_floor = money(candidate)
    paused = rv.day_paused == "true"
    daily_floor = Decimal(rv.daily_floor) if rv.daily_floor is not None else None
    dl = rules.get("max_daily_loss")
    fired: list[str] = []
    if dl is not None and dl["evaluation"] == "realtime" and not paused and daily_floor is not None:
        v = equity if dl["include_floating"] else cash
        if v <= daily_floor if dl["breach_on_touch"] else v < daily_floor:
            fired.append("max_daily_loss")
    if (
        ml is not None
        and ml["evaluation"] == "realtime"
        and max_floor is not None
        and (equity <= max_floor if ml["breach_on_touch"] else equity < max_floor)
    ):
        fired.append("max_loss")
    dw = rules.get("drawdown_warning")
    if not fired and dw is not None:
        checks: list[tuple[str, Decimal, Decimal, Decimal]] = []
        if dl is not None and daily_floor is not None and rv.daily_anchor is not None and not paused:
            checks.append(
                ("max_daily_loss", equity if dl["include_floating"] else cash, Decimal(rv.daily_anchor), daily_floor)
            )
        if ml is not None and max_floor is not None:
            assert allowance is not None
            checks.append(("max_loss", equity, max_floor + allowance, max_floor))
        warned = f.warned or []
        for rule, v, top, floor in checks:
            room = top - floor
            if room > 0 and (top - v) * HUNDRED / room >= dw["used_pct"] and f"{rule}|{f.day}" not in warned:
                fired.append("drawdown_warning")
    if fired:
        return "rules:" + ",".join(sorted(set(fired))), None, None
    patch: dict[str, Any] = {
        "balance": fmt(cash),
        "equity": fmt(equity),
        "last_t": iso(max(last, now)),
        "day_high_equity": fmt(hi),
        "day_low_equity": fmt(lo),
        "peak_equity": fmt(peak),
        "max_dd_pct": fmt(max_dd),
        "max_floor": fmt(max_floor) if max_floor is not None else None,
        "max_locked": locked,
    }
    day = date.fromisoformat(f.day)
    daily = (
        day,
        bk.proto.cal.start_of(day),
        money(Decimal(f.sod_balance or "0")),
        money(Decimal(f.sod_equity or "0")),
        money(hi),
        money(lo),
        money(Decimal(f.day_pnl)) if f.day_pnl is not None else money(ZERO),
        int(f.trades_opened or 0),
        int(f.day_closes or 0),
        money(daily_floor) if daily_floor is not None else None,
        money(max_floor) if max_floor is not None else None,
    )
    return None, patch, daily


def daily_row(account_id: uuid.UUID, ev: Evaluator, extras: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The ``daily_stats`` row ``RulesBridge._daily_stats`` would upsert for the evaluator's current day."""
    s = ev.s
    if s.day is None:
        return None
    day = s.day
    opened = (extras.get("trades_opened") or {}).get(day.isoformat(), 0)
    return (
        account_id,
        day,
        ev.cal.start_of(day),
        money(s.sod_balance),
        money(s.sod_equity),
        money(s.day_high_equity),
        money(s.day_low_equity),
        money(s.day_pnl.get(day.isoformat(), ZERO)),
        opened,
        s.day_closes.get(day.isoformat(), 0),
        money(s.daily_floor) if s.daily_floor is not None else None,
        money(s.max_floor) if s.max_floor is not None else None,
    )


# ---------------------------------------------------------------------------------------------- the command
@dataclass
class _Run:
    statements: int = 0
    accounts: int = 0
    marked: int = 0
    unchanged: int = 0
    ledger_rows: int = 0
    rule_states: int = 0
    daily_stats: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[uuid.UUID] = field(default_factory=list)


def mark_all_bulk(
    db: Any,
    clock: Clock,
    catalogue: Catalogue,
    prices: PriceSource,
    *,
    only: Iterable[uuid.UUID] | None = None,
    retries: int = 1,
    write_unchanged: bool = False,
    after_read: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Mark every live account holding positions (or those of ``only``) in bulk; see the module docstring.

    Returns ``{"accounts", "marked", "unchanged", "ledger_rows", "rule_states", "daily_stats", "candidates",
    "skipped", "statements", "seconds", "tiers"}``: ``candidates`` is a list of ``{"account_id", "reason"}`` the
    caller must hand to the exact per-account command; ``skipped`` the accounts a concurrent command changed or
    held locked after every retry (left to the next cycle). ``after_read`` (tests) runs between the read and the
    write. ``write_unchanged`` also rewrites accounts whose mark did not move (``marked_at`` only)."""
    t0 = time.perf_counter()
    run = _Run()
    now = clock.now()
    quotes: dict[str, Quote | None] = {}

    def quote(symbol: str) -> Quote | None:
        if symbol not in quotes:
            quotes[symbol] = prices.latest(symbol)
        return quotes[symbol]

    rate = rate_lookup(catalogue, quote)
    ids: list[uuid.UUID] | None = list(only) if only is not None else None
    first = True
    for attempt in range(retries + 1):
        if ids is not None and not ids:
            break
        skipped = _mark_once(db, run, now, catalogue, quote, rate, ids, write_unchanged, after_read if first else None)
        first = False
        if not skipped or attempt == retries:
            run.skipped = skipped
            break
        ids = skipped
    return {
        "accounts": run.accounts,
        "marked": run.marked,
        "unchanged": run.unchanged,
        "ledger_rows": run.ledger_rows,
        "rule_states": run.rule_states,
        "daily_stats": run.daily_stats,
        "candidates": [{"account_id": c.account_id, "reason": c.reason} for c in run.candidates],
        "skipped": run.skipped,
        "statements": run.statements,
        "seconds": time.perf_counter() - t0,
        "tiers": run.tiers,
    }


class _KeyCache:
    """Per database: the (policy digest, rulebook digest) of every account row version seen, and each distinct
    policy and rulebook parsed once. An account's policy and rulebook are frozen when it is opened; a row that
    changes gets a new ``xmin`` and is looked up again, so a stale entry can never be used."""

    def __init__(self) -> None:
        self.keys: dict[tuple[bytes, int], tuple[str, str | None, str, str]] = {}
        self.policies: dict[str, ExecutionPolicy] = {}
        self.rulebooks: dict[str, Rulebook] = {}

    def resolve(self, c: Any, run: _Run, rows: Sequence[tuple[bytes, int]]) -> None:
        """Make sure every (account id bytes, row version) of ``rows`` has its keys, policy and rulebook."""
        keys = self.keys
        misses = [uuid.UUID(bytes=b) for b, x in rows if (b, x) not in keys]
        if not misses:
            return
        cur = c.cursor(row_factory=tuple_row)
        found = cur.execute(_KEYS, {"ids": _blob(misses)}).fetchall()
        run.statements += 1
        if len(keys) > 2_000_000:
            keys.clear()
        for aid, ax, pkey, rkey, phase, mode in found:
            keys[(aid.bytes, int(ax))] = (pkey, rkey, phase, mode)
        if any(f[2] not in self.policies for f in found):
            for k, pol in cur.execute(_POLICIES, {"ids": _blob(misses)}).fetchall():
                self.policies.setdefault(k, ExecutionPolicy.from_json(pol))
            run.statements += 1
        if any(f[3] is not None and f[3] not in self.rulebooks for f in found):
            for k, rb in cur.execute(_RULEBOOKS, {"ids": _blob(misses)}).fetchall():
                if k not in self.rulebooks:
                    self.rulebooks[k] = parse_rulebook(rb, where="bulk mark")
            run.statements += 1


_CACHES: weakref.WeakKeyDictionary[Any, _KeyCache] = weakref.WeakKeyDictionary()


def _cache_for(db: Any) -> _KeyCache:
    try:
        cache = _CACHES.get(db)
        if cache is None:
            cache = _CACHES[db] = _KeyCache()
        return cache
    except TypeError:  # an object that cannot be weakly referenced: no reuse across calls
        return _KeyCache()


def _mark_once(
    db: Any,
    run: _Run,
    now: datetime,
    catalogue: Catalogue,
    quote: Callable[[str], Quote | None],
    rate: Callable[[str, str], Decimal | None],
    ids: list[uuid.UUID] | None,
    write_unchanged: bool,
    after_read: Callable[[], None] | None,
) -> list[uuid.UUID]:
    """One read (the vectorized pre-pass, then the exact path for what it could not prove) and one write."""
    statuses = [s.value for s in MARKED]
    only = "" if ids is None else " AND a.id IN " + _IDS
    symbols = catalogue.symbols()
    params: dict[str, Any] = {"statuses": statuses, "ids": None if ids is None else _blob(ids), "symbols": symbols}
    cache = _cache_for(db)
    books: dict[tuple[str, str], _Book] = {}

    def book_of(rkey: str, phase: str) -> _Book:
        bk = books.get((rkey, phase))
        if bk is None:
            rb = cache.rulebooks[rkey]
            proto = Evaluator(rb, phase)
            bk = books[(rkey, phase)] = _Book(rb, phase, proto, proto.cal.start_of(proto.cal.day_of(now)))
        return bk

    fast: _FastRows | None = None
    marks: list[Marked] = []
    with db.read() as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        acc = bf.read_columns(c, bf.FAST_ACCOUNTS.format(only=only), params, bf.ACCOUNT_COLS)
        pos = bf.read_columns(c, bf.FAST_POSITIONS.format(only=only), params, bf.POSITION_COLS)
        run.statements += 2
        n = len(acc["id"])
        if n:
            raw = acc["id"].tobytes()
            idb = [raw[i : i + 16] for i in range(0, 16 * n, 16)]
            keyed = list(zip(idb, acc["ax"].tolist(), strict=True))
            cache.resolve(c, run, keyed)
            got = [cache.keys[k] for k in keyed]
            pol_ix: dict[str, int] = {}
            book_ix: dict[tuple[str, str], int] = {}
            pol_idx = np.fromiter((pol_ix.setdefault(g[0], len(pol_ix)) for g in got), dtype=np.intp, count=n)
            book_idx = np.fromiter(
                (
                    book_ix.setdefault((g[1], g[2]), len(book_ix)) if g[1] is not None and g[3] == "challenge" else -1
                    for g in got
                ),
                dtype=np.intp,
                count=n,
            )
            facts = []
            for rkey, phase in book_ix:
                bk = book_of(rkey, phase)
                facts.append(bf.book_facts(bk.proto.rules, bk.proto.cal, bk.proto.phase.scaling, now))
            policies = [cache.policies[k] for k in pol_ix]
            v = bf.value(acc, pos, symbols, catalogue, quote, rate, policies, pol_idx)
            _settle_ambiguous(acc, v, symbols, catalogue, quote, rate, policies, pol_idx)
            pp = bf.judge(acc, v, book_idx, facts, statuses, now)
            run.accounts += n
            nfast = int(pp.fast.sum())
            if nfast:
                run.tiers["quiet"] = run.tiers.get("quiet", 0) + nfast
                keep = pp.fast & (pp.changed | write_unchanged)
                run.unchanged += nfast - int(keep.sum())
                seq = acc["seq"][keep].astype(np.int64)
                fast = _FastRows(
                    acc["id"][keep],
                    [
                        seq,
                        acc["bx"][keep].astype(np.int64),
                        acc["rx"][keep].astype(np.int64),
                        v.eq_c[keep],
                        v.ur_c[keep],
                        v.mg_c[keep],
                        pp.hwm_c[keep],
                        seq,
                    ],
                )
            slow = np.nonzero(pp.exact)[0]
            if len(slow):
                slow_ids = [uuid.UUID(bytes=idb[i]) for i in slow.tolist()]
                proven: dict[uuid.UUID, tuple[Decimal, Decimal, Decimal]] = {}
                sure = v.proven[slow] & v.safe[slow] & (pp.hwm_c[slow] == acc["hwm0"][slow])
                for j in np.nonzero(sure)[0].tolist():
                    i = int(slow[j])
                    proven[slow_ids[j]] = (_dec(v.eq_c[i]), _dec(v.ur_c[i]), _dec(v.mg_c[i]))
                marks = _exact(c, run, now, catalogue, quote, rate, slow_ids, proven, statuses, cache, book_of)
    if after_read is not None:
        after_read()
    todo = [m for m in marks if m.changed or write_unchanged]
    run.unchanged += len(marks) - len(todo)
    if not todo and (fast is None or not len(fast.ids)):
        return []
    return _write(db, run, now, todo, fast)


def _dec(cents: Any) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


def _settle_ambiguous(
    acc: Mapping[str, Any],
    v: bf.Valued,
    symbols: Sequence[str],
    catalogue: Catalogue,
    quote: Callable[[str], Quote | None],
    rate: Callable[[str, str], Decimal | None],
    policies: Sequence[ExecutionPolicy],
    pol_idx: Any,
) -> None:
    """The accounts whose float valuation was too close to a half cent (a margin of exactly x.xx5 is common):
    ``valuate`` on their exact positions (read as integers of 1e-10, so the same Decimals), the same numbers the
    exact path computes; their cents become proven."""
    amb = np.nonzero(~v.proven & ~v.bad)[0]
    if not len(amb):
        return
    order = np.argsort(v.row, kind="stable")
    rows = v.row[order]
    starts = np.searchsorted(rows, amb).tolist()
    ends = np.searchsorted(rows, amb, side="right").tolist()
    insts: dict[str, Instrument] = {}
    rates: dict[str, Callable[[str], Decimal | None]] = {}
    for i, s0, s1 in zip(amb.tolist(), starts, ends, strict=True):
        pos = []
        for j in order[s0:s1].tolist():
            symbol = symbols[int(v.sym[j])]
            if symbol not in insts:
                inst = catalogue.get(symbol)
                assert inst is not None  # an unknown symbol is "bad"
                insts[symbol] = inst
            pos.append(
                Position(
                    symbol,
                    Decimal(int(v.qty[j])).scaleb(-bf.SCALE_DIGITS),
                    Decimal(int(v.avg[j])).scaleb(-bf.SCALE_DIGITS),
                )
            )
        policy = policies[int(pol_idx[i])]
        val = valuate(_dec(acc["cash"][i]), pos, insts, quote, _account_rate(rates, rate, policy.currency))
        equity = money(val.equity)
        if val.missing or equity == 0:
            continue
        v.eq_c[i] = int(equity.scaleb(2))
        v.ur_c[i] = int(money(val.unrealized).scaleb(2))
        v.mg_c[i] = int(margin_of(val, policy).scaleb(2))
        v.proven[i] = True
        v.safe[i] = val.equity > policy.liquidation_equity


@dataclass
class _FastRows:
    """The rows the pre-pass proved, as arrays: ids (uuid bytes) and the int8 columns of ``bf.FAST_COLS[1:]``."""

    ids: Any
    cols: list[Any]


def _exact(
    c: Any,
    run: _Run,
    now: datetime,
    catalogue: Catalogue,
    quote: Callable[[str], Quote | None],
    rate: Callable[[str, str], Decimal | None],
    ids: list[uuid.UUID],
    proven: Mapping[uuid.UUID, tuple[Decimal, Decimal, Decimal]],
    statuses: list[str],
    cache: _KeyCache,
    book_of: Callable[[str, str], _Book],
) -> list[Marked]:
    """The exact path for the accounts the pre-pass could not prove: their rows read again as text and Decimal (in
    the same snapshot), valued exactly (or with the pre-pass's proven cents: the same numbers), judged by
    ``quiet_reason`` and the tier 2 evaluators."""
    params: dict[str, Any] = {"statuses": statuses, "ids": _blob(ids)}
    only = " AND a.id IN " + _IDS
    with c.pipeline():
        acc_cur = c.cursor(row_factory=tuple_row)
        acc_cur.execute(_ACCOUNTS.format(only=only), params)
        pos_cur = c.cursor(row_factory=tuple_row)
        pos_cur.execute(_POSITIONS.format(only=only), params)
    run.statements += 2
    accounts = acc_cur.fetchall()
    positions: dict[uuid.UUID, list[Position]] = {}
    for aid, symbol, qty, avg in pos_cur.fetchall():
        positions.setdefault(aid, []).append(Position(symbol, qty, avg))
    cache.resolve(c, run, [(r[0].bytes, int(r[4])) for r in accounts])
    insts: dict[str, Instrument] = {}
    rates: dict[str, Callable[[str], Decimal | None]] = {}
    marks: list[Marked] = []
    tier2: list[tuple[Marked, _Book, Status, Decimal, Decimal | None, int, _RuleView]] = []
    for row in accounts:
        (aid, status_s, mode, phase, ax, _u, cash, eq0, ur0, mg0, hwm0, seq, bx, rx) = row[:14]
        pos = positions.get(aid, [])
        pkey, rkey, _phase, _mode = cache.keys[(aid.bytes, int(ax))]
        policy = cache.policies[pkey]
        for p in pos:
            if p.symbol not in insts:
                inst = catalogue.get(p.symbol)
                if inst is None:
                    raise ValueError(f"unknown symbol {p.symbol!r} on account {aid}")
                insts[p.symbol] = inst
        status = Status(status_s)
        pv = proven.get(aid)
        val: Valuation | None = None
        if pv is None:
            val = valuate(cash, pos, insts, quote, _account_rate(rates, rate, policy.currency))
            missing = bool(val.missing)
            if not missing and val.equity <= policy.liquidation_equity:
                run.candidates.append(Candidate(aid, "safety_net"))
                _count(run, "candidate")
                continue
            equity = money(val.equity)
            unrealized = money(val.unrealized)
            margin = margin_of(val, policy)
        else:
            missing = False
            equity, unrealized, margin = pv
        hwm = hwm0 if missing else max(hwm0, equity)
        m = Marked(
            aid,
            seq,
            bx,
            rx,
            equity,
            unrealized,
            margin,
            hwm,
            seq,
            equity != eq0 or unrealized != ur0 or margin != mg0 or hwm != hwm0,
        )
        if hwm > hwm0:
            if val is None:
                val = valuate(cash, pos, insts, quote, _account_rate(rates, rate, policy.currency))
            m.new_seq = seq + 1
            m.ledger = (cash, equity, json.dumps(mark_evidence(val)))
        if rx is not None and mode == "challenge" and rkey is not None:
            bk = book_of(rkey, phase)
            rv = _RuleView(*row[14:])
            why = quiet_reason(bk, rv, status, now, cash, None if missing else equity)
            if why is not None and why.startswith("tier3:"):
                run.candidates.append(Candidate(aid, why[6:]))
                _count(run, "candidate")
                continue
            if why is not None:
                npos = sum(1 for p in pos if p.quantity != 0)
                tier2.append((m, bk, status, cash, None if missing else equity, npos, rv))
                _count(run, why)
                continue
        _count(run, "quiet")
        marks.append(m)
    if tier2:
        _tier2(c, run, now, tier2, marks)
    return marks


def _tier2(
    c: Any,
    run: _Run,
    now: datetime,
    tier2: Sequence[tuple[Marked, _Book, Status, Decimal, Decimal | None, int, _RuleView]],
    marks: list[Marked],
) -> None:
    """Moved extremes: the exact pure update when only the extremes can change (``extremes_update``), else the
    full evaluator on the stored state (``evaluate_rules``)."""
    fields = {
        r[0]: r[1:]
        for r in c.cursor(row_factory=tuple_row)
        .execute(_EXTREMES, {"ids": _blob(t[0].account_id for t in tier2)})
        .fetchall()
    }
    run.statements += 1
    full: list[tuple[Marked, _Book, Status, Decimal, Decimal | None, int]] = []
    for m, bk, st, cash_t, equity_t, npos, rv in tier2:
        f = fields.get(m.account_id)
        out = None
        if f is not None and equity_t is not None:
            out = extremes_update(bk, rv, _Extremes(*f), st, now, cash_t, equity_t)
        if out is None:
            full.append((m, bk, st, cash_t, equity_t, npos))
            continue
        reason, patch, daily = out
        if reason is not None:
            run.candidates.append(Candidate(m.account_id, reason))
            _count(run, "candidate")
            continue
        if patch is not None:
            m.rule_patch = json.dumps(patch)
            m.daily = None if daily is None else (m.account_id, *daily)
            m.changed = True
        marks.append(m)
    if not full:
        return
    states = {
        r["account_id"]: r["state"]
        for r in c.execute(_STATES, {"ids": _blob(t[0].account_id for t in full)}).fetchall()
    }
    run.statements += 1
    for m, bk, st, cash_t, equity_t, npos in full:
        reason, new_state, ev = evaluate_rules(bk, states[m.account_id], st, now, cash_t, equity_t, npos)
        if reason is not None:
            run.candidates.append(Candidate(m.account_id, reason))
            _count(run, "candidate")
            continue
        if new_state is not None and ev is not None:
            m.rule_state = json.dumps(new_state, sort_keys=True)
            m.daily = daily_row(m.account_id, ev, new_state["extras"])
            m.changed = True
        marks.append(m)


def _account_rate(
    rates: dict[str, Callable[[str], Decimal | None]], rate: Callable[[str, str], Decimal | None], ccy: str
) -> Callable[[str], Decimal | None]:
    fn = rates.get(ccy)
    if fn is None:

        def fn(quote_ccy: str) -> Decimal | None:
            return rate(quote_ccy, ccy)

        rates[ccy] = fn
    return fn


def _count(run: _Run, key: str) -> None:
    k = key.split(":")[0]
    run.tiers[k] = run.tiers.get(k, 0) + 1


_TEMP = """
CREATE TEMP TABLE bulk_mark_rows (
  id uuid PRIMARY KEY, seq bigint, bx bigint, rx bigint, equity numeric, unrealized numeric, margin numeric,
  hwm numeric, eq_c bigint, ur_c bigint, mg_c bigint, hwm_c bigint, new_seq bigint
) ON COMMIT DROP
"""
_COLS = "id, seq, bx, rx, equity, unrealized, margin, hwm, new_seq"
# What only the exact path's rows carry (a ledger row, a rule state, the day's statistics): a table of its own, so
# the statement joins only those few rows (and leaves the part out when there are none).
_TEMP_EXTRA = """
CREATE TEMP TABLE bulk_mark_extra (
  id uuid PRIMARY KEY, new_seq bigint, l_cash numeric, l_equity numeric, l_evidence text, r_state text, r_patch text,
  d_day date, d_start timestamptz, d_sb numeric, d_se numeric, d_hi numeric, d_lo numeric, d_pnl numeric,
  d_opened int, d_closed int, d_df numeric, d_mf numeric
) ON COMMIT DROP
"""
_EXTRA_COLS = (
    "id, new_seq, l_cash, l_equity, l_evidence, r_state, r_patch, d_day, d_start, d_sb, d_se, d_hi, d_lo, d_pnl,"
    " d_opened, d_closed, d_df, d_mf"
)
# Lock (in id order) every account not held by a running command; a statement of its own, so the write's snapshot
# is after every lock was granted.
_LOCK = (
    "CREATE TEMP TABLE bulk_mark_locked ON COMMIT DROP AS SELECT a.id FROM accounts a"
    " WHERE a.id IN (SELECT id FROM bulk_mark_rows) ORDER BY a.id FOR UPDATE OF a SKIP LOCKED"
)
_UPD = """
WITH upd AS (
  UPDATE balances b SET equity = coalesce(u.equity, u.eq_c * 0.01),
         unrealized_pnl = coalesce(u.unrealized, u.ur_c * 0.01), margin_used = coalesce(u.margin, u.mg_c * 0.01),
         high_watermark = coalesce(u.hwm, u.hwm_c * 0.01), ledger_seq = u.new_seq, marked_at = %(now)s,
         updated_at = %(now)s
  FROM bulk_mark_rows u
  WHERE u.id IN (SELECT id FROM bulk_mark_locked) AND b.account_id = u.id AND b.ledger_seq = u.seq
    AND b.xmin = u.bx::text::xid
    AND (u.rx IS NULL OR u.rx < 0
         OR EXISTS (SELECT 1 FROM rule_states r WHERE r.account_id = u.id AND r.xmin = u.rx::text::xid))
  RETURNING b.account_id
)"""
_EXTRA_CTES = """, led AS (
  INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, equity_after, evidence, created_at)
  SELECT x.id, x.new_seq, 'mark_to_market', 'none', 0, x.l_cash, x.l_equity, x.l_evidence::jsonb, %(now)s
  FROM bulk_mark_extra x JOIN upd ON upd.account_id = x.id WHERE x.l_evidence IS NOT NULL
  ORDER BY x.id
  RETURNING 1
), rs AS (
  UPDATE rule_states r SET updated_at = %(now)s, state = CASE WHEN x.r_patch IS NOT NULL
           THEN jsonb_set(r.state, '{engine}', (r.state->'engine') || x.r_patch::jsonb) ELSE x.r_state::jsonb END
  FROM bulk_mark_extra x JOIN upd ON upd.account_id = x.id
  WHERE r.account_id = x.id AND (x.r_state IS NOT NULL OR x.r_patch IS NOT NULL)
  RETURNING 1
), ds AS (
  INSERT INTO daily_stats (account_id, trading_day, day_start, start_balance, start_equity, high_equity, low_equity,
                           closed_pnl, trades_opened, trades_closed, daily_floor, max_floor, updated_at)
  SELECT x.id, x.d_day, x.d_start, x.d_sb, x.d_se, x.d_hi, x.d_lo, x.d_pnl, x.d_opened, x.d_closed, x.d_df, x.d_mf,
         %(now)s
  FROM bulk_mark_extra x JOIN upd ON upd.account_id = x.id WHERE x.d_day IS NOT NULL
  ON CONFLICT (account_id, trading_day) DO UPDATE SET
    high_equity = EXCLUDED.high_equity, low_equity = EXCLUDED.low_equity, closed_pnl = EXCLUDED.closed_pnl,
    trades_opened = EXCLUDED.trades_opened, trades_closed = EXCLUDED.trades_closed,
    daily_floor = EXCLUDED.daily_floor, max_floor = EXCLUDED.max_floor, updated_at = EXCLUDED.updated_at
  RETURNING 1
)"""
_RESULT = """
SELECT (SELECT count(*) FROM upd) AS updated, {extra},
       (SELECT coalesce(array_agg(u.id), '{{}}') FROM bulk_mark_rows u
         WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.account_id = u.id)) AS skipped
"""
_WRITE = (
    _UPD
    + _EXTRA_CTES
    + _RESULT.format(
        extra="(SELECT count(*) FROM led) AS ledger_rows, (SELECT count(*) FROM rs) AS rule_states,"
        " (SELECT count(*) FROM ds) AS daily_stats"
    )
)
_WRITE_PLAIN = _UPD + _RESULT.format(extra="0 AS ledger_rows, 0 AS rule_states, 0 AS daily_stats")


def _write(db: Any, run: _Run, now: datetime, todo: Sequence[Marked], fast: _FastRows | None) -> list[uuid.UUID]:
    """Every row to write goes into a temporary table (the proven rows with one binary COPY built by numpy, the
    exact path's with one text COPY, their ledger rows, rule states and daily statistics into a second table); then
    the accounts not held by a running command are locked (SKIP LOCKED), and one statement writes every account
    still as it was read."""
    none11 = (None,) * 11
    extra = [m for m in todo if m.ledger or m.rule_state or m.rule_patch or m.daily]
    # The exact path's rows go with the proven ones when their numbers are whole cents (always, but for a stored
    # high-water mark that is not); the rest as text.
    cents: list[tuple[Any, ...]] = []
    text: list[Marked] = []
    for m in todo:
        c4 = [x.scaleb(2) for x in (m.equity, m.unrealized, m.margin, m.hwm)]
        if all(x == x.to_integral_value() and abs(x) < bf.MAX_CENTS for x in c4):
            cents.append((m.account_id.bytes, m.seq, int(m.bx), -1 if m.rx is None else int(m.rx), *map(int, c4)))
            cents[-1] += (m.new_seq,)
        else:
            text.append(m)
    if cents:
        more = _FastRows(
            np.frombuffer(b"".join(r[0] for r in cents), dtype="S16"),
            [np.array([r[k] for r in cents], dtype=np.int64) for k in range(1, 9)],
        )
        fast = (
            more
            if fast is None
            else _FastRows(
                np.concatenate([fast.ids, more.ids]),
                [np.concatenate(ab) for ab in zip(fast.cols, more.cols, strict=True)],
            )
        )
    with db.tx() as c:
        c.execute(_TEMP)
        run.statements += 1
        if fast is not None and len(fast.ids):
            cols = ", ".join(bf.FAST_COLS)
            with c.cursor().copy(f"COPY bulk_mark_rows ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(bf.binary_rows(fast.ids, fast.cols))
            run.statements += 1
        if text:
            with c.cursor().copy(f"COPY bulk_mark_rows ({_COLS}) FROM STDIN") as cp:
                for m in text:
                    cp.write_row((m.account_id, m.seq, m.bx, m.rx, m.equity, m.unrealized, m.margin, m.hwm, m.new_seq))
            run.statements += 1
        if extra:
            c.execute(_TEMP_EXTRA)
            with c.cursor().copy(f"COPY bulk_mark_extra ({_EXTRA_COLS}) FROM STDIN") as cp:
                for m in extra:
                    led = m.ledger
                    cp.write_row(
                        (
                            m.account_id,
                            m.new_seq,
                            *(led if led is not None else (None, None, None)),
                            m.rule_state,
                            m.rule_patch,
                            *(m.daily[1:] if m.daily is not None else none11),
                        )
                    )
            run.statements += 2
        c.execute(_LOCK)
        row = c.execute(_WRITE if extra else _WRITE_PLAIN, {"now": now}).fetchone()
        run.statements += 2
    skipped = list(row["skipped"])
    run.marked += int(row["updated"])
    run.ledger_rows += int(row["ledger_rows"])
    run.rule_states += int(row["rule_states"])
    run.daily_stats += int(row["daily_stats"])
    return skipped


def mark_all_then_exact(service: Any, **kw: Any) -> dict[str, Any]:
    """What ``ExecutionService.mark_all`` should do: the bulk mark, then the exact per-account command for only the
    candidates (each in its own transaction; a failure is logged and audited as ``mark_to_market_failed`` and the
    others go on). Returns ``{"marked", "failed", "accounts", "bulk": <mark_all_bulk's result>}``."""
    res = mark_all_bulk(service.db, service.clock, service.catalogue, service.prices, **kw)
    # Marked = valued at the latest prices: written, or found unchanged since the last write (nothing to store).
    ok: int = res["marked"] + res["unchanged"]
    failed: list[dict[str, str]] = []
    for cand in res["candidates"]:
        acc = cand["account_id"]
        try:
            service.mark_to_market(acc)
            ok += 1
        except Exception as exc:
            failed.append({"account_id": str(acc), "error": f"{type(exc).__name__}: {exc}"})
            service._log("mark_to_market_failed", account_id=str(acc), error=repr(exc))
            service._record_failure(acc, "mark_to_market", exc)
    return {"marked": ok, "failed": failed, "accounts": res["accounts"], "bulk": res}
