"""``recompute`` proves balances = fold(ledger) and positions = replay(fills), and finds tampering.

The engine cannot tamper (the triggers refuse edits to append-only tables and every other role is refused), so
these tests tamper as the table owner with the user triggers disabled, as only a migration could.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from propdesk.clock import ManualClock
from propdesk.db.database import Database
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount, ExecutionService
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration

D = Decimal
OWNER = "pdtest_owner"


def tamper(database: Database, table: str, statement: str, *args: object) -> None:
    """Run ``statement`` as the owner with the table's user triggers off (then on again), in one transaction."""
    with psycopg.connect(database.admin_url) as conn:
        conn.execute(f'SET ROLE "{OWNER}"')
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.execute(statement, args)
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        conn.commit()


@pytest.fixture
def traded(service: ExecutionService, quotes: QuoteStore, clock: ManualClock) -> uuid.UUID:
    """An account with a closed round trip and an open position."""
    quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now()))
    quotes.put(Quote("AAPL", D("200.00"), D("200.10"), clock.now()))
    acc, _ = service.create_account(CreateAccount(owner_id="alice", start=True))
    service.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.2")))
    service.submit_order(acc["id"], OrderRequest("AAPL", Side.SELL, D(10)))
    clock.advance(5)
    quotes.put(Quote("EURUSD", D("1.10100"), D("1.10120"), clock.now()))
    service.close_position(acc["id"], "EURUSD")
    return acc["id"]  # type: ignore[no-any-return]


def test_recompute_is_ok_after_trading(service: ExecutionService, traded: uuid.UUID) -> None:
    report = service.recompute(traded)

    assert report["ok"] is True and report["mismatches"] == []
    assert D(report["deposits"]) == D(100000)
    assert D(report["realized_pnl"]) == D("20.00")
    assert report["entries"] > 5


def test_recompute_reports_a_tampered_cash_balance(
    service: ExecutionService, database: Database, traded: uuid.UUID
) -> None:
    derived = D(service.recompute(traded)["cash"])

    tamper(database, "balances", "UPDATE balances SET cash = cash + 1000 WHERE account_id = %s", traded)

    report = service.recompute(traded)
    assert report["ok"] is False
    assert report["mismatches"] == [{"field": "cash", "ledger": str(derived), "stored": f"{derived + 1000:.10f}"}]


def test_recompute_reports_a_tampered_position(
    service: ExecutionService, database: Database, traded: uuid.UUID
) -> None:
    tamper(
        database, "positions", "UPDATE positions SET quantity = -20 WHERE account_id = %s AND symbol = 'AAPL'", traded
    )

    report = service.recompute(traded)

    assert report["ok"] is False
    [mismatch] = report["mismatches"]
    assert mismatch["field"] == "position:AAPL"
    assert D(mismatch["ledger"].split("@")[0]) == -10
    assert D(mismatch["stored"].split("@")[0]) == -20


def test_recompute_reports_a_ledger_entry_slipped_in_behind_the_balances(
    service: ExecutionService, database: Database, traded: uuid.UUID
) -> None:
    seq = service.recompute(traded)["entries"] + 1
    tamper(
        database,
        "ledger",
        "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after,"
        " created_at) VALUES (%s, %s, 'adjustment', 'adjustment', 500, 0, now())",
        traded,
        seq,
    )

    fields = {m["field"] for m in service.recompute(traded)["mismatches"]}

    # 500 more cash than the balances row says, which also lifts the watermark above the stored one.
    assert fields == {"cash", "adjustments", "ledger_seq", "high_watermark"}
