"""The ``propdesk`` command line, run as a real process against the test database.

Every command runs as ``python -m propdesk`` with ``DATABASE_URL`` pointing at a fresh test database and the
test role prefix, so what is tested is what an operator runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.integration

ROLE_PREFIX = "pdtest"


def run_cli(
    *args: str, db_url: str, data_dir: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    full_env.update(
        {
            "DATABASE_URL": db_url,
            "PROPDESK_DB_ROLE_PREFIX": ROLE_PREFIX,
            "PROPDESK_DATA_DIR": str(data_dir),
            **(env or {}),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "propdesk", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_json_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one stdout line, got {lines!r}\nstderr: {proc.stderr[-3000:]}"
    assert lines[0].startswith("{") and lines[0].endswith("}")
    return json.loads(lines[0])  # type: ignore[no-any-return]


def _with_db(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database that has never been migrated."""
    name = f"pdt_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def trade_accounts(service: Any, quotes: Any, clock: Any, n: int = 3) -> list[uuid.UUID]:
    """``n`` active accounts with real history: a closed round trip, an open position, a resting order."""
    from propdesk.domain.orders import OrderRequest, OrderType, Side
    from propdesk.domain.quotes import Quote
    from propdesk.execution.service import CreateAccount

    d = Decimal
    quotes.put(Quote("EURUSD", d("1.08000"), d("1.08002"), clock.now()))
    quotes.put(Quote("XAUUSD", d("2350.00"), d("2350.40"), clock.now()))
    ids = []
    for i in range(n):
        row, _ = service.create_account(CreateAccount(owner_id=f"cli-trader-{i}", start=True))
        acc = row["id"]
        assert service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, d("0.20"))).accepted
        clock.advance(1)
        quotes.put(Quote("EURUSD", d("1.08300"), d("1.08302"), clock.now()))
        assert service.close_position(acc, "EURUSD").accepted
        assert service.submit_order(acc, OrderRequest("XAUUSD", Side.SELL, d("0.05"), stop_loss=d("2400.00"))).accepted
        assert service.submit_order(
            acc, OrderRequest("EURUSD", Side.BUY, d("0.10"), OrderType.LIMIT, limit_price=d("1.05000"))
        ).accepted
        ids.append(acc)
    return ids


