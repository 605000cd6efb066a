"""Row-level security for the web layer, through the app role's own login (no application code in between).

Two traders (A, B) and an admin, each with accounts whose history was made by real orders (fills, a breach, a
failed phase, notifications, journal notes, a purchase). Then, as the app role:

- with ``propdesk.user_id`` = A, every table shows exactly A's rows; = B, exactly B's; unset (or junk), none;
- an admin user id opens every row of those tables through ``is_admin()``; a disabled admin does not;
- ``is_admin()`` is SECURITY DEFINER, owned by the owner role, with a fixed search_path, and not executable
  by PUBLIC (only by the app role);
- the app role cannot INSERT/UPDATE/DELETE any execution table, nor write another trader's notes, nor a note
  on another trader's fill, nor mark another trader's notification read, nor read password hashes.

What SQL cannot prevent, by design: a connection of the app role may ``set_config('propdesk.user_id', <an admin
id>)`` itself. The web layer (reads/access.py ``user_conn``) is the only code that sets it, from the
authenticated session's user, and whatever it is set to, the app role can never write account truth (the
engine-only triggers and the missing grants below), so the worst a compromised web process could do is read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from propdesk.clock import ManualClock
from propdesk.db.database import Database, role_url
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore
from propdesk.rulebooks import load_rulebook

pytestmark = pytest.mark.integration

D = Decimal
PREFIX = "pdtest"
APP = f"{PREFIX}_app"

# Every table a trader page reads, with how its rows map to a user: via the account, or a user_id column.
BY_ACCOUNT = (
    "balances",
    "orders",
    "fills",
    "fill_voids",
    "positions",
    "ledger",
    "decision_actions",
    "rule_states",
    "violations",
    "daily_stats",
    "consistency_snapshots",
    "external_trades",
)
BY_USER = ("purchases", "trade_notes", "notifications")
EXECUTION_TABLES = (
    "accounts",
    "balances",
    "orders",
    "fills",
    "fill_voids",
    "positions",
    "ledger",
    "decision_actions",
    "rule_states",
    "violations",
    "daily_stats",
    "consistency_snapshots",
    "external_trades",
    "purchases",
)
ADMIN_ONLY = ("admin_audit", "auth_events", "email_outbox", "worker_heartbeats")


def _user(db: Database, clock: ManualClock, email: str, role: str = "trader") -> uuid.UUID:
    uid = uuid.uuid4()
    now = clock.now()
    with db.tx() as c:
        c.execute(
            "INSERT INTO users (id, email, password_hash, role, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s)",
            (uid, email, "x" * 40, role, now, now),
        )
    return uid


def _quote(quotes: QuoteStore, service: ExecutionService, clock: ManualClock, bid: str, ask: str) -> None:
    q = quotes.put(Quote("EURUSD", D(bid), D(ask), clock.now()))
    assert q is not None
    service.on_quote(q)


def _history(
    db: Database, service: ExecutionService, quotes: QuoteStore, clock: ManualClock, owner: uuid.UUID
) -> uuid.UUID:
    """A classic 10k phase-1 account with a winning trade, a note, a purchase, then a daily-loss breach."""
    book = load_rulebook("classic-2step@10k")
    policy = ExecutionPolicy(
        starting_balance=book.starting_balance,
        max_notional=D(10) ** 9,
        max_position_equity_pct=D(100000),
        max_leverage=D(200),
    )
    acc, _ = service.create_account(
        CreateAccount(
            owner_id=str(owner),
            policy=policy,
            rulebook=book.to_json(),
            rulebook_id=book.id,
            rulebook_version=book.version,
            offer_id="10k",
            start=True,
        )
    )
    aid: uuid.UUID = acc["id"]
    _quote(quotes, service, clock, "1.10000", "1.10010")
    service.submit_order(aid, OrderRequest("EURUSD", Side.BUY, D("0.5")))
    clock.advance(300)
    _quote(quotes, service, clock, "1.10100", "1.10110")
    out = service.close_position(aid, "EURUSD")
    assert out.fill is not None
    with db.tx() as c:
        c.execute(
            "INSERT INTO purchases (id, user_id, plan_id, plan_version, offer, amount, currency, provider,"
            " status, account_id, idempotency, created_at) VALUES (%s,%s,'classic-2step',1,'10k',99,'USD',"
            "'dev','confirmed',%s,%s,%s)",
            (uuid.uuid4(), owner, aid, uuid.uuid4().hex, clock.now()),
        )
        c.execute(
            "INSERT INTO trade_notes (user_id, fill_id, account_id, note, created_at, updated_at)"
            " VALUES (%s,%s,%s,'took profit',%s,%s)",
            (owner, out.fill["id"], aid, clock.now(), clock.now()),
        )
    # A position losing more than the 5% daily allowance: breach, phase failed (a notification of each).
    clock.advance(300)
    _quote(quotes, service, clock, "1.10100", "1.10112")
    assert service.submit_order(aid, OrderRequest("EURUSD", Side.BUY, D(1))).accepted
    clock.advance(300)
    _quote(quotes, service, clock, "1.09000", "1.09010")
    return aid


@pytest.fixture
def world(database: Database, service: ExecutionService, quotes: QuoteStore, clock: ManualClock) -> dict[str, Any]:
    a = _user(database, clock, "a@example.test")
    b = _user(database, clock, "b@example.test")
    admin = _user(database, clock, "boss@example.test", "admin")
    accounts = {a: _history(database, service, quotes, clock, a), b: _history(database, service, quotes, clock, b)}
    with database.tx() as c:
        c.execute(
            "INSERT INTO admin_audit (actor, action, account_id, reason, created_at) VALUES"
            " ('admin','pause',%s,'test',%s)",
            (accounts[a], clock.now()),
        )
        c.execute("INSERT INTO auth_events (ts, kind, user_id) VALUES (%s,'login_ok',%s)", (clock.now(), a))
        c.execute(
            "INSERT INTO email_outbox (to_address, subject, body, kind, created_at)"
            " VALUES ('a@example.test','hi','body','reset',%s)",
            (clock.now(),),
        )
        c.execute("INSERT INTO worker_heartbeats (name, beat_at) VALUES ('mtm', %s)", (clock.now(),))
    return {"a": a, "b": b, "admin": admin, "accounts": accounts}


@pytest.fixture
def app_conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(role_url(db_url, APP), row_factory=dict_row, autocommit=True) as conn:
        assert conn.execute("SELECT current_user AS u").fetchone() == {"u": APP}
        yield conn


def as_user(conn: psycopg.Connection[Any], user: uuid.UUID | str | None) -> None:
    conn.execute("SELECT set_config('propdesk.user_id', %s, false)", ("" if user is None else str(user),))


def visible(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row["n"])


def truth(db_url: str, table: str, user: uuid.UUID | None = None) -> int:
    """Row count as the superuser (no RLS): all rows, or those belonging to ``user``."""
    t = sql.Identifier(table)
    with psycopg.connect(db_url, autocommit=True) as conn:
        q: sql.Composable
        if user is None:
            q = sql.SQL("SELECT count(*) FROM {}").format(t)
            args: tuple[Any, ...] = ()
        elif table == "accounts":
            q, args = sql.SQL("SELECT count(*) FROM accounts WHERE owner_id=%s"), (str(user),)
        elif table in BY_USER:
            q, args = sql.SQL("SELECT count(*) FROM {} WHERE user_id=%s").format(t), (user,)
        else:
            q = sql.SQL(
                "SELECT count(*) FROM {} WHERE account_id IN (SELECT id FROM accounts WHERE owner_id=%s)"
            ).format(t)
            args = (str(user),)
        row = conn.execute(q, args).fetchone()
        assert row is not None
        return int(row[0])


def test_the_fixture_history_fills_every_table_a_trader_reads(world: dict[str, Any], db_url: str) -> None:
    # A vacuous "sees 0 of 0" would prove nothing: the tables the pages read most hold rows of both traders.
    for table in (
        "accounts",
        "balances",
        "orders",
        "fills",
        "ledger",
        "rule_states",
        "violations",
        "daily_stats",
        "purchases",
        "trade_notes",
        "notifications",
    ):
        for who in ("a", "b"):
            assert truth(db_url, table, world[who]) > 0, (table, who)
    kinds = {r[0] for r in psycopg.connect(db_url).execute("SELECT DISTINCT kind FROM notifications").fetchall()}
    assert {"breach", "status"} <= kinds


@pytest.mark.parametrize("who", ["a", "b"])
def test_a_trader_sees_exactly_its_own_rows_in_every_table(
    world: dict[str, Any], db_url: str, app_conn: Any, who: str
) -> None:
    as_user(app_conn, world[who])
    for table in ("accounts", *BY_ACCOUNT, *BY_USER):
        assert visible(app_conn, table) == truth(db_url, table, world[who]), table
    assert [r["id"] for r in app_conn.execute("SELECT id FROM users").fetchall()] == [world[who]]
    for table in ADMIN_ONLY:
        assert visible(app_conn, table) == 0, table


@pytest.mark.parametrize("setting", [None, "", "not-a-uuid", str(uuid.uuid4()), "' OR true --"])
def test_without_a_known_user_the_app_role_sees_nothing(
    world: dict[str, Any], app_conn: Any, setting: str | None
) -> None:
    if setting is not None:
        as_user(app_conn, setting)
    for table in ("accounts", *BY_ACCOUNT, *BY_USER, *ADMIN_ONLY, "users"):
        assert visible(app_conn, table) == 0, table


def test_an_admin_user_sees_every_row_through_is_admin(world: dict[str, Any], db_url: str, app_conn: Any) -> None:
    as_user(app_conn, world["admin"])
    assert app_conn.execute("SELECT is_admin() AS a").fetchone() == {"a": True}
    for table in ("accounts", *BY_ACCOUNT, *BY_USER, *ADMIN_ONLY, "users"):
        assert visible(app_conn, table) == truth(db_url, table), table
    # ...but never a password hash (column grant), not even as an admin.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("SELECT password_hash FROM users")


def test_a_disabled_admin_is_no_admin(world: dict[str, Any], db_url: str, app_conn: Any) -> None:
    with psycopg.connect(db_url, autocommit=True) as su:
        su.execute("UPDATE users SET disabled_at = now() WHERE id=%s", (world["admin"],))
    as_user(app_conn, world["admin"])
    assert app_conn.execute("SELECT is_admin() AS a").fetchone() == {"a": False}
    assert visible(app_conn, "accounts") == 0


def test_is_admin_is_a_locked_down_security_definer(world: dict[str, Any], db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as su:
        row = su.execute(
            "SELECT p.prosecdef, pg_get_userbyid(p.proowner), p.proconfig, p.proacl::text[]"
            " FROM pg_proc p WHERE p.proname = 'is_admin'"
        ).fetchone()
        assert row is not None
        secdef, owner, config, acl = row
        assert secdef is True
        assert owner == f"{PREFIX}_owner"
        assert config == ["search_path=pg_catalog, public"]
        assert not any(entry.startswith("=") for entry in acl), acl  # "=X/..." would be PUBLIC's EXECUTE
        assert su.execute(
            "SELECT has_function_privilege(%s, 'is_admin()', 'EXECUTE')", (f"{PREFIX}_engine",)
        ).fetchone() == (False,)
        assert su.execute("SELECT has_function_privilege(%s, 'is_admin()', 'EXECUTE')", (APP,)).fetchone() == (True,)
        for fn in ("notify_user(uuid, text, text, text, jsonb, timestamptz)",):
            assert su.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (APP, fn)).fetchone() == (False,)


WRITES = {
    "insert": "INSERT INTO {t} SELECT * FROM {t} LIMIT 1",
    "update": "UPDATE {t} SET account_id = account_id",
    "delete": "DELETE FROM {t}",
    "truncate": "TRUNCATE {t} CASCADE",
}


@pytest.mark.parametrize("who", ["a", "admin"])
def test_the_app_role_cannot_write_any_execution_table(
    world: dict[str, Any], db_url: str, app_conn: Any, who: str
) -> None:
    as_user(app_conn, world[who])
    for table in EXECUTION_TABLES:
        before = truth(db_url, table)
        key = "id" if table in ("accounts", "purchases") else "account_id"
        for op, stmt in WRITES.items():
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app_conn.execute(
                    sql.SQL(stmt.replace("account_id = account_id", f"{key} = {key}")).format(t=sql.Identifier(table))
                )
            assert truth(db_url, table) == before, (table, op)


def test_notes_can_be_written_only_on_fills_of_the_users_own_accounts(
    world: dict[str, Any], db_url: str, app_conn: Any, clock: ManualClock
) -> None:
    a, b = world["a"], world["b"]
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as su:
        fill_a = su.execute(
            "SELECT id, account_id FROM fills WHERE account_id=%s ORDER BY created_at DESC LIMIT 1",
            (world["accounts"][a],),
        ).fetchone()
        fill_b = su.execute(
            "SELECT id, account_id FROM fills WHERE account_id=%s ORDER BY created_at DESC LIMIT 1",
            (world["accounts"][b],),
        ).fetchone()
    assert fill_a and fill_b
    ins = (
        "INSERT INTO trade_notes (user_id, fill_id, account_id, note, created_at, updated_at)"
        " VALUES (%s,%s,%s,'x',now(),now())"
    )
    as_user(app_conn, a)
    app_conn.execute(ins, (a, fill_a["id"], fill_a["account_id"]))  # own fill: fine
    for args in (
        (a, fill_b["id"], fill_b["account_id"]),  # B's fill on B's account
        (a, fill_b["id"], fill_a["account_id"]),  # B's fill claimed to be on A's account
        (b, fill_b["id"], fill_b["account_id"]),  # posing as B
        (a, uuid.uuid4(), fill_a["account_id"]),
    ):  # a fill that does not exist: the same refusal
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            app_conn.execute(ins, args)
    # B's existing note is neither visible nor writable: an update touches 0 rows, a delete is not granted.
    assert app_conn.execute("UPDATE trade_notes SET note='hijack' WHERE user_id=%s", (b,)).rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("DELETE FROM trade_notes")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("UPDATE trade_notes SET user_id=%s WHERE user_id=%s", (b, a))  # no column grant
    # An admin sees every note but cannot write into a trader's journal.
    as_user(app_conn, world["admin"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(ins, (world["admin"], fill_b["id"], fill_b["account_id"]))
    assert app_conn.execute("UPDATE trade_notes SET note='admin' WHERE user_id=%s", (b,)).rowcount == 0
    with psycopg.connect(db_url, autocommit=True) as su:
        notes: dict[Any, Any] = dict(su.execute("SELECT user_id, note FROM trade_notes WHERE note <> 'x'").fetchall())
    assert notes == {a: "took profit", b: "took profit"}


def test_notifications_only_own_and_only_read_at(world: dict[str, Any], db_url: str, app_conn: Any) -> None:
    a, b = world["a"], world["b"]
    as_user(app_conn, a)
    assert app_conn.execute("UPDATE notifications SET read_at = now() WHERE user_id=%s", (b,)).rowcount == 0
    assert app_conn.execute("UPDATE notifications SET read_at = now()").rowcount == truth(db_url, "notifications", a)
    for stmt in (
        "UPDATE notifications SET title='x'",
        "DELETE FROM notifications",
        f"INSERT INTO notifications (user_id, kind, title, created_at) VALUES ('{a}', 'x', 'x', now())",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_conn.execute(stmt)
    with psycopg.connect(db_url, autocommit=True) as su:
        unread_b = su.execute(
            "SELECT count(*) FROM notifications WHERE user_id=%s AND read_at IS NULL", (b,)
        ).fetchone()
    assert unread_b is not None and unread_b[0] == truth(db_url, "notifications", b)


def test_a_unique_key_never_tells_one_trader_about_anothers_row(
    world: dict[str, Any], db_url: str, app_conn: Any
) -> None:
    # Notes are keyed by (user, fill): trader A re-using B's fill id collides with nothing of B's; the refusal is
    # the same row-level-security one as for a fill id that does not exist (tested above). Purchases are keyed
    # by (user, idempotency), so equal keys of two users coexist.
    with psycopg.connect(db_url, autocommit=True) as su:
        keys = su.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN"
            " ('trade_notes'::regclass, 'purchases'::regclass) AND contype IN ('p','u')"
        ).fetchall()
    defs = sorted(k[0] for k in keys)
    assert defs == ["PRIMARY KEY (id)", "PRIMARY KEY (user_id, fill_id)", "UNIQUE (user_id, idempotency)"]
