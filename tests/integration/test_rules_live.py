"""The rules engine inside the live execution service, on a real PostgreSQL, without HTTP.

- A hypothesis state machine drives random quotes, orders, closes, marks and clock jumps (with the day roll)
  through accounts on preset rulebooks. After every step: every stored verdict (breach, pass) re-derives from
  its own evidence and its ``inputs_hash`` is the hash of what was stored; each account's status agrees with
  its verdict (failed => flat, passed => the next phase's account exists); trailing floors never fell; and the
  balances are the fold of the ledger.
- The day boundary on both DST days of America/New_York: a position carried over the 17:00 day start is
  checked against the new day's floor at the boundary instant itself (23- and 25-hour days).
- A trailing floor follows the highest equity, never falls, and locks exactly at the lock.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from propdesk.clock import ManualClock
from propdesk.db.database import Database
from propdesk.domain.errors import IllegalTransition
from propdesk.domain.instruments import DEFAULT_CATALOGUE, Instrument
from propdesk.domain.lifecycle import TERMINAL, Status, Trigger
from propdesk.domain.money import fmt, money
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.domain.rules.rederive import rederive
from propdesk.domain.rules.rulebook import Rulebook
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore
from propdesk.rulebooks import load_rulebook, parse_text

pytestmark = pytest.mark.integration

D = Decimal


# ---------------------------------------------------------------------------------------------- helpers
def inst(symbol: str) -> Instrument:
    i = DEFAULT_CATALOGUE.get(symbol)
    assert i is not None
    return i


def on_grid(symbol: str, px: Decimal) -> Decimal:
    return px.quantize(D(1).scaleb(-inst(symbol).price_precision))


def policy_for(starting_balance: Decimal, **kw: Any) -> ExecutionPolicy:
    """Generous execution limits, so the rulebook is what decides."""
    values: dict[str, Any] = {
        "starting_balance": starting_balance,
        "max_notional": D(10) ** 9,
        "max_position_equity_pct": D(100000),
        "max_leverage": D(200),
    }
    values.update(kw)
    return ExecutionPolicy(**values)


def open_on(service: ExecutionService, ref: str | Rulebook, **policy: Any) -> uuid.UUID:
    """An active challenge account on a rulebook (a preset reference such as ``classic-2step@10k``, or a book)."""
    book = load_rulebook(ref) if isinstance(ref, str) else ref
    acc, created = service.create_account(
        CreateAccount(
            owner_id=f"live-{uuid.uuid4().hex[:8]}",
            policy=policy_for(book.starting_balance, **policy),
            rulebook=book.to_json(),
            rulebook_id=book.id,
            rulebook_version=book.version,
            start=True,
        )
    )
    assert created
    return acc["id"]  # type: ignore[no-any-return]


def rows(db: Database, query: str, *args: Any) -> list[dict[str, Any]]:
    with db.read() as c:
        return c.execute(query, args).fetchall()  # type: ignore[no-any-return]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def stored_decision(v: dict[str, Any]) -> dict[str, Any]:
    """A violations row in the shape the engine hashed and ``rederive`` reads (``Decision.to_json`` + kind)."""
    d: dict[str, Any] = {"kind": v["kind"], "action": v["action"], "rule": v["rule"], "at": iso(v["at"])}
    if v["kind"] in ("breach", "reject"):
        d["value"] = fmt(money(v["value"])) if v["value"] is not None else None
        d["limit"] = fmt(money(v["limit_value"])) if v["limit_value"] is not None else None
    d["evidence"] = v["evidence"]
    return d


def recomputed_hash(v: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the decision, as ``execution.rules.inputs_hash`` computes it."""
    body = json.dumps(stored_decision(v), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def check_verdicts(db: Database, accounts: list[uuid.UUID]) -> int:
    """Every stored violation of ``accounts`` hashes to its inputs_hash; every breach and pass re-derives.
    Returns how many verdicts were re-derived."""
    checked = 0
    for v in rows(db, "SELECT * FROM violations WHERE account_id = ANY(%s) ORDER BY id", accounts):
        assert v["inputs_hash"] == recomputed_hash(v), v
        if v["kind"] in ("breach", "pass"):
            d = stored_decision(v)
            agrees, why = rederive(
                {
                    "rule": d["rule"],
                    "value": v["value"],
                    "limit": v["limit_value"],
                    "at": d["at"],
                    "evidence": d["evidence"],
                    "action": d["action"],
                }
            )
            assert agrees, (why, v)
            checked += 1
    return checked


def check_statuses(db: Database, accounts: list[uuid.UUID]) -> None:
    """Each account's status agrees with its verdict and its positions."""
    for a in rows(
        db,
        "SELECT a.id, a.status, a.rulebook, a.phase, r.state FROM accounts a LEFT JOIN rule_states r"
        " ON r.account_id = a.id WHERE a.id = ANY(%s)",
        accounts,
    ):
        status = Status(a["status"])
        verdict = a["state"]["engine"]["verdict"] if a["state"] else None
        kinds = {
            (v["kind"], v["action"])
            for v in rows(db, "SELECT kind, action FROM violations WHERE account_id=%s", a["id"])
        }
        positions = rows(db, "SELECT symbol FROM positions WHERE account_id=%s", a["id"])
        resting = rows(db, "SELECT id FROM orders WHERE account_id=%s AND status='open'", a["id"])
        children = rows(db, "SELECT phase, status FROM accounts WHERE parent_account_id=%s", a["id"])
        if status in TERMINAL:
            assert positions == [] and resting == [], (a, positions, resting)
        expected = {"failed": Status.FAILED, "expired": Status.EXPIRED, "passed": Status.PASSED}
        if verdict is not None:
            assert status is expected[verdict], (a["id"], status, verdict)
        if status is Status.FAILED:
            assert verdict == "failed" and any(k == "breach" and act == "fail" for k, act in kinds), kinds
        if status is Status.EXPIRED:
            assert verdict == "expired" and ("breach", "expire") in kinds, kinds
        if status is Status.PASSED:
            assert verdict == "passed" and ("pass", "pass") in kinds, kinds
            phases = [p["id"] for p in a["rulebook"]["phases"]]
            nxt = phases[phases.index(a["phase"]) + 1] if phases.index(a["phase"]) + 1 < len(phases) else None
            if nxt is not None:
                assert [c["phase"] for c in children] == [nxt], (a["id"], children)
        else:
            assert children == [], (a["id"], status, children)


# ---------------------------------------------------------------------------------------------- the property
# A short plan besides the presets, so that a dozen steps can pass phases too (and open the next ones), with a
# closed-balance trailing floor that locks, a daily anchor on max(balance, equity), inactivity, and per-trade
# consistency in the funded phase.
QUICK = """
id: live-quick
starting_balance: "10000"
timezone: Europe/Prague
rules:
  max_daily_loss: {pct: 3, base: initial_balance, anchor: start_of_day_max_balance_equity}
  max_loss: {pct: 6, mode: closed_balance_trailing, lock_at_offset: "0"}
  drawdown_warning: {used_pct: 60}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 2}, min_trading_days: {days: 1}, inactivity: {days: 5}}
  - id: phase_2
    rules: {profit_target: {pct: 2}}
  - id: funded
    rules:
      consistency: {mode: per_trade, max_share_pct: 60, applies_to: payout, action: flag}
"""
BOOKS = ["classic-2step@10k", "one-step-eod@25k", "futures-trailing@50k", "daily-anchor-max@5k", "live-quick"]
START_MIDS = {"EURUSD": D("1.10000"), "XAUUSD": D("2000.00")}
SYMBOLS = sorted(START_MIDS)
# Position sizes in units of 1% of the starting balance per 1% price move; price moves in basis points.
SIZES = [1, 2, 4, 8]
MOVES = [-150, -80, -40, -15, -5, 5, 15, 40, 80, 150]
# A clock jump, in hours (with the day roll after it): within the day, over one or two day starts, or far
# enough for a time limit to expire.
JUMPS = [1, 5, 13, 23, 25, 49, 24 * 10]


def book_for(ref: str) -> Any:
    return parse_text(QUICK, "live-quick") if ref == "live-quick" else load_rulebook(ref)


@pytest.mark.timeout(180)
def test_every_live_verdict_re_derives_from_its_evidence_and_statuses_agree(
    database: Database, quotes: QuoteStore, clock: ManualClock
) -> None:
    failures: list[tuple[str, dict[str, Any]]] = []
    service = ExecutionService(
        database, clock, DEFAULT_CATALOGUE, quotes, log=lambda event, **kw: failures.append((event, kw))
    )
    totals = {"verdicts": 0, "examples": 0, "steps": 0}

    class LiveRules(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.accounts: list[uuid.UUID] = []
            self.mids = dict(START_MIDS)
            self.spread_ticks = 2
            self.floors: dict[uuid.UUID, Decimal] = {}
            self.initial = D(10000)

        # ------------------------------------------------------------ helpers
        @property
        def acc(self) -> uuid.UUID:
            return self.accounts[-1]

        def quote(self, symbol: str) -> Quote:
            mid = self.mids[symbol]
            half = inst(symbol).tick_size * self.spread_ticks / 2
            stored = quotes.put(Quote(symbol, on_grid(symbol, mid - half), on_grid(symbol, mid + half), clock.now()))
            assert stored is not None
            return stored

        def move(self, symbol: str, bp: int, seconds: int) -> None:
            clock.advance(seconds)
            self.mids[symbol] = on_grid(symbol, self.mids[symbol] * (1 + D(bp) / 10000))
            service.on_quote(self.quote(symbol))

        def live(self) -> list[uuid.UUID]:
            return [
                r["id"]
                for r in rows(
                    database,
                    "SELECT id FROM accounts WHERE id = ANY(%s) AND status <> ALL(%s)",
                    self.accounts,
                    [s.value for s in TERMINAL],
                )
            ]

        def held(self) -> list[str]:
            return [
                r["symbol"]
                for r in rows(database, "SELECT symbol FROM positions WHERE account_id=%s ORDER BY symbol", self.acc)
            ]

        def submit(self, symbol: str, side: Side, size: int, sl_bp: int | None) -> None:
            clock.advance(1)
            for s in SYMBOLS:  # fresh quotes at the current mids
                self.quote(s)
            i = inst(symbol)
            # ``size`` percent of the starting balance per 1% move of the price.
            lots = (self.initial * size / (self.mids[symbol] * i.contract_size)).quantize(i.lot_step)
            lots = min(max(i.min_lot, lots), i.max_lot)
            sl = on_grid(symbol, self.mids[symbol] * (1 - D(side.sign * sl_bp) / 10000)) if sl_bp else None
            service.submit_order(self.acc, OrderRequest(symbol, side, lots, stop_loss=sl))

        # ------------------------------------------------------------ lifecycle of an example
        @initialize(
            ref=st.sampled_from(BOOKS),
            spread=st.integers(min_value=0, max_value=3),
            side=st.sampled_from([Side.BUY, Side.SELL]),
            size=st.sampled_from(SIZES),
        )
        def open_account(self, ref: str, spread: int, side: Side, size: int) -> None:
            self.spread_ticks = spread  # an odd spread puts the mid between ticks: sub-cent equity
            clock.advance(3600)
            for s in SYMBOLS:
                self.quote(s)
            book = book_for(ref)
            self.accounts.append(open_on(service, book, fee_bps=D(2)))
            self.initial = book.starting_balance
            totals["examples"] += 1
            self.submit("EURUSD", side, size, None)  # every example starts with a position

        def teardown(self) -> None:
            for acc in self.live():
                try:
                    service.apply_trigger(acc, Trigger.COMPLETE, actor="test", flatten=True)
                except IllegalTransition:
                    pass

        # ------------------------------------------------------------ rules
        @rule(
            symbol=st.sampled_from(SYMBOLS),
            side=st.sampled_from([Side.BUY, Side.SELL]),
            size=st.sampled_from(SIZES),
            sl_bp=st.one_of(st.none(), st.sampled_from([30, 100, 300])),
        )
        def order(self, symbol: str, side: Side, size: int, sl_bp: int | None) -> None:
            self.submit(symbol, side, size, sl_bp)

        @rule(
            bp=st.sampled_from(MOVES),
            seconds=st.sampled_from([1, 30, 600]),
            side=st.sampled_from([Side.BUY, Side.SELL]),
        )
        def the_held_price_moves(self, bp: int, seconds: int, side: Side) -> None:
            held = self.held()
            if not held:  # flat: open a position first, so that the move means something
                self.submit("EURUSD", side, 4, None)
                held = self.held() or ["EURUSD"]
            self.move(held[0], bp, seconds)

        @rule(symbol=st.sampled_from(SYMBOLS), bp=st.sampled_from(MOVES))
        def tick(self, symbol: str, bp: int) -> None:
            self.move(symbol, bp, 5)

        @rule(symbol=st.sampled_from(SYMBOLS))
        def close(self, symbol: str) -> None:
            held = self.held()
            if not held:
                return
            symbol = symbol if symbol in held else held[0]
            clock.advance(1)
            self.quote(symbol)
            service.close_position(self.acc, symbol)

        @rule(hours=st.sampled_from(JUMPS))
        def the_clock_passes(self, hours: int) -> None:
            clock.advance(hours * 3600)
            for acc in self.live():
                service.roll_day(acc)
            for s in SYMBOLS:
                service.on_quote(self.quote(s))

        @rule()
        def mark_to_market(self) -> None:
            service.mark_to_market(self.acc)

        @rule()
        def roll_twice(self) -> None:
            service.roll_day(self.acc)
            before = rows(database, "SELECT state FROM rule_states WHERE account_id=%s", self.acc)
            service.roll_day(self.acc)
            after = rows(database, "SELECT state FROM rule_states WHERE account_id=%s", self.acc)
            if before and after:
                b, a = before[0]["state"]["engine"], after[0]["state"]["engine"]
                assert (b["day"], b["verdict"], b["daily_floor"], b["max_floor"]) == (
                    a["day"],
                    a["verdict"],
                    a["daily_floor"],
                    a["max_floor"],
                )

        # ------------------------------------------------------------ invariants
        @invariant()
        def follow_the_next_phase(self) -> None:
            totals["steps"] += 1
            while self.accounts:
                child = rows(database, "SELECT id FROM accounts WHERE parent_account_id=%s", self.acc)
                if not child:
                    break
                self.accounts.append(child[0]["id"])

        @invariant()
        def verdicts_re_derive(self) -> None:
            totals["verdicts"] += check_verdicts(database, self.accounts)

        @invariant()
        def statuses_agree_with_verdicts(self) -> None:
            check_statuses(database, self.accounts)

        @invariant()
        def trailing_floors_never_fall(self) -> None:
            for r in rows(
                database, "SELECT account_id, state FROM rule_states WHERE account_id = ANY(%s)", self.accounts
            ):
                floor = r["state"]["engine"]["max_floor"]
                if floor is None:
                    continue
                prev = self.floors.get(r["account_id"])
                assert prev is None or D(floor) >= prev, (r["account_id"], prev, floor)
                self.floors[r["account_id"]] = D(floor)

        @invariant()
        def ledger_recomputes(self) -> None:
            for acc in self.accounts:
                report = service.recompute(acc)
                assert report["ok"], report

        @invariant()
        def nothing_failed_silently(self) -> None:
            assert failures == []

    run_state_machine_as_test(LiveRules, settings=settings(max_examples=30, stateful_step_count=20, deadline=None))
    assert totals["examples"] > 0 and totals["steps"] > 0


# ---------------------------------------------------------------------------------------------- DST day boundaries
def tick(quotes: QuoteStore, service: ExecutionService, clock: ManualClock, bid: str) -> None:
    stored = quotes.put(Quote("EURUSD", D(bid), D(bid), clock.now()))
    assert stored is not None
    service.on_quote(stored)


@pytest.mark.parametrize(
    ("label", "previous_start", "boundary", "hours"),
    [
        # Spring forward (Sunday 8 March 2026): the day from Saturday 17:00 EST to Sunday 17:00 EDT lasts 23 hours.
        ("spring", datetime(2026, 3, 7, 22, 0, tzinfo=UTC), datetime(2026, 3, 8, 21, 0, tzinfo=UTC), 23),
        # Fall back (Sunday 1 November 2026): Saturday 17:00 EDT to Sunday 17:00 EST lasts 25 hours.
        ("fall", datetime(2026, 10, 31, 21, 0, tzinfo=UTC), datetime(2026, 11, 1, 22, 0, tzinfo=UTC), 25),
    ],
)
def test_a_position_carried_over_the_new_york_day_start_meets_the_new_floor_at_the_boundary_on_dst_days(
    service: ExecutionService,
    quotes: QuoteStore,
    clock: ManualClock,
    label: str,
    previous_start: datetime,
    boundary: datetime,
    hours: int,
) -> None:
    assert boundary - previous_start == timedelta(hours=hours)
    clock.set(boundary - timedelta(hours=4))
    tick(quotes, service, clock, "1.10000")
    acc = open_on(service, "one-step-eod@100k", fee_bps=D(0))

    # +3,000 closed today lifts tomorrow's start-of-day balance to 103,000 (tomorrow's floor: 99,000) ...
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(10))).accepted
    clock.advance(60)
    tick(quotes, service, clock, "1.10300")
    assert service.close_position(acc, "EURUSD").accepted
    # ... and a position carried into tomorrow is 5,000 under water: equity 98,000, above today's 96,000 floor.
    clock.advance(60)
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(10))).accepted
    clock.advance(60)
    tick(quotes, service, clock, "1.09800")

    # One second before the local 17:00 (whatever a 24-hour day would say) nothing rolls.
    clock.set(boundary - timedelta(seconds=1))
    assert service.roll_day(acc)["status"] == "active"
    state = rows(service.db, "SELECT state FROM rule_states WHERE account_id=%s", acc)[0]["state"]["engine"]
    assert D(state["daily_floor"]) == D(96000)
    day_before = state["day"]

    # At the boundary instant the carried position meets the new day's floor at once.
    clock.set(boundary)
    assert service.roll_day(acc)["status"] == "failed"
    [breach] = rows(service.db, "SELECT * FROM violations WHERE account_id=%s AND kind='breach'", acc)
    assert breach["rule"] == "max_daily_loss" and breach["action"] == "fail"
    assert breach["at"] == boundary
    assert breach["value"] == D(98000) and breach["limit_value"] == D(99000)
    ev = breach["evidence"]
    assert ev["at_day_start"] is True and ev["previous_day"] == day_before
    assert ev["anchor_value"] == "103000.00" and ev["start_of_day_balance"] == "103000.00"
    assert ev["trading_day"] == (boundary + timedelta(days=1)).date().isoformat()  # an evening start names the
    assert day_before == boundary.date().isoformat()  # session by the date it ends on
    agrees, why = rederive(
        {
            "rule": breach["rule"],
            "value": breach["value"],
            "limit": breach["limit_value"],
            "at": iso(breach["at"]),
            "evidence": ev,
            "action": breach["action"],
        }
    )
    assert agrees, why
    assert breach["inputs_hash"] == recomputed_hash(breach)
    # Liquidated at the boundary with the evidence; the day before lasted 23 or 25 hours.
    assert rows(service.db, "SELECT 1 FROM positions WHERE account_id=%s", acc) == []
    stats = rows(
        service.db, "SELECT trading_day, day_start FROM daily_stats WHERE account_id=%s ORDER BY trading_day", acc
    )
    starts = {s["trading_day"].isoformat(): s["day_start"] for s in stats}
    assert starts[day_before] == previous_start
    assert starts[ev["trading_day"]] == boundary
    # The end-of-day trailing floor rose with the day's closing balance (103,000 - 6,000) and never fell.
    state = rows(service.db, "SELECT state FROM rule_states WHERE account_id=%s", acc)[0]["state"]["engine"]
    assert D(state["max_floor"]) == D(97000) and state["max_locked"] is False
    assert service.recompute(acc)["ok"]


