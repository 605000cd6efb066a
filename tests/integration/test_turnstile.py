"""Sign-up bot check: with PROPDESK_TURNSTILE_SECRET set, sign-up verifies the widget token against siteverify
(a local stand-in speaking the real protocol) and refuses with 400 bot_check_failed; the sign-up page then may
load Cloudflare's widget, and only that page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.fakes.turnstile_server import FakeTurnstile
from tests.web_kit import PASSWORD, csrf_headers, open_test_platform, web_client

from propdesk.identity.turnstile import Turnstile
from propdesk.web.security import CSP


@pytest.fixture
def fake() -> Iterator[FakeTurnstile]:
    with FakeTurnstile(secret="test-secret", valid_tokens={"pass-token", "other-token"}) as f:
        yield f


@pytest.fixture
def web(db_url: str, clock: Any, fake: FakeTurnstile) -> Iterator[Any]:
    p = open_test_platform(
        db_url,
        clock,
        turnstile_secret="test-secret",
        turnstile_sitekey="1x00000000000000000000AA",
        turnstile_verify_url=fake.url,
    )
    try:
        with web_client(p, headers=csrf_headers(p)) as c:
            yield c
    finally:
        p.close()


def signup(web: Any, token: str | None, email: str = "n@example.com") -> Any:
    body: dict[str, Any] = {"email": email, "password": PASSWORD}
    if token is not None:
        body["turnstile_token"] = token
    return web.post("/api/v1/auth/signup", json=body)


def test_a_valid_token_lets_the_signup_through_and_is_sent_with_secret_and_ip(web: Any, fake: FakeTurnstile) -> None:
    r = signup(web, "pass-token")
    assert r.status_code == 201, r.text
    sent = fake.requests[-1]
    assert sent["secret"] == "test-secret" and sent["response"] == "pass-token"
    assert sent["remoteip"] == "testclient"
    assert sent["content_type"].startswith("application/x-www-form-urlencoded")


@pytest.mark.parametrize("token", [None, "", "forged-token", "x" * 3000])
def test_a_missing_or_refused_token_is_a_400_bot_check_failed(web: Any, token: str | None) -> None:
    r = signup(web, token)
    assert r.status_code in (400, 422), r.text
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "bot_check_failed"
    assert "set-cookie" not in r.headers


def test_a_token_works_once(web: Any) -> None:
    assert signup(web, "other-token", "a@example.com").status_code == 201
    web.cookies.clear()
    r = signup(web, "other-token", "b@example.com")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bot_check_failed"


def test_the_check_fails_closed_when_siteverify_errs_or_is_unreachable(fake: FakeTurnstile) -> None:
    fake.fail_with = 500
    assert Turnstile("test-secret", fake.url).verify("pass-token") is False
    assert Turnstile("test-secret", "http://127.0.0.1:9/siteverify", timeout=1).verify("pass-token") is False
    assert Turnstile(None, fake.url).verify(None) is True  # off without a secret


def test_a_wrong_secret_fails(fake: FakeTurnstile) -> None:
    assert Turnstile("wrong", fake.url).verify("pass-token") is False


def test_only_the_signup_page_may_load_the_widget(web: Any) -> None:
    page = web.get("/signup")
    assert page.status_code == 200
    assert 'data-sitekey="1x00000000000000000000AA"' in page.text
    assert "https://challenges.cloudflare.com/turnstile/v0/api.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' https://challenges.cloudflare.com" in csp
    assert "frame-src https://challenges.cloudflare.com" in csp and "frame-ancestors 'none'" in csp
    for other in ("/login", "/", "/reset"):
        assert web.get(other).headers["content-security-policy"] == CSP


def test_without_a_site_key_the_signup_page_loads_nothing_from_cloudflare(db_url: str, clock: Any) -> None:
    p = open_test_platform(db_url, clock)
    try:
        with web_client(p) as c:
            page = c.get("/signup")
            assert "challenges.cloudflare.com" not in page.text
            assert page.headers["content-security-policy"] == CSP
    finally:
        p.close()
