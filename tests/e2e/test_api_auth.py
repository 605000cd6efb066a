"""Authentication and authorization: checked before the body, 401/403 never 422, default deny."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from propdesk.api.middleware import Access, access_rule
from propdesk.identity.auth import Role

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"
GARBAGE = b'{"symbol": "EURUSD", "quantity": NaN, oops'


def test_an_unauthenticated_garbage_body_gets_401_not_422(anon: Any, account: Any) -> None:
    r = anon.post(
        f"{PREFIX}/accounts/{account['id']}/orders", content=GARBAGE, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer", "Basic dXNlcjpwYXNz", "bearer  ", "Token x", "Bearer a b", "Bearer " + "x" * 600],
)
def test_bad_credentials_get_401_before_the_body_is_looked_at(anon: Any, account: Any, header: str) -> None:
    r = anon.post(
        f"{PREFIX}/accounts/{account['id']}/orders",
        content=b"\xff" * 2_000_000,
        headers={"Authorization": header, "Content-Type": "text/plain"},
    )
    assert r.status_code == 401, header
    assert "WWW-Authenticate" in r.headers


def test_a_service_token_on_an_admin_route_gets_403_even_with_a_garbage_body(client: Any, account: Any) -> None:
    r = client.post(
        f"/api/v1/admin/prop/accounts/{account['id']}/pause",
        content=GARBAGE,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert client.get(f"{PREFIX}/accounts/{account['id']}").json()["status"] == "active"


def test_an_admin_token_may_use_the_service_routes(admin: Any) -> None:
    r = admin.post(f"{PREFIX}/accounts", json={"owner_id": "x", "mode": "audition"})
    assert r.status_code == 201


def test_with_no_token_configured_every_guarded_route_refuses(platform_factory: Any) -> None:
    from propdesk.web.app import create_app

    platform = platform_factory(service_token=None, admin_token=None)
    with TestClient(create_app(platform)) as c:
        for token in ("", "svc_e2e_token_0123456789abcdef", "None", "null"):
            r = c.post(
                f"{PREFIX}/accounts",
                json={"owner_id": "x", "mode": "audition"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 401, token
        assert c.get("/api/v1/admin/prop/accounts/x/audit-log", headers={"Authorization": "Bearer "}).status_code == 401
        assert c.get("/healthz").status_code == 200


def test_database_tokens_work_until_revoked_or_expired(anon: Any, platform: Any, clock: Any) -> None:
    token, principal = platform.tokens.create(Role.SERVICE, "agent runner")
    short, _ = platform.tokens.create(Role.ADMIN, "short", ttl=timedelta(seconds=60))
    auth = {"Authorization": f"Bearer {token}"}
    r = anon.post(f"{PREFIX}/accounts", json={"owner_id": "x", "mode": "audition"}, headers=auth)
    assert r.status_code == 201
    admin_url = f"/api/v1/admin/prop/accounts/{r.json()['id']}/audit-log"
    assert anon.get(admin_url, headers=auth).status_code == 403
    assert anon.get(admin_url, headers={"Authorization": f"Bearer {short}"}).status_code == 200
    clock.advance(61)
    assert anon.get(admin_url, headers={"Authorization": f"Bearer {short}"}).status_code == 401
    platform.tokens.revoke(principal.id)
    assert anon.get(f"{PREFIX}/instruments", headers=auth).status_code == 401


def test_public_routes_need_no_token(anon: Any) -> None:
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/metrics").status_code == 200
    assert anon.get("/openapi.json").status_code == 200


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "EURUSD" if m.group(0) == "{symbol}" else str(uuid.uuid4()), path)


def test_authorization_matrix_over_every_route_in_the_openapi(anon: Any, client: Any, admin: Any) -> None:
    """anonymous, bad token, service and admin token x every guarded API route: no unexpected allow.

    Bearer tokens only; the web-session side of the matrix is in tests/integration/test_web_security.py."""
    spec = anon.get("/openapi.json").json()
    cells = 0
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method in ops:
            rule = access_rule(path, method.upper())
            if rule is Access.PUBLIC:
                continue
            url = _fill(path)
            for who, c, headers in (("anonymous", anon, {}), ("bad token", anon, {"Authorization": "Bearer x"})):
                r = c.request(
                    method.upper(), url, content=GARBAGE, headers={**headers, "Content-Type": "application/json"}
                )
                assert r.status_code == 401, (who, method, path)
                cells += 1
            streams = "/stream" in path  # an allowed event stream never ends: only its refusals are checked here
            if rule in (Access.ADMIN, Access.SESSION):
                r = client.request(method.upper(), url, content=GARBAGE, headers={"Content-Type": "application/json"})
                assert r.status_code == 403, (method, path)
            elif not streams:
                r = client.request(method.upper(), url, content=GARBAGE, headers={"Content-Type": "application/json"})
                assert r.status_code not in (401, 403), (method, path)
            if streams and rule is not Access.SESSION:
                cells += 1
                continue
            r = admin.request(method.upper(), url, json={})
            if rule is Access.SESSION:
                assert r.status_code == 403, (method, path)
            else:
                assert r.status_code not in (401, 403), (method, path)
            assert r.status_code < 500, (method, path, r.text)
            cells += 2
    assert cells > 80


def test_unknown_api_paths_are_denied_before_they_are_looked_up(anon: Any, client: Any) -> None:
    assert anon.get("/api/v1/prop/nothing-here").status_code == 401
    assert client.get("/api/v1/prop/nothing-here").status_code == 404
    assert client.get("/api/v1/admin/anything").status_code == 403
    assert client.get("/nowhere").status_code == 404


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/healthz", Access.PUBLIC),
        ("/metrics", Access.PUBLIC),
        ("/openapi.json", Access.PUBLIC),
        ("/apix", Access.PUBLIC),
        ("/", Access.PUBLIC),
        ("/login", Access.PUBLIC),
        ("/static/app.css", Access.PUBLIC),
        ("/api", Access.SESSION),
        ("/api/v1/prop/accounts", Access.SERVICE),
        ("/api/v1/risk/x", Access.SERVICE),
        ("/api/v1/admin/prop/accounts/x/pause", Access.ADMIN),
        ("/api/v1/admin", Access.ADMIN),
        ("/api/v1/prop/../admin/prop/accounts/x/pause", Access.ADMIN),
        ("/api//v1/admin/x", Access.ADMIN),
        ("/api/v1/prop/./accounts", Access.ADMIN),
        ("/api/v1/prop/..", Access.ADMIN),
        ("/api/v1/auth/login", Access.PUBLIC),
        ("/api/v1/plans", Access.PUBLIC),
        ("/api/v1/market/candles", Access.ANY),
        ("/api/v1/me", Access.SESSION),
        ("/api/v1/accounts/x/orders", Access.SESSION),
        ("/app", Access.PAGE),
        ("/app/accounts/x", Access.PAGE),
        ("/app/../admin", Access.ADMIN_PAGE),
        ("/apple", Access.PUBLIC),
        ("/account/security", Access.PAGE),
        ("/account/../admin", Access.ADMIN_PAGE),
        ("/accounts", Access.PUBLIC),
        ("/admin", Access.ADMIN_PAGE),
        ("/admin/flags", Access.ADMIN_PAGE),
        ("/administrator", Access.PUBLIC),
    ],
)
def test_the_access_rule_of_a_path(path: str, rule: Access) -> None:
    assert access_rule(path) is rule


def test_the_public_plan_catalogue_is_read_only() -> None:
    assert access_rule("/api/v1/plans", "GET") is Access.PUBLIC
    assert access_rule("/api/v1/plans", "POST") is Access.SESSION
