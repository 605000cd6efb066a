"""The mark-to-market worker: cycles, heartbeats, failure isolation, clean stops (in process and as a command)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

ROLE_PREFIX = "pdtest"


def cli_env(db_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": ROLE_PREFIX, "PROPDESK_DATA_DIR": str(data_dir)})
    return env


@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    """A platform on the test database with the test clock (no migrations: the template is at head)."""
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    p = open_platform(
        Settings(db_role_prefix=ROLE_PREFIX, mtm_interval_seconds=0.05),
        admin_url=db_url,
        migrate=False,
        configure_logs=False,
        clock=clock,
    )
    yield p
    p.close()


def open_positions(platform: Any, n: int = 3) -> list[uuid.UUID]:
    """``n`` active accounts, each holding an open EURUSD position."""
    from propdesk.domain.orders import OrderRequest, Side
    from propdesk.domain.quotes import Quote
    from propdesk.execution.service import CreateAccount

    platform.quotes.put(Quote("EURUSD", Decimal("1.08000"), Decimal("1.08002"), platform.clock.now()))
    ids = []
    for i in range(n):
        row, _ = platform.execution.create_account(CreateAccount(owner_id=f"mtm-{i}", start=True))
        assert platform.execution.submit_order(row["id"], OrderRequest("EURUSD", Side.BUY, Decimal("0.10"))).accepted
        ids.append(row["id"])
    return ids


def heartbeat(db_url: str) -> tuple[Any, dict[str, Any]] | None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT beat_at, details FROM worker_heartbeats WHERE name = 'mark-to-market'").fetchone()
    return (row[0], row[1]) if row else None


def mtm_events(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT account_id, count(*) FROM ledger WHERE kind = 'mark_to_market' GROUP BY account_id"
        ).fetchall()
    return {str(r[0]): r[1] for r in rows}


# ------------------------------------------------------------------------------------------ the command
def test_worker_once_marks_every_open_position_and_writes_a_heartbeat(
    db_url: str, platform: Any, tmp_path: Path
) -> None:
    from propdesk.domain.quotes import Quote

    ids = open_positions(platform, n=3)
    # The worker runs in another process: it must see a price written by this one (through the database).
    platform.clock.advance(5)
    platform.quotes.put(Quote("EURUSD", Decimal("1.08500"), Decimal("1.08502"), platform.clock.now()))

    proc = subprocess.run(
        [sys.executable, "-m", "propdesk", "worker", "mark-to-market", "--once", "--json"],
        env=cli_env(db_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    cycle = json.loads(lines[0])
    assert cycle["accounts"] == 3 and cycle["marked"] == 3 and cycle["failed"] == 0 and cycle["ok"] is True

    assert mtm_events(db_url) == {str(i): 1 for i in ids}
    beat = heartbeat(db_url)
    assert beat is not None
    assert beat[1]["marked"] == 3 and beat[1]["ok"] is True and beat[1]["pid"] != os.getpid()
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT min(unrealized_pnl), max(unrealized_pnl), min(marked_at) FROM balances WHERE account_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert row is not None
    # 0.10 lot bought at the 1.08001 mid, marked at the 1.08500 bid: +499 x 0.1 x 100000 x 1e-5 = 49.90 USD.
    assert row[0] == row[1] == Decimal("49.90")
    assert row[2] is not None


def test_worker_stops_cleanly_on_sigterm(db_url: str, platform: Any, tmp_path: Path) -> None:
    open_positions(platform, n=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "propdesk", "worker", "mark-to-market", "--interval", "0.2"],
        env=cli_env(db_url, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            beat = heartbeat(db_url)
            if beat is not None and beat[1]["cycle"] >= 2:
                break
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the worker never beat twice"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "worker_stopped" in err
    assert len(mtm_events(db_url)) == 1


# ------------------------------------------------------------------------------------------ in process
def test_a_failing_cycle_is_logged_counted_heartbeated_and_the_loop_goes_on(
    platform: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from propdesk.workers.mark_to_market import MarkToMarketWorker

    open_positions(platform, n=2)
    real = platform.execution.mark_all
    calls = {"n": 0}

    def flaky() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise psycopg.OperationalError("database restarting")
        return real()  # type: ignore[no-any-return]

    monkeypatch.setattr(platform.execution, "mark_all", flaky)
    worker = MarkToMarketWorker(platform, interval_s=0.02)
    first = worker.run_once()
    assert first.error is not None and "database restarting" in first.error
    beat = heartbeat(db_url)
    assert beat is not None and beat[1]["ok"] is False and "database restarting" in beat[1]["error"]

    worker.start()
    deadline = time.monotonic() + 30
    while worker.cycles < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.stop()
    assert worker.last is not None and worker.last.ok and worker.last.marked == 2
    beat = heartbeat(db_url)
    assert beat is not None and beat[1]["ok"] is True and beat[1]["cycle"] >= 3
    assert platform.metrics.mtm_failures._value.get() == 1
    assert "propdesk_mtm_cycle_seconds_count" in platform.metrics.render().decode()


def test_one_account_failing_is_counted_and_the_others_are_marked(
    platform: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from propdesk.workers.mark_to_market import MarkToMarketWorker

    ids = open_positions(platform, n=3)
    real = platform.execution.mark_to_market

    def broken_for_one(account_id: uuid.UUID, **kw: Any) -> Any:
        if account_id == ids[1]:
            raise RuntimeError("boom")
        return real(account_id, **kw)

    monkeypatch.setattr(platform.execution, "mark_to_market", broken_for_one)
    result = MarkToMarketWorker(platform).run_once()
    assert result.error is None
    assert result.accounts == 3 and result.marked == 2
    assert [f["account_id"] for f in result.failed] == [str(ids[1])]
    assert platform.metrics.mtm_failures._value.get() == 1
    beat = heartbeat(db_url)
    assert beat is not None and beat[1]["failed"] == 1 and beat[1]["marked"] == 2
    assert set(mtm_events(db_url)) == {str(ids[0]), str(ids[2])}


def test_the_worker_thread_stops_through_its_event_within_one_interval(platform: Any) -> None:
    from propdesk.workers.mark_to_market import MarkToMarketWorker

    stop = threading.Event()
    worker = MarkToMarketWorker(platform, interval_s=30, stop=stop)
    thread = worker.start()
    deadline = time.monotonic() + 10
    while worker.cycles < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5  # did not sit out the 30 s interval


def test_the_heartbeat_uses_the_platform_clock(platform: Any, db_url: str) -> None:
    from propdesk.workers.mark_to_market import MarkToMarketWorker, read_heartbeat

    MarkToMarketWorker(platform).run_once()
    beat = read_heartbeat(platform)
    assert beat is not None
    assert beat["beat_at"] == platform.clock.now()


def test_verify_is_not_fooled_by_a_concurrent_writer(platform: Any) -> None:
    """Recompute reads balances, ledger and fills from one snapshot while mark-to-market keeps writing."""
    from propdesk.workers.mark_to_market import MarkToMarketWorker
    from propdesk.workers.reconcile import verify

    ids = open_positions(platform, n=2)
    worker = MarkToMarketWorker(platform, interval_s=0.001)
    worker.start()
    try:
        for _ in range(30):
            report = verify(platform.execution, ids)
            assert report.clean, report.to_json()
    finally:
        worker.stop()
    assert worker.cycles > 1
