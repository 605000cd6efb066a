"""Publishing quotes in batches with pipelined JetStream acks (asyncio side; ``submit`` is for any thread).

- ``submit(quote)`` (any thread) appends to a deque and wakes the loop once per batch: only the call that finds
  no wake-up pending calls ``loop.call_soon_threadsafe``, so a burst costs one thread hand-off, not one per quote.
- The drain task publishes everything queued, numbered ``n`` = 1, 2, ... in the payload (receivers see gaps and
  duplicates from it): a core ``PUB`` on the symbol's quotes subject, which every process's live subscription
  receives at once and the quotes stream captures, with a ``Nats-Msg-Id`` of ``<origin>.<n>``. Nothing is awaited
  per quote, and acks are taken in bulk: at most every ``ack_interval_s`` the last quote of a batch carries a reply
  subject ``ack.<origin>.<n>``; the stream ingests one connection's publishes in order, so that ack confirms every
  quote published before it (when no quote goes out in an interval while some are unconfirmed, the last one is
  sent again as the probe: the stream answers "duplicate", receivers drop it by its number).
- Quotes not confirmed within ``ack_timeout_s``, or followed by an error ack, are published again under the same
  message ids (the stream stores each once, and answers "duplicate" for one it had); after ``max_attempts`` a
  quote is given up and counted (``failed``).
- While disconnected nothing is sent: quotes wait in the deque (the oldest dropped beyond ``max_buffer``, counted).
  On reconnect the quotes still unconfirmed are sent again first, in their order, then the waiting ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from typing import Any

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, OutboundBufferLimitError
from nats.protocol.command import hpub_cmd

from ..domain.quotes import Quote
from .quotes import encode
from .subjects import Subjects

__all__ = ["BatchPublisher"]

_log = logging.getLogger(__name__)


class _InFlight:
    __slots__ = ("attempts", "headers", "payload", "sent_at", "subject")

    def __init__(self, subject: str, payload: bytes, msg_id: str, sent_at: float) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = {"Nats-Msg-Id": msg_id}
        self.sent_at = sent_at
        self.attempts = 1


class BatchPublisher:
    """Quotes of one process onto the quotes stream; ``submit`` from any thread, the rest on ``loop``."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        origin: str,
        loop: asyncio.AbstractEventLoop,
        *,
        ack_timeout_s: float = 5.0,
        ack_interval_s: float = 0.05,
        max_attempts: int = 5,
        max_buffer: int = 1_000_000,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.origin = origin
        self.loop = loop
        self.ack_timeout_s = ack_timeout_s
        self.ack_interval_s = ack_interval_s
        self._ack_due = True  # the next batch asks for an ack
        self.max_attempts = max_attempts
        self.max_buffer = max_buffer
        self.published = 0  # quotes handed to the connection (first attempts)
        self.acked = 0
        self.ack_errors = 0  # error acks (each republished while attempts remain)
        self.lost_acks = 0  # acks that never came within ack_timeout_s (republished)
        self.republished = 0
        self.probes = 0  # quotes sent again only to ask for an ack
        self.failed = 0  # given up after max_attempts
        self.dropped = 0  # never sent: the buffer overflowed while disconnected
        self._queue: deque[Quote] = deque()
        self._wakeup = False
        self._kick = asyncio.Event()
        self._kick_cb = self._on_kick
        self._inflight: OrderedDict[int, _InFlight] = OrderedDict()  # by publish order
        self._n = 0
        self._ack_prefix = subjects.acks(origin)
        self._subject_of: dict[str, str] = {}
        self._acks: list[Any] = []
        self._acks_scheduled = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._sub: Any = None
        self._closed = False

    # -- any thread --------------------------------------------------------------------------------------------

    def submit(self, quote: Quote) -> None:
        """Queue ``quote`` for publishing (never blocks)."""
        queue = self._queue
        queue.append(quote)
        if len(queue) > self.max_buffer:
            with contextlib.suppress(IndexError):
                queue.popleft()
                self.dropped += 1
        if not self._wakeup:
            self._wakeup = True
            try:
                self.loop.call_soon_threadsafe(self._kick_cb)
            except RuntimeError:  # the loop is closed: the bus is shut down
                pass

    # -- on the loop -------------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Quotes published and not acknowledged yet."""
        return len(self._inflight)

    @property
    def queued(self) -> int:
        """Quotes waiting to be published (while disconnected, or in the current batch)."""
        return len(self._queue)

    async def start(self) -> None:
        """Subscribe to the acks and start the drain and ack-timeout tasks."""
        self._sub = await self.nc.subscribe(self._ack_prefix + "*", cb=self._on_ack, pending_msgs_limit=1_000_000)
        self._tasks.append(self.loop.create_task(self._drain()))
        self._tasks.append(self.loop.create_task(self._watch_acks()))

    def _on_kick(self) -> None:
        # One callback per batch: encode everything queued and write it in one go (no coroutine per quote).
        self._wakeup = False  # before draining: a quote queued from now on either is drained here or wakes us
        if not self._send_batch():
            self._kick.set()  # the client cannot take raw commands: the drain task publishes

    def _send_batch(self) -> bool:
        send_now = getattr(self.nc, "send_now", None)
        queue = self._queue
        if send_now is None or not queue or not self.nc.is_connected:
            return send_now is not None
        origin = self.origin
        inflight = self._inflight
        subject_of = self._subject_of
        now = time.monotonic()
        cmds: list[bytes] = []
        while queue:
            quote = queue.popleft()
            subject = subject_of.get(quote.symbol)
            if subject is None:
                subject = subject_of[quote.symbol] = self.subjects.quote(quote.symbol)
            self._n += 1
            n = self._n
            entry = _InFlight(subject, encode(quote, origin, n), f"{origin}.{n}", now)
            inflight[n] = entry
            reply = ""
            if self._ack_due and not queue:  # the batch's last one asks for the ack, once per interval
                self._ack_due = False
                reply = self._ack_prefix + str(n)
            hdr = b"NATS/1.0\r\nNats-Msg-Id: " + entry.headers["Nats-Msg-Id"].encode() + b"\r\n\r\n"
            cmds.append(hpub_cmd(subject, reply, hdr, entry.payload))
        self.published += len(cmds)
        if not self.nc.send_now(cmds):  # type: ignore[attr-defined]
            # Lost the connection in between: they stay in flight and go out again on reconnect.
            pass
        return True

    async def _drain(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._wakeup = False
            await self._send_queued()

    async def _send_queued(self) -> None:
        if self._send_batch():
            return
        queue = self._queue
        nc = self.nc
        origin = self.origin
        inflight = self._inflight
        subject_of = self._subject_of
        now = time.monotonic()
        while queue and nc.is_connected:
            quote = queue.popleft()
            subject = subject_of.get(quote.symbol)
            if subject is None:
                subject = subject_of[quote.symbol] = self.subjects.quote(quote.symbol)
            self._n += 1
            n = self._n
            entry = _InFlight(subject, encode(quote, origin, n), f"{origin}.{n}", now)
            inflight[n] = entry
            self.published += 1
            with_ack = self._ack_due and not queue  # the batch's last one asks, once per interval
            if with_ack:
                self._ack_due = False
            await self._send(n, entry, with_ack=with_ack)

    async def _send_ack_probe(self, n: int) -> None:
        entry = self._inflight.get(n)
        if entry is not None:
            self.probes += 1
            await self._send(n, entry, with_ack=True)

    async def _send(self, n: int, entry: _InFlight, *, with_ack: bool) -> None:
        try:
            await self.nc.publish(
                entry.subject, entry.payload, reply=self._ack_prefix + str(n) if with_ack else "", headers=entry.headers
            )
        except (ConnectionClosedError, OutboundBufferLimitError) as exc:
            # Stays in flight: republished on reconnect (or when its ack times out).
            _log.debug("bus publish deferred: %r", exc)

    async def _on_ack(self, msg: Any) -> None:
        self._acks.append(msg)
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self.loop.call_soon(self._take_acks)

    def _take_acks(self) -> None:
        self._acks_scheduled = False
        acks, self._acks = self._acks, []
        inflight = self._inflight
        retry: list[tuple[int, _InFlight]] = []
        for msg in acks:
            try:
                n = int(msg.subject[len(self._ack_prefix) :])
            except ValueError:
                continue
            data = msg.data
            ok = bool(data) and b'"error"' not in data
            # Everything published before n on this connection was ingested before it, in order.
            while inflight:
                first = next(iter(inflight))
                if first > n:
                    break
                entry = inflight.popitem(last=False)[1]
                if ok:
                    self.acked += 1
                else:  # an error from the stream, or no responders (no stream captures the subject)
                    self.ack_errors += 1
                    retry.append((first, entry))
        if retry:
            task = self.loop.create_task(self._retry(retry, backoff_s=0.2))
            self._tasks.append(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _retry(self, entries: list[tuple[int, _InFlight]], *, backoff_s: float = 0.0) -> None:
        if backoff_s:
            await asyncio.sleep(backoff_s)
        last = 0
        for _n, entry in entries:
            if entry.attempts >= self.max_attempts:
                self.failed += 1
                _log.warning("bus publish of %s given up after %d attempts", entry.subject, entry.attempts)
                continue
            entry.attempts += 1
            entry.sent_at = time.monotonic()
            self._n += 1  # a new reply number (the message id stays): acks keep confirming in publish order
            last = self._n
            self._inflight[last] = entry
            self.republished += 1
            await self._send(last, entry, with_ack=False)
        if last:
            await self._send_ack_probe(last)

    async def _watch_acks(self) -> None:
        while True:
            await asyncio.sleep(self.ack_interval_s)
            if not self.nc.is_connected or not self._inflight:
                self._ack_due = True
                continue
            if self._ack_due:  # no batch went out to ask since the last interval: probe
                await self._send_ack_probe(next(reversed(self._inflight)))
            self._ack_due = True
            deadline = time.monotonic() - self.ack_timeout_s
            lost: list[tuple[int, _InFlight]] = []
            while self._inflight:
                n = next(iter(self._inflight))
                if self._inflight[n].sent_at >= deadline:
                    break
                lost.append((n, self._inflight.popitem(last=False)[1]))
            if lost:
                self.lost_acks += len(lost)
                _log.warning("bus: %d publish acks lost; republishing", len(lost))
                await self._retry(lost)

    async def on_reconnected(self) -> None:
        """Send again what was in flight when the connection dropped (the stream dedupes by message id), then
        what was queued meanwhile."""
        pending = list(self._inflight.items())
        self._inflight.clear()
        if pending:
            self.lost_acks += len(pending)
            await self._retry(pending)
        await self._send_queued()

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued is published and acknowledged (or ``timeout_s``); True when it was."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.nc.is_connected:
                await self._send_queued()
            if not self._queue and not self._inflight:
                return True
            await asyncio.sleep(0.005)
        return False

    async def close(self) -> None:
        """Stop the tasks and the ack subscription (call ``flush`` first to wait for acks)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def stats(self) -> dict[str, int]:
        """Counters for ``/healthz`` and ``/metrics``."""
        return {
            "published": self.published,
            "acked": self.acked,
            "ack_errors": self.ack_errors,
            "lost_acks": self.lost_acks,
            "republished": self.republished,
            "probes": self.probes,
            "failed": self.failed,
            "dropped_disconnected": self.dropped,
            "in_flight": self.in_flight,
            "queued": self.queued,
        }
