"""Browser security on every route (generated from /openapi.json at test time, plus pages, static files and
error responses): the security headers, the CSRF origin check, and the session side of the path policy."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.web_kit import ADMIN_TOKEN, csrf_headers, login_cookie, make_user, open_test_platform, web_client

from propdesk.api.middleware import Access, access_rule
from propdesk.identity.users import UserRole
from propdesk.web.security import CSP, origin_of

EXPECTED = {
    "content-security-policy": CSP,
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": None,  # strict-origin-when-cross-origin, or no-referrer where a page asks for it
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": None,
}
UNSAFE = ("post", "put", "patch", "delete")
PAGES = (
    "/",
    "/login",
    "/signup",
    "/reset",
    "/reset?token=abc",
    "/app",
    "/admin",
    "/static/app.css",
    "/static/auth.js",
    "/static/favicon.svg",
    "/nowhere",
    "/static/nothing.js",
    "/openapi.json",
    "/healthz",
    "/metrics",
)


@pytest.fixture
def web(platform: Any) -> Iterator[Any]:
    with web_client(platform, raise_server_exceptions=False) as c:
        yield c


def routes(web: Any) -> list[tuple[str, str, str]]:
    """(METHOD, path template, a concrete URL) for every operation in the OpenAPI document."""
    spec = web.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        url = re.sub(r"\{[^}]+\}", lambda m: "EURUSD" if m.group(0) == "{symbol}" else str(uuid.uuid4()), path)
        for method in ops:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method.upper(), path, url))
    return out


def assert_secure_headers(r: Any, where: str) -> None:
    for name, value in EXPECTED.items():
        assert name in r.headers, (where, r.status_code, name)
        if value is not None:
            assert r.headers[name] == value, (where, name, r.headers[name])
    assert r.headers["referrer-policy"] in ("strict-origin-when-cross-origin", "no-referrer")
    perms = r.headers["permissions-policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()"):
        assert feature in perms
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_every_api_route_answers_with_the_security_headers(web: Any) -> None:
    ops = routes(web)
    assert len(ops) > 40
    for method, path, url in ops:
        r = web.request(method, url, json={})  # anonymous: 401, or the public route's own answer
        assert_secure_headers(r, f"anonymous {method} {path}")
        if "/stream" in path:
            continue  # an authorized event stream never ends
        r = web.request(method, url, json={}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert_secure_headers(r, f"admin {method} {path}")


def test_pages_static_files_and_errors_carry_the_security_headers(web: Any, platform: Any) -> None:
    for path in PAGES:
        r = web.get(path, follow_redirects=False)
        assert_secure_headers(r, path)
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    for path in PAGES:
        r = web.get(path, follow_redirects=False)
        assert_secure_headers(r, "trader " + path)
    assert web.get("/admin", follow_redirects=False).status_code == 403
    # 405, 413, 415, 422 and 401 answers
    assert_secure_headers(web.put("/api/v1/auth/login", headers=csrf_headers(platform)), "405")
    assert_secure_headers(
        web.post("/api/v1/auth/login", content=b"x" * 2_000_000, headers=csrf_headers(platform)), "413"
    )
    assert_secure_headers(
        web.post(
            "/api/v1/auth/login",
            content=b"a=b",
            headers={**csrf_headers(platform), "Content-Type": "application/x-www-form-urlencoded"},
        ),
        "415",
    )
    assert_secure_headers(web.post("/api/v1/auth/login", json={"x": 1}, headers=csrf_headers(platform)), "422")


def test_even_an_internal_error_carries_the_security_headers(platform: Any) -> None:
    from propdesk.web.app import create_app

    app = create_app(platform)

    def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom-for-test", boom)
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom-for-test")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert_secure_headers(r, "500")


def test_the_interactive_docs_are_not_served_but_the_schema_is(web: Any) -> None:
    assert web.get("/docs").status_code == 404
    assert web.get("/openapi.json").status_code == 200


# ---------------------------------------------------------------- CSRF
def _unsafe_routes(web: Any) -> list[tuple[str, str, str]]:
    ops = [(m, p, u) for m, p, u in routes(web) if m.lower() in UNSAFE]
    return [*ops, ("POST", "/logout", "/logout")]


@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://127.0.0.1:8001", "null", None])
def test_every_unsafe_route_refuses_a_cookie_request_from_another_origin(
    web: Any, platform: Any, origin: str | None
) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    web.cookies.update(login_cookie(platform, boss))
    headers = {"Origin": origin} if origin else {}
    checked = 0
    for method, path, url in _unsafe_routes(web):
        r = web.request(method, url, json={}, headers=headers)
        if access_rule(path, method) is Access.SERVICE:
            assert r.status_code == 403, (method, path)  # sessions never reach the service API at all
            continue
        assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "csrf_failed", (method, path)
        checked += 1
    assert checked >= 10
    assert platform.identity.resolve(web.cookies.get("pd_session")) is not None  # logout was refused too


def test_a_cross_site_fetch_without_origin_is_refused_and_a_same_origin_one_allowed(web: Any, platform: Any) -> None:
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    r = web.post("/api/v1/auth/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = web.post("/api/v1/auth/logout", headers={"Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403
    r = web.post("/api/v1/auth/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200


def test_the_login_form_itself_is_csrf_checked(web: Any, platform: Any) -> None:
    make_user(platform, "t@example.com")
    body = {"email": "t@example.com", "password": "Correct-Horse-42"}
    assert web.post("/api/v1/auth/login", json=body, headers={"Origin": "https://evil.example.com"}).status_code == 403
    assert web.post("/api/v1/auth/login", json=body, headers=csrf_headers(platform)).status_code == 200


def test_bearer_clients_need_no_origin(web: Any) -> None:
    r = web.post("/api/v1/admin/eod", json={}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code != 403


def test_the_trusted_origin_is_the_public_url(db_url: str, clock: Any) -> None:
    p = open_test_platform(db_url, clock, public_url="https://desk.example.com/")
    try:
        with web_client(p, base_url="https://desk.example.com") as c:
            assert c.post("/api/v1/auth/logout", headers={"Origin": "https://desk.example.com"}).status_code == 200
            assert c.post("/api/v1/auth/logout", headers={"Origin": "http://desk.example.com"}).status_code == 403
            assert (
                c.post("/api/v1/auth/logout", headers={"Origin": "https://desk.example.com.evil.com"}).status_code
                == 403
            )
    finally:
        p.close()


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Desk.Example.com/", "https://desk.example.com"),
        ("https://desk.example.com:443", "https://desk.example.com"),
        ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://x:bad", "invalid:"),
    ],
)
def test_origins_are_compared_the_way_browsers_write_them(url: str, origin: str) -> None:
    assert origin_of(url) == origin


# ---------------------------------------------------------------- the session side of the path policy
def test_sessions_against_every_route_follow_the_path_policy(web: Any, platform: Any, clock: Any) -> None:
    """trader session, admin session and an expired session x every API route: no unexpected allow."""
    stale = login_cookie(platform, make_user(platform, "stale@example.com"))
    clock.advance(31 * 60)  # past the idle timeout
    trader = login_cookie(platform, make_user(platform, "t@example.com"))
    boss = login_cookie(platform, make_user(platform, "boss@example.com", role=UserRole.ADMIN))
    # "Log out everywhere" ends every session of its user: it is called as users of its own.
    spares = {
        "trader": login_cookie(platform, make_user(platform, "t2@example.com")),
        "admin": login_cookie(platform, make_user(platform, "boss2@example.com", role=UserRole.ADMIN)),
    }
    cells = 0
    for method, path, url in routes(web):
        rule = access_rule(path, method)
        if rule is Access.PUBLIC:
            continue
        for who, jar in (("trader", trader), ("admin", boss), ("expired", stale)):
            if path == "/api/v1/me/sessions/revocation" and who != "expired":
                jar = spares[who]
            web.cookies.clear()
            web.cookies.update(jar)
            allowed = who != "expired" and (
                rule in (Access.SESSION, Access.ANY) or (rule is Access.ADMIN and who == "admin")
            )
            if allowed and "/stream" in path:
                continue
            r = web.request(method, url, json={}, headers=csrf_headers(platform))
            cells += 1
            if who == "expired":
                assert r.status_code == 401, (who, method, path)
            elif allowed:
                assert r.status_code not in (401, 403) or r.json()["error"]["code"] not in (
                    "unauthorized",
                    "forbidden",
                    "csrf_failed",
                ), (who, method, path, r.text[:200])
                assert r.status_code < 500, (who, method, path, r.text[:300])
            else:
                assert r.status_code == 403, (who, method, path)
    assert cells > 60