def test_without_a_breach_the_dst_boundary_rolls_the_day_once_at_local_17_00(
    service: ExecutionService, quotes: QuoteStore, clock: ManualClock
) -> None:
    boundary = datetime(2026, 3, 8, 21, 0, tzinfo=UTC)  # 17:00 EDT
    clock.set(boundary - timedelta(hours=2))
    tick(quotes, service, clock, "1.10000")
    acc = open_on(service, "one-step-eod@100k", fee_bps=D(0))
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(1))).accepted
    clock.set(boundary + timedelta(seconds=1))
    service.roll_day(acc)
    service.roll_day(acc)
    clock.set(boundary + timedelta(hours=1))  # 22:00 UTC, the boundary of a naive 24-hour day: no second roll
    service.roll_day(acc)
    stats = rows(
        service.db, "SELECT trading_day, day_start FROM daily_stats WHERE account_id=%s ORDER BY trading_day", acc
    )
    assert [(s["trading_day"].isoformat(), s["day_start"]) for s in stats] == [
        ("2026-03-08", datetime(2026, 3, 7, 22, 0, tzinfo=UTC)),
        ("2026-03-09", boundary),
    ]
    view = service.rules.status(acc)
    assert view["trading_day"] == "2026-03-09" and view["next_day_reset"] == "2026-03-09T21:00:00Z"
    assert rows(service.db, "SELECT status FROM accounts WHERE id=%s", acc)[0]["status"] == "active"


