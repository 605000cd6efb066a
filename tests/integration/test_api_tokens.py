"""API tokens (issue 13, defect 8): list and revoke (admin API, CLI in test_cli.py), revocation effective in every
running process within 5 s (a TTL cache of verified tokens), optional expiry, ``last_used_at`` written at most once
a minute; "log out everywhere" for web sessions (the user's route and the admin's)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.web_kit import ADMIN_TOKEN, csrf_headers, login_cookie, make_user, open_test_platform

from propdesk.identity.auth import CACHE_TTL_SECONDS, Role
from propdesk.web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GUARDED = "/api/v1/prop/instruments"


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def second(db_url: str, clock: Any) -> Iterator[Any]:
    """A second platform instance over the same database (another API process)."""
    p = open_test_platform(db_url, clock)
    yield p
    p.close()


def _client(platform: Any) -> TestClient:
    return TestClient(create_app(platform))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_revoked_through_one_instance_is_refused_by_a_second_within_the_cache_ttl(
    platform: Any, second: Any
) -> None:
    assert CACHE_TTL_SECONDS <= 5
    fake = FakeMonotonic()
    second.tokens.monotonic = fake
    token, principal = platform.tokens.create(Role.SERVICE, "agent runner")
    with _client(platform) as one, _client(second) as two:
        assert one.get(GUARDED, headers=_bearer(token)).status_code == 200
        assert two.get(GUARDED, headers=_bearer(token)).status_code == 200  # now cached in the second instance
        r = one.post(f"/api/v1/admin/tokens/{principal.id}/revocation", json={"reason": "leaked"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["token"]["status"] == "revoked" and r.json()["token"]["revoked_by"] == "env:admin"
        assert one.get(GUARDED, headers=_bearer(token)).status_code == 401  # the revoking process: at once
        fake.t += CACHE_TTL_SECONDS - 0.5
        assert two.get(GUARDED, headers=_bearer(token)).status_code == 200  # still inside the TTL
        fake.t += 0.5
        assert two.get(GUARDED, headers=_bearer(token)).status_code == 401  # 5 s after it was verified: refused
    with platform.db.read() as c:
        audit = c.execute("SELECT actor, reason, details FROM admin_audit WHERE action='token_revoke'").fetchall()
    assert [(a["actor"], a["reason"], a["details"]["token_id"]) for a in audit] == [
        ("env:admin", "leaked", principal.id)
    ]


def test_a_revocation_reaches_another_running_instance_within_5_seconds_of_real_time(
    platform: Any, second: Any
) -> None:
    token, principal = platform.tokens.create(Role.ADMIN, "ops")
    with _client(second) as two:
        assert two.get(GUARDED, headers=_bearer(token)).status_code == 200
        platform.tokens.revoke(principal.id, actor="test", reason="rotation")
        revoked_at = time.monotonic()
        while two.get(GUARDED, headers=_bearer(token)).status_code == 200:
            assert time.monotonic() - revoked_at <= 5.0, "the second instance still accepts the revoked token"
            time.sleep(0.2)


def test_an_expired_token_is_401_and_listed_as_expired(platform: Any, clock: Any) -> None:
    token, principal = platform.tokens.create(Role.SERVICE, "short", ttl=timedelta(seconds=30))
    with _client(platform) as c:
        assert c.get(GUARDED, headers=_bearer(token)).status_code == 200
        clock.advance(31)
        r = c.get(GUARDED, headers=_bearer(token))
        assert r.status_code == 401  # also while the verified token is still in the cache
        listed = {t["id"]: t for t in c.get("/api/v1/admin/tokens", headers=ADMIN).json()["items"]}
        assert listed[principal.id]["status"] == "expired"


def test_the_list_shows_last_used_at_written_at_most_once_a_minute(platform: Any, clock: Any) -> None:
    token, principal = platform.tokens.create(Role.SERVICE, "bot")
    platform.tokens.create(Role.ADMIN, "never used")

    def last_used() -> Any:
        with platform.db.read() as c:
            return c.execute("SELECT last_used_at FROM api_tokens WHERE id=%s", (principal.id,)).fetchone()[
                "last_used_at"
            ]

    with _client(platform) as c:
        first = clock.now()
        assert c.get(GUARDED, headers=_bearer(token)).status_code == 200
        assert last_used() == first
        clock.advance(30)
        for _ in range(5):
            assert c.get(GUARDED, headers=_bearer(token)).status_code == 200
        assert last_used() == first  # not per request
        clock.advance(31)
        assert c.get(GUARDED, headers=_bearer(token)).status_code == 200
        assert last_used() == clock.now()
        body = c.get("/api/v1/admin/tokens", headers=ADMIN).json()
    items = {t["name"]: t for t in body["items"]}
    assert items["bot"]["last_used_at"] is not None and items["bot"]["status"] == "active"
    assert items["never used"]["last_used_at"] is None
    assert {e["id"]: e["revocable"] for e in body["environment"]} == {"env:service": False, "env:admin": False}
    assert all("hash" not in k for t in body["items"] for k in t)


def test_revoking_an_unknown_token_is_404_and_a_trader_may_not_list_tokens(platform: Any) -> None:
    trader = make_user(platform, "t@example.test")
    with _client(platform) as c:
        r = c.post(
            "/api/v1/admin/tokens/00000000-0000-0000-0000-000000000000/revocation", json={"reason": "x"}, headers=ADMIN
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "token_not_found"
        c.cookies.update(login_cookie(platform, trader))
        assert c.get("/api/v1/admin/tokens").status_code == 403


def test_log_out_everywhere_ends_every_session_of_the_user(platform: Any) -> None:
    user = make_user(platform, "me@example.test")
    phone, laptop = login_cookie(platform, user), login_cookie(platform, user)
    with _client(platform) as a, _client(platform) as b:
        a.cookies.update(phone)
        b.cookies.update(laptop)
        assert b.get("/api/v1/me").status_code == 200
        r = a.post("/api/v1/me/sessions/revocation", headers=csrf_headers(platform))
        assert r.status_code == 200 and r.json() == {"sessions_ended": 2}
        assert b.get("/api/v1/me").status_code == 401
        a.cookies.update(phone)
        assert a.get("/api/v1/me").status_code == 401
    with platform.db.read() as c:
        kinds = [r["kind"] for r in c.execute("SELECT kind FROM auth_events WHERE user_id=%s", (user.id,)).fetchall()]
    assert "logout_everywhere" in kinds


def test_an_admin_logs_a_user_out_everywhere_with_a_reason_audited(platform: Any) -> None:
    user = make_user(platform, "me@example.test")
    cookie = login_cookie(platform, user)
    with _client(platform) as c:
        r = c.post(
            f"/api/v1/admin/users/{user.id}/sessions/revocation", json={"reason": "stolen laptop"}, headers=ADMIN
        )
        assert r.status_code == 200 and r.json()["sessions_ended"] == 1
        c.cookies.update(cookie)
        assert c.get("/api/v1/me").status_code == 401
    with platform.db.read() as c:
        row = c.execute("SELECT actor, reason, details FROM admin_audit WHERE action='sessions_revoke'").fetchone()
    assert row["actor"] == "env:admin" and row["reason"] == "stolen laptop"
    assert row["details"]["user_id"] == str(user.id)
