"""The admin panel in a real browser (Debian Chromium via Playwright) against a live server.

A daily-loss breach is made through the execution core (an account on a plan whose daily loss pauses for the
day, and quotes that take it through the floor). The admin logs in through the login form, sees the breach in the
flags & violations view and in the live activity feed (a new order shows up in the feed without a reload), opens
the account, pauses it through the reason dialog (an empty reason is refused in the dialog), sees the status
paused and the audit entry, and resumes it. Screenshots: docs/screenshots/admin-{overview,violations,account,calendar,
plans}.png at 1440x900.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import PASSWORD, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LIVE_WAIT_MS = 3000  # the stream re-queries once a second

PLAN = """
id: desk-challenge
name: Desk Challenge
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {amount: "1000", action: pause_day}
  max_loss: {pct: 10, mode: static}
phases:
  - id: phase_1
    name: Challenge
    rules: {profit_target: {pct: 1}}
  - id: funded
    name: Funded
    profit_split_pct: 80
offers:
  - {id: 100k, starting_balance: "100000", price: "549"}
"""
POLICY = {"max_notional": "2000000", "max_position_equity_pct": "3000", "max_leverage": "30", "fee_bps": "0"}


def _ok(r: Any, *codes: int) -> dict[str, Any]:
    assert r.status_code in (codes or (200, 201)), r.text
    return r.json()  # type: ignore[no-any-return]


def _populate(server: Any, make_web_user: Any) -> dict[str, Any]:
    """Three traders on the plan: one passes (its funded account opens), one holds a small position, one breaches
    its daily loss by quotes (day_paused). Everything goes through the service API and the execution core."""
    _ok(server.admin.post("/api/v1/admin/plans", json={"text": PLAN}), 201)
    winner = make_web_user(email="winona@traders.test", display_name="Winona")
    holder = make_web_user(email="hank@traders.test", display_name="Hank")
    loser = make_web_user(email="lars@traders.test", display_name="Lars")

    def open_for(user: Any) -> str:
        body = {
            "owner_id": str(user.id),
            "mode": "challenge",
            "plan_id": "desk-challenge",
            "offer_id": "100k",
            "policy": POLICY,
            "start": True,
        }
        return _ok(server.service.post("/api/v1/prop/accounts", json=body), 201)["id"]  # type: ignore[no-any-return]

    def buy(acc: str, lots: str) -> None:
        _ok(
            server.service.post(
                f"/api/v1/prop/accounts/{acc}/orders", json={"symbol": "EURUSD", "side": "buy", "quantity": lots}
            ),
            201,
        )

    server.quote("EURUSD", "1.10000", "1.10010")
    passing = open_for(winner)
    buy(passing, "5")
    server.quote("EURUSD", "1.10300", "1.10310", advance=60)
    _ok(server.service.post(f"/api/v1/prop/accounts/{passing}/positions/EURUSD/close", json={}), 200, 201)

    holding, breaching = open_for(holder), open_for(loser)
    buy(holding, "0.5")
    buy(breaching, "1")
    server.quote("EURUSD", "1.09150", "1.09160", advance=30)  # -1,160 on one lot: below the 1,000 daily room
    status = _ok(server.service.get(f"/api/v1/prop/accounts/{breaching}"))["status"]
    assert status == "day_paused", status
    return {"holding": holding, "breaching": breaching, "loser": loser}


def _dialog_reason(page: Any, action: str, reason: str) -> None:
    page.click(f"#admin-controls [data-admin-action={action}]")
    dialog = page.locator("#reason-dialog")
    dialog.wait_for(state="visible")
    # An empty (or blank) reason is refused in the dialog; nothing is sent.
    page.fill("#reason-input", "   ")
    page.click("#reason-submit")
    assert page.locator("#reason-error").inner_text() == "A reason is required."
    assert dialog.is_visible()
    page.fill("#reason-input", reason)
    page.click("#reason-submit")
    dialog.wait_for(state="hidden")


def test_an_admin_sees_the_breach_live_and_pauses_and_resumes_the_account_with_reasons(
    live_server: Any, page: Any, make_web_user: Any
) -> None:
    server = live_server
    made = _populate(server, make_web_user)
    make_web_user(role="admin", email="ops@firm.test", display_name="Ops")

    # Log in through the form; the login page sends the admin on to the page asked for.
    page.goto("/admin")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#login-email", "ops@firm.test")
    page.fill("#login-password", PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin$"))

    # Overview: metrics, the breach in the activity feed, the trader table.
    page.wait_for_selector("#live-dot.on", timeout=LIVE_WAIT_MS * 2)
    breach = page.locator("#activity-feed li[data-kind=breach]")
    assert breach.count() >= 1 and "max_daily_loss" in breach.first.inner_text()
    assert "lars@traders.test" in breach.first.inner_text()
    assert page.locator("[data-metric=funded]").inner_text() == "1"
    assert page.locator("#traders-table tbody tr").count() == 4  # three phase-1 accounts and one funded

    # The feed is live: an order placed now appears without a reload.
    page.evaluate("window.__still_here = true")
    _ok(
        server.service.post(
            f"/api/v1/prop/accounts/{made['holding']}/orders",
            json={"symbol": "EURUSD", "side": "buy", "quantity": "0.3"},
        ),
        201,
    )
    page.wait_for_selector("#activity-feed li.is-new[data-kind=order]", timeout=LIVE_WAIT_MS)
    assert "0.3 EURUSD" in page.locator("#activity-feed li[data-kind=order]").first.inner_text()
    assert page.evaluate("window.__still_here") is True

    screenshot(page, "admin-overview")
    # Search the table (htmx partial): only the breaching trader remains.
    page.fill("#trader-q", "lars")
    expect(page.locator("#traders-table tbody tr")).to_have_count(1)

    # Flags & violations: the breach with its rule, evidence and the automatic action.
    page.click("nav.tabs >> text=Flags & violations")
    page.wait_for_url(re.compile(r"/admin/violations"))
    row = page.locator(f"#violations-table tr[data-kind=breach]:has(a[href='/admin/accounts/{made['breaching']}'])")
    assert row.count() == 1
    text = row.inner_text()
    assert "max daily loss" in text and "paused until the next day start" in text
    row.locator("summary").click()
    assert "start_of_day_balance" in row.locator(".evidence-pre").inner_text()
    screenshot(page, "admin-violations")

    # The account: pause with a reason, see the status and the audit entry; then resume.
    row.locator(f"a[href='/admin/accounts/{made['breaching']}']").click()
    page.wait_for_url(re.compile(rf"/admin/accounts/{made['breaching']}$"))
    assert page.locator("#account-status").get_attribute("data-status") == "day_paused"
    page.wait_for_selector("#equity-chart canvas")
    _dialog_reason(page, "pause", "Reviewing the breach with the trader")
    page.wait_for_selector("#account-status[data-status=paused]", timeout=LIVE_WAIT_MS)
    entry = page.locator("#audit-trail li[data-audit-action=pause]")
    assert entry.count() == 1 and "Reviewing the breach with the trader" in entry.inner_text()
    screenshot(page, "admin-account")

    _dialog_reason(page, "resume", "Reviewed: trading may continue")
    page.wait_for_selector("#account-status[data-status=active]", timeout=LIVE_WAIT_MS)
    assert page.locator("#audit-trail li[data-audit-action=resume]").count() == 1
    with server.platform.db.read() as c:
        audit = c.execute(
            "SELECT action, reason, actor FROM admin_audit WHERE account_id=%s ORDER BY id", (made["breaching"],)
        ).fetchall()
    assert [(a["action"], a["reason"]) for a in audit] == [
        ("pause", "Reviewing the breach with the trader"),
        ("resume", "Reviewed: trading may continue"),
    ]
    assert all(a["actor"].startswith("user:") for a in audit)

    # Plans: presets and versions, with the editor.
    page.click("nav.tabs >> text=Plans")
    page.wait_for_url(re.compile(r"/admin/plans"))
    assert page.locator("[data-plan-id=desk-challenge]").count() == 1
    assert page.locator("[data-plan-id=classic-2step] .badge", has_text="preset").count() == 1
    screenshot(page, "admin-plans")

    assert page.errors == [], "\n".join(page.errors)  # no JavaScript errors, no CSP violations


def test_a_plan_file_with_an_error_is_refused_with_the_key_and_a_valid_one_becomes_the_next_version(
    live_server: Any, page: Any, make_web_user: Any, login_as: Any
) -> None:
    admin = make_web_user(role="admin")
    login_as(page, admin)
    page.goto("/admin/plans")
    page.click("#new-plan-toggle")
    editor = page.locator("#new-plan form[data-plan-form]")
    editor.locator("textarea").fill(PLAN.replace('starting_balance: "100000"', 'starting_balance: "-5"'))
    editor.locator("button[type=submit]").click()
    result = editor.locator("[data-plan-result]")
    expect(result).to_have_class(re.compile("result-error"))
    assert "starting_balance" in result.inner_text()

    editor.locator("textarea").fill(PLAN)
    editor.locator("button[type=submit]").click()
    page.wait_for_selector("[data-plan-id=desk-challenge]")  # saved, and the page reloaded with it
    assert "v1" in page.locator("[data-plan-id=desk-challenge] .badge-ok").inner_text().lower()

    # Retire it with a reason (the dialog refuses an empty one).
    page.click("[data-retire-plan=desk-challenge]")
    page.click("#reason-submit")
    assert page.locator("#reason-error").inner_text() == "A reason is required."
    page.fill("#reason-input", "Pricing changed")
    page.click("#reason-submit")
    page.wait_for_selector("[data-plan-id=desk-challenge] .badge-muted")
    with live_server.platform.db.read() as c:
        row = c.execute("SELECT reason FROM admin_audit WHERE action='plan_retire'").fetchone()
    assert row["reason"] == "Pricing changed"
    # The refused plan file is the one expected failed request (the browser logs every 4xx response).
    assert [e for e in page.errors if "status of 422" not in e] == []


def test_an_admin_adds_a_high_impact_event_on_the_calendar_and_sees_it_highlighted_without_a_reload(
    live_server: Any, page: Any, make_web_user: Any, login_as: Any
) -> None:
    from datetime import timedelta

    from propdesk.marketdata.calendar import EconomicCalendar, EconomicEvent

    platform = live_server.platform
    now = platform.clock.now()
    EconomicCalendar(platform.db, platform.clock, platform.catalogue).upsert(
        [
            EconomicEvent(now + timedelta(days=2), "EUR", "medium", "German Ifo", "DE", "csv", "ifo"),
        ]
    )
    admin = make_web_user(role="admin")
    login_as(page, admin)
    page.goto("/admin")
    page.click("nav.tabs >> text=Calendar")
    page.wait_for_url(re.compile(r"/admin/calendar$"))
    expect(page.locator("#calendar-rows tr[data-event-id]")).to_have_count(1)
    page.evaluate("window.__still_here = true")

    # A currency that is not three letters is refused by the server; the reason is shown in the form.
    at = (now + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M")
    page.fill("#cal-at", at)
    page.fill("#cal-currency", "U5D")
    page.select_option("#cal-impact", "high")
    page.fill("#cal-title", "ISM Services PMI")
    page.click("#calendar-add-submit")
    expect(page.locator("#calendar-add-error")).to_contain_text("currency")
    expect(page.locator("#calendar-rows tr[data-event-id]")).to_have_count(1)

    page.fill("#cal-currency", "usd")  # upper-cased by the form
    page.click("#calendar-add-submit")
    row = page.locator("#calendar-rows tr.is-new")
    expect(row).to_have_count(1)
    expect(row).to_have_class(re.compile("is-upcoming-high"))
    text = row.inner_text()
    assert "ISM Services PMI" in text and "USD" in text and "high" in text.lower() and "EURUSD" in text
    assert "EST" in text or "EDT" in text  # the New York time next to UTC
    # Oldest first: the new event comes before the one two days out.
    titles = page.locator("#calendar-rows tr[data-event-id] td:nth-child(5)").all_inner_texts()
    assert titles == ["ISM Services PMI", "German Ifo"]
    assert page.evaluate("window.__still_here") is True  # no reload
    expect(page.locator("#calendar-add-error")).to_have_text("")

    with platform.db.read() as c:
        audit = c.execute("SELECT actor, details FROM admin_audit WHERE action='calendar_event_add'").fetchall()
    assert len(audit) == 1 and audit[0]["actor"] == f"user:{admin.id}"
    # After a reload the server renders the same row, highlighted.
    page.reload()
    expect(page.locator("#calendar-rows tr.is-upcoming-high")).to_have_count(1)
    screenshot(page, "admin-calendar")
    # The refused entry is the one expected failed request (the browser logs every 4xx response).
    assert [e for e in page.errors if "status of 422" not in e] == []
