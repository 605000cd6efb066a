"""Taking quotes in: one core-NATS wildcard subscription, in stream order, gaps filled from the stream (asyncio).

The quotes stream republishes every stored quote on ``pd.<ns>.live.<SYMBOL>`` with its stream sequence
(``quotes.py``), so a process needs no JetStream consumer for live prices and knows from the sequence alone what
it has: ``watermark`` is the highest stream sequence up to which it has seen every quote.

- Live messages are collected as they arrive and handled once per loop wakeup (one batch per socket read, more
  or less): a sequence at or below the watermark is a duplicate (dropped, counted); the next one is taken; one
  beyond it is a gap: the batch waits while the missing range is read from the stream (``QuoteBus.replay``),
  then everything continues in sequence. The quotes of a batch go to ``on_quotes`` together (the store applies
  them under one lock); the process's own quotes coming back only move the watermark.
- ``resync()`` (at start and after every reconnect) holds live messages back, reads where the stream is and
  replays from the watermark to there; at start, and when the replay would be too long (``max_replay``) or the
  stream was recreated, it first loads every symbol's last quote from the last-quote stream, which says the
  sequence it reflects. ``current`` is true only once a resync has completed: until then the process's prices
  may be behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from ..domain.quotes import Quote
from .quotes import QuoteBus, decode

__all__ = ["LiveReceiver"]

_log = logging.getLogger(__name__)

QuotesHandler = Callable[[list[Quote]], None]
_SEQ = "Nats-Sequence"
_MSG_ID = "Nats-Msg-Id"


class LiveReceiver:
    """Every quote of one namespace from other processes, in stream order, to ``on_quotes`` (use on the loop)."""

    def __init__(
        self,
        nc: Client,
        quotes: QuoteBus,
        on_quotes: QuotesHandler,
        loop: asyncio.AbstractEventLoop,
        *,
        origin: str = "",
        on_own: Callable[[list[int]], None] | None = None,
        max_replay: int = 50_000,
    ) -> None:
        self.nc = nc
        self.quotes = quotes
        self.on_quotes = on_quotes
        self.loop = loop
        self.origin = origin
        self.on_own = on_own
        self.max_replay = max_replay
        self.watermark = 0
        self.current = False
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.filled = 0  # quotes read from the stream to fill gaps and resyncs
        self.skipped = 0  # sequences never seen: aged out of the stream, or beyond max_replay
        self.resyncs = 0
        self._tag = b'"o":"' + origin.encode() + b'"' if origin else b""
        self._own_id = origin + "." if origin else "\0"
        self._inbox: list[Any] = []
        self._scheduled = False
        self._held: list[tuple[int, bytes]] = []  # live messages held back while filling
        self._filling = False
        self._fill_to: int | None = None  # a gap's last missing sequence
        self._resync_wanted = False
        self._fill_task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._sub: Any = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Subscribe, then resync; returns once current (raises on timeout)."""
        self._filling = True  # hold live messages until the first resync placed the watermark
        self._sub = await self.nc.subscribe(
            self.quotes.subjects.all_live, cb=self._on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=0
        )
        await self.nc.flush()  # the subscription is in place before the stream's position is read
        self.resync()
        await asyncio.wait_for(self._synced.wait(), timeout_s)

    async def stop(self) -> None:
        """Unsubscribe and stop any fill."""
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

    def resync(self) -> None:
        """Catch up with the stream (after a reconnect); ``current`` once done."""
        self.current = False
        self._synced.clear()
        self._resync_wanted = True
        if self._fill_task is not None and not self._fill_task.done():
            self._fill_task.cancel()  # it may wait on a consumer lost with the connection; start over
            self._fill_task = None
        self._want_fill()

    # -- live --------------------------------------------------------------------------------------------------

    async def _on_msg(self, msg: Any) -> None:
        self._inbox.append(msg)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._take_inbox)

    def _take_inbox(self) -> None:
        self._scheduled = False
        msgs, self._inbox = self._inbox, []
        self.received += len(msgs)
        batch: list[tuple[int, bytes]] = []
        own: list[int] = []
        own_id = self._own_id
        for msg in msgs:
            headers = msg.headers
            try:
                batch.append((int(headers[_SEQ]), msg.data))
            except (TypeError, KeyError, ValueError):
                _log.warning("bus: a live quote without a stream sequence on %s, ignored", msg.subject)
                continue
            msg_id = headers.get(_MSG_ID, "")
            if msg_id.startswith(own_id):
                with contextlib.suppress(ValueError):
                    own.append(int(msg_id[len(own_id) :]))
        if own and self.on_own is not None:
            self.on_own(own)  # our own quotes are stored: their publish is acknowledged
        if self._filling:
            self._held.extend(batch)
        else:
            self._take(batch)

    def _take(self, batch: list[tuple[int, bytes]]) -> None:
        """Apply ``batch`` (ascending sequences) from the watermark on; a gap holds the rest and starts a fill."""
        out: list[Quote] = []
        mark = self.watermark
        tag = self._tag
        for i, (seq, data) in enumerate(batch):
            if seq <= mark:
                self.duplicates += 1
                continue
            if seq != mark + 1:
                self.gaps += 1
                self._held.extend(batch[i:])
                self._fill_to = max(self._fill_to or 0, seq - 1)
                self._want_fill()
                break
            mark = seq
            if tag and tag in data:
                continue  # our own quote coming back
            out.append(decode(data)[0])
        self.watermark = mark
        if out:
            self.on_quotes(out)

    # -- filling -----------------------------------------------------------------------------------------------

    def _want_fill(self) -> None:
        self._filling = True
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = self.loop.create_task(self._fill_loop())

    async def _fill_loop(self) -> None:
        while True:
            resync, self._resync_wanted = self._resync_wanted, False
            fill_to, self._fill_to = self._fill_to, None
            try:
                await self._fill(resync, fill_to)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if resync:
                    self._resync_wanted = True
                if fill_to is not None:
                    self._fill_to = max(self._fill_to or 0, fill_to)
                if not self.nc.is_connected:
                    _log.warning("bus: catching up stopped by the disconnect (%r); again on reconnect", exc)
                    return  # the reconnect asks for a resync; the held messages wait for it
                _log.warning("bus: catching up with the stream failed: %r; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            if self._resync_wanted or self._fill_to is not None:
                continue
            held = sorted(self._held + self._drain_inbox())
            self._held = []
            self._filling = False
            self._take(held)  # may find another gap (and set _filling again)
            if resync:
                self.resyncs += 1
                self.current = True
                self._synced.set()
            if not self._filling:
                return

    def _drain_inbox(self) -> list[tuple[int, bytes]]:
        msgs, self._inbox = self._inbox, []
        self.received += len(msgs)
        out = []
        for msg in msgs:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                out.append((int(msg.headers[_SEQ]), msg.data))
        return out

    async def _fill(self, resync: bool, fill_to: int | None) -> None:
        state = await self.quotes.state()
        target = state.last_seq if resync else min(fill_to or 0, state.last_seq)
        if state.last_seq < self.watermark:
            _log.warning(
                "bus: the quotes stream restarted (at %d, we were at %d); reloading", state.last_seq, self.watermark
            )
            self.watermark = 0
        if resync and (self.watermark == 0 or target - self.watermark > self.max_replay):
            await self._load_last()
        if target - self.watermark > self.max_replay:
            start = target - self.max_replay
            self.skipped += start - self.watermark
            self.watermark = start
        first = max(self.watermark + 1, state.first_seq)
        if first > self.watermark + 1:
            self.skipped += first - self.watermark - 1
            self.watermark = first - 1
        if target >= first and state.last_seq >= first:
            await self.quotes.replay(first, target, self._take_replayed)
        if self.watermark < target:  # the rest aged out meanwhile
            self.skipped += target - self.watermark
            self.watermark = target

    def _take_replayed(self, batch: list[tuple[int, bytes]]) -> None:
        out: list[Quote] = []
        mark = self.watermark
        tag = self._tag
        for seq, data in batch:
            if seq <= mark:
                continue
            if seq != mark + 1:
                self.skipped += seq - mark - 1
            mark = seq
            self.filled += 1
            if tag and tag in data:
                continue
            out.append(decode(data)[0])
        self.watermark = mark
        if out:
            self.on_quotes(out)

    async def _load_last(self) -> None:
        last = await self.quotes.last_quotes()
        out = [quote for _seq, quote, origin in last if not (self.origin and origin == self.origin)]
        if out:
            self.on_quotes(out)
        # The last-quote stream reflects the quotes stream up to the highest sequence it was sourced from.
        self.watermark = max([self.watermark] + [seq for seq, _q, _o in last])

    def stats(self) -> dict[str, int | bool]:
        """Counters for ``/healthz`` and ``/metrics``."""
        return {
            "current": self.current,
            "watermark": self.watermark,
            "received": self.received,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "filled": self.filled,
            "skipped": self.skipped,
            "resyncs": self.resyncs,
        }