# ---------------------------------------------------------------------------------------------- trailing floors
def test_an_intraday_trailing_floor_follows_the_highest_equity_never_falls_and_locks_exactly(
    service: ExecutionService, quotes: QuoteStore, clock: ManualClock
) -> None:
    tick(quotes, service, clock, "1.10000")
    acc = open_on(service, "futures-trailing@50k", fee_bps=D(0))  # 2,000 trailing, locks at 50,000
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(1))).accepted

    def floor() -> tuple[Decimal, bool]:
        s = rows(service.db, "SELECT state FROM rule_states WHERE account_id=%s", acc)[0]["state"]["engine"]
        return D(s["max_floor"]), bool(s["max_locked"])

    assert floor() == (D(48000), False)
    path = [
        ("1.10500", D(48500), False),
        ("1.10200", D(48500), False),
        ("1.11000", D(49000), False),
        ("1.10700", D(49000), False),
        ("1.11900", D(49900), False),
        ("1.12000", D(50000), True),
        ("1.13000", D(50000), True),
        ("1.12500", D(50000), True),
    ]
    for bid, expected, locked in path:
        clock.advance(30)
        tick(quotes, service, clock, bid)
        assert floor() == (expected, locked), bid
    view = {lim["rule"]: lim for lim in service.rules.status(acc)["limits"]}
    assert D(view["max_loss"]["floor"]) == D(50000) and view["max_loss"]["locked"] is True
    assert "locked at 50000.00" in view["max_loss"]["computation"]

    # Equity under the locked floor (49,900): a max-loss breach at exactly the lock, failing the account.
    clock.advance(30)
    tick(quotes, service, clock, "1.09900")
    assert rows(service.db, "SELECT status FROM accounts WHERE id=%s", acc)[0]["status"] == "failed"
    [breach] = rows(service.db, "SELECT * FROM violations WHERE account_id=%s AND kind='breach'", acc)
    assert breach["rule"] == "max_loss" and breach["limit_value"] == D(50000) and breach["value"] == D(49900)
    assert breach["evidence"]["locked"] is True and breach["evidence"]["peak_equity"] == "53000.00"
    assert floor() == (D(50000), True)
    assert check_verdicts(service.db, [acc]) == 1
    assert service.recompute(acc)["ok"]


