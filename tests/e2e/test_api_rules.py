"""Plans and the rules over HTTP: the catalogue, plan versions frozen onto accounts, retirement, offers, the rule
status view, the violations log and daily statistics, pre-trade refusals with their numbers, the news blackout,
drawdown warnings, and the day roll behind the scheduler's secret."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from challenge_kit import POLICY, assert_recompute_ok, post_plan, px, status

from propdesk.api.middleware import Access, access_rule

PREFIX = "/api/v1/prop"
EOD = "/api/v1/admin/eod"

pytestmark = pytest.mark.e2e

PRESETS = {"classic-2step", "one-step-eod", "futures-trailing", "daily-anchor-max", "strict-risk"}


PLAN_V1 = """
id: e2e-rules
name: E2E Rules
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {pct: 5, base: initial_balance, anchor: start_of_day_balance}
  max_loss: {pct: 10, mode: static}
  drawdown_warning: {used_pct: 80}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 10}, min_trading_days: {days: 3}}
  - id: funded
    profit_split_pct: 80
offers:
  - {id: 100k, starting_balance: "100000", price: "500"}
  - {id: 50k, starting_balance: "50000", price: "300"}
"""

# Version 2 tightens the daily loss to 3%.
PLAN_V2 = PLAN_V1.replace("max_daily_loss: {pct: 5,", "max_daily_loss: {pct: 3,")


# ---------------------------------------------------------------------------------------------- helpers
def challenge(desk: Any, plan: str, **extra: Any) -> dict[str, Any]:
    return desk.create_account(mode="challenge", plan_id=plan, policy=extra.pop("policy", POLICY), **extra)


def error(r: Any) -> dict[str, Any]:
    return r.json()["error"]  # type: ignore[no-any-return]


def rules_of(desk: Any, acc: str) -> dict[str, Any]:
    r = desk.client.get(f"{PREFIX}/accounts/{acc}/rules")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def limits_of(desk: Any, acc: str) -> dict[str, dict[str, Any]]:
    return {lim["rule"]: lim for lim in rules_of(desk, acc)["limits"]}


def violations(desk: Any, acc: str, **query: Any) -> list[dict[str, Any]]:
    r = desk.client.get(f"{PREFIX}/accounts/{acc}/violations", params={"limit": 500, **query})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def rule_state_rows(desk: Any, acc: str) -> tuple[Any, ...]:
    """Everything a day roll could change for an account, beyond what ``desk.state`` covers."""
    with desk.platform.db.read() as c:
        aid = uuid.UUID(acc)
        state = c.execute("SELECT state FROM rule_states WHERE account_id=%s", (aid,)).fetchone()
        stats = c.execute(
            "SELECT trading_day, start_balance, start_equity, high_equity, low_equity, closed_pnl,"
            " trades_opened, trades_closed, daily_floor, end_balance, end_equity FROM daily_stats"
            " WHERE account_id=%s ORDER BY trading_day",
            (aid,),
        ).fetchall()
        viol = c.execute("SELECT count(*) AS n FROM violations WHERE account_id=%s", (aid,)).fetchone()["n"]
    return (state["state"]["engine"] if state else None, stats, viol)


# ---------------------------------------------------------------------------------------------- catalogue
def test_the_plan_catalogue_lists_the_five_presets_with_their_offers(desk: Any) -> None:
    r = desk.client.get(f"{PREFIX}/plans")
    assert r.status_code == 200, r.text
    items = {p["id"]: p for p in r.json()["items"]}
    assert set(items) >= PRESETS
    for pid in PRESETS:
        plan = items[pid]
        assert plan["version"] >= 1 and plan["phases"], pid
        assert len(plan["offers"]) >= 2, pid
        for offer in plan["offers"]:
            assert Decimal(offer["starting_balance"]) > 0 and Decimal(offer["price"]) > 0, (pid, offer)
    assert {o["id"] for o in items["classic-2step"]["offers"]} >= {"10k", "100k"}
    assert Decimal(items["strict-risk"]["phases"][0]["rules"]["profit_target"]["pct"]) == Decimal(8)
    one = desk.client.get(f"{PREFIX}/plans/one-step-eod").json()
    assert one["id"] == "one-step-eod" and one["timezone"] == "America/New_York" and one["day_starts_at"] == "17:00"
    assert [v["version"] for v in one["versions"]] == [1]
    missing = desk.client.get(f"{PREFIX}/plans/no-such-plan")
    assert missing.status_code == 404 and error(missing)["code"] == "plan_not_found"


def test_an_admin_creates_a_new_plan_version_from_yaml_and_the_version_increments(desk: Any, admin: Any) -> None:
    v1 = post_plan(admin, PLAN_V1)
    assert v1["id"] == "e2e-rules" and v1["version"] == 1
    assert {o["id"] for o in v1["offers"]} == {"100k", "50k"}
    v2 = post_plan(admin, PLAN_V2)
    assert v2["version"] == 2
    # A preset edited by an admin gets the next version after the shipped one.
    preset = desk.client.get(f"{PREFIX}/plans/classic-2step").json()
    edited = post_plan(admin, PLAN_V1.replace("id: e2e-rules", "id: classic-2step"))
    assert edited["version"] == preset["version"] + 1
    plan = desk.client.get(f"{PREFIX}/plans/e2e-rules").json()
    assert plan["version"] == 2
    assert [v["version"] for v in plan["versions"]] == [1, 2]
    assert all(v["source"] == "admin" and v["retired_at"] is None for v in plan["versions"])
    catalogue = {p["id"]: p for p in desk.client.get(f"{PREFIX}/plans").json()["items"]}
    assert catalogue["e2e-rules"]["version"] == 2
    assert catalogue["e2e-rules"]["phases"][0]["rules"]["max_daily_loss"]["pct"] == "3"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (PLAN_V1.replace("max_loss: {pct: 10, mode: static}", "max_loss: {pct: 10, mode: sideways}"), "mode"),
        (PLAN_V1.replace("max_daily_loss: {pct: 5,", "max_daily_loss: {pct: 5, bogus_key: 1,"), "bogus_key"),
        (PLAN_V1.replace("timezone: UTC", "timezone: Mars/Olympus"), "timezone"),
        (
            PLAN_V1.replace('starting_balance: "100000"\ntimezone', 'starting_balance: "-5"\ntimezone'),
            "starting_balance",
        ),
    ],
)
def test_an_invalid_plan_is_refused_with_invalid_plan_naming_the_key(
    desk: Any, admin: Any, text: str, key: str
) -> None:
    r = admin.post("/api/v1/admin/plans", json={"text": text})
    assert r.status_code == 422, r.text
    err = error(r)
    assert err["code"] == "invalid_plan"
    assert key in err["details"]["key"], err
    assert err["details"]["reason"]
    assert desk.client.get(f"{PREFIX}/plans/e2e-rules").status_code == 404  # nothing was stored


def test_plan_text_that_is_not_yaml_is_refused_with_invalid_plan(admin: Any) -> None:
    r = admin.post("/api/v1/admin/plans", json={"text": "id: [unclosed\n  - : :"})
    assert r.status_code == 422 and error(r)["code"] == "invalid_plan", r.text
    assert error(r)["details"]["key"]


def test_a_service_token_cannot_create_or_retire_plans(client: Any, anon: Any) -> None:
    r = client.post("/api/v1/admin/plans", json={"text": PLAN_V1})
    assert r.status_code == 403 and error(r)["code"] == "forbidden"
    assert client.post("/api/v1/admin/plans/classic-2step/retire", json={}).status_code == 403
    assert anon.post("/api/v1/admin/plans", json={"text": PLAN_V1}).status_code == 401
    assert client.get(f"{PREFIX}/plans/e2e-rules").status_code == 404


# ---------------------------------------------------------------------------------------------- versions frozen
def test_an_account_keeps_its_plan_version_after_a_new_version_and_new_accounts_get_the_new_one(
    desk: Any, admin: Any
) -> None:
    post_plan(admin, PLAN_V1)
    old = challenge(desk, "e2e-rules")
    assert old["rulebook_id"] == "e2e-rules" and old["rulebook_version"] == 1
    assert Decimal(limits_of(desk, old["id"])["max_daily_loss"]["floor"]) == Decimal(95000)
    with desk.platform.db.read() as c:
        frozen = c.execute("SELECT rulebook FROM accounts WHERE id=%s", (uuid.UUID(old["id"]),)).fetchone()["rulebook"]

    post_plan(admin, PLAN_V2)
    new = challenge(desk, "e2e-rules")
    assert new["rulebook_version"] == 2
    assert Decimal(limits_of(desk, new["id"])["max_daily_loss"]["floor"]) == Decimal(97000)

    # The running account still judges by version 1, and its stored rulebook did not change.
    assert Decimal(limits_of(desk, old["id"])["max_daily_loss"]["floor"]) == Decimal(95000)
    assert rules_of(desk, old["id"])["rulebook"] == {"id": "e2e-rules", "version": 1, "offer_id": None}
    with desk.platform.db.read() as c:
        again = c.execute("SELECT rulebook FROM accounts WHERE id=%s", (uuid.UUID(old["id"]),)).fetchone()["rulebook"]
    assert again == frozen
    # The loss that v2 would breach (-4,000 against a 3% floor) leaves the v1 account active.
    px(desk, "1.10000")
    assert desk.order(old["id"], quantity="10").status_code == 201
    assert desk.order(new["id"], quantity="10").status_code == 201
    desk.tick(5)
    px(desk, "1.09600")
    assert status(desk, old["id"]) == "active"
    assert status(desk, new["id"]) == "failed"
    # An explicit older version can still be chosen while it is not retired.
    pinned = challenge(desk, "e2e-rules", plan_version=1)
    assert pinned["rulebook_version"] == 1
    assert_recompute_ok(desk, old["id"], new["id"], pinned["id"])


def test_a_retired_plan_leaves_the_catalogue_and_refuses_new_accounts_but_running_ones_keep_trading(
    desk: Any, admin: Any
) -> None:
    post_plan(admin, PLAN_V1)
    running = challenge(desk, "e2e-rules")["id"]
    r = admin.post("/api/v1/admin/plans/e2e-rules/retire", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"plan_id": "e2e-rules", "retired_versions": 1}

    catalogue = {p["id"] for p in desk.client.get(f"{PREFIX}/plans").json()["items"]}
    assert "e2e-rules" not in catalogue and catalogue >= PRESETS
    r = desk.client.post(
        f"{PREFIX}/accounts", json={"owner_id": "t", "mode": "challenge", "plan_id": "e2e-rules", "policy": POLICY}
    )
    assert r.status_code == 404 and error(r)["code"] == "plan_not_found", r.text
    r = desk.client.post(
        f"{PREFIX}/accounts",
        json={"owner_id": "t", "mode": "challenge", "plan_id": "e2e-rules", "plan_version": 1, "policy": POLICY},
    )
    assert r.status_code == 409 and error(r)["code"] == "plan_retired", r.text
    # Retiring twice: nothing left to retire.
    again = admin.post("/api/v1/admin/plans/e2e-rules/retire", json={})
    assert again.status_code == 404 and error(again)["code"] == "plan_not_found"

    # The account already on the plan is untouched: it trades and its rules still apply.
    px(desk, "1.10000")
    assert desk.order(running, quantity="1").status_code == 201
    assert status(desk, running) == "active"
    assert rules_of(desk, running)["rulebook"]["id"] == "e2e-rules"
    assert Decimal(limits_of(desk, running)["max_daily_loss"]["floor"]) == Decimal(95000)
    assert_recompute_ok(desk, running)


# ---------------------------------------------------------------------------------------------- offers
def test_an_account_created_with_an_offer_takes_the_offers_starting_balance(desk: Any) -> None:
    acc = challenge(desk, "classic-2step", offer_id="25k")
    assert acc["offer_id"] == "25k" and acc["rulebook_id"] == "classic-2step"
    assert Decimal(acc["starting_balance"]) == Decimal(25000)
    assert Decimal(acc["balance"]["cash"]) == Decimal(25000)
    limits = limits_of(desk, acc["id"])
    assert Decimal(limits["max_daily_loss"]["floor"]) == Decimal(23750)  # 5% of 25,000
    assert Decimal(limits["max_loss"]["floor"]) == Decimal(22500)  # 10% static
    # Absolute amounts come from the offer's overrides.
    fut = challenge(desk, "futures-trailing", offer_id="100k")
    assert Decimal(fut["balance"]["cash"]) == Decimal(100000)
    assert Decimal(limits_of(desk, fut["id"])["max_loss"]["floor"]) == Decimal(97000)


def test_a_bad_offer_or_a_plan_outside_challenge_mode_is_refused(desk: Any) -> None:
    def create(**body: Any) -> Any:
        return desk.client.post(f"{PREFIX}/accounts", json={"owner_id": "t", "mode": "challenge", **body})

    r = create(plan_id="classic-2step", offer_id="7k")
    assert r.status_code == 422 and error(r)["code"] == "invalid_offer", r.text
    r = create(plan_id="classic-2step", mode="audition")
    assert r.status_code == 422 and error(r)["code"] == "invalid_plan", r.text
    r = create(plan_id="classic-2step", starting_balance="5000")
    assert r.status_code == 422 and error(r)["code"] == "invalid_plan", r.text
    r = create(offer_id="10k")
    assert r.status_code == 422 and error(r)["code"] == "invalid_plan", r.text
    r = create(plan_id="classic-2step", phase="phase_9")
    assert r.status_code == 422 and error(r)["code"] == "invalid_phase", r.text
    r = create(plan_id="no-such-plan")
    assert r.status_code == 404 and error(r)["code"] == "plan_not_found", r.text
    with desk.platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 0


# ---------------------------------------------------------------------------------------------- rule status
def test_the_rules_view_of_a_started_account_shows_every_limit_progress_and_the_next_reset(
    desk: Any, admin: Any
) -> None:
    post_plan(admin, PLAN_V1)
    acc = challenge(desk, "e2e-rules")["id"]
    px(desk, "1.10000", spread="0")
    assert desk.order(acc, quantity="5").status_code == 201
    desk.tick(30)
    px(desk, "1.09800", spread="0")  # -1,000 floating
    view = rules_of(desk, acc)
    assert view["started"] is True and view["status"] == "active" and view["phase"] == "phase_1"
    assert view["rulebook"] == {"id": "e2e-rules", "version": 1, "offer_id": None}
    limits = {lim["rule"]: lim for lim in view["limits"]}
    assert set(limits) == {"max_daily_loss", "max_loss"}
    for lim in limits.values():
        assert {"floor", "value", "room", "used_pct", "computation"} <= set(lim)
        assert Decimal(lim["value"]) == Decimal(99000)
        assert Decimal(lim["room"]) == Decimal(lim["value"]) - Decimal(lim["floor"])
    daily, overall = limits["max_daily_loss"], limits["max_loss"]
    assert Decimal(daily["floor"]) == Decimal(95000) and Decimal(daily["used_pct"]) == Decimal(20)
    assert "95000.00" in daily["computation"] and "start of day balance" in daily["computation"]
    assert Decimal(overall["floor"]) == Decimal(90000) and Decimal(overall["used_pct"]) == Decimal(10)
    assert "initial balance 100000.00" in overall["computation"]
    assert view["progress"]["profit_target"] == {"value": "0.00", "target": "10000.00", "met": False}
    assert view["progress"]["min_trading_days"] == {"value": 1, "target": 3, "met": False}
    # T0 is 10:00 UTC: the next UTC day start is 14 hours (minus the 30 s ticked) away.
    assert view["next_day_reset"] == "2026-03-03T00:00:00Z"
    assert view["seconds_to_reset"] == 14 * 3600 - 30
    assert view["timezone"] == "UTC" and view["day_starts_at"] == "00:00"
    assert "drawdown_warning" in view["rules"]


def test_the_rules_view_of_a_pending_account_shows_its_rules_before_it_starts(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN_V1)
    acc = challenge(desk, "e2e-rules", start=False, offer_id="50k")
    assert acc["status"] == "pending"
    view = rules_of(desk, acc["id"])
    assert view["started"] is False and view["status"] == "pending"
    limits = {lim["rule"]: lim for lim in view["limits"]}
    assert Decimal(limits["max_daily_loss"]["floor"]) == Decimal(47500)
    assert Decimal(limits["max_loss"]["floor"]) == Decimal(45000)
    assert view["progress"]["profit_target"]["target"] == "5000.00"
    # Reading it started nothing.
    with desk.platform.db.read() as c:
        assert c.execute("SELECT 1 FROM rule_states WHERE account_id=%s", (uuid.UUID(acc["id"]),)).fetchone() is None
    assert status(desk, acc["id"]) == "pending"
    # An account without a rulebook answers too, with nothing to show.
    bare = desk.create_account(mode="audition")
    plain = rules_of(desk, bare["id"])
    assert plain["started"] is False and plain["limits"] == [] and plain["rulebook"] is None
    assert desk.client.get(f"{PREFIX}/accounts/{uuid.uuid4()}/rules").status_code == 404


# ---------------------------------------------------------------------------------------------- logs
def test_violations_are_paginated_newest_first_with_limit_and_cursor(desk: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k")["id"]
    px(desk, "1.10000")
    for _ in range(5):  # five refusals: no stop loss
        r = desk.order(acc, quantity="0.1")
        assert r.status_code == 422 and error(r)["code"] == "rule_violation"
        desk.tick(1)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = desk.client.get(f"{PREFIX}/accounts/{acc}/violations", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 2
        seen += [v["id"] for v in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len(set(seen)) == 5 and pages == 3
    assert seen == sorted(seen, reverse=True)
    bad = desk.client.get(f"{PREFIX}/accounts/{acc}/violations", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422, bad.text
    assert desk.client.get(f"{PREFIX}/accounts/{acc}/violations", params={"limit": 0}).status_code == 422


def test_daily_stats_have_one_row_per_trading_day(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN_V1)
    acc = challenge(desk, "e2e-rules")["id"]
    for day in range(3):
        px(desk, "1.10000", spread="0")
        assert desk.order(acc, quantity="1").status_code == 201
        desk.tick(60)
        px(desk, "1.10100", spread="0")
        r = desk.client.post(f"{PREFIX}/accounts/{acc}/positions/EURUSD/close", json={})
        assert r.status_code in (200, 201), r.text
        if day < 2:
            desk.tick(24 * 3600)
            assert admin.post(EOD, json={}).status_code == 200
    r = desk.client.get(f"{PREFIX}/accounts/{acc}/daily-stats")
    assert r.status_code == 200, r.text
    rows = r.json()["items"]
    assert [s["trading_day"] for s in rows] == ["2026-03-04", "2026-03-03", "2026-03-02"]
    for s in rows:
        assert Decimal(s["closed_pnl"]) == Decimal(100) and s["trades_opened"] == 1 and s["trades_closed"] == 1
    assert Decimal(rows[-1]["start_balance"]) == Decimal(100000)
    assert Decimal(rows[0]["start_balance"]) == Decimal(100200)
    assert Decimal(rows[0]["daily_floor"]) == Decimal(95200)
    # Closed days carry their end-of-day figures.
    assert Decimal(rows[-1]["end_balance"]) == Decimal(100100)
    page1 = desk.client.get(f"{PREFIX}/accounts/{acc}/daily-stats", params={"limit": 2}).json()
    page2 = desk.client.get(
        f"{PREFIX}/accounts/{acc}/daily-stats", params={"limit": 2, "cursor": page1["next_cursor"]}
    ).json()
    assert [s["trading_day"] for s in page1["items"] + page2["items"]] == [s["trading_day"] for s in rows]
    assert page2["next_cursor"] is None
    assert_recompute_ok(desk, acc)


# ---------------------------------------------------------------------------------------------- pre-trade rules
def test_an_order_without_a_stop_loss_on_strict_risk_is_refused_with_the_rule_and_the_numbers(desk: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k")["id"]
    px(desk, "1.10000")
    before = desk.state(acc)
    r = desk.order(acc, quantity="0.1")
    assert r.status_code == 422, r.text
    err = error(r)
    assert err["code"] == "rule_violation"
    assert err["details"]["rule"] == "max_risk_per_trade"
    assert err["details"]["require_stop_loss"] is True
    assert Decimal(err["details"]["max_risk"]) == Decimal(500)  # 2% of 25,000
    assert Decimal(err["details"]["limit"]) == Decimal(500) and err["details"]["pct"] == "2"
    assert "stop loss" in err["message"]
    # The refusal is recorded: a rejected order, its ledger entry, and a violation of kind reject.
    after = desk.state(acc)
    # (status, cash, equity, ledger_seq, ledger rows, orders, fills, positions, decision actions)
    assert after[0] == "active" and after[1] == before[1]
    assert after[4] == before[4] + 1 and after[5] == before[5] + 1 and after[6:] == before[6:]
    [v] = violations(desk, acc)
    assert v["rule"] == "max_risk_per_trade" and v["kind"] == "reject" and v["action"] == "reject_order"
    assert Decimal(v["limit"]) == Decimal(500) and v["evidence"]["require_stop_loss"] is True
    assert len(v["inputs_hash"]) == 64
    orders = desk.client.get(f"{PREFIX}/accounts/{acc}/orders").json()["items"]
    assert orders[-1]["status"] == "rejected" and orders[-1]["reject_code"] == "rule_violation"


def test_an_order_risking_more_than_two_percent_is_refused_with_the_computed_risk(desk: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k")["id"]
    px(desk, "1.10000")  # ask 1.10010: a buy enters there
    # 0.1 lot x 100,000 x (1.10010 - 1.04010) = 600 > 500.
    r = desk.order(acc, quantity="0.1", stop_loss="1.04010")
    assert r.status_code == 422, r.text
    err = error(r)
    assert err["code"] == "rule_violation" and err["details"]["rule"] == "max_risk_per_trade"
    assert Decimal(err["details"]["risk"]) == Decimal(600)
    assert Decimal(err["details"]["value"]) == Decimal(600)
    assert Decimal(err["details"]["max_risk"]) == Decimal(500)
    assert Decimal(err["details"]["equity"]) == Decimal(25000)
    assert err["details"]["entry"] == "1.10010" and err["details"]["stop_loss"] == "1.04010"
    assert "600.00" in err["message"] and "2.40%" in err["message"]
    [v] = violations(desk, acc)
    assert v["kind"] == "reject" and Decimal(v["value"]) == Decimal(600)
    # Exactly 2% is allowed: 0.1 x 100,000 x 0.05 = 500.
    ok = desk.order(acc, quantity="0.1", stop_loss="1.05010")
    assert ok.status_code == 201, ok.text
    assert len(violations(desk, acc)) == 1
    assert_recompute_ok(desk, acc)


def test_a_high_impact_news_event_blacks_out_orders_until_its_window_ends(desk: Any, admin: Any) -> None:
    acc = challenge(desk, "strict-risk", offer_id="25k")["id"]
    event_at = desk.clock.now() + timedelta(minutes=10)
    r = admin.post(
        "/api/v1/admin/calendar/events",
        json={"at": event_at.isoformat(), "currency": "USD", "impact": "high", "title": "US CPI"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["currency"] == "USD" and r.json()["source"] == "admin"
    # A service token cannot enter events.
    assert (
        desk.client.post(
            "/api/v1/admin/calendar/events",
            json={"at": event_at.isoformat(), "currency": "USD", "impact": "high", "title": "x"},
        ).status_code
        == 403
    )

    px(desk, "1.10000")
    r = desk.order(acc, quantity="0.1", stop_loss="1.09010")
    assert r.status_code == 422, r.text
    err = error(r)
    assert err["code"] == "rule_violation" and err["details"]["rule"] == "news_trading"
    assert err["details"]["events"][0]["title"] == "US CPI"
    assert err["details"]["minutes_before"] == 30 and err["details"]["minutes_after"] == 30
    # At the window's end (event + 30 min) the blackout still holds; one second later it is over.
    desk.clock.set(event_at + timedelta(minutes=30))
    px(desk, "1.10000")
    r = desk.order(acc, quantity="0.1", stop_loss="1.09010")
    assert r.status_code == 422 and error(r)["details"]["rule"] == "news_trading", r.text
    desk.clock.set(event_at + timedelta(minutes=30, seconds=1))
    px(desk, "1.10000")
    r = desk.order(acc, quantity="0.1", stop_loss="1.09010")
    assert r.status_code == 201, r.text
    refused = [v for v in violations(desk, acc) if v["rule"] == "news_trading"]
    assert len(refused) == 2 and all(v["kind"] == "reject" for v in refused)
    # A medium-impact event does not black out a plan that watches high impact only.
    later = desk.clock.now() + timedelta(minutes=5)
    assert (
        admin.post(
            "/api/v1/admin/calendar/events",
            json={"at": later.isoformat(), "currency": "EUR", "impact": "medium", "title": "ECB speech"},
        ).status_code
        == 201
    )
    desk.tick(1)
    px(desk, "1.10000")
    assert desk.order(acc, quantity="0.1", stop_loss="1.09010").status_code == 201
    assert_recompute_ok(desk, acc)


def test_a_drawdown_warning_is_recorded_once_per_limit_per_trading_day(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN_V1)
    acc = challenge(desk, "e2e-rules")["id"]
    px(desk, "1.10000", spread="0")
    assert desk.order(acc, quantity="10").status_code == 201

    def warnings() -> list[dict[str, Any]]:
        return [v for v in violations(desk, acc) if v["rule"] == "drawdown_warning"]

    desk.tick(5)
    px(desk, "1.09700", spread="0")  # -3,000: 60% of the daily allowance used
    assert warnings() == []
    desk.tick(5)
    px(desk, "1.09590", spread="0")  # -4,100: 82% used
    [w] = warnings()
    assert w["kind"] == "warning" and w["action"] == "warn" and w["severity"] == "warning"
    assert w["evidence"]["limit"] == "max_daily_loss" and w["evidence"]["trading_day"] == "2026-03-02"
    assert Decimal(w["evidence"]["used_pct"]) == Decimal(82) and w["evidence"]["threshold_pct"] == "80"
    assert Decimal(w["limit"]) == Decimal(95000) and Decimal(w["value"]) == Decimal(95900)
    # Back up and down again the same day: no second warning.
    for bid in ("1.09900", "1.09550", "1.09900", "1.09560"):
        desk.tick(5)
        px(desk, bid, spread="0")
    assert len(warnings()) == 1
    assert status(desk, acc) == "active"
    # The next trading day: the carried loss is 82% of the new day's allowance at once -> one new warning.
    desk.clock.set(desk.clock.now().replace(hour=0, minute=0, second=5) + timedelta(days=1))
    # The boundary is the day roll's to process (the mark-to-market worker runs it every cycle): the risk book
    # judges prices against the floors of the day it was given.
    assert admin.post(EOD, json={}).status_code == 200
    px(desk, "1.09590", spread="0")
    days = sorted(w["evidence"]["trading_day"] for w in warnings())
    assert days == ["2026-03-02", "2026-03-03"]
    assert all(w["evidence"]["limit"] == "max_daily_loss" for w in warnings())
    assert status(desk, acc) == "active"
    assert_recompute_ok(desk, acc)


# ---------------------------------------------------------------------------------------------- day roll
CRON_SECRET = "cron_e2e_secret_0123456789abcdef"


def test_the_day_roll_accepts_the_cron_secret_and_the_secret_opens_no_other_route(
    platform_factory: Any, clock: Any, client: Any, admin: Any
) -> None:
    from fastapi.testclient import TestClient

    from propdesk.web.app import create_app

    # The extra platform accepts the same service and admin tokens as the fixtures' one.
    SERVICE = {"Authorization": client.headers["Authorization"]}  # noqa: N806
    ADMIN = {"Authorization": admin.headers["Authorization"]}  # noqa: N806
    platform = platform_factory(cron_secret=CRON_SECRET)
    cron = {"Authorization": f"Bearer {CRON_SECRET}"}
    with TestClient(create_app(platform)) as c:
        acc = c.post(
            f"{PREFIX}/accounts",
            headers=SERVICE,
            json={"owner_id": "t", "mode": "challenge", "plan_id": "classic-2step", "start": True},
        )
        assert acc.status_code == 201, acc.text
        clock.advance(24 * 3600)
        r = c.post(EOD, headers=cron, json={})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rolled"] == 1 and body["accounts"] == 1 and body["failed"] == []
        assert c.post(EOD, headers=cron).status_code == 200  # no body is fine too
        # The secret opens nothing else: every other /api route from the OpenAPI document answers 403.
        paths = c.get("/openapi.json").json()["paths"]
        checked = 0
        for path, ops in paths.items():
            if not path.startswith("/api/") or path == EOD:
                continue
            url = path
            for name in ("account_id", "order_id", "decision_action_uuid", "fill_id"):
                url = url.replace("{" + name + "}", str(uuid.uuid4()))
            url = url.replace("{plan_id}", "classic-2step").replace("{symbol}", "EURUSD")
            url = url.replace("{clone_id}", "c1").replace("{token_id}", "x")
            for method in ops:
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                if access_rule(path, method.upper()) is Access.PUBLIC:
                    continue  # the public plan catalogue and /api/v1/auth/* need no credentials at all
                r = c.request(method.upper(), url, headers=cron, json={})
                assert r.status_code == 403, (method, url, r.status_code, r.text)
                assert r.json()["error"]["code"] == "forbidden"
                checked += 1
        assert checked > 20
        # A service token may not roll the day; an admin token may; no token is 401.
        r = c.post(EOD, headers=SERVICE, json={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert c.post(EOD, headers=ADMIN, json={}).status_code == 200
        r = c.post(EOD, json={})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert c.post(EOD, headers={"Authorization": "Bearer wrong-secret"}).status_code == 401


def test_rolling_the_day_twice_is_harmless(desk: Any, admin: Any) -> None:
    post_plan(admin, PLAN_V1)
    acc = challenge(desk, "e2e-rules")["id"]
    px(desk, "1.10000", spread="0")
    assert desk.order(acc, quantity="2").status_code == 201
    desk.tick(60)
    px(desk, "1.09900", spread="0")
    desk.clock.set(desk.clock.now().replace(hour=0, minute=0, second=30) + timedelta(days=1))
    first = admin.post(EOD, json={})
    assert first.status_code == 200 and first.json()["rolled"] == 1, first.text
    state, rules = desk.state(acc), rule_state_rows(desk, acc)
    assert [s["trading_day"].isoformat() for s in rules[1]] == ["2026-03-02", "2026-03-03"]
    second = admin.post(EOD, json={})
    # Nothing is due any more (the next boundary is a day away): the account is considered and left alone.
    assert second.status_code == 200 and second.json()["accounts"] == 1 and second.json()["rolled"] == 0
    assert desk.state(acc) == state
    assert rule_state_rows(desk, acc) == rules
    # Later the same day, once more: still nothing new (the day already started).
    desk.tick(3600)
    assert admin.post(EOD, json={}).status_code == 200
    after = rule_state_rows(desk, acc)
    assert after[1] == rules[1] and after[2] == rules[2]
    assert desk.state(acc) == state
    assert_recompute_ok(desk, acc)
