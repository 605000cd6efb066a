"""Tamper evidence on a real PostgreSQL: the hash chains the triggers of migration 0009 compute, recomputed by
``propdesk.db.chain.verify_chains``, and the signed anchors.

The tampering is done the way an attacker with the server would do it: as the superuser, with the triggers off
(``session_replication_role = replica``), so the append-only and engine-only guards do not stand in the way.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from tests.conftest import ROLE_PREFIX, _with_db

from propdesk.clock import ManualClock
from propdesk.db import chain
from propdesk.db.database import Database
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore
from propdesk.workers.anchor import ChainAnchorer, anchor_chains
from propdesk.workers.reconcile import verify_chains_report

pytestmark = pytest.mark.integration

D = Decimal
KEY = b"k" * 32


# ---------------------------------------------------------------- helpers
def verify(database: Database, *, key: bytes | None = KEY, log_path: Path | None = None) -> chain.ChainReport:
    with database.engine_pool.connection() as conn:
        return chain.verify_chains(conn, key=key, log_path=log_path)


def problems(report: chain.ChainReport) -> set[tuple[str, str]]:
    return {(p["chain"], p["problem"]) for p in report.problems}


def anchor_now(database: Database, clock: ManualClock, key: bytes = KEY) -> chain.Anchor | None:
    clock.advance(60)
    with database.tx() as c:
        return chain.anchor(c, key, clock.now())


def tamper(admin_url: str, *statements: str | sql.Composable, params: tuple[Any, ...] = ()) -> None:
    """Run statements as the superuser with every trigger off (the guards included)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for s in statements:
            conn.execute(s, params or None)


def recompute_hashes_from(admin_url: str, account_id: uuid.UUID, seq: int) -> None:
    """What a careful attacker does after altering row ``seq``: rehash it and every later row of the account."""
    tamper(
        admin_url,
        f"""
DO $$
DECLARE r record; prev bytea;
BEGIN
  SELECT row_hash INTO prev FROM ledger WHERE account_id = '{account_id}' AND seq = {seq} - 1;
  prev := coalesce(prev, '\\x{"00" * 32}'::bytea);
  FOR r IN SELECT * FROM ledger WHERE account_id = '{account_id}' AND seq >= {seq} ORDER BY seq LOOP
    UPDATE ledger SET prev_hash = prev, row_hash = sha256(prev || chain_ledger_bytes(r.id, r.account_id, r.seq,
      r.kind, r.category, r.amount, r.balance_after, r.equity_after, r.order_id, r.fill_id, r.evidence,
      r.created_at)) WHERE id = r.id RETURNING row_hash INTO prev;
  END LOOP;
END $$""",
    )


def ledger_rows(database: Database, account_id: uuid.UUID) -> list[dict[str, Any]]:
    with database.read() as c:
        return c.execute("SELECT * FROM ledger WHERE account_id = %s ORDER BY seq", (account_id,)).fetchall()


def audit(database: Database, clock: ManualClock, action: str, **details: Any) -> None:
    with database.tx() as c:
        c.execute(
            "INSERT INTO admin_audit (actor, action, account_id, reason, before, after, details, created_at)"
            " VALUES ('admin', %s, NULL, 'test', NULL, %s, %s, %s)",
            (action, Jsonb({"b": 1, "a": [1, "x"]}), Jsonb(details), clock.now()),
        )


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def traded(service: ExecutionService, quotes: QuoteStore, clock: ManualClock) -> list[uuid.UUID]:
    """Two accounts with orders, fills (multi-row ledger inserts), a cancel and a void, plus audit rows."""
    for symbol, bid, ask in (("EURUSD", "1.10000", "1.10020"), ("AAPL", "200.00", "200.10")):
        assert quotes.put(Quote(symbol, D(bid), D(ask), clock.now())) is not None
    ids = []
    for owner in ("alice", "bob"):
        acc, _ = service.create_account(CreateAccount(owner_id=owner, start=True))
        ids.append(acc["id"])
        first = service.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
        service.submit_order(acc["id"], OrderRequest("AAPL", Side.BUY, D(5)))
        service.submit_order(acc["id"], OrderRequest("EURUSD", Side.SELL, D("0.1")))
        assert first.fill is not None
        service.void_fill(acc["id"], first.fill["id"], actor="admin", reason="seed")
    audit(service.db, clock, "first", n=1)  # type: ignore[arg-type]
    audit(service.db, clock, "second", n=2)  # type: ignore[arg-type]
    return ids