# ---------------------------------------------------------------------------------------------- fractions of a cent
SUB_CENT_FLOOR = """
id: sub-cent-floor
starting_balance: "10000"
timezone: UTC
rules:
  max_daily_loss: {pct: 3.33335, base: initial_balance, anchor: start_of_day_balance}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 10}}
"""


def only_breach(service: ExecutionService, acc: uuid.UUID) -> dict[str, Any] | None:
    found = rows(service.db, "SELECT * FROM violations WHERE account_id=%s AND kind='breach'", acc)
    assert len(found) <= 1
    return found[0] if found else None


def test_equity_half_a_cent_under_the_floor_is_judged_in_cents_as_the_verdict_reports_it(
    service: ExecutionService, quotes: QuoteStore, clock: ManualClock
) -> None:
    # 0.01 lot of gold filled at the mid of a one-tick spread (2000.005) and marked at the bid: -0.005.
    for symbol, bid, ask in (("EURUSD", "1.10000", "1.10000"), ("XAUUSD", "2000.00", "2000.01")):
        assert quotes.put(Quote(symbol, D(bid), D(ask), clock.now())) is not None
    acc = open_on(service, "classic-2step@10k", fee_bps=D(0))  # daily floor 9,500
    assert service.submit_order(acc, OrderRequest("XAUUSD", Side.BUY, D("0.01"))).accepted
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(1))).accepted
    # Equity 9,499.995: in cents (half-even) that is 9,500.00, exactly at the floor, which is not a breach.
    # (Judged unrounded it failed the account with a stored value of 9,500.00 against a limit of 9,500.00, a
    # verdict its own evidence contradicts.)
    clock.advance(5)
    tick(quotes, service, clock, "1.09500")
    assert only_breach(service, acc) is None
    assert rows(service.db, "SELECT status FROM accounts WHERE id=%s", acc)[0]["status"] == "active"
    clock.advance(5)
    tick(quotes, service, clock, "1.09499")  # 9,498.995 -> 9,499.00: a breach
    breach = only_breach(service, acc)
    assert breach is not None and breach["value"] == D("9499.00") and breach["limit_value"] == D(9500)
    assert check_verdicts(service.db, [acc]) == 1
    assert service.recompute(acc)["ok"]


