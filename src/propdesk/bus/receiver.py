"""Taking quotes in: one plain core-NATS wildcard subscription, gaps filled from the stream (asyncio).

Every process subscribes to ``pd.<ns>.quotes.*``: it receives each quote straight from its publisher (the stream
captures the same message for replay), so live delivery costs what bare NATS costs. The connection is opened with
``no_echo``: a process does not get its own quotes back. Each quote carries its publisher's number ``n``
(``publisher.py``); per publisher the receiver keeps the last number taken.

- Live messages are collected as they arrive and handled once per loop wakeup (a batch per socket read, more or
  less): a number at or below the last one of its publisher is a duplicate (dropped, counted); the next one is
  taken; one beyond it is a gap: the batch waits while the stream is replayed from a little before the last quote
  taken from that publisher (``replay_margin_s``), then everything continues, deduplicated the same way. The
  quotes of a batch go to ``on_quotes`` together (the store applies them under one lock).
- ``resync()`` (at start and after every reconnect) holds live messages back and catches up with the stream. At
  start it loads every symbol's last quote from the last-quote stream, which names the stream sequence it
  reflects, and replays the stream from there (exact, by sequence); after a reconnect it replays from a little
  before the disconnect (by time). ``current`` is true only once a resync has completed: until then the
  process's prices may be behind.
- Order per symbol is (ts, arrival): the store drops a quote older than the one held and takes a later arrival at
  an equal time; arrivals of one publisher keep its order, and a replay keeps the stream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from nats.aio.client import Client

from ..domain.quotes import Quote
from .quotes import QuoteBus, quote_of

__all__ = ["LiveReceiver"]

_log = logging.getLogger(__name__)

QuotesHandler = Callable[[list[Quote]], None]


class LiveReceiver:
    """Every quote of one namespace from other processes, to ``on_quotes`` in batches (use on the loop)."""

    def __init__(
        self,
        nc: Client,
        quotes: QuoteBus,
        on_quotes: QuotesHandler,
        loop: asyncio.AbstractEventLoop,
        *,
        origin: str = "",
        replay_margin_s: float = 5.0,
        max_replay: int = 50_000,
    ) -> None:
        self.nc = nc
        self.quotes = quotes
        self.on_quotes = on_quotes
        self.loop = loop
        self.origin = origin
        self.replay_margin_s = replay_margin_s
        self.max_replay = max_replay
        self.current = False
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.filled = 0  # quotes taken from a replay of the stream
        self.skipped = 0  # numbers never seen: not in the stream (aged out, or never stored)
        self.resyncs = 0
        self._last: dict[str, int] = {}  # publisher -> the last number taken
        self._seen_at: dict[str, float] = {}  # publisher -> wall time of its last quote taken
        self._inbox: list[bytes] = []
        self._scheduled = False
        self._held: list[bytes] = []  # live payloads held back while catching up
        self._filling = False
        self._fill_from: float | None = None  # wall time to replay from for a gap
        self._resync_wanted = False
        self._disconnected_at: float | None = None
        self._fill_task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._sub: Any = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Subscribe, then resync; returns once current (raises on timeout)."""
        self._filling = True  # hold live messages until the first resync has caught up
        raw_subscribe = getattr(self.nc, "raw_subscribe", None)
        if raw_subscribe is not None:
            self._sub = await raw_subscribe(self.quotes.subjects.all_quotes, self._on_data)
        else:
            self._sub = await self.nc.subscribe(
                self.quotes.subjects.all_quotes, cb=self._on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=0
            )
        await self.nc.flush()  # the subscription is in place before the stream's position is read
        self.resync()
        await asyncio.wait_for(self._synced.wait(), timeout_s)

    async def stop(self) -> None:
        """Unsubscribe and stop any catching up."""
        self.current = False
        if self._fill_task is not None:
            self._fill_task.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def disconnected(self) -> None:
        """The connection dropped: quotes may be missed from now until the next resync."""
        self.current = False
        if self._disconnected_at is None:
            self._disconnected_at = time.time()

    def resync(self) -> None:
        """Catch up with the stream (at start, after a reconnect); ``current`` once done."""
        self.current = False
        self._synced.clear()
        self._resync_wanted = True
        if self._fill_task is not None and not self._fill_task.done():
            self._fill_task.cancel()  # it may wait on a consumer lost with the connection; start over
            self._fill_task = None
        self._want_fill()

    # -- live --------------------------------------------------------------------------------------------------

    async def _on_msg(self, msg: Any) -> None:
        self._on_data(msg.data)

    def _on_data(self, data: bytes) -> None:
        self._inbox.append(data)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._take_inbox)

    def _take_inbox(self) -> None:
        self._scheduled = False
        msgs, self._inbox = self._inbox, []
        self.received += len(msgs)
        if self._filling:
            self._held.extend(msgs)
        else:
            self._take(msgs)

    def _take(self, msgs: list[bytes]) -> None:
        """Apply live payloads ``msgs`` in order; a gap holds the rest back and starts a replay."""
        out: list[Quote] = []
        last = self._last
        seen_at = self._seen_at
        now = time.time()
        for i, msg in enumerate(msgs):
            try:
                m = orjson.loads(msg)
                origin, n = m.get("o", ""), m.get("n", 0)
            except (orjson.JSONDecodeError, AttributeError):
                _log.warning("bus: an unreadable quote, ignored")
                continue
            if origin == self.origin and origin:
                continue  # our own quote (with no_echo the server does not send them)
            if n:
                prev = last.get(origin)
                if prev is not None:
                    if n <= prev:
                        self.duplicates += 1
                        continue
                    if n != prev + 1:
                        self.gaps += 1
                        self._held.extend(msgs[i:])
                        start = seen_at.get(origin, now)
                        self._fill_from = min(self._fill_from or start, start)
                        self._want_fill()
                        break
                last[origin] = n
                seen_at[origin] = now
            out.append(quote_of(m))
        if out:
            self.on_quotes(out)

    # -- catching up -------------------------------------------------------------------------------------------

    def _want_fill(self) -> None:
        self._filling = True
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = self.loop.create_task(self._fill_loop())

    async def _fill_loop(self) -> None:
        while True:
            resync, self._resync_wanted = self._resync_wanted, False
            fill_from, self._fill_from = self._fill_from, None
            try:
                await self._fill(resync, fill_from)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._resync_wanted = self._resync_wanted or resync
                if fill_from is not None:
                    self._fill_from = min(self._fill_from or fill_from, fill_from)
                if not self.nc.is_connected:
                    _log.warning("bus: catching up stopped by the disconnect (%r); again on reconnect", exc)
                    return  # the reconnect asks for a resync; the held messages wait for it
                _log.warning("bus: catching up with the stream failed: %r; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            if self._resync_wanted or self._fill_from is not None:
                continue
            held, self._held = self._held + self._inbox, []
            self.received += len(self._inbox)
            self._inbox = []
            self._filling = False
            self._take(held)  # duplicates of the replay dropped; may find another gap (and hold again)
            if resync:
                self.resyncs += 1
                self._disconnected_at = None
                self.current = True
                self._synced.set()
            if not self._filling:
                return

    async def _fill(self, resync: bool, fill_from: float | None) -> None:
        state = await self.quotes.state()
        target = state.last_seq
        if resync and self.resyncs == 0:
            # At start: every symbol's last quote, then the stream from the position the last-quote stream reflects.
            last = await self.quotes.last_quotes()
            mark = max((seq for seq, _data in last), default=0)
            self._take_last([data for _seq, data in last])
            first = max(mark + 1, state.first_seq, target - self.max_replay + 1)
            if first <= target:
                await self.quotes.replay(first, target, self._take_replayed)
            return
        since = self._disconnected_at if resync else fill_from
        if since is None or target < state.first_seq:
            return
        start = datetime.fromtimestamp(since - self.replay_margin_s, UTC)
        if start < datetime.now(UTC) - timedelta(hours=24):
            start = datetime.now(UTC) - timedelta(hours=24)
        await self.quotes.replay(state.first_seq, target, self._take_replayed, start_time=start)

    def _take_last(self, datas: list[bytes]) -> None:
        out: list[Quote] = []
        for data in datas:
            m = orjson.loads(data)
            origin, n = m.get("o", ""), m.get("n", 0)
            if origin == self.origin and origin:
                continue
            if n and n > self._last.get(origin, 0):
                self._last[origin] = n
            out.append(quote_of(m))
        if out:
            self.on_quotes(out)

    def _take_replayed(self, batch: list[tuple[int, bytes]]) -> None:
        out: list[Quote] = []
        last = self._last
        now = time.time()
        for _seq, data in batch:
            m = orjson.loads(data)
            origin, n = m.get("o", ""), m.get("n", 0)
            if origin == self.origin and origin:
                continue
            if n:
                prev = last.get(origin)
                if prev is not None:
                    if n <= prev:
                        continue
                    if n != prev + 1:
                        self.skipped += n - prev - 1
                last[origin] = n
                self._seen_at[origin] = now
            self.filled += 1
            out.append(quote_of(m))
        if out:
            self.on_quotes(out)

    def stats(self) -> dict[str, int | bool]:
        """Counters for ``/healthz`` and ``/metrics``."""
        return {
            "current": self.current,
            "received": self.received,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "filled": self.filled,
            "skipped": self.skipped,
            "resyncs": self.resyncs,
        }
