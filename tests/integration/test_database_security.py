"""Database-level security: only the engine writes account truth, the ledger is append-only, and a trader's
session sees only that trader's rows. Checked through each role's own login, not through the application."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from propdesk.clock import ManualClock
from propdesk.db.database import Database, assert_security_posture
from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration

D = Decimal
PREFIX = "pdtest"
GUARD_MESSAGE = "only the execution engine writes account truth"
APPEND_ONLY_MESSAGE = "the table is append-only"

# One column per execution table to rewrite in place (the value does not matter: the write must never happen).
EXECUTION_TABLES: dict[str, str] = {
    "accounts": "status",
    "balances": "cash",
    "orders": "status",
    "fills": "fee",
    "fill_voids": "reason",
    "positions": "quantity",
    "ledger": "amount",
    "decision_actions": "status",
}
APPEND_ONLY = {"ledger", "fills", "fill_voids"}
WRITES = ["insert", "update", "delete", "truncate"]


def _write(table: str, op: str) -> sql.Composed:
    t, col = sql.Identifier(table), sql.Identifier(EXECUTION_TABLES[table])
    if op == "insert":  # a copy of an existing row: the guard fires before any key or constraint check
        return sql.SQL("INSERT INTO {t} SELECT * FROM {t} LIMIT 1").format(t=t)
    if op == "update":
        return sql.SQL("UPDATE {t} SET {c} = {c}").format(t=t, c=col)
    if op == "delete":
        return sql.SQL("DELETE FROM {t}").format(t=t)
    return sql.SQL("TRUNCATE {t} CASCADE").format(t=t)


def refusal(table: str, op: str) -> str:
    """The message a non-engine writer gets (triggers fire in name order: ``*_append_only`` before
    ``*_engine_only``, so a rewrite of an append-only table is refused for that reason first)."""
    return APPEND_ONLY_MESSAGE if table in APPEND_ONLY and op != "insert" else GUARD_MESSAGE


def fingerprint(admin_url: str) -> dict[str, tuple[int, str]]:
    """(row count, md5 of all rows) of every execution table, read as the superuser (no RLS)."""
    out: dict[str, tuple[int, str]] = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for t in EXECUTION_TABLES:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {} x"
                ).format(sql.Identifier(t))
            ).fetchone()
            assert row is not None
            out[t] = (row[0], row[1])
    return out


@pytest.fixture
def seeded(
    database: Database, service: ExecutionService, quotes: QuoteStore, clock: ManualClock
) -> dict[str, list[uuid.UUID]]:
    """Two traders with rows in every execution table (orders, fills, a void, positions, a decision action)."""
    for symbol, bid, ask in (("EURUSD", "1.10000", "1.10020"), ("AAPL", "200.00", "200.10")):
        quotes.put(Quote(symbol, D(bid), D(ask), clock.now()))
    accounts: dict[str, list[uuid.UUID]] = {"alice": [], "bob": []}
    for owner, n in (("alice", 2), ("bob", 1)):
        for _ in range(n):
            acc, _created = service.create_account(CreateAccount(owner_id=owner, start=True))
            acc_id = acc["id"]
            accounts[owner].append(acc_id)
            first = service.submit_order(acc_id, OrderRequest("EURUSD", Side.BUY, D("0.1")))
            service.submit_order(acc_id, OrderRequest("AAPL", Side.BUY, D(5)))
            service.submit_order(
                acc_id, OrderRequest("EURUSD", Side.BUY, D("0.1"), OrderType.LIMIT, limit_price=D("1.09"))
            )
            assert first.fill is not None
            service.void_fill(acc_id, first.fill["id"], actor="admin", reason="seed")
            with database.tx() as c:
                c.execute(
                    "INSERT INTO decision_actions (id, account_id, decision_run_id, decision_action_id, action,"
                    " payload, request_hash, status, result, created_at) VALUES"
                    " (%s,%s,'run-1','a-1','hold','{}','h','unsupported','{}',%s)",
                    (uuid.uuid4(), acc_id, clock.now()),
                )
    counts = fingerprint(database.admin_url)
    assert all(n > 0 for n, _ in counts.values()), counts
    return accounts


@pytest.fixture
def app_conn(database: Database) -> Iterator[psycopg.Connection[Any]]:
    """The web layer's own login (not the superuser with SET ROLE)."""
    with psycopg.connect(database.app_url, autocommit=True) as conn:
        yield conn


