"""Risk shards across processes (issue 9, section 3): the lease, the split of accounts, the durable consumers
(quotes and the shard's partitions' events), replay of a missed window after a restart, and ``kill -9``."""

from __future__ import annotations

import os
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
from tests.web_kit import open_test_platform

from propdesk.domain.events import shard_of
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount
from propdesk.workers.outbox_relay import OutboxRelayWorker
from propdesk.workers.risk_shard import LeaseHeld, RiskShardWorker, ShardLease, consumer_names, heartbeat_name

pytestmark = pytest.mark.integration
D = Decimal


class FakeEngine:
    """Records what the shard hands it (the interface of engine.live.RiskEngine)."""

    def __init__(self, owns: Any) -> None:
        self.owns = owns
        self.quotes: list[Quote] = []
        self.events: list[dict[str, Any]] = []
        self.resyncs = 0
        self.book: list[Any] = []

    def on_quotes(self, quotes: list[Quote]) -> dict[str, Any]:
        self.quotes += quotes
        return {"candidates": 0}

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def resync(self) -> None:
        self.resyncs += 1


def fake_factory(made: list[FakeEngine]) -> Any:
    def make(execution: Any, db: Any, catalogue: Any, quotes: Any, owns: Any) -> FakeEngine:
        e = FakeEngine(owns)
        made.append(e)
        return e

    return make


@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    p = open_test_platform(db_url, clock)
    yield p
    p.close()


def _accounts(platform: Any, n: int, *, symbol: str = "EURUSD") -> list[uuid.UUID]:
    platform.quotes.put(Quote(symbol, D("1.10000"), D("1.10010"), platform.clock.now()))
    ids = []
    for i in range(n):
        row, _ = platform.execution.create_account(CreateAccount(owner_id=f"shard-{i}", start=True))
        assert platform.execution.submit_order(row["id"], OrderRequest(symbol, Side.BUY, D("0.01"))).accepted
        ids.append(row["id"])
    return ids