# ---------------------------------------------------------------- clean chains
def test_chains_written_by_real_commands_verify_clean(database: Database, traded: list[uuid.UUID]) -> None:
    report = verify(database)

    assert report.clean, report.problems
    assert report.ledger_chains == 2
    assert report.ledger_rows == sum(len(ledger_rows(database, a)) for a in traded)
    assert report.audit_rows == 2
    rows = ledger_rows(database, traded[0])
    assert rows[0]["prev_hash"] == bytes(32)
    assert all(r["prev_hash"] == p["row_hash"] for p, r in itertools.pairwise(rows))


def test_the_python_canonical_form_is_the_databases(database: Database) -> None:
    """NULLs, non-ASCII text, a jsonb written with its keys in another order, a session in another time zone."""
    at = datetime(2026, 3, 2, 23, 30, 1, 5, tzinfo=timezone(timedelta(hours=-5)))
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        row = conn.execute(
            "SELECT chain_ledger_bytes(7, %s, 3, 'fée', 'pnl', -11.5::numeric(28,10), 0::numeric(28,10), NULL,"
            " NULL, %s, %s::jsonb, %s), %s::jsonb::text",
            (
                uuid.UUID(int=1),
                uuid.UUID(int=2),
                '{"zz": 1, "a": {"y": 2.50, "x": null}}',
                at,
                '{"zz": 1, "a": {"y": 2.50, "x": null}}',
            ),
        ).fetchone()
    assert row is not None
    expected = chain.ledger_bytes(
        7, uuid.UUID(int=1), 3, "fée", "pnl", "-11.5000000000", "0.0000000000", None, None, uuid.UUID(int=2), row[1], at
    )
    assert bytes(row[0]) == expected
    assert row[1] == '{"a": {"x": null, "y": 2.50}, "zz": 1}'


def test_a_multi_row_insert_chains_each_row_on_the_one_before(
    database: Database, service: ExecutionService, clock: ManualClock
) -> None:
    acc, _ = service.create_account(CreateAccount(owner_id="carol", start=False))
    last = ledger_rows(database, acc["id"])[-1]["seq"]
    with database.tx() as c:
        c.execute(
            "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, created_at) VALUES"
            " (%(a)s, %(s)s + 1, 'note', 'none', 0, 1, %(t)s), (%(a)s, %(s)s + 2, 'note', 'none', 0, 1, %(t)s),"
            " (%(a)s, %(s)s + 3, 'note', 'none', 0, 1, %(t)s)",
            {"a": acc["id"], "s": last, "t": clock.now()},
        )

    rows = ledger_rows(database, acc["id"])
    assert [r["seq"] for r in rows[-3:]] == [last + 1, last + 2, last + 3]
    assert all(r["prev_hash"] == p["row_hash"] for p, r in itertools.pairwise(rows))
    assert verify(database).clean


def test_the_trigger_refuses_a_seq_that_does_not_follow_the_chain(
    database: Database, service: ExecutionService, clock: ManualClock
) -> None:
    acc, _ = service.create_account(CreateAccount(owner_id="dave", start=False))
    last = ledger_rows(database, acc["id"])[-1]["seq"]

    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="does not follow"), database.tx() as c:
        c.execute(
            "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, created_at)"
            " VALUES (%s, %s, 'note', 'none', 0, 1, %s)",
            (acc["id"], last + 2, clock.now()),
        )


def test_the_engine_cannot_update_the_hash_columns(database: Database, traded: list[uuid.UUID]) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), database.tx() as c:
        c.execute("UPDATE ledger SET row_hash = prev_hash WHERE account_id = %s", (traded[0],))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), database.tx() as c:
        c.execute("UPDATE admin_audit SET row_hash = prev_hash")


# ---------------------------------------------------------------- tampering with the ledger
def test_an_altered_amount_is_detected(database: Database, traded: list[uuid.UUID]) -> None:
    tamper(
        database.admin_url,
        "UPDATE ledger SET amount = amount + 1 WHERE account_id = %s AND seq = 2",
        params=(traded[0],),
    )  # the deposit

    report = verify(database)
    assert report.problems == [
        {
            "chain": "ledger",
            "problem": "row_hash_mismatch",
            "account_id": str(traded[0]),
            "seq": 2,
            "id": report.problems[0]["id"],
        }
    ]


def test_a_deleted_row_is_detected(database: Database, traded: list[uuid.UUID]) -> None:
    tamper(database.admin_url, "DELETE FROM ledger WHERE account_id = %s AND seq = 4", params=(traded[1],))

    report = verify(database)
    assert problems(report) == {("ledger", "seq_gap"), ("ledger", "broken_link")}
    assert {p["seq"] for p in report.problems} == {5}


