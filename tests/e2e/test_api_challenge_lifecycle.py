"""A challenge over the API, end to end: plan -> phase 1 -> phase 2 -> funded -> scale-up; a breach that
liquidates; a soft daily loss that pauses the account for the day and lifts at the next day start."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from challenge_kit import POLICY, assert_recompute_ok, post_plan, px, status

PREFIX = "/api/v1/prop"

pytestmark = pytest.mark.e2e

PLAN = """
id: e2e-2step
name: E2E Two Step
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {pct: 5, base: initial_balance, anchor: start_of_day_balance}
  max_loss: {pct: 10, mode: static}
  drawdown_warning: {used_pct: 80}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 1}, min_trading_days: {days: 2}}
  - id: phase_2
    rules: {profit_target: {pct: 1}, min_trading_days: {days: 1}}
  - id: funded
    profit_split_pct: 80
    scaling: {min_profit_pct: 1, increase_pct: 25, every_days: 30}
offers:
  - {id: 100k, starting_balance: "100000", price: "500"}
"""

SOFT_PLAN = """
id: e2e-soft
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {amount: "1000", action: pause_day}
  max_loss: {amount: "5000", mode: intraday_trailing, lock_at_offset: "0"}
phases:
  - id: phase_1
    rules: {profit_target: {amount: "6000"}}
