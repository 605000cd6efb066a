"""Identity: argon2 hashes, sessions rotated at login with idle and absolute timeouts, logout, password resets,
and what the app role may see of it all."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher
from tests.web_kit import PASSWORD, make_user, open_test_platform

from propdesk.domain.errors import Conflict, InvalidInput
from propdesk.identity.users import IdentityStore, UserRole, check_password, hash_secret, normalize_email


@pytest.fixture
def identity(platform: Any) -> IdentityStore:
    return platform.identity  # type: ignore[no-any-return]


def events(platform: Any) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        return list(c.execute("SELECT kind, user_id, ip, detail FROM auth_events ORDER BY id").fetchall())


def test_passwords_are_stored_as_argon2id_hashes_never_in_clear(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "Ann@Example.COM")
    assert user.email == "ann@example.com"
    with platform.db.read() as c:
        row = c.execute("SELECT password_hash FROM users WHERE id=%s", (user.id,)).fetchone()
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert identity.authenticate("ANN@example.com", PASSWORD) == user
    assert identity.authenticate("ann@example.com", PASSWORD + "x") is None


def test_an_email_is_unique_whatever_its_case(platform: Any, identity: IdentityStore) -> None:
    make_user(platform, "bob@example.com")
    with pytest.raises(Conflict) as info:
        identity.create_user("BOB@example.com", "Another-pass-1")
    assert info.value.code == "email_taken"


@pytest.mark.parametrize(
    "email",
    [
        "",
        "bob",
        "bob@",
        "@example.com",
        "bob@example",
        "bob@@example.com",
        "bob smith@example.com",
        "bob@exa mple.com",
        "bob@example.123",
        ".bob@example.com",
        "bo..b@example.com",
        "a" * 65 + "@example.com",
        "bob@-example.com",
        "bøb@example.com",
    ],
)
def test_malformed_email_addresses_are_refused(email: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_email(email)
    assert info.value.code == "invalid_email"


@pytest.mark.parametrize("password", ["short-1A", "aaaaaaaaaaaa", "1234567890123", "abcdefghijkl", "x" * 257, "ab" * 8])
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_password(password)
    assert info.value.code == "weak_password"


def test_a_good_password_passes_the_policy() -> None:
    assert check_password("horse battery 7") == "horse battery 7"
    assert check_password("x" * 250 + "abc12")


def test_unknown_timezones_are_refused(platform: Any, identity: IdentityStore) -> None:
    with pytest.raises(InvalidInput) as info:
        identity.create_user("tz@example.com", PASSWORD, timezone="Mars/Olympus")
    assert info.value.code == "invalid_timezone"
    user = identity.create_user("tz@example.com", PASSWORD, timezone="Europe/London")
    assert user.timezone == "Europe/London"


def test_a_hash_made_with_old_parameters_is_upgraded_at_login(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "old@example.com")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    with platform.db.tx() as c:
        c.execute("UPDATE users SET password_hash=%s WHERE id=%s", (weak.hash(PASSWORD), user.id))
    assert identity.authenticate("old@example.com", PASSWORD) == user
    with platform.db.read() as c:
        new_hash = c.execute("SELECT password_hash FROM users WHERE id=%s", (user.id,)).fetchone()["password_hash"]
    assert not identity.hasher.check_needs_rehash(new_hash)
    assert identity.authenticate("old@example.com", PASSWORD) == user


def test_session_tokens_are_random_256_bit_and_stored_only_as_sha256(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "s@example.com")
    tokens = {identity.start_session(user) for _ in range(5)}
    assert len(tokens) == 5
    assert all(len(t) >= 43 for t in tokens)  # 32 bytes, base64url
    with platform.db.read() as c:
        stored = {r["token_hash"] for r in c.execute("SELECT token_hash FROM web_sessions").fetchall()}
    assert stored == {hash_secret(t) for t in tokens}
    assert not stored & tokens


def test_login_rotates_the_session_and_revokes_the_token_presented_before(
    platform: Any, identity: IdentityStore
) -> None:
    user = make_user(platform, "rot@example.com")
    planted = identity.start_session(user)
    fresh = identity.start_session(user, replaces=planted)
    assert fresh != planted
    assert identity.resolve(planted) is None
    assert identity.resolve(fresh) == user


def test_a_session_ends_after_the_idle_timeout(platform: Any, identity: IdentityStore, clock: Any) -> None:
    user = make_user(platform, "idle@example.com")
    token = identity.start_session(user)
    for _ in range(4):  # used every 20 minutes: stays alive past the 30-minute idle limit
        clock.advance(20 * 60)
        assert identity.resolve(token) == user
    clock.advance(30 * 60)
    assert identity.resolve(token) is None


def test_a_session_ends_at_its_absolute_expiry_however_busy(platform: Any, identity: IdentityStore, clock: Any) -> None:
    user = make_user(platform, "abs@example.com")
    token = identity.start_session(user)
    for _ in range(12 * 6 - 1):
        clock.advance(10 * 60)
        assert identity.resolve(token) == user
    clock.advance(10 * 60)  # 12 hours after login
    assert identity.resolve(token) is None


def test_timeouts_come_from_settings(db_url: str, clock: Any) -> None:
    p = open_test_platform(db_url, clock, session_idle_minutes=5, session_absolute_hours=1)
    try:
        user = make_user(p, "cfg@example.com")
        token = p.identity.start_session(user)
        clock.advance(4 * 60)
        assert p.identity.resolve(token) == user
        clock.advance(5 * 60 + 1)
        assert p.identity.resolve(token) is None
    finally:
        p.close()


def test_logout_revokes_the_session(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "out@example.com")
    token = identity.start_session(user)
    assert identity.end_session(token) is True
    assert identity.resolve(token) is None
    assert identity.end_session(token) is False
    assert [e["kind"] for e in events(platform)][-1] == "logout"


def test_garbage_tokens_resolve_to_nobody(identity: IdentityStore) -> None:
    for token in (None, "", "x", "a" * 5000, "'; DROP TABLE users; --"):
        assert identity.resolve(token) is None


def test_a_disabled_user_can_neither_log_in_nor_keep_a_session(
    platform: Any, identity: IdentityStore, clock: Any
) -> None:
    user = make_user(platform, "gone@example.com")
    token = identity.start_session(user)
    with platform.db.tx() as c:
        c.execute("UPDATE users SET disabled_at=%s WHERE id=%s", (clock.now(), user.id))
    assert identity.resolve(token) is None
    assert identity.authenticate("gone@example.com", PASSWORD) is None


def test_a_reset_link_works_once_and_ends_every_session(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "reset@example.com")
    session = identity.start_session(user)
    found = identity.request_password_reset("Reset@Example.com")
    assert found is not None and found[0] == user
    token = found[1]
    assert identity.reset_password(token, "New-password-2") == user
    assert identity.resolve(session) is None
    assert identity.authenticate("reset@example.com", PASSWORD) is None
    assert identity.authenticate("reset@example.com", "New-password-2") == user
    assert identity.reset_password(token, "Third-password-3") is None
    assert identity.authenticate("reset@example.com", "New-password-2") == user


def test_a_reset_link_expires(platform: Any, identity: IdentityStore, clock: Any) -> None:
    make_user(platform, "late@example.com")
    found = identity.request_password_reset("late@example.com")
    assert found is not None
    clock.advance(30 * 60)
    assert identity.reset_password(found[1], "New-password-2") is None
    assert identity.authenticate("late@example.com", PASSWORD) is not None


def test_a_weak_new_password_does_not_burn_the_reset_link(platform: Any, identity: IdentityStore) -> None:
    make_user(platform, "weak@example.com")
    found = identity.request_password_reset("weak@example.com")
    assert found is not None
    with pytest.raises(InvalidInput):
        identity.reset_password(found[1], "short")
    assert identity.reset_password(found[1], "Strong-enough-9") is not None


def test_a_reset_for_an_unknown_address_makes_no_token(platform: Any, identity: IdentityStore) -> None:
    assert identity.request_password_reset("nobody@example.com") is None
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM password_resets").fetchone()["n"] == 0


def test_the_audit_log_records_logins_without_secrets(platform: Any, identity: IdentityStore) -> None:
    user = make_user(platform, "audit@example.com")
    identity.authenticate("audit@example.com", "Wrong-password-1", ip="10.0.0.1")
    identity.authenticate("nobody@example.com", "Wrong-password-1", ip="10.0.0.2")
    identity.authenticate("audit@example.com", PASSWORD, ip="10.0.0.1")
    rows = events(platform)
    assert [r["kind"] for r in rows] == ["user_created", "login_failed", "login_failed", "login_ok"]
    assert rows[1]["user_id"] == user.id and rows[1]["detail"]["reason"] == "wrong_password"
    assert rows[2]["user_id"] is None and rows[2]["detail"]["reason"] == "unknown_email"
    text = repr(rows)
    assert PASSWORD not in text and "Wrong-password-1" not in text and "$argon2" not in text


def test_the_audit_log_is_append_only(platform: Any) -> None:
    make_user(platform, "ap@example.com")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), platform.db.tx() as c:
        c.execute("DELETE FROM auth_events")


def _app_conn(platform: Any, user_id: uuid.UUID | None) -> Any:
    assert platform.db.app_pool is not None
    return platform.db.app_pool.connection()


def test_the_app_role_sees_only_its_own_user_row_and_no_hashes_or_sessions(platform: Any) -> None:
    ann = make_user(platform, "ann@example.com")
    bob = make_user(platform, "bob@example.com")
    platform.identity.start_session(ann)
    with _app_conn(platform, ann.id) as c, c.transaction():
        c.execute("SELECT set_config('propdesk.user_id', %s, true)", (str(ann.id),))
        rows = c.execute("SELECT id, email, role FROM users").fetchall()
        assert [r["id"] for r in rows] == [ann.id]
        assert c.execute("SELECT count(*) AS n FROM users WHERE id=%s", (bob.id,)).fetchone()["n"] == 0
    for sql in ("SELECT password_hash FROM users", "SELECT * FROM web_sessions", "SELECT * FROM password_resets"):
        with _app_conn(platform, ann.id) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
            c.rollback()
    # The audit log and the outbox are for admins (0005's is_admin() policies): a trader sees none of it.
    for table in ("auth_events", "email_outbox"):
        with _app_conn(platform, ann.id) as c, c.transaction():
            c.execute("SELECT set_config('propdesk.user_id', %s, true)", (str(ann.id),))
            try:
                assert c.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] == 0
            except psycopg.errors.InsufficientPrivilege:
                pass
    with _app_conn(platform, ann.id) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE users SET role='admin' WHERE id=%s", (ann.id,))
        c.rollback()


def test_admins_are_a_role_of_their_own(platform: Any) -> None:
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    assert boss.is_admin and boss.role is UserRole.ADMIN
    assert not make_user(platform, "t@example.com").is_admin


# ---------------------------------------------------------------- propdesk admin create
def _cli(*args: str, db_url: str, data_dir: Any, stdin: str = "") -> Any:
    import os
    import subprocess
    import sys

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


def test_admin_create_makes_an_admin_who_can_log_in(db_url: str, tmp_path: Any, platform: Any) -> None:
    import json

    proc = _cli(
        "admin",
        "create",
        "--email",
        "Boss@Example.com",
        "--password-stdin",
        "--display-name",
        "The Boss",
        "--json",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="Admin-password-77\n",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["email"] == "boss@example.com" and out["role"] == "admin" and out["display_name"] == "The Boss"
    assert "Admin-password-77" not in proc.stdout + proc.stderr
    user = platform.identity.authenticate("boss@example.com", "Admin-password-77")
    assert user is not None and user.is_admin and str(user.id) == out["id"]


def test_admin_create_refuses_a_weak_password_and_an_existing_email(db_url: str, tmp_path: Any, platform: Any) -> None:
    weak = _cli(
        "admin",
        "create",
        "--email",
        "boss@example.com",
        "--password-stdin",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="short\n",
    )
    assert weak.returncode == 2 and "weak password" in weak.stderr
    make_user(platform, "taken@example.com")
    taken = _cli(
        "admin",
        "create",
        "--email",
        "TAKEN@example.com",
        "--password-stdin",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="Admin-password-77\n",
    )
    assert taken.returncode == 2 and "already exists" in taken.stderr
    bad = _cli(
        "admin",
        "create",
        "--email",
        "not-an-address",
        "--password-stdin",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="Admin-password-77\n",
    )
    assert bad.returncode == 2 and "invalid --email" in bad.stderr
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM users WHERE role='admin'").fetchone()["n"] == 0


def test_admin_create_prompts_for_the_password_twice(db_url: str, tmp_path: Any, platform: Any) -> None:
    proc = _cli(
        "admin",
        "create",
        "--email",
        "boss@example.com",
        db_url=db_url,
        data_dir=tmp_path,
        stdin="Admin-password-77\nAdmin-password-77\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "created admin boss@example.com" in proc.stdout
    assert platform.identity.authenticate("boss@example.com", "Admin-password-77") is not None