def test_a_forged_row_is_detected(database: Database, traded: list[uuid.UUID], clock: ManualClock) -> None:
    head = ledger_rows(database, traded[0])[-1]
    tamper(
        database.admin_url,
        "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, created_at, prev_hash,"
        " row_hash) VALUES (%s, %s, 'deposit', 'deposit', 5000, 105000, %s, %s, %s)",
        params=(traded[0], head["seq"] + 1, clock.now(), head["row_hash"], head["row_hash"]),
    )

    report = verify(database)
    assert problems(report) == {("ledger", "row_hash_mismatch")}


def test_a_row_slipped_into_the_middle_is_detected(
    database: Database, traded: list[uuid.UUID], clock: ManualClock
) -> None:
    """Renumber the tail to make room, insert a row there, keep every stored hash: the links break."""
    rows = ledger_rows(database, traded[0])
    tamper(
        database.admin_url,
        "UPDATE ledger SET seq = seq + 1000 WHERE account_id = %(a)s AND seq >= 3",
        "UPDATE ledger SET seq = seq - 999 WHERE account_id = %(a)s AND seq > 1000",
        "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, created_at, prev_hash,"
        " row_hash) VALUES (%(a)s, 3, 'deposit', 'deposit', 5000, 105000, %(t)s, %(p)s, %(p)s)",
        params={"a": traded[0], "t": clock.now(), "p": rows[1]["row_hash"]},
    )  # type: ignore[arg-type]

    assert ("ledger", "row_hash_mismatch") in problems(verify(database))


def test_a_rewritten_and_rehashed_history_is_detected_only_by_the_anchor(
    database: Database, traded: list[uuid.UUID], clock: ManualClock
) -> None:
    anchored = anchor_now(database, clock)
    assert anchored is not None and anchored.heads == 2
    tamper(
        database.admin_url,
        "UPDATE ledger SET amount = amount + 1000 WHERE account_id = %s AND seq = 2",
        params=(traded[0],),
    )
    recompute_hashes_from(database.admin_url, traded[0], 2)

    report = verify(database)
    assert problems(report) == {("ledger", "anchor_mismatch")}
    assert report.problems[0]["account_id"] == str(traded[0])
    # Without the anchor the rewrite is consistent: nothing else gives it away (the documented limit).
    tamper(database.admin_url, "DELETE FROM chain_anchor_heads", "DELETE FROM chain_anchors")
    assert verify(database).clean


def test_a_rewrite_after_the_last_anchor_goes_undetected(
    database: Database, traded: list[uuid.UUID], service: ExecutionService, clock: ManualClock
) -> None:
    """The documented limit: rows added after the last anchor can be rewritten and rehashed unseen."""
    anchor_now(database, clock)
    service.submit_order(traded[0], OrderRequest("AAPL", Side.SELL, D(5)))
    last = ledger_rows(database, traded[0])[-1]["seq"]
    tamper(
        database.admin_url,
        "UPDATE ledger SET amount = amount + 1 WHERE account_id = %s AND seq = %s",
        params=(traded[0], last),
    )
    recompute_hashes_from(database.admin_url, traded[0], last)

    assert verify(database).clean


# ---------------------------------------------------------------- the admin audit chain
def test_an_altered_audit_row_is_detected(database: Database, traded: list[uuid.UUID]) -> None:
    tamper(database.admin_url, "UPDATE admin_audit SET reason = 'nothing to see' WHERE chain_seq = 1")

    report = verify(database)
    assert problems(report) == {("admin_audit", "row_hash_mismatch")}
    assert report.problems[0]["chain_seq"] == 1


def test_a_deleted_audit_row_is_detected(database: Database, traded: list[uuid.UUID]) -> None:
    tamper(database.admin_url, "DELETE FROM admin_audit WHERE chain_seq = 1")

    assert problems(verify(database)) == {("admin_audit", "seq_gap"), ("admin_audit", "broken_link")}


