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