def _until(check: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ the lease
def test_a_held_shard_cannot_be_taken_and_is_free_again_when_released(platform: Any) -> None:
    url = platform.db.engine_url
    one, two = ShardLease(url, "ns-a", 1), ShardLease(url, "ns-a", 1)
    other_shard, other_ns = ShardLease(url, "ns-a", 0), ShardLease(url, "ns-b", 1)
    try:
        one.acquire()
        with pytest.raises(LeaseHeld, match="held by another process"):
            two.acquire(wait_s=0.3, poll_s=0.1)
        other_shard.acquire()  # another shard number, same namespace
        other_ns.acquire()  # the same number in another instance
        one.release()
        two.acquire(wait_s=2, poll_s=0.1)
        assert two.held
    finally:
        for lease in (one, two, other_shard, other_ns):
            lease.release()


def test_a_lease_whose_connection_drops_is_lost_at_once(platform: Any) -> None:
    lease = ShardLease(platform.db.engine_url, "ns-c", 0, check_s=0.1)
    lost = threading.Event()
    try:
        lease.acquire()
        lease.watch(lost.set)
        with psycopg.connect(platform.admin_url, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype='advisory' AND objid=0"
                " AND classid=%s::oid",
                (lease.key & 0xFFFFFFFF,),
            )
        assert lost.wait(3), "the lease was not noticed lost"
        assert not lease.held
    finally:
        lease.release()


def test_a_second_process_for_a_held_shard_exits_with_a_clear_message(
    platform: Any, db_url: str, tmp_path: Path
) -> None:
    from propdesk.workers.outbox_relay import registered_subjects

    ns = registered_subjects(platform.db).namespace
    lease = ShardLease(platform.db.engine_url, ns, 1)
    lease.acquire()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
        env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(tmp_path)})
        r = subprocess.run(
            [sys.executable, "-m", "propdesk", "worker", "risk", "--shard", "1", "--shards", "2", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        lease.release()
    assert r.returncode == 2, r.stderr
    assert "risk shard 1 is held by another process" in r.stderr


# ------------------------------------------------------------------------------------------------ in process
def test_two_shards_split_the_accounts_and_each_gets_every_quote_and_only_its_events(platform: Any) -> None:
    ids = _accounts(platform, 12)
    made: list[FakeEngine] = []
    workers = [
        RiskShardWorker(platform, shard=i, shards=2, engine_factory=fake_factory(made), interval_s=0.01)
        for i in range(2)
    ]
    relay = OutboxRelayWorker(platform)
    try:
        for w in workers:
            w.start_shard()
        assert len(made) == 2
        owned = [{x for x in ids if e.owns(x)} for e in made]
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(ids)
        assert all(owned), "with 12 accounts both shards own some (the hash spreads them)"
        assert owned[0] == {x for x in ids if shard_of(x, 2) == 0}

        # New events (one order per account) and new quotes after the consumers exist.
        for x in ids:
            assert platform.execution.submit_order(x, OrderRequest("EURUSD", Side.BUY, D("0.01"))).accepted
        assert relay.run_once().ok
        for k in range(5):
            platform.quotes.put(Quote("EURUSD", D("1.10001") + k * D("0.00001"), D("1.10020"), platform.clock.now()))

        def drained() -> bool:
            for w in workers:
                w.run_once()
            return all(len(e.quotes) >= 5 for e in made) and all(
                {uuid.UUID(ev["account_id"]) for ev in e.events} == owned[i] for i, e in enumerate(made)
            )

        _until(drained, 15, "both shards to get every quote and exactly their accounts' events")
        for i, e in enumerate(made):
            assert all(uuid.UUID(ev["account_id"]) in owned[i] for ev in e.events)
        beats = _beats(platform)
        assert {heartbeat_name(0, 2), heartbeat_name(1, 2)} <= set(beats)
        d = beats[heartbeat_name(0, 2)]
        assert d["breaker"] == "closed" and d["shard"] == 0 and d["shards"] == 2 and "lag_s" in d
    finally:
        relay.stop()
        for w in workers:
            w.close()


def _beats(platform: Any) -> dict[str, dict[str, Any]]:
    with platform.db.read() as c:
        rows = c.execute("SELECT name, details FROM worker_heartbeats").fetchall()
    return {r["name"]: r["details"] for r in rows}


def test_a_restarted_shard_resumes_its_consumer_and_replays_the_missed_window(platform: Any) -> None:
    _accounts(platform, 2)
    made: list[FakeEngine] = []
    w = RiskShardWorker(platform, shard=0, shards=1, engine_factory=fake_factory(made), interval_s=0.01)
    w.start_shard()
    platform.quotes.put(Quote("EURUSD", D("1.10100"), D("1.10110"), platform.clock.now()))
    _until(lambda: bool(w.run_once()) and len(made[0].quotes) >= 1, 10, "the first quote")
    w.close()  # down (its acks are in)

    missed = [D("1.09000"), D("1.08000"), D("1.10200")]  # a dip and a recovery while it is down
    for px in missed:
        platform.quotes.put(Quote("EURUSD", px, px + D("0.0001"), platform.clock.now()))

    w2 = RiskShardWorker(platform, shard=0, shards=1, engine_factory=fake_factory(made), interval_s=0.01)
    try:
        w2.start_shard()
        _until(lambda: bool(w2.run_once()) and len(made[1].quotes) >= 3, 10, "the replayed window")
        assert [q.bid for q in made[1].quotes][:3] == missed  # every missed quote, the dip included, once
        assert D("1.10100") not in [q.bid for q in made[1].quotes]  # nothing acked is delivered again
    finally:
        w2.close()
    qname, _ = consumer_names(w2.subjects.namespace, 0, 1)
    assert qname.endswith("-0-of-1-quotes")


def test_a_failing_engine_opens_the_breaker_and_nothing_is_acked(platform: Any) -> None:
    _accounts(platform, 1)
    made: list[FakeEngine] = []
    w = RiskShardWorker(
        platform,
        shard=0,
        shards=1,
        engine_factory=fake_factory(made),
        interval_s=0.01,
        breaker_fail_max=2,
        breaker_reset_s=60,
        retry_attempts=2,
    )
    try:
        w.start_shard()

        def broken(quotes: list[Quote]) -> dict[str, Any]:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        made[0].on_quotes = broken  # type: ignore[method-assign]
        platform.quotes.put(Quote("EURUSD", D("1.10300"), D("1.10310"), platform.clock.now()))
        results = []
        _until(lambda: results.append(w.run_once()) or w.breaker.current_state == "open", 15, "the breaker")
        assert w.totals["retries"] >= 1
        paused: list[Any] = []

        def refused_while_open() -> bool:
            r = w.run_once()
            paused.append(r)
            return bool(r.error and "circuit breaker open" in r.error)

        _until(refused_while_open, 10, "the redelivered quote to be refused by the open breaker")
        assert paused[-1].breaker == "open" and paused[-1].quotes == 0
        assert _beats(platform)[heartbeat_name(0, 1)]["breaker"] == "open"
    finally:
        w.close()


# ------------------------------------------------------------------------------------------------ kill -9
def _cli_env(db_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "PROPDESK_DB_ROLE_PREFIX": "pdtest",
            "PROPDESK_DATA_DIR": str(data_dir),
            "PROPDESK_DEMO_ALWAYS_OPEN": "true",  # the stop loss fires whatever the day of the week
            "PROPDESK_LOG_JSON": "false",
        }
    )
    return env


def _start_shard(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "propdesk", "worker", "risk", "--shard", "0", "--shards", "1", "--wait", "30"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _shard_beat(platform: Any) -> dict[str, Any] | None:
    return _beats(platform).get(heartbeat_name(0, 1))


def _stop_losses(platform: Any, acc: uuid.UUID) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        return c.execute(  # type: ignore[no-any-return]
            "SELECT o.id, f.price FROM orders o JOIN fills f ON f.order_id = o.id"
            " WHERE o.account_id=%s AND o.purpose='stop_loss'",
            (acc,),
        ).fetchall()


def test_kill_9_mid_stream_then_restart_executes_the_missed_breach_once(db_url: str, tmp_path: Path) -> None:
    """A stop loss crossed (and recovered) while the shard was killed is executed once when it comes back (the
    replayed window is judged at its worst price); killing and restarting it again executes nothing twice."""
    from datetime import UTC, datetime

    from propdesk.clock import SystemClock

    live = open_test_platform(db_url, SystemClock(), demo_always_open=True, risk_engine="off")
    env = _cli_env(db_url, tmp_path)
    log = tmp_path / "shard.log"
    proc: subprocess.Popen[bytes] | None = None
    try:

        def put(bid: str) -> None:
            b = D(bid)
            assert live.quotes.put(Quote("EURUSD", b, b + D("0.0001"), datetime.now(UTC))) is not None

        put("1.10000")
        row, _ = live.execution.create_account(CreateAccount(owner_id="kill9", start=True))
        acc = row["id"]
        out = live.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10"), stop_loss=D("1.09500")))
        assert out.accepted, out.rejection

        proc = _start_shard(env, log)
        _until(lambda: _shard_beat(live) is not None, 90, f"the shard's first heartbeat ({log.read_text()[-2000:]})")
        for k in range(5):  # mid-stream: prices flowing, none crossing
            put(str(D("1.10010") + k * D("0.00001")))
        _until(lambda: (_shard_beat(live) or {}).get("totals", {}).get("quotes", 0) >= 5, 30, "the shard's acks")
        proc.kill()  # kill -9
        proc.wait(10)

        put("1.09000")  # the breach while it is down ...
        put("1.10200")  # ... and the recovery before it comes back
        assert _stop_losses(live, acc) == []

        proc = _start_shard(env, log)
        _until(lambda: len(_stop_losses(live, acc)) >= 1, 90, f"the missed stop loss ({log.read_text()[-3000:]})")
        fills = _stop_losses(live, acc)
        assert len(fills) == 1 and fills[0]["price"] < D("1.09500")  # judged at the dip, not at the recovery

        # Again, mid-stream: kill -9, more prices, restart; nothing is executed a second time.
        put("1.10300")
        time.sleep(0.5)
        proc.kill()
        proc.wait(10)
        put("1.08500")
        proc = _start_shard(env, log)
        beat0 = (_shard_beat(live) or {}).get("cycle", 0)
        _until(lambda: (_shard_beat(live) or {}).get("pid") == proc.pid, 90, "the restarted shard's heartbeat")
        _until(lambda: (_shard_beat(live) or {}).get("pending", 1) == 0, 30, "the replay")
        assert beat0 >= 0 and len(_stop_losses(live, acc)) == 1
        proc.send_signal(15)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        proc = None

        r = subprocess.run(
            [sys.executable, "-m", "propdesk", "verify"], env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        live.close()