def test_a_rehashed_audit_log_is_detected_by_the_anchor(
    database: Database, traded: list[uuid.UUID], clock: ManualClock
) -> None:
    anchor_now(database, clock)
    tamper(
        database.admin_url,
        """
DO $$
DECLARE r record; prev bytea := '\\x"""
        + "00" * 32
        + """'::bytea;
BEGIN
  UPDATE admin_audit SET reason = 'rewritten' WHERE chain_seq = 1;
  FOR r IN SELECT * FROM admin_audit ORDER BY chain_seq LOOP
    UPDATE admin_audit SET prev_hash = prev, row_hash = sha256(prev || chain_audit_bytes(r.chain_seq, r.id,
      r.actor, r.action, r.account_id, r.reason, r.before, r.after, r.details, r.created_at))
      WHERE id = r.id RETURNING row_hash INTO prev;
  END LOOP;
END $$""",
    )

    assert problems(verify(database)) == {("admin_audit", "anchor_mismatch")}


def test_concurrent_audit_writers_keep_one_unbroken_chain(database: Database, clock: ManualClock) -> None:
    threads, per_thread = 6, 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with database.tx() as c:
                    c.execute(
                        "INSERT INTO admin_audit (actor, action, reason, details, created_at)"
                        " VALUES ('t', %s, 'race', '{}', %s)",
                        (f"w{n}-{i}", clock.now()),
                    )
                    time.sleep(0.002)  # hold the chain lock a little: the next writer must wait for the commit
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert errors == []
    report = verify(database)
    assert report.clean, report.problems
    assert report.audit_rows == threads * per_thread


# ---------------------------------------------------------------- anchors
def test_anchors_record_only_the_chains_that_moved(
    database: Database, traded: list[uuid.UUID], service: ExecutionService, clock: ManualClock
) -> None:
    first = anchor_now(database, clock)
    assert first is not None and (first.heads, first.audit_chain_seq) == (2, 2)
    assert anchor_now(database, clock) is None
    service.submit_order(traded[1], OrderRequest("AAPL", Side.SELL, D(5)))
    second = anchor_now(database, clock)
    assert second is not None and (second.heads, second.audit_chain_seq) == (1, 2)

    report = verify(database)
    assert report.clean and report.signatures_checked
    assert (report.anchors, report.anchored_heads_checked) == (2, 2 + 1 + 2)


def test_a_forged_anchor_signature_is_detected(database: Database, traded: list[uuid.UUID], clock: ManualClock) -> None:
    anchor_now(database, clock)
    tamper(database.admin_url, "UPDATE chain_anchors SET signature = sha256('forged')")

    assert problems(verify(database)) == {("anchor", "anchor_signature_invalid")}
    assert problems(verify(database, key=b"another key of at least 32 bytes")) == {
        ("anchor", "anchor_signature_invalid")
    }
    unchecked = verify(database, key=None)
    assert unchecked.clean and not unchecked.signatures_checked and unchecked.warnings


def test_an_anchor_rewritten_to_match_a_rewritten_history_fails_its_signature(
    database: Database, traded: list[uuid.UUID], clock: ManualClock
) -> None:
    anchor_now(database, clock)
    tamper(
        database.admin_url,
        "UPDATE ledger SET amount = amount + 1 WHERE account_id = %s AND seq = 2",
        params=(traded[0],),
    )
    recompute_hashes_from(database.admin_url, traded[0], 2)
    tamper(
        database.admin_url,
        "UPDATE chain_anchor_heads h SET row_hash = l.row_hash FROM ledger l"
        " WHERE l.account_id = h.account_id AND l.seq = h.seq",
    )

    assert problems(verify(database)) == {("anchor", "anchor_digest_mismatch"), ("anchor", "anchor_signature_invalid")}