def test_a_floor_with_fractions_of_a_cent_is_rounded_to_the_cent_and_re_derives(
    service: ExecutionService, quotes: QuoteStore, clock: ManualClock
) -> None:
    for symbol, bid in (("EURUSD", "1.10000"), ("XAUUSD", "2000.00")):
        assert quotes.put(Quote(symbol, D(bid), D(bid), clock.now())) is not None
    acc = open_on(service, parse_text(SUB_CENT_FLOOR, "sub-cent-floor"), fee_bps=D(0))  # 9,666.665 -> 9,666.66
    assert service.submit_order(acc, OrderRequest("XAUUSD", Side.BUY, D("0.01"))).accepted
    assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D(1))).accepted
    clock.advance(5)
    tick(quotes, service, clock, "1.09667")  # 9,667.00
    assert only_breach(service, acc) is None
    clock.advance(5)
    stored = quotes.put(Quote("XAUUSD", D("1999.66"), D("1999.66"), clock.now()))
    assert stored is not None
    service.on_quote(stored)  # 9,666.66: exactly at the floor (in cents), not a breach
    assert only_breach(service, acc) is None
    clock.advance(5)
    stored = quotes.put(Quote("XAUUSD", D("1999.65"), D("1999.65"), clock.now()))
    assert stored is not None
    service.on_quote(stored)  # 9,666.65 < 9,666.66
    breach = only_breach(service, acc)
    assert breach is not None and breach["rule"] == "max_daily_loss"
    assert breach["value"] == D("9666.65") and breach["limit_value"] == D("9666.66")
    assert check_verdicts(service.db, [acc]) == 1
