"""PropDesk as the risk engine of another platform: ``POST /api/v1/risk/check-trade``.

A trade executed elsewhere (MT5, cTrader) is reported by ticket: open, then closed (or both at once). The same
rulebook code judges it; the close books its P&L into the ledger; a replay of the same report changes nothing;
a changed report of a known ticket is a conflict; hostile input changes nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from challenge_kit import assert_recompute_ok, post_plan, status

PREFIX = "/api/v1/prop"
CHECK = "/api/v1/risk/check-trade"

pytestmark = pytest.mark.e2e

PLAN = """
id: e2e-ext
name: External Two Step
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {pct: 5, base: initial_balance, anchor: start_of_day_balance}
  max_loss: {pct: 10, mode: static}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 1}, min_trading_days: {days: 2}}
  - id: phase_2
    rules: {profit_target: {pct: 1}, min_trading_days: {days: 1}}
  - id: funded
    profit_split_pct: 80
offers:
  - {id: 100k, starting_balance: "100000", price: "500"}
"""

# Per-trade consistency as a flag in every phase (RULES.md's worked example runs at 50%).
PER_TRADE_PLAN = """
id: e2e-per-trade
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {pct: 5, base: initial_balance, anchor: start_of_day_balance}
  max_loss: {pct: 10, mode: static}
  consistency: {mode: per_trade, max_share_pct: 50, applies_to: always, action: flag}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 50}}