def test_deleting_the_newest_anchor_is_caught_by_the_log(
    database: Database, traded: list[uuid.UUID], service: ExecutionService, clock: ManualClock, tmp_path: Path
) -> None:
    first = anchor_chains(database, tmp_path, clock.now())
    service.submit_order(traded[0], OrderRequest("AAPL", Side.SELL, D(5)))
    clock.advance(60)
    second = anchor_chains(database, tmp_path, clock.now())
    assert first is not None and second is not None
    assert (tmp_path / chain.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert verify_chains_report(database, tmp_path).clean

    tamper(
        database.admin_url,
        "DELETE FROM chain_anchor_heads WHERE anchor_id = %s",
        "DELETE FROM chain_anchors WHERE id = %s",
        params=(second.id,),
    )

    log = tmp_path / chain.LOG_FILE
    assert verify(database, key=chain.anchor_key(tmp_path)).clean  # the database alone cannot tell
    report = verify_chains_report(database, tmp_path)
    assert report.problems == [{"chain": "anchor", "problem": "anchor_missing", "anchor_id": second.id}]
    assert report.log_entries_checked == 2 and log.exists()


def test_deleting_an_anchor_in_the_middle_breaks_the_next_ones_link(
    database: Database, traded: list[uuid.UUID], service: ExecutionService, clock: ManualClock
) -> None:
    first = anchor_now(database, clock)
    service.submit_order(traded[0], OrderRequest("AAPL", Side.SELL, D(5)))
    anchor_now(database, clock)
    assert first is not None
    tamper(
        database.admin_url,
        "DELETE FROM chain_anchor_heads WHERE anchor_id = %s",
        "DELETE FROM chain_anchors WHERE id = %s",
        params=(first.id,),
    )

    assert ("anchor", "anchor_link_broken") in problems(verify(database))


def test_the_anchorer_anchors_at_its_interval(
    database: Database, traded: list[uuid.UUID], service: ExecutionService, clock: ManualClock, tmp_path: Path
) -> None:
    anchorer = ChainAnchorer(database, tmp_path, interval_s=300)
    assert anchorer.maybe_anchor(clock.now()) is not None
    service.submit_order(traded[0], OrderRequest("AAPL", Side.SELL, D(5)))
    clock.advance(60)
    assert anchorer.maybe_anchor(clock.now()) is None  # not due yet
    clock.advance(300)
    assert anchorer.maybe_anchor(clock.now()) is not None
    assert len((tmp_path / chain.LOG_FILE).read_text().splitlines()) == 2


def test_the_key_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert chain.anchor_key(tmp_path, {}, create=False) is None
    key = chain.anchor_key(tmp_path, {})
    assert key is not None and len(key) == 32 and chain.anchor_key(tmp_path, {}) == key
    assert chain.anchor_key(tmp_path, {chain.KEY_ENV: "e" * 40}) == b"e" * 40
    with pytest.raises(ValueError, match="at least 32"):
        chain.anchor_key(tmp_path, {chain.KEY_ENV: "short"})
    (tmp_path / chain.KEY_FILE).chmod(0o644)
    with pytest.raises(PermissionError):
        chain.anchor_key(tmp_path, {})


# ---------------------------------------------------------------- upgrade from an older schema
@pytest.fixture
def db_at_0007(pg_admin_url: str) -> Iterator[str]:
    from propdesk.db import migrate

    name = f"pdt_up_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_db(pg_admin_url, name)
    migrate.upgrade(url, ROLE_PREFIX, revision="0007")
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_rows_written_before_the_upgrade_are_chained_by_it(db_at_0007: str, clock: ManualClock) -> None:
    from propdesk.db import migrate
    from propdesk.domain.instruments import DEFAULT_CATALOGUE

    db = Database(db_at_0007, ROLE_PREFIX, pool_size=4)
    try:
        quotes = QuoteStore(db)
        service = ExecutionService(db, clock, DEFAULT_CATALOGUE, quotes)
        quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now()))
        acc, _ = service.create_account(CreateAccount(owner_id="old", start=True))
        service.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
        with db.tx() as c:
            for n in range(3):
                c.execute(
                    "INSERT INTO admin_audit (actor, action, reason, details, created_at)"
                    " VALUES ('old', %s, 'before', '{}', %s)",
                    (f"a{n}", clock.now()),
                )
        db.engine_pool.close()  # the upgrade takes ACCESS EXCLUSIVE locks

        migrate.upgrade(db_at_0007, ROLE_PREFIX)

        db = Database(db_at_0007, ROLE_PREFIX, pool_size=4)
        service = ExecutionService(db, clock, DEFAULT_CATALOGUE, QuoteStore(db))
        before = verify(db)
        assert before.clean and before.ledger_rows > 0 and before.audit_rows == 3
        service.submit_order(acc["id"], OrderRequest("EURUSD", Side.SELL, D("0.1")))
        audit(db, clock, "after")
        after = verify(db)
        assert after.clean, after.problems
        assert after.ledger_rows > before.ledger_rows and after.audit_rows == 4
    finally:
        db.close()


def test_anchor_time_must_be_aware(database: Database) -> None:
    with pytest.raises(ValueError, match="aware"), database.tx() as c:
        chain.anchor(c, KEY, datetime(2026, 1, 1))


def test_anchor_digest_is_stable() -> None:
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    heads = [(uuid.UUID(int=1), 3, bytes(32))]
    assert chain.anchor_digest(1, at, None, None, heads) == chain.anchor_digest(1, at, None, None, iter(heads))
    assert chain.anchor_digest(1, at, None, None, heads) != chain.anchor_digest(1, at, bytes(32), None, heads)
