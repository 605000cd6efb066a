"""The outbox relay: committed events from PostgreSQL onto the bus (``propdesk worker outbox-relay``).

``OutboxRelay.relay_once`` reads committed events in commit order (``db/outbox.py``), publishes each to the
account's partition subject of the events stream (``bus/events.py``) with the event id as ``Nats-Msg-Id``, waits
for every acknowledgement of the batch (pipelined, not one round trip per event), and only then saves its
cursor. A relay that dies in between publishes the batch again; the stream drops the copies it has seen.
``OutboxRelayWorker`` runs it in a loop on its own thread and event loop (its own NATS connection), with a
heartbeat per cycle, and prunes events older than a week that every relay has passed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nats.js.client import JetStreamContext

from .. import logs
from ..bus.events import DEFAULT_EVENTS_RETAIN_S, encode_event, ensure_events_stream, event_subject
from ..bus.subjects import Subjects
from ..db.outbox import Cursor, load_cursor, prune, read_batch, save_cursor
from ..domain.events import Event, partition_of
from .bus_loop import BusWorkerLoop

if TYPE_CHECKING:
    from ..bootstrap import Platform

HEARTBEAT_NAME = "outbox-relay"
PRUNE_AFTER = timedelta(days=7)


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    last_error: str | None = None
    cursor: Cursor = field(default_factory=Cursor)


class OutboxRelay:
    """Publishes the outbox onto the bus; one relay per cursor ``name`` at a time (a second relay under the same
    name would only publish duplicates, which the stream drops).

    Args:
        db: the platform's ``Database`` (engine role).
        js: a JetStream context on a connected client.
        subjects: the instance's names.
        clock: the platform clock (cursor timestamps).
    """

    def __init__(
        self,
        db: Any,
        js: JetStreamContext,
        subjects: Subjects,
        clock: Callable[[], datetime],
        *,
        name: str = "outbox-relay",
        batch: int = 1000,
    ) -> None:
        self.db = db
        self.js = js
        self.subjects = subjects
        self.clock = clock
        self.name = name
        self.batch = batch
        self.stats = RelayStats()

    def _read(self) -> tuple[Cursor, list[Event]]:
        with self.db.read() as c:
            cursor = load_cursor(c, self.name)
            return cursor, read_batch(c, cursor, self.batch)

    def _save(self, cursor: Cursor, published: int) -> None:
        with self.db.tx() as c:
            save_cursor(c, self.name, cursor, published, self.clock())

    async def relay_once(self) -> int:
        """Publish one batch (at most ``batch`` events); returns how many were published (0: nothing pending)."""
        cursor, events = await asyncio.to_thread(self._read)
        self.stats.cursor = cursor
        if not events:
            return 0
        futures = []
        for e in events:
            subject = event_subject(self.subjects, partition_of(e.account_id) if e.account_id else 0)
            futures.append(
                await self.js.publish_async(subject, encode_event(e), headers={"Nats-Msg-Id": str(e.event_id)})
            )
        try:
            await asyncio.gather(*futures)
        except Exception as exc:
            # Nothing is saved: the whole batch goes out again (the stream drops what it already has).
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        last = Cursor(events[-1].txid, events[-1].id)
        await asyncio.to_thread(self._save, last, len(events))
        self.stats.cursor = last
        self.stats.published += len(events)
        self.stats.batches += 1
        return len(events)

    async def drain(self, max_batches: int = 1_000_000) -> int:
        """Relay until nothing is pending (or ``max_batches``); returns the number of events published."""
        total = 0
        for _ in range(max_batches):
            n = await self.relay_once()
            total += n
            if n < self.batch:
                break
        return total


@dataclass
class RelayCycle:
    """One relay cycle: events published, the cursor reached, the error if the cycle failed."""

    cycle: int
    duration_s: float = 0.0
    published: int = 0
    pruned: int = 0
    cursor: Cursor = field(default_factory=Cursor)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def details(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "duration_ms": round(self.duration_s * 1000, 3),
            "published": self.published,
            "pruned": self.pruned,
            "cursor": [self.cursor.txid, self.cursor.id],
            "error": self.error,
            "ok": self.ok,
        }


def registered_subjects(db: Any) -> Subjects:
    """The subjects of the bus registered in this database (the relay publishes where the shards listen)."""
    with db.read() as c:
        row = c.execute("SELECT namespace FROM bus_registration").fetchone()
    if row is None:
        raise RuntimeError("no bus is registered in this database yet: start a PropDesk process with the bus first")
    return Subjects(row["namespace"])


class OutboxRelayWorker(BusWorkerLoop):
    """Relays the outbox every ``interval_s`` (draining everything pending each cycle) over its own connection."""

    def __init__(
        self,
        platform: Platform,
        *,
        interval_s: float = 0.05,
        stop: threading.Event | None = None,
        batch: int = 1000,
        retain_s: float = DEFAULT_EVENTS_RETAIN_S,
    ) -> None:
        super().__init__(
            platform,
            name=HEARTBEAT_NAME,
            stop=stop,
            log=logs.get("propdesk.workers.outbox_relay"),
            interval_s=interval_s,
        )
        if platform.bus is None:
            raise RuntimeError("the outbox relay needs the bus (PROPDESK_BUS_ENABLED=true)")
        from ..bus.client import BusClient

        self.subjects = registered_subjects(platform.db)
        self.retain_s = retain_s
        self.batch = batch
        self._start_bus_loop("propdesk-relay-loop")
        self._client = BusClient(platform.bus.endpoint, name="propdesk-outbox-relay")
        self.relay: OutboxRelay | None = None
        self.last: RelayCycle | None = None
        self._last_beat = 0.0
        self._last_prune = 0.0

    async def _connect(self) -> OutboxRelay:
        nc = await self._client.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.subjects, retain_s=self.retain_s)
        return OutboxRelay(self.platform.db, js, self.subjects, self.platform.clock.now, batch=self.batch)

    def run_once(self) -> RelayCycle:
        self.cycles += 1
        result = RelayCycle(self.cycles)
        started = time.perf_counter()
        try:
            if self.relay is None:
                self.relay = self._call(self._connect())
            result.published = self._call(self.relay.drain())
            result.cursor = self.relay.stats.cursor
            if time.monotonic() - self._last_prune > 3600:
                with self.platform.db.tx() as c:
                    result.pruned = prune(c, self.platform.clock.now() - PRUNE_AFTER)
                self._last_prune = time.monotonic()
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:1000]
            self._log.error("outbox_relay_cycle_failed", cycle=result.cycle, error=result.error)
        result.duration_s = time.perf_counter() - started
        # The relay cycles every few milliseconds: a heartbeat a second is plenty (and an error at once).
        if result.error or result.published or time.monotonic() - self._last_beat >= 1.0:
            self._beat(result)
            self._last_beat = time.monotonic()
        self.last = result
        return result
