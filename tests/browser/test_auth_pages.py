"""The account pages in a real browser: login (with ?next and an inline error), the emailed reset link, log out;
no CSP violation or script error on the way."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.e2e


def test_login_shows_a_wrong_password_inline_then_goes_to_next(live_server: Any, page: Any, make_web_user: Any) -> None:
    user = make_web_user(email="ann@example.test")
    page.goto("/app")
    page.wait_for_url(re.compile(r"/login\?next=%2Fapp"))
    page.fill("#login-email", user.email)
    page.fill("#login-password", "Wrong-password-1")
    page.locator("#login-form button[type=submit]").click()
    error = page.locator("#login-form [data-form-error]")
    error.wait_for(state="visible")
    assert "wrong" in error.inner_text().lower()
    page.fill("#login-password", PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/app$"))
    # The refused login is logged by the browser as a failed resource (401); nothing else may appear.
    assert [e for e in page.errors if "status of 401" not in e] == []


def test_an_admin_lands_on_the_admin_panel(live_server: Any, page: Any, make_web_user: Any) -> None:
    boss = make_web_user(role="admin")
    page.goto("/login")
    page.fill("#login-email", boss.email)
    page.fill("#login-password", PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin"))
    assert page.errors == []


def test_the_emailed_reset_link_sets_a_new_password(live_server: Any, page: Any, make_web_user: Any) -> None:
    user = make_web_user(email="bob@example.test")
    page.goto("/reset")
    page.fill("#reset-email", user.email)
    page.locator("#reset-request-form button[type=submit]").click()
    page.locator("#reset-request-form [data-form-status]").wait_for(state="visible")
    with live_server.platform.db.read() as c:
        body = c.execute("SELECT body FROM email_outbox ORDER BY id DESC LIMIT 1").fetchone()["body"]
    link = re.search(r"https?://\S+/reset\?token=\S+", body)
    assert link, body
    page.goto(link.group(0))
    page.fill("#reset-password", "Brand-new-pass-5")
    page.locator("#reset-confirm-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#login-email", user.email)
    page.fill("#login-password", "Brand-new-pass-5")
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/app$"))
    assert page.errors == []


def test_log_out_ends_the_session(live_server: Any, page: Any, make_web_user: Any, login_as: Any) -> None:
    login_as(page, make_web_user())
    page.goto("/app")
    page.locator("form[action='/logout'] button").click()
    page.wait_for_url(re.compile(r"/$"))
    page.goto("/app")
    page.wait_for_url(re.compile(r"/login\?next="))
    assert page.errors == []


def test_login_with_a_one_time_code(live_server: Any, page: Any, make_web_user: Any) -> None:
    from propdesk.identity import totp

    boss = make_web_user(role="admin")
    secret = live_server.platform.identity.enroll_totp_directly(boss.id, actor="test").secret
    page.goto("/login")
    code_field = page.locator("#login-totp")
    assert not code_field.is_visible()
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    assert code_field.get_attribute("inputmode") == "numeric"
    page.fill("#login-email", boss.email)
    page.fill("#login-password", PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    code_field.wait_for(state="visible")  # the API answered totp_required
    assert "code" in page.locator("#login-form [data-form-error]").inner_text().lower()
    # A wrong code: the same refusal as a wrong password, inline.
    good = totp.code_at(secret, live_server.clock.now().timestamp())
    page.fill("#login-totp", "000000" if good != "000000" else "111111")
    page.locator("#login-form button[type=submit]").click()
    page.locator("#login-form [data-form-error]").filter(has_text="wrong").wait_for(state="visible")
    page.fill("#login-totp", good)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin"))
    assert [e for e in page.errors if "status of 401" not in e] == []


def test_the_security_page_enrolls_and_removes_a_one_time_code(
    live_server: Any, page: Any, make_web_user: Any, login_as: Any
) -> None:
    from propdesk.identity import totp

    user = make_web_user()
    login_as(page, user)
    page.goto("/account/security")
    page.locator("#totp-start").click()
    secret_el = page.locator("[data-totp-secret]")
    secret_el.wait_for(state="visible")
    secret = secret_el.inner_text().strip()
    assert page.locator("[data-totp-uri]").inner_text().startswith("otpauth://totp/PropDesk:")
    now = live_server.clock.now().timestamp()
    page.fill("#totp-confirm-code", totp.code_at(secret, now))
    page.locator("#totp-confirm-form button[type=submit]").click()
    page.locator("#totp-remove-form").wait_for(state="visible")
    assert live_server.platform.identity.totp_status(user.id)["enabled"] is True
    # Turning it off takes a new code (the confirming one is spent).
    live_server.clock.advance(30)
    page.fill("#totp-remove-code", totp.code_at(secret, now + 30))
    page.locator("#totp-remove-form button[type=submit]").click()
    page.locator("#totp-setup").wait_for(state="visible")
    assert live_server.platform.identity.totp_status(user.id)["enabled"] is False
    assert page.errors == []