"""


def open_challenge(desk: Any, plan: str, **extra: Any) -> dict[str, Any]:
    return desk.create_account(mode="challenge", plan_id=plan, policy=POLICY, **extra)


def round_trip(desk: Any, acc: str, lots: str, entry: str, exit_: str) -> None:
    """Buy ``lots`` at a quote whose bid is ``entry`` and sell them when the bid is ``exit_``."""
    px(desk, entry)
    r = desk.order(acc, quantity=lots)
    assert r.status_code == 201, r.text
    desk.tick(60)
    px(desk, exit_)
    r = desk.client.post(f"{PREFIX}/accounts/{acc}/positions/EURUSD/close", json={})
    assert r.status_code in (200, 201), r.text


def child_of(desk: Any, parent: str) -> dict[str, Any] | None:
    with desk.platform.db.read() as c:
        row = c.execute("SELECT id FROM accounts WHERE parent_account_id=%s", (uuid.UUID(parent),)).fetchone()
    if row is None:
        return None
    r = desk.client.get(f"{PREFIX}/accounts/{row['id']}")
    return r.json()  # type: ignore[no-any-return]


def test_a_trader_passes_phase_1_and_phase_2_is_funded_and_scales_up(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = open_challenge(desk, "e2e-2step", offer_id="100k")
    assert acc["phase"] == "phase_1" and acc["status"] == "active"
    assert acc["rulebook_id"] == "e2e-2step" and acc["rulebook_version"] == 1
    p1 = acc["id"]

    # Day 1: +1,500 reaches the 1% target, but two trading days are required: no pass yet.
    round_trip(desk, p1, "5", "1.10000", "1.10300")
    assert status(desk, p1) == "active"
    rules = desk.client.get(f"{PREFIX}/accounts/{p1}/rules").json()
    assert rules["progress"]["profit_target"]["met"] is True
    assert rules["progress"]["min_trading_days"] == {"value": 1, "target": 2, "met": False}

    # Day 2: one more small winning trade -> passed, and phase 2 opens with a fresh balance.
    desk.tick(24 * 3600)
    round_trip(desk, p1, "0.1", "1.10300", "1.10310")
    assert status(desk, p1) == "passed"
    p2 = child_of(desk, p1)
    assert p2 is not None and p2["phase"] == "phase_2" and p2["status"] == "active"
    assert Decimal(p2["balance"]["cash"]) == Decimal(100000)
    passes = desk.client.get(f"{PREFIX}/accounts/{p1}/violations").json()["items"]
    assert any(v["kind"] == "pass" and v["rule"] == "profit_target" for v in passes)

    # Phase 2 -> funded.
    round_trip(desk, p2["id"], "5", "1.10300", "1.10600")
    assert status(desk, p2["id"]) == "passed"
    funded = child_of(desk, p2["id"])
    assert funded is not None and funded["phase"] == "funded" and funded["status"] == "active"

    # Funded: +1.5% in the cycle; 30 days later the day roll scales the account up by 25%.
    round_trip(desk, funded["id"], "5", "1.10600", "1.10900")
    desk.tick(31 * 24 * 3600)
    px(desk, "1.10900")
    r = admin.post("/api/v1/admin/eod", json={})
    assert r.status_code == 200, r.text
    cash = Decimal(desk.balance(funded["id"])["cash"])
    assert cash == Decimal(100000) + Decimal(1500) + Decimal(25000)
    ledger = desk.client.get(f"{PREFIX}/accounts/{funded['id']}/ledger?limit=500").json()["items"]
    assert any(e["kind"] == "deposit" and e["evidence"].get("reason") == "scale_up" for e in ledger)
    assert_recompute_ok(desk, p1, p2["id"], funded["id"])


def test_a_daily_loss_breach_fails_the_account_and_liquidates_it_with_evidence(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = open_challenge(desk, "e2e-2step")["id"]
    px(desk, "1.10000")
    assert desk.order(acc, quantity="10").status_code == 201
    desk.tick(5)
    px(desk, "1.09400")  # -6,000 floating: below the 95,000 daily floor
    assert status(desk, acc) == "failed"
    snap = desk.client.get(f"{PREFIX}/accounts/{acc}/snapshot").json()
    assert snap["positions"] == []
    v = desk.client.get(f"{PREFIX}/accounts/{acc}/violations").json()["items"]
    breach = next(x for x in v if x["kind"] == "breach")
    assert breach["rule"] == "max_daily_loss" and breach["action"] == "fail"
    assert Decimal(breach["limit"]) == Decimal("95000")
    assert breach["evidence"]["anchor"] == "start_of_day_balance"
    # Orders are refused from now on.
    r = desk.order(acc, quantity="0.1")
    assert r.status_code == 422 and r.json()["error"]["code"] == "account_not_active"
    assert_recompute_ok(desk, acc)


def test_a_soft_daily_loss_pauses_the_account_until_the_next_day_start(desk: Any, admin: Any) -> None:
    post_plan(admin, SOFT_PLAN)
    acc = open_challenge(desk, "e2e-soft")["id"]
    px(desk, "1.10000")
    assert desk.order(acc, quantity="1").status_code == 201
    desk.tick(5)
    px(desk, "1.08900")  # -1,100 floating: below the day's floor, a soft breach
    assert status(desk, acc) == "day_paused"
    assert desk.client.get(f"{PREFIX}/accounts/{acc}/snapshot").json()["positions"] == []
    r = desk.order(acc, quantity="0.1")
    assert r.status_code == 422 and r.json()["error"]["code"] == "account_not_active"

    # The next day start lifts the pause (the roll is idempotent: twice is harmless).
    desk.clock.set((desk.clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=1))
    px(desk, "1.08900")
    assert admin.post("/api/v1/admin/eod", json={}).status_code == 200
    assert admin.post("/api/v1/admin/eod", json={}).status_code == 200
    assert status(desk, acc) == "active"
    assert desk.order(acc, quantity="0.1").status_code == 201
    stats = desk.client.get(f"{PREFIX}/accounts/{acc}/daily-stats").json()["items"]
    assert len(stats) == 2
    assert_recompute_ok(desk, acc)


def test_no_api_call_can_pass_an_account(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = open_challenge(desk, "e2e-2step")["id"]
    for path in (f"{PREFIX}/accounts/{acc}/pass", f"/api/v1/admin/prop/accounts/{acc}/pass"):
        assert admin.post(path, json={}).status_code in (404, 405)
    paths = desk.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.rstrip("/").endswith("/pass")]


def test_the_rules_view_explains_every_floor(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = open_challenge(desk, "e2e-2step")["id"]
    rules = desk.client.get(f"{PREFIX}/accounts/{acc}/rules").json()
    limits = {lim["rule"]: lim for lim in rules["limits"]}
    assert Decimal(limits["max_daily_loss"]["floor"]) == Decimal(95000)
    assert "start of day balance" in limits["max_daily_loss"]["computation"]
    assert Decimal(limits["max_loss"]["floor"]) == Decimal(90000)
    assert rules["seconds_to_reset"] > 0 and rules["timezone"] == "UTC"


def test_a_close_inside_a_news_blackout_is_refused_when_the_rule_covers_closing(desk: Any, admin: Any) -> None:
    acc = open_challenge(desk, "strict-risk", offer_id="100k")["id"]  # news: 30 min either side, open_and_close
    px(desk, "1.10000")
    r = desk.order(acc, quantity="1", stop_loss="1.09500")
    assert r.status_code == 201, r.text
    at = desk.clock.now() + timedelta(minutes=10)
    r = admin.post(
        "/api/v1/admin/calendar/events",
        json={"at": at.isoformat(), "currency": "USD", "impact": "high", "title": "Non-farm payrolls"},
    )
    assert r.status_code == 201, r.text
    desk.tick(60)
    px(desk, "1.10050")
    r = desk.client.post(f"{PREFIX}/accounts/{acc}/positions/EURUSD/close", json={})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "rule_violation" and r.json()["error"]["details"]["rule"] == "news_trading"
    desk.tick(45 * 60)  # past event + 30 minutes
    px(desk, "1.10050")
    r = desk.client.post(f"{PREFIX}/accounts/{acc}/positions/EURUSD/close", json={})
    assert r.status_code in (200, 201), r.text
    assert_recompute_ok(desk, acc)


def test_an_external_trade_reported_late_counts_on_the_day_it_happened(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN)
    acc = open_challenge(desk, "e2e-2step")["id"]
    opened = desk.clock.now()
    desk.tick(3 * 3600)
    body = {
        "account_id": acc,
        "ticket": "mt5-1",
        "symbol": "EURUSD",
        "side": "buy",
        "lots": "1",
        "open_time": opened.isoformat(),
        "open_price": "1.10000",
        "close_time": (opened + timedelta(hours=1)).isoformat(),
        "close_price": "1.10100",
        "profit": "100",
    }
    desk.tick(24 * 3600)  # reported the next day
    r = desk.client.post("/api/v1/risk/check-trade", json=body)
    assert r.status_code == 200, r.text
    stats = desk.client.get(f"{PREFIX}/accounts/{acc}/daily-stats").json()["items"]
    by_day = {s["trading_day"]: s for s in stats}
    assert Decimal(by_day[opened.date().isoformat()]["closed_pnl"]) == Decimal(100)
