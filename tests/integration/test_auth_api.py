"""The auth JSON API over HTTP: sign-up, login, logout, password reset, /api/v1/me; cookies; no enumeration;
the path policy for sessions; the account pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.web_kit import (
    ADMIN_TOKEN,
    PASSWORD,
    SERVICE_TOKEN,
    csrf_headers,
    login_cookie,
    make_user,
    open_test_platform,
    web_client,
)

from propdesk.identity.users import UserRole
from propdesk.web.pages_auth import safe_next


@pytest.fixture
def web(platform: Any) -> Iterator[Any]:
    """A browser-like client: same-origin Origin header on every request."""
    with web_client(platform, headers=csrf_headers(platform)) as c:
        yield c


def signup(web: Any, email: str = "new@example.com", password: str = PASSWORD, **extra: Any) -> Any:
    return web.post(
        "/api/v1/auth/signup",
        json={"email": email, "password": password, "display_name": "New Trader", "timezone": "Europe/Berlin", **extra},
    )


def outbox(platform: Any) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        return list(c.execute("SELECT * FROM email_outbox ORDER BY id").fetchall())


def test_signup_creates_a_trader_and_logs_it_in(web: Any, platform: Any) -> None:
    r = signup(web)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user"]["email"] == "new@example.com" and body["user"]["role"] == "trader"
    assert body["user"]["timezone"] == "Europe/Berlin" and body["redirect"] == "/app"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("pd_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain-http public URL (local install)
    me = web.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "new@example.com"


def test_behind_https_the_cookie_is_host_prefixed_and_secure(db_url: str, clock: Any) -> None:
    p = open_test_platform(db_url, clock, public_url="https://desk.example.com")
    try:
        with web_client(p, base_url="https://desk.example.com", headers={"Origin": "https://desk.example.com"}) as c:
            r = signup(c)
            assert r.status_code == 201, r.text
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("__Host-pd_session=")
            assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
            assert c.get("/api/v1/me").status_code == 200
    finally:
        p.close()


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("email", "not-an-email", "invalid_email"),
        ("password", "short1", "weak_password"),
        ("password", "onlyletterslong", "weak_password"),
        ("timezone", "Nowhere/Land", "invalid_timezone"),
    ],
)
def test_signup_refuses_bad_fields_with_a_clear_422(web: Any, field: str, value: str, code: str) -> None:
    body = {"email": "x@example.com", "password": PASSWORD, field: value}
    r = web.post("/api/v1/auth/signup", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert "set-cookie" not in r.headers


def test_signup_refuses_extra_fields_and_non_json(web: Any) -> None:
    r = web.post("/api/v1/auth/signup", json={"email": "x@example.com", "password": PASSWORD, "role": "admin"})
    assert r.status_code == 422
    r = web.post(
        "/api/v1/auth/signup", content=b"email=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415


def test_signup_with_a_registered_address_changes_nothing_and_mails_the_owner(web: Any, platform: Any) -> None:
    make_user(platform, "taken@example.com")
    r = signup(web, "Taken@Example.com", "Other-password-7")
    assert r.status_code == 202
    assert r.json()["status"] == "check_email"
    assert "set-cookie" not in r.headers
    assert "exist" not in r.text.lower() and "taken" not in r.text.lower()
    assert platform.identity.authenticate("taken@example.com", PASSWORD) is not None
    assert platform.identity.authenticate("taken@example.com", "Other-password-7") is None
    mails = outbox(platform)
    assert [m["to_address"] for m in mails] == ["taken@example.com"]
    assert mails[0]["kind"] == "signup_existing" and mails[0]["sent_at"] is not None


def test_login_sets_a_fresh_cookie_and_answers_where_to_go(web: Any, platform: Any) -> None:
    make_user(platform, "t@example.com")
    make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    r = web.post("/api/v1/auth/login", json={"email": "T@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["redirect"] == "/app"
    web.cookies.clear()
    r = web.post("/api/v1/auth/login", json={"email": "boss@example.com", "password": PASSWORD})
    assert r.json()["redirect"] == "/admin" and r.json()["user"]["role"] == "admin"


def test_login_rotates_the_session_token(web: Any, platform: Any) -> None:
    user = make_user(platform, "t@example.com")
    old = login_cookie(platform, user)
    web.cookies.update(old)
    r = web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD})
    assert r.status_code == 200
    new_token = r.cookies.get("pd_session")
    assert new_token and new_token != old["pd_session"]
    assert platform.identity.resolve(old["pd_session"]) is None
    assert platform.identity.resolve(new_token) == user


def test_login_does_not_reveal_whether_an_address_is_registered(web: Any, platform: Any) -> None:
    make_user(platform, "known@example.com")
    wrong = web.post("/api/v1/auth/login", json={"email": "known@example.com", "password": "Wrong-password-1"})
    unknown = web.post("/api/v1/auth/login", json={"email": "unknown@example.com", "password": "Wrong-password-1"})
    malformed = web.post("/api/v1/auth/login", json={"email": "not an email", "password": "Wrong-password-1"})
    assert wrong.status_code == unknown.status_code == malformed.status_code == 401
    assert wrong.json() == unknown.json() == malformed.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


def test_an_unknown_address_costs_the_same_argon2_verification(platform: Any, monkeypatch: Any) -> None:
    calls: list[str] = []
    real = platform.identity.hasher

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def verify(self, h: str, p: str) -> bool:
            calls.append(h)
            return real.verify(h, p)  # type: ignore[no-any-return]

    monkeypatch.setattr(platform.identity, "hasher", Counting())
    make_user(platform, "known@example.com")
    platform.identity.authenticate("known@example.com", "Wrong-password-1")
    platform.identity.authenticate("unknown@example.com", "Wrong-password-1")
    assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)


def test_logout_ends_the_session_and_clears_the_cookie(web: Any, platform: Any) -> None:
    user = make_user(platform, "t@example.com")
    web.cookies.update(login_cookie(platform, user))
    token = web.cookies.get("pd_session")
    assert web.get("/api/v1/me").status_code == 200
    r = web.post("/api/v1/auth/logout")
    assert r.status_code == 200
    assert 'pd_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert platform.identity.resolve(token) is None
    web.cookies.update({"pd_session": token})
    assert web.get("/api/v1/me").status_code == 401


def test_password_reset_always_answers_202_and_mails_only_known_addresses(web: Any, platform: Any) -> None:
    make_user(platform, "known@example.com")
    known = web.post("/api/v1/auth/password-reset", json={"email": "known@example.com"})
    unknown = web.post("/api/v1/auth/password-reset", json={"email": "unknown@example.com"})
    malformed = web.post("/api/v1/auth/password-reset", json={"email": "nope"})
    assert known.status_code == unknown.status_code == malformed.status_code == 202
    assert known.json() == unknown.json() == malformed.json()
    mails = outbox(platform)
    assert [m["to_address"] for m in mails] == ["known@example.com"]


def _reset_link(platform: Any) -> str:
    body = outbox(platform)[-1]["body"]
    match = re.search(r"/reset\?token=([A-Za-z0-9_-]+)", body)
    assert match, body
    return match.group(1)


def test_the_emailed_reset_link_sets_a_new_password_once(web: Any, platform: Any) -> None:
    user = make_user(platform, "known@example.com")
    web.cookies.update(login_cookie(platform, user))
    web.post("/api/v1/auth/password-reset", json={"email": "known@example.com"})
    token = _reset_link(platform)
    page = web.get(f"/reset?token={token}")
    assert page.status_code == 200 and "Choose a new password" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    r = web.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": "Brand-new-pass-5"})
    assert r.status_code == 200, r.text
    assert web.get("/api/v1/me").status_code == 401  # every session ended
    again = web.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": "Another-pass-6"})
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_reset_token"
    ok = web.post("/api/v1/auth/login", json={"email": "known@example.com", "password": "Brand-new-pass-5"})
    assert ok.status_code == 200


def test_an_expired_reset_link_is_refused(web: Any, platform: Any, clock: Any) -> None:
    make_user(platform, "known@example.com")
    web.post("/api/v1/auth/password-reset", json={"email": "known@example.com"})
    token = _reset_link(platform)
    clock.advance(31 * 60)
    r = web.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": "Brand-new-pass-5"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_reset_token"


def test_a_weak_password_at_reset_is_a_422(web: Any, platform: Any) -> None:
    make_user(platform, "known@example.com")
    web.post("/api/v1/auth/password-reset", json={"email": "known@example.com"})
    r = web.post("/api/v1/auth/password-reset/confirm", json={"token": _reset_link(platform), "password": "weak"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "weak_password"


def test_me_needs_a_session_and_refuses_bearer_tokens(web: Any, platform: Any) -> None:
    r = web.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    for token in (SERVICE_TOKEN, ADMIN_TOKEN):
        r = web.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, token


def test_an_expired_session_is_anonymous(web: Any, platform: Any, clock: Any) -> None:
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    assert web.get("/api/v1/me").status_code == 200
    clock.advance(31 * 60)
    assert web.get("/api/v1/me").status_code == 401
    r = web.get("/app", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fapp"


def test_sessions_open_the_admin_api_only_for_admins(web: Any, platform: Any) -> None:
    trader = make_user(platform, "t@example.com")
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    web.cookies.update(login_cookie(platform, trader))
    r = web.get("/api/v1/admin/prop/accounts/00000000-0000-0000-0000-000000000000/audit-log")
    assert r.status_code == 403
    web.cookies.clear()
    web.cookies.update(login_cookie(platform, boss))
    r = web.get("/api/v1/admin/prop/accounts/00000000-0000-0000-0000-000000000000/audit-log")
    assert r.status_code not in (401, 403), r.text


def test_a_session_does_not_open_the_service_api(web: Any, platform: Any) -> None:
    for user in (make_user(platform, "t@example.com"), make_user(platform, "b@example.com", role=UserRole.ADMIN)):
        web.cookies.clear()
        web.cookies.update(login_cookie(platform, user))
        assert web.get("/api/v1/prop/instruments").status_code == 403


def test_authorization_failures_are_audited(web: Any, platform: Any) -> None:
    trader = make_user(platform, "t@example.com")
    web.cookies.update(login_cookie(platform, trader))
    web.get("/api/v1/admin/prop/accounts/00000000-0000-0000-0000-000000000000/audit-log")
    with platform.db.read() as c:
        row = c.execute("SELECT * FROM auth_events WHERE kind='authz_failed'").fetchone()
    assert row["user_id"] == trader.id and row["detail"]["path"].startswith("/api/v1/admin/")


def test_pages_redirect_anonymous_visitors_to_login_and_refuse_traders_on_admin(web: Any, platform: Any) -> None:
    r = web.get("/app/accounts?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fapp%2Faccounts%3Fx%3D1"
    r = web.get("/admin", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    r = web.get("/admin", follow_redirects=False)
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]


def test_the_account_pages_render(web: Any, platform: Any) -> None:
    for path, marker in (("/login", "login-form"), ("/signup", "signup-form"), ("/reset", "reset-request-form")):
        r = web.get(path)
        assert r.status_code == 200, path
        assert marker in r.text and "auth.js" in r.text
        assert "<script>" not in r.text and " style=" not in r.text  # CSP: nothing inline
    assert web.get("/static/auth.js").status_code == 200


def test_a_logged_in_visitor_is_sent_on_from_the_login_page(web: Any, platform: Any) -> None:
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    r = web.get("/login?next=/app/accounts", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/app/accounts"
    r = web.get("/login?next=https://evil.example.com/", follow_redirects=False)
    assert r.headers["location"] == "/app"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example.com",
        "//evil.example.com",
        "/\\evil.example.com",
        "\\\\evil",
        "javascript:alert(1)",
        "app",
        "/app\r\nSet-Cookie: x=1",
        "",
    ],
)
def test_next_never_leaves_the_site(target: str) -> None:
    assert safe_next(target, "/app") == "/app"


def test_next_keeps_same_site_paths() -> None:
    assert safe_next("/app/accounts/1?tab=orders", "/app") == "/app/accounts/1?tab=orders"


def test_the_logout_button_ends_the_session_and_goes_home(web: Any, platform: Any) -> None:
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    token = web.cookies.get("pd_session")
    r = web.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert platform.identity.resolve(token) is None