# ---------------------------------------------------------------- posture
def test_the_security_posture_holds(database: Database) -> None:
    assert assert_security_posture(database.admin_url, PREFIX) == []


def test_the_posture_check_notices_a_table_without_forced_row_level_security(database: Database) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(f'SET ROLE "{PREFIX}_owner"')
        conn.execute("ALTER TABLE quotes NO FORCE ROW LEVEL SECURITY")

    assert assert_security_posture(database.admin_url, PREFIX) == ["table quotes lacks ENABLE/FORCE ROW LEVEL SECURITY"]


def test_the_app_login_is_the_app_role_and_holds_no_privilege(app_conn: psycopg.Connection[Any]) -> None:
    row = app_conn.execute(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()

    assert row == (f"{PREFIX}_app", False, False)


# ---------------------------------------------------------------- nobody but the engine writes
@pytest.mark.parametrize("op", WRITES)
@pytest.mark.parametrize("table", list(EXECUTION_TABLES))
def test_the_app_role_cannot_write_execution_tables(
    database: Database, seeded: object, app_conn: psycopg.Connection[Any], table: str, op: str
) -> None:
    before = fingerprint(database.admin_url)
    app_conn.execute("SELECT set_config('propdesk.user_id', 'alice', false)")

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(_write(table, op))

    assert fingerprint(database.admin_url) == before


@pytest.mark.parametrize("op", WRITES)
@pytest.mark.parametrize("table", list(EXECUTION_TABLES))
def test_even_the_superuser_cannot_write_execution_tables(
    database: Database, seeded: object, table: str, op: str
) -> None:
    before = fingerprint(database.admin_url)

    with psycopg.connect(database.admin_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
        conn.execute(_write(table, op))

    assert refusal(table, op) in str(excinfo.value)
    assert fingerprint(database.admin_url) == before


@pytest.mark.parametrize("op", ["insert", "update", "delete"])
@pytest.mark.parametrize("table", list(EXECUTION_TABLES))
def test_the_table_owner_cannot_write_execution_tables(database: Database, seeded: object, table: str, op: str) -> None:
    before = fingerprint(database.admin_url)

    with psycopg.connect(database.admin_url) as conn:
        conn.execute(f'SET ROLE "{PREFIX}_owner"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal(table, op)):
            conn.execute(_write(table, op))

    assert fingerprint(database.admin_url) == before


@pytest.mark.parametrize("op", ["update", "delete", "truncate"])
@pytest.mark.parametrize("table", ["ledger", "fills", "fill_voids"])
def test_the_engine_cannot_rewrite_or_delete_append_only_tables(
    database: Database, seeded: object, table: str, op: str
) -> None:
    before = fingerprint(database.admin_url)

    with psycopg.connect(database.engine_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
        conn.execute(_write(table, op))

    if op != "truncate":  # the engine holds no TRUNCATE grant at all; row writes reach the trigger
        assert APPEND_ONLY_MESSAGE in str(excinfo.value)
    assert fingerprint(database.admin_url) == before


def test_the_engine_still_appends_to_the_ledger(database: Database, seeded: dict[str, list[uuid.UUID]]) -> None:
    acc = seeded["alice"][0]
    with psycopg.connect(database.engine_url) as conn:
        row = conn.execute("SELECT max(seq) FROM ledger WHERE account_id=%s", (acc,)).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, evidence,"
            " created_at) VALUES (%s, %s, 'mark_to_market', 'none', 0, 0, %s, now())",
            (acc, row[0] + 1, Jsonb({})),
        )
        conn.rollback()  # proven possible; not kept, so the balances still fold


# ---------------------------------------------------------------- a trader sees only their own rows
def _visible(conn: psycopg.Connection[Any], table: str) -> set[uuid.UUID]:
    col = "id" if table == "accounts" else "account_id"
    return {
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {}").format(sql.Identifier(col), sql.Identifier(table))
        ).fetchall()
    }


def _rows_of(admin_url: str, table: str, accounts: list[uuid.UUID]) -> int:
    col = "id" if table == "accounts" else "account_id"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} = ANY(%s)").format(sql.Identifier(table), sql.Identifier(col)),
            (accounts,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("table", list(EXECUTION_TABLES))
def test_a_trader_session_sees_only_its_own_accounts_and_their_rows(
    database: Database, seeded: dict[str, list[uuid.UUID]], app_conn: psycopg.Connection[Any], table: str
) -> None:
    col = "id" if table == "accounts" else "account_id"
    for user, other in (("alice", "bob"), ("bob", "alice")):
        app_conn.execute("SELECT set_config('propdesk.user_id', %s, false)", (user,))

        visible = _visible(app_conn, table)
        count = app_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()

        assert visible == set(seeded[user])
        assert count is not None and count[0] == _rows_of(database.admin_url, table, seeded[user])
        # Asking for the other trader's rows by id returns nothing rather than an error.
        probe = app_conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} = ANY(%s)").format(sql.Identifier(table), sql.Identifier(col)),
            (seeded[other],),
        ).fetchone()
        assert probe == (0,)