def tamper_cash(db_url: str, account_id: uuid.UUID) -> None:
    """Change a stored balance behind the engine's back (as the owner, with the guard triggers disabled)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {ROLE_PREFIX}_owner")
        conn.execute("ALTER TABLE balances DISABLE TRIGGER USER")
        try:
            conn.execute("UPDATE balances SET cash = cash + 1 WHERE account_id = %s", (account_id,))
        finally:
            conn.execute("ALTER TABLE balances ENABLE TRIGGER USER")


# ------------------------------------------------------------------------------------------ help and version
def test_help_lists_every_command_and_needs_no_database(tmp_path: Path) -> None:
    proc = run_cli("--help", db_url="postgresql://nobody@127.0.0.1:1/none", data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("serve", "demo", "verify", "db", "worker", "tokens", "bench"):
        assert command in proc.stdout


# ------------------------------------------------------------------------------------------ db upgrade
def test_db_upgrade_migrates_an_empty_database_then_is_idempotent(empty_db_url: str, tmp_path: Path) -> None:
    from propdesk.db.migrate import HEAD

    first = run_cli("db", "upgrade", "--json", db_url=empty_db_url, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    out = one_json_line(first)
    assert out["revision_before"] is None
    assert out["revision"] == HEAD
    assert out["changed"] is True
    assert out["embedded"] is False

    second = run_cli("db", "upgrade", "--json", db_url=empty_db_url, data_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    again = one_json_line(second)
    assert again["revision_before"] == HEAD == again["revision"]
    assert again["changed"] is False


def test_db_upgrade_without_json_reports_on_stderr_only(db_url: str, tmp_path: Path) -> None:
    proc = run_cli("db", "upgrade", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "already at" in proc.stderr


def test_db_upgrade_against_an_unreachable_server_exits_2_with_a_message(tmp_path: Path) -> None:
    proc = run_cli("db", "upgrade", db_url="postgresql://postgres@127.0.0.1:1/nothing", data_dir=tmp_path)
    assert proc.returncode == 2
    assert "propdesk:" in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------ tokens
def test_tokens_create_json_prints_one_line_and_the_token_verifies(db_url: str, database: Any, tmp_path: Path) -> None:
    from propdesk.clock import SystemClock
    from propdesk.identity.auth import Role, TokenStore

    proc = run_cli(
        "tokens",
        "create",
        "--role",
        "admin",
        "--name",
        "ci-admin",
        "--ttl-days",
        "1",
        "--json",
        db_url=db_url,
        data_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = one_json_line(proc)
    assert out["role"] == "admin" and out["name"] == "ci-admin" and out["expires_at"]
    assert out["token"] not in proc.stderr  # shown once, on stdout only

    principal = TokenStore(database, SystemClock()).verify(out["token"])
    assert principal is not None
    assert principal.role is Role.ADMIN
    assert principal.id == out["id"]
    assert TokenStore(database, SystemClock()).verify(out["token"] + "x") is None


def test_tokens_create_without_json_prints_just_the_token(db_url: str, database: Any, tmp_path: Path) -> None:
    from propdesk.clock import SystemClock
    from propdesk.identity.auth import Role, TokenStore

    proc = run_cli("tokens", "create", "--role", "service", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert "\n" not in token
    principal = TokenStore(database, SystemClock()).verify(token)
    assert principal is not None and principal.role is Role.SERVICE


def test_tokens_list_shows_last_used_at_and_revoke_refuses_the_token(
    db_url: str, database: Any, tmp_path: Path
) -> None:
    from propdesk.clock import SystemClock
    from propdesk.identity.auth import TokenStore

    made = one_json_line(
        run_cli("tokens", "create", "--role", "service", "--name", "bot", "--json", db_url=db_url, data_dir=tmp_path)
    )
    assert TokenStore(database, SystemClock()).verify(made["token"]) is not None  # a use: last_used_at is set
    listed = run_cli("tokens", "list", "--json", db_url=db_url, data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (item,) = one_json_line(listed)["items"]
    assert item["id"] == made["id"] and item["status"] == "active" and item["last_used_at"]
    assert made["token"] not in listed.stdout

    proc = run_cli("tokens", "revoke", made["id"], "--reason", "leaked in a log", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert TokenStore(database, SystemClock()).verify(made["token"]) is None
    text = run_cli("tokens", "list", db_url=db_url, data_dir=tmp_path).stdout
    assert "revoked" in text and "leaked in a log" in text
    with psycopg.connect(db_url, autocommit=True) as conn:
        audit = conn.execute("SELECT actor, reason FROM admin_audit WHERE action='token_revoke'").fetchall()
    assert audit == [("cli", "leaked in a log")]

    env = run_cli("tokens", "revoke", "env:service", "--reason", "x", db_url=db_url, data_dir=tmp_path)
    assert env.returncode == 2 and "environment token" in env.stderr and "PROPDESK_SERVICE_TOKEN" in env.stderr
    unknown = run_cli("tokens", "revoke", str(uuid.uuid4()), "--reason", "x", db_url=db_url, data_dir=tmp_path)
    assert unknown.returncode == 2 and "no API token" in unknown.stderr


def test_tokens_create_refuses_an_unknown_role(db_url: str, tmp_path: Path) -> None:
    proc = run_cli("tokens", "create", "--role", "root", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------ verify
def test_verify_exits_0_on_traded_accounts_and_1_after_a_balance_is_tampered_with(
    db_url: str, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    ids = trade_accounts(service, quotes, clock, n=3)

    clean = run_cli("verify", "--json", db_url=db_url, data_dir=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = one_json_line(clean)
    assert report["accounts"] == 3 and report["ok"] == 3 and report["clean"] is True

    tamper_cash(db_url, ids[1])

    dirty = run_cli("verify", db_url=db_url, data_dir=tmp_path)
    assert dirty.returncode == 1
    assert f"MISMATCH {ids[1]} cash" in dirty.stdout
    assert str(ids[0]) not in dirty.stdout and str(ids[2]) not in dirty.stdout

    dirty_json = run_cli("verify", "--json", db_url=db_url, data_dir=tmp_path)
    assert dirty_json.returncode == 1
    report = one_json_line(dirty_json)
    assert report["mismatched"] == 1 and report["ok"] == 2
    assert report["mismatches"][0]["account_id"] == str(ids[1])
    assert {m["field"] for m in report["mismatches"][0]["mismatches"]} == {"cash"}


def test_verify_detects_a_ledger_row_altered_by_the_owner_with_the_guards_disabled(
    db_url: str, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    ids = trade_accounts(service, quotes, clock, n=2)
    assert run_cli("verify", db_url=db_url, data_dir=tmp_path).returncode == 0
    # An edit that leaves every balance consistent (only the evidence of a fill changes): only the chain can tell.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {ROLE_PREFIX}_owner")
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER USER")
        try:
            conn.execute(
                'UPDATE ledger SET evidence = evidence || \'{"note": "rewritten"}\'::jsonb'
                " WHERE account_id = %s AND seq = 2",
                (ids[0],),
            )
        finally:
            conn.execute("ALTER TABLE ledger ENABLE TRIGGER USER")

    dirty = run_cli("verify", db_url=db_url, data_dir=tmp_path)
    assert dirty.returncode == 1, dirty.stdout
    assert "TAMPERING DETECTED" in dirty.stdout and str(ids[0]) in dirty.stdout
    report = one_json_line(run_cli("verify", "--json", db_url=db_url, data_dir=tmp_path))
    assert report["mismatched"] == 0 and report["clean"] is False
    assert report["chains"]["problems"][0]["chain"].startswith("ledger")


def test_verify_one_account_checks_only_that_account(
    db_url: str, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    ids = trade_accounts(service, quotes, clock, n=2)
    tamper_cash(db_url, ids[0])

    good = run_cli("verify", str(ids[1]), "--json", db_url=db_url, data_dir=tmp_path)
    assert good.returncode == 0, good.stderr
    assert one_json_line(good)["accounts"] == 1

    bad = run_cli("verify", str(ids[0]), "--json", db_url=db_url, data_dir=tmp_path)
    assert bad.returncode == 1
    assert one_json_line(bad)["mismatched"] == 1


def test_verify_refuses_malformed_and_unknown_account_ids_with_exit_2(db_url: str, tmp_path: Path) -> None:
    malformed = run_cli("verify", "not-a-uuid", db_url=db_url, data_dir=tmp_path)
    assert malformed.returncode == 2 and "not an account id" in malformed.stderr
    unknown = run_cli("verify", str(uuid.uuid4()), db_url=db_url, data_dir=tmp_path)
    assert unknown.returncode == 2 and "not found" in unknown.stderr


# ------------------------------------------------------------------------------------------ demo
def _api_available() -> bool:
    try:
        from propdesk.web.app import create_app  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _api_available(),
    reason="propdesk.web.app.create_app does not exist yet (the API is built in parallel); the demo needs it",
)
def test_demo_check_sets_up_the_demo_accounts_idempotently_and_verify_passes(db_url: str, tmp_path: Path) -> None:
    proc = run_cli("demo", "--check", "--port", "0", db_url=db_url, data_dir=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "demo check:" in proc.stdout
    assert "pdk_" in proc.stdout  # the tokens are printed for the user
    assert "DEMO PRICE DRIVER" in proc.stdout

    with psycopg.connect(db_url, autocommit=True) as conn:
        # A demo trader's accounts are owned by that trader's demo user: name them by the user's email.
        rows = conn.execute(
            "SELECT a.id, coalesce((SELECT split_part(u.email, '@', 1) FROM users u"
            "   WHERE u.id::text = a.owner_id), a.owner_id), a.mode, a.status,"
            " (SELECT count(*) FROM positions p WHERE p.account_id = a.id) AS positions,"
            " (SELECT count(*) FROM positions p WHERE p.account_id = a.id"
            "   AND p.stop_loss IS NOT NULL AND p.take_profit IS NOT NULL) AS protected,"
            " (SELECT count(*) FROM orders o WHERE o.account_id = a.id AND o.status = 'open')"
            "   AS resting,"
            " (SELECT count(*) FROM fills f WHERE f.account_id = a.id) AS fills,"
            " (SELECT count(*) FROM orders o WHERE o.account_id = a.id AND o.status = 'rejected')"
            "   AS rejected,"
            " b.realized_pnl FROM accounts a JOIN balances b ON b.account_id = a.id"
        ).fetchall()
        tokens = conn.execute("SELECT role FROM api_tokens ORDER BY role").fetchall()
    by_owner: dict[str, list[Any]] = {}
    for r in rows:
        by_owner.setdefault(r[1], []).append(r)
    assert set(by_owner) == {"alice", "bob", "carol", "dave", "erin", "agent:demo-alpha", "agent:demo-beta"}
    alice, bob = by_owner["alice"][0], by_owner["bob"][0]
    alpha, beta = by_owner["agent:demo-alpha"][0], by_owner["agent:demo-beta"][0]
    assert alice[3] == "active" and alice[5] >= 1 and alice[6] >= 1 and alice[8] >= 1 and alice[7] >= 7
    assert alice[9] != 0  # closed trades realized P&L
    assert bob[3] == "paused" and bob[4] >= 1
    assert sorted(r[3] for r in by_owner["carol"]) == ["active", "passed"]  # phase 1 passed, phase 2 open
    assert [r[3] for r in by_owner["dave"]] == ["failed"]
    assert [r[3] for r in by_owner["erin"]] == ["day_paused"]
    assert alpha[2] == "audition" and alpha[3] == "liquidated" and alpha[4] == 0
    assert beta[2] == "audition" and beta[3] == "completed"
    assert [t[0] for t in tokens] == ["admin", "service"]
    # Logins for the web app are printed: the admin's and a trader's, with the URL.
    assert "admin@demo.propdesk.test" in proc.stdout and "alice@demo.propdesk.test" in proc.stdout
    assert "/login" in proc.stdout and "GET /api/v1/accounts as alice@demo.propdesk.test -> 200" in proc.stdout
    # The demo on a free port (issue 13, defect 6): the public URL is the bound address, so the login form posted
    # from the printed URL passes the origin check.
    printed = re.search(r"log in at (http://127\.0\.0\.1:(\d+))/login", proc.stdout)
    assert printed is not None and printed[2] != "8000", proc.stdout[-3000:]
    assert f"login form POST from {printed[1]} -> 200" in proc.stdout
    with psycopg.connect(db_url, autocommit=True) as conn:
        kinds = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM violations").fetchall()}
    assert {"breach", "flag", "pass"} <= kinds

    again = run_cli("demo", "--check", "--port", "0", db_url=db_url, data_dir=tmp_path, timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    with psycopg.connect(db_url, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM accounts").fetchone()
    assert count is not None and count[0] == 8  # reused, not duplicated (carol's phase 2 is the eighth)

    verified = run_cli("verify", "--json", db_url=db_url, data_dir=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = one_json_line(verified)
    assert report["accounts"] == 8 and report["clean"] is True


# ------------------------------------------------------------------------------------------ serve
def serve_process(
    db_url: str, data_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start ``propdesk serve --port 0`` (``env`` adds variables); returns the process, its URL (from the
    ``serving`` log event) and the stderr lines read so far (a thread keeps reading them)."""
    import threading
    import time

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    full_env.update(
        {
            "DATABASE_URL": db_url,
            "PROPDESK_DB_ROLE_PREFIX": ROLE_PREFIX,
            "PROPDESK_DATA_DIR": str(data_dir),
            "PROPDESK_MTM_INTERVAL_SECONDS": "0.2",
            **(env or {}),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "propdesk", "serve", "--port", "0", *extra],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    url: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if '"event": "serving"' in line:
                url.append(json.loads(line)["url"])

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not url:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("serve did not start:\n" + "".join(lines[-50:]))
        time.sleep(0.05)
    return proc, url[0], lines


def _wait_for(get: Any, pred: Any, timeout: float = 30) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = get()
            if pred(value):
                return value
        except Exception:
            value = None
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last value {value!r}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> int:
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_runs_the_api_and_the_mark_to_market_worker_in_one_process(db_url: str, tmp_path: Path) -> None:
    import httpx

    proc, url, lines = serve_process(db_url, tmp_path)
    try:
        health = _wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=5).json(),
            lambda h: h["checks"]["mark_to_market_worker"]["ok"] is True,
        )
        assert health["checks"]["mark_to_market_worker"]["details"]["pid"] == proc.pid
        assert httpx.get(f"{url}/api/v1/prop/accounts/{uuid.uuid4()}", timeout=5).status_code == 401
    finally:
        code = _stop(proc)
    assert code == 0, "".join(lines[-40:])
    assert any('"event": "worker_stopped"' in line for line in lines)


