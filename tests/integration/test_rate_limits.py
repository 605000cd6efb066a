"""Rate limits: 429 ``rate_limited`` with Retry-After on login (per IP and per address), sign-up, password reset
and the order bucket; the limit lifts once the window has passed (injected clock). The HTTP tests run with both
stores; the shared (PostgreSQL) store's own tests are in test_rate_limits_shared.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.web_kit import PASSWORD, csrf_headers, make_user, open_test_platform, web_client

from propdesk.clock import ManualClock
from propdesk.web.ratelimit import Limit, RateLimits

LIMITS = {
    "rate_login_ip": "5/60",
    "rate_login_email": "3/60",
    "rate_signup_ip": "2/600",
    "rate_reset_ip": "2/60",
    "rate_orders_user": "3/10",
}


@pytest.fixture(params=["postgres", "memory"])
def platform(request: pytest.FixtureRequest, db_url: str, clock: Any) -> Iterator[Any]:
    """Every HTTP test runs with both stores (``PROPDESK_RATE_LIMIT_STORE``): the answers must not differ."""
    p = open_test_platform(db_url, clock, rate_limit_store=request.param, **LIMITS)
    yield p
    p.close()


@pytest.fixture
def web(platform: Any) -> Iterator[Any]:
    with web_client(platform, headers=csrf_headers(platform)) as c:
        yield c


def assert_limited(r: Any) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    wait = int(r.headers["Retry-After"])
    assert wait >= 1 and r.json()["error"]["details"]["retry_after_seconds"] == wait
    return wait


# ---------------------------------------------------------------- the limiter itself
def test_a_sliding_window_allows_the_count_then_says_how_long_to_wait() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    limits = RateLimits(clock, {"b": Limit(3, 60)})
    assert [limits.check("b", "k") for _ in range(3)] == [None, None, None]
    assert limits.check("b", "k") == 60
    clock.advance(45)
    assert limits.check("b", "k") == 15
    assert limits.check("b", "other") is None  # keys are independent
    clock.advance(15)
    assert limits.check("b", "k") is None  # the first attempt left the window


def test_refused_attempts_do_not_extend_the_wait() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    limits = RateLimits(clock, {"b": Limit(1, 10)})
    assert limits.check("b", "k") is None
    for _ in range(50):
        assert limits.check("b", "k") is not None
    clock.advance(10)
    assert limits.check("b", "k") is None


def test_a_zero_limit_turns_a_bucket_off_and_bad_limits_are_refused() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    limits = RateLimits(clock, {"b": Limit.parse("0/60")})
    assert all(limits.check("b", "k") is None for _ in range(100))
    with pytest.raises(ValueError):
        Limit.parse("5/0")


def test_memory_stays_bounded_under_a_flood_of_keys(monkeypatch: Any) -> None:
    from propdesk.web import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_KEYS", 100)
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    limits = RateLimits(clock, {"b": Limit(2, 60)})
    for i in range(1000):
        limits.check("b", f"ip-{i}")
    assert len(limits._hits["b"]) <= 100


# ---------------------------------------------------------------- over HTTP
def test_login_is_limited_per_ip_and_recovers_after_the_window(web: Any, platform: Any, clock: Any) -> None:
    make_user(platform, "t@example.com")
    for i in range(5):
        r = web.post("/api/v1/auth/login", json={"email": f"u{i}@example.com", "password": "Wrong-password-1"})
        assert r.status_code == 401
    wait = assert_limited(web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD}))
    assert wait == 60
    clock.advance(wait)
    assert web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD}).status_code == 200


def test_login_is_limited_per_address_whatever_the_ip(web: Any, platform: Any, clock: Any) -> None:
    make_user(platform, "t@example.com")
    for _ in range(3):
        r = web.post("/api/v1/auth/login", json={"email": "T@example.com", "password": "Wrong-password-1"})
        assert r.status_code == 401
    platform.ratelimits.reset("login_ip")  # a new IP (a distributed guess) does not help
    assert_limited(web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD}))
    clock.advance(60)
    assert web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD}).status_code == 200


def test_signup_is_limited_per_ip(web: Any, clock: Any) -> None:
    for i in range(2):
        r = web.post("/api/v1/auth/signup", json={"email": f"n{i}@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        web.cookies.clear()
    wait = assert_limited(web.post("/api/v1/auth/signup", json={"email": "n9@example.com", "password": PASSWORD}))
    assert wait == 600
    clock.advance(600)
    assert web.post("/api/v1/auth/signup", json={"email": "n9@example.com", "password": PASSWORD}).status_code == 201


def test_password_reset_requests_are_limited_per_ip(web: Any, clock: Any) -> None:
    for _ in range(2):
        assert web.post("/api/v1/auth/password-reset", json={"email": "x@example.com"}).status_code == 202
    assert_limited(web.post("/api/v1/auth/password-reset", json={"email": "x@example.com"}))
    clock.advance(60)
    assert web.post("/api/v1/auth/password-reset", json={"email": "x@example.com"}).status_code == 202


def test_a_limited_response_still_carries_the_security_headers(web: Any) -> None:
    for _ in range(2):
        web.post("/api/v1/auth/password-reset", json={"email": "x@example.com"})
    r = web.post("/api/v1/auth/password-reset", json={"email": "x@example.com"})
    assert r.status_code == 429
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_the_order_bucket_is_on_the_platform_for_the_trader_order_route(platform: Any, clock: Any) -> None:
    user = make_user(platform, "t@example.com")
    key = str(user.id)
    assert [platform.ratelimits.check("orders_user", key) for _ in range(3)] == [None, None, None]
    assert platform.ratelimits.check("orders_user", key) == 10
    clock.advance(10)
    assert platform.ratelimits.check("orders_user", key) is None