def test_a_session_without_a_user_sees_no_account_truth(seeded: object, app_conn: psycopg.Connection[Any]) -> None:
    for table in EXECUTION_TABLES:
        assert _visible(app_conn, table) == set(), table


def test_the_user_setting_is_per_session(database: Database, seeded: dict[str, list[uuid.UUID]]) -> None:
    with (
        psycopg.connect(database.app_url, autocommit=True) as a,
        psycopg.connect(database.app_url, autocommit=True) as b,
    ):
        a.execute("SET propdesk.user_id = 'alice'")
        b.execute("SET propdesk.user_id = 'bob'")

        assert _visible(a, "accounts") == set(seeded["alice"])
        assert _visible(b, "accounts") == set(seeded["bob"])


def test_the_app_role_reads_market_data_but_not_private_tables(
    seeded: object, app_conn: psycopg.Connection[Any]
) -> None:
    assert app_conn.execute("SELECT count(*) FROM quotes").fetchone() == (2,)
    for table in ("idempotency_keys", "api_tokens"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
    # The audit log and worker heartbeats are granted to the app role since 0005 for the admin pages, but only an
    # admin user's session sees a row of them (is_admin() policies); anyone else sees none.
    for table in ("admin_audit", "worker_heartbeats"):
        assert app_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(
            "INSERT INTO quotes (symbol, bid, ask, ts, seq, source, received_at)"
            " VALUES ('X', 1, 1, now(), 1, 'x', now())"
        )


# ---------------------------------------------------------------- numbers are finite
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("NaN", psycopg.errors.CheckViolation),
        ("Infinity", (psycopg.errors.CheckViolation, psycopg.errors.NumericValueOutOfRange)),
        ("-Infinity", (psycopg.errors.CheckViolation, psycopg.errors.NumericValueOutOfRange)),
    ],
)
def test_numeric_columns_refuse_nan_and_infinity_even_from_the_engine(
    database: Database, seeded: object, bad: str, error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    before = fingerprint(database.admin_url)

    with database.tx() as c, pytest.raises(error):
        c.execute("UPDATE balances SET cash = %s::numeric", (bad,))
    with database.tx() as c, pytest.raises(error):
        c.execute(
            "INSERT INTO quotes (symbol, bid, ask, ts, seq, source, received_at)"
            " VALUES ('NANUSD', 1, %s::numeric, now(), 1, 'test', now())",
            (bad,),
        )
    # NaN fits the column type: only the CHECK refuses it.
    with database.tx() as c, pytest.raises(psycopg.errors.CheckViolation):
        c.execute("UPDATE positions SET avg_price = 'NaN'::numeric")

    assert fingerprint(database.admin_url) == before
