"""The event outbox on a real PostgreSQL and a real nats-server: events exist exactly when their command committed,
are read in commit order (never skipping a transaction that commits late), and reach the bus once per event id."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from decimal import Decimal
from typing import Any

import nats
import psycopg
import pytest
from psycopg.rows import dict_row

from propdesk.bus.events import decode_event, ensure_events_stream, event_subject, events_stream
from propdesk.bus.subjects import Subjects
from propdesk.db.outbox import Cursor, read_batch
from propdesk.domain.events import PARTITIONS, partition_of, partitions_of_shard, shard_of
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount
from propdesk.workers.outbox_relay import OutboxRelay

pytestmark = pytest.mark.integration
D = Decimal


def _events(service: Any) -> list[dict[str, Any]]:
    with service.db.read() as c:
        return c.execute("SELECT type, account_id, payload, txid::text AS txid FROM outbox ORDER BY id").fetchall()  # type: ignore[no-any-return]


def _open(service: Any, quotes: Any, clock: Any) -> uuid.UUID:
    if quotes.latest("EURUSD") is None:
        assert quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now())) is not None
    acc, _ = service.create_account(CreateAccount(owner_id="alice", policy=ExecutionPolicy(), start=True))
    return acc["id"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ pure partitioning
def test_partitions_are_stable_and_shards_own_disjoint_partitions_covering_all() -> None:
    acc = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert partition_of(acc) == partition_of(uuid.UUID(str(acc)))
    for shards in (1, 2, 3, 8):
        owned = [p for s in range(shards) for p in partitions_of_shard(s, shards)]
        assert sorted(owned) == list(range(PARTITIONS))
        assert partition_of(acc) in partitions_of_shard(shard_of(acc, shards), shards)


# ------------------------------------------------------------------ written by the database, in the transaction
def test_a_fill_writes_one_account_changed_and_one_order_filled_in_its_transaction(
    service: Any, quotes: Any, clock: Any
) -> None:
    acc = _open(service, quotes, clock)
    before = len(_events(service))
    service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1")))
    new = _events(service)[before:]

    assert sorted(e["type"] for e in new) == ["account.changed", "order.filled"]
    assert {e["txid"] for e in new} == {new[0]["txid"]}  # one transaction
    filled = next(e for e in new if e["type"] == "order.filled")
    assert filled["payload"]["account_id"] == str(acc) and filled["payload"]["fill_id"]


def test_a_status_change_is_an_event_with_from_and_to(service: Any, quotes: Any, clock: Any) -> None:
    assert quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now())) is not None
    acc, _ = service.create_account(CreateAccount(owner_id="bob", policy=ExecutionPolicy(), start=True))
    changes = [e for e in _events(service) if e["type"] == "account.status_changed"]
    assert changes and changes[-1]["payload"]["to"] == "active" and changes[-1]["account_id"] == acc["id"]


def test_a_command_that_rolls_back_leaves_no_event(service: Any, quotes: Any, clock: Any) -> None:
    acc = _open(service, quotes, clock)
    before = len(_events(service))
    seen_inside: list[int] = []

    def command_that_fails_after_its_writes() -> None:
        with service.db.tx() as c:
            service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1")), conn=c)
            seen_inside.append(len(c.execute("SELECT 1 FROM outbox").fetchall()))
            raise RuntimeError("the command fails after its writes")

    with pytest.raises(RuntimeError):
        command_that_fails_after_its_writes()
    assert seen_inside[0] > before  # written inside the transaction...
    assert len(_events(service)) == before  # ...and gone with it


def test_only_the_engine_writes_the_outbox(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE pdtest_owner")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO outbox (type, version, payload) VALUES ('account.changed', 1, '{}')")


# ------------------------------------------------------------------ commit order
def test_a_transaction_that_drew_a_lower_id_but_commits_later_is_read_when_it_commits(database: Any) -> None:
    late = psycopg.connect(database.engine_url, row_factory=dict_row)
    try:
        late.execute(
            "INSERT INTO outbox (type, version, account_id, payload)"
            " VALUES ('account.changed', 1, gen_random_uuid(), '{\"n\": \"late\"}')"
        )
        with database.tx() as c:
            c.execute(
                "INSERT INTO outbox (type, version, account_id, payload)"
                " VALUES ('account.changed', 1, gen_random_uuid(), '{\"n\": \"early\"}')"
            )
        with database.read() as c:
            assert read_batch(c, Cursor()) == []  # the late transaction still runs: nothing after it may pass it
        late.commit()
        with database.read() as c:
            got = read_batch(c, Cursor())
        assert [e.payload["n"] for e in got] == ["late", "early"]  # commit order is transaction order
        with database.read() as c:
            assert read_batch(c, Cursor(got[0].txid, got[0].id)) == got[1:]
    finally:
        late.close()


# ------------------------------------------------------------------ onto the bus
async def _stream_messages(url: str, subjects: Subjects) -> list[tuple[str, dict[str, Any]]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(events_stream(subjects))
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(events_stream(subjects), seq)
            out.append((msg.subject, decode_event(msg.data or b"")))
        return out
    finally:
        await nc.close()


async def _relay(service: Any, url: str, subjects: Subjects, clock: Any, name: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_events_stream(js, subjects, retain_s=3600)
        return await OutboxRelay(service.db, js, subjects, clock.now, name=name, batch=3).drain()
    finally:
        await nc.close()


def test_the_relay_publishes_every_event_once_to_its_partition_and_a_second_relay_adds_no_copy(
    service: Any, quotes: Any, clock: Any, nats_url: str
) -> None:
    subjects = Subjects(f"t{uuid.uuid4().hex[:12]}")
    accounts = [_open(service, quotes, clock) for _ in range(2)]
    for acc in accounts:
        service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.1")))
    expected = _events(service)

    assert asyncio.run(_relay(service, nats_url, subjects, clock, "first")) == len(expected)
    assert asyncio.run(_relay(service, nats_url, subjects, clock, "first")) == 0  # the cursor moved on
    # Another relay from the beginning (a crash before its cursor was saved) publishes again: the stream drops it.
    assert asyncio.run(_relay(service, nats_url, subjects, clock, "second")) == len(expected)

    messages = asyncio.run(_stream_messages(nats_url, subjects))
    assert [m[1]["type"] for m in messages] == [e["type"] for e in expected]
    for subject, event in messages:
        acc = uuid.UUID(event["account_id"])
        assert subject == event_subject(subjects, partition_of(acc))


def test_concurrent_commands_on_many_accounts_are_all_relayed_in_commit_order(
    service: Any, quotes: Any, clock: Any, nats_url: str
) -> None:
    subjects = Subjects(f"t{uuid.uuid4().hex[:12]}")
    accounts = [_open(service, quotes, clock) for _ in range(6)]

    def trade(acc: uuid.UUID) -> None:
        for _ in range(3):
            service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01")))

    threads = [threading.Thread(target=trade, args=(a,)) for a in accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    asyncio.run(_relay(service, nats_url, subjects, clock, "relay"))
    messages = asyncio.run(_stream_messages(nats_url, subjects))
    positions = [tuple(m[1]["position"]) for m in messages]
    assert positions == sorted(positions)
    filled = [m for m in messages if m[1]["type"] == "order.filled"]
    assert len(filled) == 18 and len({m[1]["event_id"] for m in messages}) == len(messages)


def test_the_relay_worker_publishes_and_heartbeats_and_stops_cleanly(platform: Any, clock: Any, nats_url: str) -> None:
    from propdesk.workers.outbox_relay import OutboxRelayWorker

    assert platform.quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now())) is not None
    acc, _ = platform.execution.create_account(CreateAccount(owner_id="w", policy=ExecutionPolicy(), start=True))
    platform.execution.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
    worker = OutboxRelayWorker(platform, interval_s=0.01)
    try:
        first = worker.run_once()
        assert first.ok, first.error
        assert first.published == len(_events(platform.execution))
        assert worker.run_once().published == 0
    finally:
        worker.stop()
    with platform.db.read() as c:
        beat = c.execute("SELECT details FROM worker_heartbeats WHERE name = 'outbox-relay'").fetchone()
    assert beat is not None and beat["details"]["ok"] is True


def test_a_rule_state_update_is_an_event_only_when_a_field_the_book_holds_changes(
    service: Any, quotes: Any, clock: Any
) -> None:
    from tests.integration.test_rules_live import open_on

    from propdesk.rulebooks import load_rulebook

    if quotes.latest("EURUSD") is None:
        quotes.put(Quote("EURUSD", D("1.10000"), D("1.10020"), clock.now()))
    acc = open_on(service, load_rulebook("classic-2step"))

    def changed_events() -> int:
        return sum(1 for e in _events(service) if e["type"] == "account.changed" and e["account_id"] == acc)

    def patch(engine_changes: dict[str, Any]) -> None:
        with service.db.tx() as c:
            c.execute(
                "UPDATE rule_states SET state = jsonb_set(state, '{engine}', (state->'engine') || %s::jsonb)"
                " WHERE account_id = %s",
                (json.dumps(engine_changes), acc),
            )

    before = changed_events()
    patch({"day_high_equity": "100500", "day_low_equity": "99800", "equity": "100100"})  # a mark's extremes
    assert changed_events() == before
    patch({"daily_floor": "95000"})  # a floor the book holds
    assert changed_events() == before + 1