"""


# ---------------------------------------------------------------------------------------------- helpers
def challenge(desk: Any, plan: str, **extra: Any) -> str:
    return desk.create_account(mode="challenge", plan_id=plan, **extra)["id"]  # type: ignore[no-any-return]


def trade(
    desk: Any, acc: str, ticket: str, *, closed: bool = False, held: timedelta = timedelta(minutes=10), **fields: Any
) -> dict[str, Any]:
    """A report opened ``held`` ago (and, with ``closed``, closed now)."""
    now = desk.clock.now()
    body: dict[str, Any] = {
        "account_id": acc,
        "ticket": ticket,
        "symbol": "EURUSD",
        "side": "buy",
        "lots": "1",
        "open_time": (now - held).isoformat(),
        "open_price": "1.10000",
    }
    if closed:
        body.update({"close_time": now.isoformat(), "close_price": "1.10100"})
    body.update(fields)
    return body


def check(desk: Any, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = desk.client.post(CHECK, json=body)
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


def ledger(desk: Any, acc: str) -> list[dict[str, Any]]:
    r = desk.client.get(f"{PREFIX}/accounts/{acc}/ledger", params={"limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def violations(desk: Any, acc: str) -> list[dict[str, Any]]:
    r = desk.client.get(f"{PREFIX}/accounts/{acc}/violations", params={"limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def everything(desk: Any, acc: str) -> tuple[Any, ...]:
    """Account truth plus every rules table a trade report could write."""
    with desk.platform.db.read() as c:
        aid = uuid.UUID(acc)
        extra = [
            c.execute(f"SELECT count(*) AS n FROM {t} WHERE account_id=%s", (aid,)).fetchone()["n"]
            for t in ("external_trades", "violations", "consistency_snapshots", "daily_stats")
        ]
        state = c.execute("SELECT state FROM rule_states WHERE account_id=%s", (aid,)).fetchone()
        trades = c.execute(
            "SELECT ticket, request_hash FROM external_trades WHERE account_id=%s ORDER BY ticket", (aid,)
        ).fetchall()
    return (*desk.state(acc), *extra, state["state"] if state else None, trades)


def child_of(desk: Any, parent: str) -> dict[str, Any] | None:
    with desk.platform.db.read() as c:
        row = c.execute("SELECT id FROM accounts WHERE parent_account_id=%s", (uuid.UUID(parent),)).fetchone()
    if row is None:
        return None
    return desk.client.get(f"{PREFIX}/accounts/{row['id']}").json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- the happy path
def test_an_open_trade_passes_and_a_replay_of_it_books_nothing(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    body = trade(desk, acc, "T-1")
    first = check(desk, body)
    assert first["result"] == "pass" and first["stage"] == "open" and first["replayed"] is False
    assert first["ticket"] == "T-1" and first["account_id"] == acc and first["violations"] == []
    assert first["account_status"] == "active" and first["verdict"] is None
    assert Decimal(first["balance"]) == Decimal(100000)
    before = everything(desk, acc)

    again = check(desk, body)
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}
    assert everything(desk, acc) == before
    # The same report with its numbers written differently is the same report.
    assert check(desk, {**body, "lots": "1.00", "open_price": "1.1"})["replayed"] is True
    assert everything(desk, acc) == before


def test_a_ticket_closed_later_books_its_pnl_and_fee_into_the_ledger(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    opened = trade(desk, acc, "T-2", held=timedelta(0))
    assert check(desk, opened)["result"] == "pass"
    entries_before = len(ledger(desk, acc))

    desk.tick(1800)
    closing = {
        **opened,
        "close_time": desk.clock.now().isoformat(),
        "close_price": "1.10250",
        "profit": "250",
        "swap": "-5",
        "commission": "-7",
    }
    res = check(desk, closing)
    assert res["result"] == "pass" and res["stage"] == "close" and res["replayed"] is False
    assert Decimal(res["balance"]) == Decimal("100238")  # 250 - 5 swap - 7 commission
    entries = ledger(desk, acc)
    assert len(entries) == entries_before + 2
    pnl, fee = entries[-2], entries[-1]
    assert pnl["kind"] == "external_trade" and pnl["category"] == "pnl" and Decimal(pnl["amount"]) == Decimal(245)
    assert pnl["evidence"]["ticket"] == "T-2" and pnl["evidence"]["profit"] == "250"
    assert fee["kind"] == "fee" and fee["category"] == "fee" and Decimal(fee["amount"]) == Decimal(-7)
    bal = desk.balance(acc)
    assert Decimal(bal["cash"]) == Decimal("100238")
    assert Decimal(bal["realized_pnl"]) == Decimal(245) and Decimal(bal["fees"]) == Decimal(7)

    # A replay of the close books nothing twice.
    n = len(entries)
    assert check(desk, closing)["replayed"] is True
    assert len(ledger(desk, acc)) == n and Decimal(desk.balance(acc)["cash"]) == Decimal("100238")
    # Any other report of the closed ticket is a conflict, and changes nothing.
    before = everything(desk, acc)
    for changed in (
        {**closing, "close_price": "1.10300"},
        {**closing, "profit": "300"},
        opened,
        {**opened, "lots": "2"},
    ):
        r = desk.client.post(CHECK, json=changed)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "ticket_reused" and r.json()["error"]["details"]["ticket"] == "T-2"
    assert everything(desk, acc) == before
    stats = desk.client.get(f"{PREFIX}/accounts/{acc}/daily-stats").json()["items"]
    assert Decimal(stats[0]["closed_pnl"]) == Decimal(238) and stats[0]["trades_closed"] == 1
    assert_recompute_ok(desk, acc)


def test_a_closing_report_that_changes_the_open_part_of_an_open_ticket_is_a_conflict(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    opened = trade(desk, acc, "T-3")
    check(desk, opened)
    before = everything(desk, acc)
    r = desk.client.post(
        CHECK, json={**opened, "lots": "2", "close_time": desk.clock.now().isoformat(), "close_price": "1.10100"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "ticket_reused", r.text
    assert everything(desk, acc) == before


def test_without_profit_the_pnl_is_computed_from_prices_and_the_contract_size(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    # Sell 0.5 lot at 1.10000, buy back at 1.09800: 0.002 x 0.5 x 100,000 = +100.
    res = check(desk, trade(desk, acc, "S-1", closed=True, side="sell", lots="0.5", close_price="1.09800"))
    assert res["result"] == "pass" and Decimal(res["balance"]) == Decimal(100100)
    assert Decimal(ledger(desk, acc)[-1]["amount"]) == Decimal(100)
    assert_recompute_ok(desk, acc)


# ---------------------------------------------------------------------------------------------- rule outcomes
def test_a_trade_breaking_the_risk_and_trading_hours_rules_comes_back_as_a_warning(desk: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k")
    # 22:30 in London on a Monday: outside the 07:00-21:00 window, and no stop loss.
    desk.clock.set(desk.clock.now().replace(hour=22, minute=30))
    res = check(desk, trade(desk, acc, "W-1", held=timedelta(0), lots="0.1"))
    assert res["result"] == "warning", res
    rules = {v["rule"]: v for v in res["violations"]}
    assert {"max_risk_per_trade", "trading_hours"} <= set(rules)
    assert all(v["kind"] == "flag" for v in res["violations"])
    assert rules["max_risk_per_trade"]["evidence"]["require_stop_loss"] is True
    assert rules["max_risk_per_trade"]["evidence"]["ticket"] == "W-1"
    assert "local_time" in rules["trading_hours"]["evidence"]
    assert res["account_status"] == "active"  # a trade that already happened is flagged, not refused
    stored = {v["rule"] for v in violations(desk, acc) if v["kind"] == "flag"}
    assert {"max_risk_per_trade", "trading_hours"} <= stored

    # A stop loss risking 2.4% of equity: flagged with the computed risk.
    desk.clock.set(desk.clock.now().replace(hour=23, minute=0) + timedelta(hours=10))  # Tuesday 09:00 UTC
    res = check(desk, trade(desk, acc, "W-2", held=timedelta(0), lots="0.1", sl="1.04000"))
    assert res["result"] == "warning"
    [risk] = [v for v in res["violations"] if v["rule"] == "max_risk_per_trade"]
    assert Decimal(risk["evidence"]["risk"]) == Decimal(600) and Decimal(risk["evidence"]["max_risk"]) == Decimal(500)
    assert not [v for v in res["violations"] if v["rule"] == "trading_hours"]
    # Inside the hours and within the risk: a clean pass.
    res = check(desk, trade(desk, acc, "W-3", held=timedelta(0), lots="0.1", sl="1.09000"))
    assert res["result"] == "pass" and res["violations"] == [], res


def test_a_losing_trade_below_the_daily_floor_is_a_breach_and_fails_the_account(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    open_one = trade(desk, acc, "L-0")
    check(desk, open_one)  # another trade still open on the other platform
    res = check(desk, trade(desk, acc, "L-1", closed=True, lots="6", close_price="1.09000", profit="-6000"))
    assert res["result"] == "breach" and res["account_status"] == "failed" and res["verdict"] == "failed"
    [breach] = [v for v in res["violations"] if v["kind"] == "breach"]
    assert breach["rule"] == "max_daily_loss" and breach["action"] == "fail"
    assert Decimal(breach["value"]) == Decimal(94000) and Decimal(breach["limit"]) == Decimal(95000)
    assert status(desk, acc) == "failed"
    assert Decimal(desk.balance(acc)["cash"]) == Decimal(94000)
    stored = [v for v in violations(desk, acc) if v["kind"] == "breach"]
    assert len(stored) == 1 and stored[0]["evidence"]["anchor_value"] == "100000.00"
    # The account is over: further reports are refused and change nothing.
    before = everything(desk, acc)
    r = desk.client.post(CHECK, json=trade(desk, acc, "L-2", closed=True))
    assert r.status_code == 409 and r.json()["error"]["code"] == "account_not_active", r.text
    r = desk.client.post(CHECK, json={**open_one, "close_time": desk.clock.now().isoformat(), "close_price": "1.10000"})
    assert r.status_code == 409, r.text
    assert everything(desk, acc) == before
    assert_recompute_ok(desk, acc)


def test_winning_trades_on_enough_days_pass_the_phase_and_open_the_next(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    res = check(desk, trade(desk, acc, "P-1", closed=True, profit="1200"))
    assert res["result"] == "pass" and res["account_status"] == "active"  # target met, one trading day of two
    progress = desk.client.get(f"{PREFIX}/accounts/{acc}/rules").json()["progress"]
    assert progress["profit_target"]["met"] is True and progress["min_trading_days"]["met"] is False

    desk.tick(24 * 3600)
    check(desk, trade(desk, acc, "P-2", held=timedelta(0)))  # opened on day two, still open: not flat
    assert status(desk, acc) == "active"
    desk.tick(600)
    res = check(
        desk,
        trade(
            desk,
            acc,
            "P-2",
            held=timedelta(minutes=10),
            close_time=desk.clock.now().isoformat(),
            close_price="1.10050",
            profit="50",
        ),
    )
    assert res["account_status"] == "passed" and res["verdict"] == "passed"
    assert any(v["kind"] == "pass" and v["rule"] == "profit_target" for v in res["violations"])
    nxt = child_of(desk, acc)
    assert nxt is not None and nxt["phase"] == "phase_2" and nxt["status"] == "active"
    assert nxt["owner_id"] == "trader-1" and Decimal(nxt["balance"]["cash"]) == Decimal(100000)
    assert nxt["rulebook_id"] == "e2e-ext" and nxt["rulebook_version"] == 1
    # Phase 2 is checked on its own account.
    res = check(desk, trade(desk, nxt["id"], "P-3", closed=True, profit="1000"))
    assert res["account_status"] == "passed"
    funded = child_of(desk, nxt["id"])
    assert funded is not None and funded["phase"] == "funded"
    # The passed account takes no more reports.
    r = desk.client.post(CHECK, json=trade(desk, acc, "P-4", closed=True))
    assert r.status_code == 409 and r.json()["error"]["code"] == "account_not_active"
    assert_recompute_ok(desk, acc, nxt["id"], funded["id"])


def test_a_consistency_snapshot_is_stored_for_every_winning_trade(desk: Any, admin: Any) -> None:
    post_plan(admin, PER_TRADE_PLAN)
    acc = challenge(desk, "e2e-per-trade")
    results = []
    for i, profit in enumerate(("1000", "-300", "500", "600", "200")):
        desk.tick(120)
        results.append(check(desk, trade(desk, acc, f"C-{i}", closed=True, profit=profit)))
    assert results[0]["result"] == "warning"
    [flag] = results[0]["violations"]
    assert flag["rule"] == "consistency" and flag["kind"] == "flag"
    assert flag["evidence"]["share_pct"] == "100.00" and flag["evidence"]["max_share_pct"] == "50"
    assert [r["result"] for r in results[1:]] == ["pass"] * 4

    r = desk.client.get(f"{PREFIX}/accounts/{acc}/consistency-snapshots")
    assert r.status_code == 200, r.text
    snaps = r.json()["items"]
    assert [s["ref"] for s in snaps] == ["C-0", "C-2", "C-3", "C-4"]
    assert [Decimal(s["share_pct"]) for s in snaps] == [
        Decimal("100"),
        Decimal("33.33"),
        Decimal("28.57"),
        Decimal("8.70"),
    ]
    assert [Decimal(s["cumulative_profit"]) for s in snaps] == [
        Decimal(1000),
        Decimal(1500),
        Decimal(2100),
        Decimal(2300),
    ]
    assert [s["violated"] for s in snaps] == [True, False, False, False]
    page = desk.client.get(f"{PREFIX}/accounts/{acc}/consistency-snapshots", params={"limit": 3}).json()
    rest = desk.client.get(
        f"{PREFIX}/accounts/{acc}/consistency-snapshots", params={"limit": 3, "cursor": page["next_cursor"]}
    ).json()
    assert [s["ref"] for s in page["items"] + rest["items"]] == ["C-0", "C-2", "C-3", "C-4"]


def test_a_strict_risk_funded_account_stores_a_snapshot_per_winning_trade(desk: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k", phase="funded")
    for i, profit in enumerate(("400", "200", "-100", "300")):
        desk.tick(3600)
        res = check(desk, trade(desk, acc, f"F-{i}", closed=True, lots="0.1", sl="1.09000", profit=profit))
        assert res["account_status"] == "active"
    snaps = desk.client.get(f"{PREFIX}/accounts/{acc}/consistency-snapshots").json()["items"]
    assert [s["ref"] for s in snaps] == ["F-0", "F-1", "F-3"]
    assert [Decimal(s["share_pct"]) for s in snaps] == [Decimal(100), Decimal("33.33"), Decimal("33.33")]
    assert [s["violated"] for s in snaps] == [True, False, False]
    flags = [v for v in violations(desk, acc) if v["rule"] == "consistency"]
    assert len(flags) == 1 and flags[0]["kind"] == "flag"


# ---------------------------------------------------------------------------------------------- refusals
HOSTILE: list[tuple[str, Any]] = [
    ("nan lots", {"lots": "NaN"}),
    ("nan price", {"open_price": "NaN"}),
    ("infinite price", {"open_price": "Infinity"}),
    ("1e400", {"lots": "1e400"}),
    ("negative lots", {"lots": "-1"}),
    ("zero lots", {"lots": "0"}),
    ("naive open time", {"open_time": "2026-03-02T09:50:00"}),
    ("naive close time", {"close_time": "2026-03-02T10:00:00", "close_price": "1.1"}),
    ("close before open", {"close_time": "2026-03-02T09:00:00+00:00", "close_price": "1.1"}),
    ("open time far in the future", {"open_time": "2099-01-01T00:00:00+00:00"}),
    ("close time far in the future", {"close_time": "2099-01-01T00:00:00+00:00", "close_price": "1.2"}),
    ("open time before the phase started", {"open_time": "1971-01-01T00:00:00+00:00"}),
    ("close time without price", {"close_time": "2026-03-02T10:00:00+00:00"}),
    ("close price without time", {"close_price": "1.1"}),
    ("unknown symbol", {"symbol": "FOOBAR"}),
    ("odd case symbol", {"symbol": "eurusd"}),
    ("symbol with space", {"symbol": "EURUSD "}),
    ("extra field", {"fill_price": "1.2"}),
    ("bad side", {"side": "hold"}),
    ("too many decimals", {"open_price": "1.12345678901"}),
    ("bad ticket", {"ticket": "a b"}),
    ("not a uuid", {"account_id": "abc"}),
    ("boolean lots", {"lots": True}),
    ("timestamp as number", {"open_time": 1772445000}),
]


@pytest.mark.parametrize(("name", "change"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_trade_reports_are_refused_and_change_nothing(
    desk: Any, admin: Any, name: str, change: dict[str, Any]
) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    check(desk, trade(desk, acc, "H-0"))
    before = everything(desk, acc)
    r = desk.client.post(CHECK, json={**trade(desk, acc, "H-1"), **change})
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    assert r.json()["error"]["code"], r.text
    assert everything(desk, acc) == before


def test_raw_nan_and_non_json_bodies_are_refused(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    before = everything(desk, acc)
    body = json.dumps(trade(desk, acc, "R-1")).replace('"1.10000"', "NaN")
    for content, ctype in (
        (body, "application/json"),
        (body.replace("NaN", "1e400"), "application/json"),
        ("ticket=1", "application/x-www-form-urlencoded"),
        ("{", "application/json"),
    ):
        r = desk.client.post(CHECK, content=content, headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (content, r.status_code, r.text)
    assert everything(desk, acc) == before


def test_an_account_without_a_running_rulebook_answers_409_no_rulebook(desk: Any, admin: Any) -> None:
    desk.default_quotes()
    bare = desk.create_account(mode="audition")["id"]
    before = everything(desk, bare)
    r = desk.client.post(CHECK, json=trade(desk, bare, "N-1", closed=True))
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_rulebook", r.text
    assert everything(desk, bare) == before
    # A challenge account that has not started has no running rulebook either.
    post_plan(admin, PLAN)
    pending = challenge(desk, "e2e-ext", start=False)
    r = desk.client.post(CHECK, json=trade(desk, pending, "N-2"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_rulebook", r.text
    r = desk.client.post(CHECK, json=trade(desk, str(uuid.uuid4()), "N-3"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found", r.text


def test_check_trade_needs_a_valid_token(desk: Any, admin: Any, anon: Any) -> None:
    post_plan(admin, PLAN)
    acc = challenge(desk, "e2e-ext")
    before = everything(desk, acc)
    r = anon.post(CHECK, json=trade(desk, acc, "A-1"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = anon.post(CHECK, json=trade(desk, acc, "A-1"), headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert everything(desk, acc) == before