def test_serve_without_the_worker_writes_no_heartbeat(db_url: str, tmp_path: Path) -> None:
    import httpx

    proc, url, lines = serve_process(db_url, tmp_path, "--no-worker")
    try:
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        assert health["checks"]["mark_to_market_worker"]["ok"] is False
    finally:
        code = _stop(proc)
    assert code == 0, "".join(lines[-40:])
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM worker_heartbeats").fetchone() == (0,)


def test_serve_on_a_free_port_accepts_a_login_form_post_from_its_own_origin(
    db_url: str, tmp_path: Path, platform: Any
) -> None:
    """Issue 13, defect 6: without PROPDESK_PUBLIC_URL the trusted origin is the bound address (read after binding
    port 0), not http://127.0.0.1:8000."""
    import httpx
    from tests.web_kit import PASSWORD, make_user

    make_user(platform, "port0@example.test")
    proc, url, lines = serve_process(db_url, tmp_path, "--no-worker")
    try:
        assert not url.endswith(":8000")
        login = {"email": "port0@example.test", "password": PASSWORD}
        r = httpx.post(f"{url}/api/v1/auth/login", json=login, headers={"Origin": url}, timeout=10)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{url}/api/v1/auth/login", json=login, headers={"Origin": "http://127.0.0.1:8000"}, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["details"]["trusted_origin"] == url
    finally:
        code = _stop(proc)
    assert code == 0, "".join(lines[-40:])
    assert any('"event": "serving"' in line and f'"public_url": "{url}"' in line for line in lines)


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_wildcard_host_without_a_public_url_exits_2_saying_what_to_set(
    db_url: str, tmp_path: Path, command: str
) -> None:
    proc = run_cli(command, "--host", "0.0.0.0", "--port", "0", db_url=db_url, data_dir=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PROPDESK_PUBLIC_URL" in proc.stderr and "0.0.0.0" in proc.stderr


def test_serve_on_a_taken_port_exits_2_with_a_message(db_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--port", str(port), db_url=db_url, data_dir=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


# ------------------------------------------------------------------------------------------ backup and restore
def test_a_backup_restores_into_a_new_database_that_verifies_clean_with_the_same_truth(
    db_url: str, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    ids = trade_accounts(service, quotes, clock, n=3)
    archive = tmp_path / "backups" / "desk.dump"
    made = run_cli("db", "backup", str(archive), "--json", db_url=db_url, data_dir=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    manifest = one_json_line(made)
    assert manifest["counts"]["accounts"] == 3 and manifest["counts"]["ledger"] > 3
    assert (archive.stat().st_mode & 0o777) == 0o600
    assert run_cli("db", "backup", str(archive), db_url=db_url, data_dir=tmp_path).returncode == 2  # never overwrites

    name = f"restored_{uuid.uuid4().hex[:10]}"
    restored = run_cli("db", "restore", str(archive), "--database", name, "--json", db_url=db_url, data_dir=tmp_path)
    params = conninfo_to_dict(db_url)
    params["dbname"] = name
    restored_url = make_conninfo(**params)
    try:
        assert restored.returncode == 0, restored.stderr[-3000:]
        assert one_json_line(restored)["counts"] == manifest["counts"]
        check = run_cli("verify", "--json", db_url=restored_url, data_dir=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr[-2000:]
        report = one_json_line(check)
        assert report["accounts"] == 3 and report["clean"] is True and report["chains"]["ledger_rows"] > 0
        query = "SELECT account_id, cash, equity, ledger_seq FROM balances ORDER BY account_id"
        with psycopg.connect(db_url) as a, psycopg.connect(restored_url) as b:
            assert a.execute(query).fetchall() == b.execute(query).fetchall()
        again = run_cli("db", "restore", str(archive), "--database", name, db_url=db_url, data_dir=tmp_path)
        assert again.returncode == 2 and "exists" in again.stderr  # never over a database that exists
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert ids


def test_a_damaged_archive_is_refused_before_anything_is_created(
    db_url: str, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    trade_accounts(service, quotes, clock, n=1)
    archive = tmp_path / "desk.dump"
    assert run_cli("db", "backup", str(archive), db_url=db_url, data_dir=tmp_path).returncode == 0
    with archive.open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    name = f"restored_{uuid.uuid4().hex[:10]}"
    bad = run_cli("db", "restore", str(archive), "--database", name, db_url=db_url, data_dir=tmp_path)
    assert bad.returncode == 2 and "SHA-256" in bad.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
