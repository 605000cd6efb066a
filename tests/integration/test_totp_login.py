"""The TOTP second factor over HTTP and the CLI: enrollment and confirmation, login with and without a code, replay
refused, the one-step window, no oracle, rate limits, removal (self with a code, admin with a reason), the
enrollment-only admin session of PROPDESK_ADMIN_TOTP_REQUIRED, and ``propdesk admin create --totp`` / ``admin
totp``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.web_kit import (
    ADMIN_TOKEN,
    PASSWORD,
    csrf_headers,
    enroll_totp,
    login_cookie,
    make_user,
    open_test_platform,
    totp_code,
    web_client,
)

from propdesk.identity import totp
from propdesk.identity.users import TotpRequired, UserRole

pytestmark = pytest.mark.integration


@pytest.fixture
def web(platform: Any) -> Iterator[Any]:
    with web_client(platform, headers=csrf_headers(platform)) as c:
        yield c


def login(web: Any, email: str, password: str = PASSWORD, code: str | None = None) -> Any:
    body: dict[str, Any] = {"email": email, "password": password}
    if code is not None:
        body["totp_code"] = code
    web.cookies.clear()
    return web.post("/api/v1/auth/login", json=body)


def events(platform: Any, *kinds: str) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        rows = c.execute("SELECT kind, user_id, detail FROM auth_events ORDER BY id").fetchall()
    return [r for r in rows if not kinds or r["kind"] in kinds]


# ------------------------------------------------------------------------------------------ enrollment
def test_enrollment_is_pending_until_a_code_confirms_it(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    web.cookies.update(login_cookie(platform, boss))
    r = web.post("/api/v1/me/totp")
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    secret, uri = r.json()["secret"], r.json()["otpauth_uri"]
    assert len(totp.decode_secret(secret)) == 20
    assert uri == f"otpauth://totp/PropDesk:boss@example.com?secret={secret}&issuer=PropDesk"
    status = web.get("/api/v1/me/totp").json()["totp"]
    assert status["pending"] is True and status["enabled"] is False
    # Still pending: login asks for nothing yet.
    assert login(web, "boss@example.com").status_code == 200
    web.cookies.update(login_cookie(platform, boss))

    wrong = web.post("/api/v1/me/totp/confirmation", json={"code": "000000"})
    if wrong.status_code == 200:  # pragma: no cover - one chance in a million that 000000 is the code
        pytest.skip("000000 happened to be the code")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_totp_code"
    ok = web.post("/api/v1/me/totp/confirmation", json={"code": totp_code(secret, clock)})
    assert ok.status_code == 200, ok.text
    assert ok.json()["totp"]["enabled"] is True and ok.json()["redirect"] == "/admin"
    assert web.get("/api/v1/me").json()["user"]["totp_enabled"] is True
    kinds = [e["kind"] for e in events(platform, "totp_enrollment_started", "totp_code_refused", "totp_enabled")]
    assert kinds == ["totp_enrollment_started", "totp_code_refused", "totp_enabled"]
    # Enabled: a second enrollment is refused (remove it first, with a code).
    again = web.post("/api/v1/me/totp")
    assert again.status_code == 409 and again.json()["error"]["code"] == "totp_already_enabled"
    # The code that confirmed is spent: it cannot log in.
    assert login(web, "boss@example.com", code=totp_code(secret, clock)).json()["error"]["code"] == (
        "invalid_credentials"
    )


def test_a_confirmation_needs_a_live_enrollment(web: Any, platform: Any, clock: Any) -> None:
    user = make_user(platform, "t@example.com")
    web.cookies.update(login_cookie(platform, user))
    r = web.post("/api/v1/me/totp/confirmation", json={"code": "123456"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "totp_not_pending"
    secret = web.post("/api/v1/me/totp").json()["secret"]
    clock.advance(16 * 60)
    web.cookies.update(login_cookie(platform, user))
    r = web.post("/api/v1/me/totp/confirmation", json={"code": totp_code(secret, clock)})
    assert r.status_code == 409 and r.json()["error"]["code"] == "totp_not_pending"


def test_enrollment_routes_need_a_session(web: Any) -> None:
    assert web.post("/api/v1/me/totp").status_code == 401
    r = web.post("/api/v1/me/totp", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 403


# ------------------------------------------------------------------------------------------ login
def test_login_with_totp_wants_the_code_and_takes_it_once(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    secret = enroll_totp(platform, boss)
    missing = login(web, "boss@example.com")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "totp_required"
    assert "set-cookie" not in missing.headers
    code = totp_code(secret, clock)
    ok = login(web, "boss@example.com", code=code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["totp_enabled"] is True and ok.json()["redirect"] == "/admin"
    assert web.get("/api/v1/admin/traders").status_code == 200
    replay = login(web, "boss@example.com", code=code)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_credentials"
    assert "set-cookie" not in replay.headers
    # The next step's code works once the clock gets there.
    clock.advance(30)
    assert login(web, "boss@example.com", code=totp_code(secret, clock)).status_code == 200
    reasons = [e["detail"].get("reason") for e in events(platform, "login_failed")]
    assert reasons == ["totp_missing", "wrong_totp"]


def test_a_code_one_step_either_side_is_accepted_two_steps_is_not(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    secret = enroll_totp(platform, boss)
    assert login(web, "boss@example.com", code=totp_code(secret, clock, -2)).status_code == 401
    assert login(web, "boss@example.com", code=totp_code(secret, clock, +2)).status_code == 401
    assert login(web, "boss@example.com", code=totp_code(secret, clock, -1)).status_code == 200
    # A later step is accepted after an earlier one (the device runs ahead), but never an earlier after a later.
    assert login(web, "boss@example.com", code=totp_code(secret, clock, +1)).status_code == 200
    assert login(web, "boss@example.com", code=totp_code(secret, clock, 0)).status_code == 401


def test_a_wrong_code_gets_the_same_answer_as_a_wrong_password(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    secret = enroll_totp(platform, boss)
    good = totp_code(secret, clock)
    wrong_code = login(web, "boss@example.com", code=next(c for c in ("000000", "111111") if c != good))
    wrong_password = login(web, "boss@example.com", password="Wrong-password-1", code=good)
    unknown = login(web, "nobody@example.com", code=good)
    malformed = login(web, "boss@example.com", code="12ab56")
    for r in (wrong_code, wrong_password, unknown, malformed):
        assert r.status_code == 401 and "set-cookie" not in r.headers
    assert wrong_code.json() == wrong_password.json() == unknown.json() == malformed.json()
    assert wrong_code.json()["error"]["code"] == "invalid_credentials"
    # A wrong password never spends the code: it still logs in.
    assert login(web, "boss@example.com", code=good).status_code == 200


def test_code_guesses_count_in_the_login_rate_limits(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    secret = enroll_totp(platform, boss)
    good = totp_code(secret, clock)
    guesses = [f"{n:06d}" for n in range(20) if f"{n:06d}" != good][:10]  # PROPDESK_RATE_LOGIN_EMAIL 10/300
    for guess in guesses:
        assert login(web, "boss@example.com", code=guess).status_code == 401
    limited = login(web, "boss@example.com", code=good)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert "retry-after" in limited.headers


def test_the_identity_store_raises_totp_required_rather_than_logging_in(platform: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    enroll_totp(platform, boss)
    with pytest.raises(TotpRequired):
        platform.identity.authenticate("boss@example.com", PASSWORD)
    assert platform.identity.authenticate("boss@example.com", "Wrong-password-1") is None


def test_the_secret_never_reaches_the_audit_log_nor_the_app_role(web: Any, platform: Any, clock: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    web.cookies.update(login_cookie(platform, boss))
    secret = web.post("/api/v1/me/totp").json()["secret"]
    code = totp_code(secret, clock)
    web.post("/api/v1/me/totp/confirmation", json={"code": code})
    clock.advance(30)
    login(web, "boss@example.com", code="999999")
    text = json.dumps([e["detail"] for e in events(platform)])
    assert secret not in text and code not in text and "999999" not in text
    assert platform.db.app_pool is not None
    for column in ("totp_secret", "totp_pending_secret", "totp_last_step"):
        with platform.db.app_pool.connection() as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"SELECT {column} FROM users")
            c.rollback()


# ------------------------------------------------------------------------------------------ removal
def test_removal_needs_a_current_unused_code(web: Any, platform: Any, clock: Any) -> None:
    user = make_user(platform, "t@example.com")
    secret = enroll_totp(platform, user)
    code = totp_code(secret, clock)
    assert login(web, "t@example.com", code=code).status_code == 200
    spent = web.post("/api/v1/me/totp/removal", json={"code": code})
    assert spent.status_code == 400 and spent.json()["error"]["code"] == "invalid_totp_code"
    clock.advance(30)
    web.cookies.update(login_cookie(platform, user))
    r = web.post("/api/v1/me/totp/removal", json={"code": totp_code(secret, clock)})
    assert r.status_code == 200 and r.json()["totp"]["enabled"] is False
    assert login(web, "t@example.com").status_code == 200  # no code asked any more
    web.cookies.update(login_cookie(platform, user))
    again = web.post("/api/v1/me/totp/removal", json={"code": "123456"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "totp_not_enabled"
    assert [e["detail"] for e in events(platform, "totp_disabled")] == [{"by": "self"}]


def test_an_admin_removes_a_users_totp_with_a_reason(web: Any, platform: Any, clock: Any) -> None:
    trader = make_user(platform, "t@example.com")
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    enroll_totp(platform, trader)
    web.cookies.update(login_cookie(platform, boss))
    path = f"/api/v1/admin/users/{trader.id}/totp/removal"
    assert web.post(path, json={}).status_code == 422  # the reason is required
    r = web.post(path, json={"reason": "lost phone, identity checked on a call"})
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": str(trader.id), "removed": True}
    assert login(web, "t@example.com").status_code == 200
    with platform.db.read() as c:
        audit = c.execute("SELECT actor, reason, details FROM admin_audit WHERE action='totp_remove'").fetchone()
    assert audit["actor"] == f"user:{boss.id}" and audit["reason"].startswith("lost phone")
    assert audit["details"] == {"user_id": str(trader.id)}
    assert [e["detail"] for e in events(platform, "totp_disabled")] == [{"by": f"user:{boss.id}"}]
    # A trader may not do it; an unknown user is a 404.
    web.cookies.clear()
    web.cookies.update(login_cookie(platform, trader))
    assert web.post(path, json={"reason": "let me in"}).status_code == 403
    web.cookies.clear()
    web.cookies.update(login_cookie(platform, boss))
    r = web.post("/api/v1/admin/users/00000000-0000-0000-0000-000000000000/totp/removal", json={"reason": "typo?"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found"


# ------------------------------------------------------------------------------------------ required for admins
@pytest.fixture
def strict(db_url: str, clock: Any) -> Iterator[Any]:
    p = open_test_platform(db_url, clock, admin_totp_required=True)
    try:
        yield p
    finally:
        p.close()


def test_required_mode_gives_an_admin_without_totp_an_enrollment_only_session(strict: Any, clock: Any) -> None:
    make_user(strict, "boss@example.com", role=UserRole.ADMIN)
    with web_client(strict, headers=csrf_headers(strict)) as web:
        r = login(web, "boss@example.com")
        assert r.status_code == 200, r.text
        assert r.json()["redirect"] == "/account/security" and r.json()["totp_enrollment_required"] is True
        refused = web.get("/api/v1/admin/traders")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "totp_enrollment_required"
        assert web.get("/api/v1/accounts").status_code == 403
        for page in ("/admin", "/admin/traders", "/app"):
            r = web.get(page, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/account/security", page
        page = web.get("/account/security")
        assert page.status_code == 200 and 'id="totp-required"' in page.text
        assert web.get("/api/v1/me").json()["totp_enrollment_required"] is True
        secret = web.post("/api/v1/me/totp").json()["secret"]
        ok = web.post("/api/v1/me/totp/confirmation", json={"code": totp_code(secret, clock)})
        assert ok.status_code == 200
        # The same session is a full admin session now.
        assert web.get("/api/v1/admin/traders").status_code == 200
        assert web.get("/admin", follow_redirects=False).status_code == 200
        # And from now on login asks for the code.
        assert login(web, "boss@example.com").json()["error"]["code"] == "totp_required"


def test_required_mode_leaves_traders_tokens_and_logout_alone(strict: Any) -> None:
    make_user(strict, "t@example.com")
    make_user(strict, "boss@example.com", role=UserRole.ADMIN)
    with web_client(strict, headers=csrf_headers(strict)) as web:
        r = login(web, "t@example.com")
        assert r.json()["redirect"] == "/app" and "totp_enrollment_required" not in r.json()
        assert web.get("/api/v1/accounts").status_code == 200
        web.cookies.clear()
        assert web.get("/api/v1/admin/traders", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
        login(web, "boss@example.com")
        token = web.cookies.get("pd_session")
        assert web.post("/api/v1/auth/logout").status_code == 200
        assert strict.identity.resolve(token) is None


def test_without_required_mode_an_admin_without_totp_is_a_full_admin(web: Any, platform: Any) -> None:
    make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    r = login(web, "boss@example.com")
    assert r.json()["redirect"] == "/admin" and "totp_enrollment_required" not in r.json()
    assert web.get("/api/v1/admin/traders").status_code == 200


def test_the_security_page_renders_without_inline_script(web: Any, platform: Any) -> None:
    r = web.get("/account/security", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    web.cookies.update(login_cookie(platform, make_user(platform, "t@example.com")))
    r = web.get("/account/security")
    assert r.status_code == 200 and 'id="totp-start"' in r.text and "security.js" in r.text
    assert "<script>" not in r.text and " style=" not in r.text
    assert web.get("/static/security.js").status_code == 200


def test_the_login_page_has_a_hidden_one_time_code_field(web: Any) -> None:
    r = web.get("/login")
    assert 'autocomplete="one-time-code"' in r.text and 'inputmode="numeric"' in r.text
    assert 'name="totp_code"' in r.text and "data-totp-field hidden" in r.text


# ------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str, db_url: str, data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(data_dir)})
    return subprocess.run(
        [sys.executable, "-m", "propdesk", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_cli_creates_an_admin_with_totp_and_reenrolls_it(
    db_url: str, tmp_path: Path, platform: Any, clock: Any
) -> None:
    proc = _cli(
        "admin",
        "create",
        "--email",
        "boss@example.com",
        "--password-stdin",
        "--totp",
        "--json",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="Admin-password-77\n",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    first = out["totp"]["secret"]
    assert out["totp"]["otpauth_uri"] == f"otpauth://totp/PropDesk:boss@example.com?secret={first}&issuer=PropDesk"
    assert first not in proc.stderr  # printed once, to stdout, never logged
    with pytest.raises(TotpRequired):
        platform.identity.authenticate("boss@example.com", "Admin-password-77")
    assert platform.identity.authenticate("boss@example.com", "Admin-password-77", totp_code=totp_code(first, clock))

    proc = _cli("admin", "totp", "--email", "Boss@Example.com", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "secret:" in proc.stdout and "otpauth://totp/PropDesk:boss@example.com?secret=" in proc.stdout
    second = proc.stdout.split("secret:")[1].split()[0]
    assert second != first and second not in proc.stderr
    clock.advance(30)
    assert (
        platform.identity.authenticate("boss@example.com", "Admin-password-77", totp_code=totp_code(first, clock))
        is None
    )
    assert platform.identity.authenticate("boss@example.com", "Admin-password-77", totp_code=totp_code(second, clock))
    assert [e["detail"]["by"] for e in events(platform, "totp_enabled")] == ["cli", "cli"]

    missing = _cli("admin", "totp", "--email", "nobody@example.com", db_url=db_url, data_dir=tmp_path)
    assert missing.returncode != 0 and "no enabled user" in missing.stderr
