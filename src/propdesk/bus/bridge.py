"""The price bus for synchronous code: the asyncio NATS client on a background thread, wired to a quote store.

:class:`PriceBus` is what a process holds (``platform.bus``):

- ``connect()`` starts the thread and connects; ``attach(subjects, store)`` creates the streams, subscribes to the
  live quotes, loads every symbol's last quote into the store, and makes the store publish the quotes it accepts
  (``store.put`` -> ``store.publisher`` -> :meth:`publish`).
- Publishing (``publisher.BatchPublisher``): :meth:`publish` never blocks the caller; it queues the quote and
  wakes the bus thread once per batch; the bus thread publishes the batch with pipelined JetStream acks, matched
  in bulk, republishing a quote whose ack failed or was lost. While disconnected quotes wait and go out on
  reconnect.
- Receiving (``receiver.LiveReceiver``): one plain core-NATS wildcard subscription to the quotes subjects (the
  connection has ``no_echo``: a process does not get its own quotes back), deduplicated by each publisher's
  numbering, gaps filled from the stream. Each batch is applied to the store under
  one lock (``store.apply_many``: per symbol, a quote older than the one held is dropped), on the event loop (so
  the loop never waits on a database), then announced to the store's tick stream on a separate thread (its
  subscribers may write candles or push pages), one hand-off per batch.
- ``connected`` is false from the moment the connection drops until it is back *and* the receiver has caught up
  with the stream (the gap filled): the execution core's prices (``marketdata/live.py``) are stale meanwhile and
  ``/healthz`` says degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..domain.quotes import Quote
from .client import BusClient, redact
from .embedded import NatsEndpoint
from .publisher import BatchPublisher
from .quotes import DEFAULT_RETAIN_S, QuoteBus
from .receiver import LiveReceiver
from .subjects import Subjects

__all__ = ["PriceBus"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


class PriceBus:
    """One process's connection to the price bus, usable from any thread."""

    def __init__(
        self,
        endpoint: NatsEndpoint,
        *,
        name: str = "propdesk",
        retain_s: float = DEFAULT_RETAIN_S,
        reconnect_wait_s: float = 0.5,
        ack_timeout_s: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.origin = secrets.token_hex(8)
        self.retain_s = retain_s
        self.ack_timeout_s = ack_timeout_s
        self.client = BusClient(
            endpoint,
            name=name,
            reconnect_wait_s=reconnect_wait_s,
            on_disconnected=self._on_disconnected,
            on_reconnected=self._on_reconnected,
            no_echo=True,  # this process's own quotes are not sent back to it
        )
        self.quotes: QuoteBus | None = None
        self.publisher: BatchPublisher | None = None
        self.receiver: LiveReceiver | None = None
        self.store: Any = None
        self.applied = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="price-bus", daemon=True)
        self._announce: queue.SimpleQueue[list[Quote] | None] = queue.SimpleQueue()
        self._announcer = threading.Thread(target=self._run_announcer, name="price-bus-announce", daemon=True)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def connect(self, timeout_s: float = 10.0) -> PriceBus:
        """Start the loop thread and connect (raises when no server answers within ``timeout_s``)."""
        self._thread.start()
        try:
            self._call(self.client.connect(timeout_s), timeout_s + 5)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def server_info(self) -> dict[str, Any]:
        """The connected server's ``INFO`` (its name, cluster, version)."""
        return self.client.server_info

    def attach(self, subjects: Subjects, store: Any, *, timeout_s: float = 30.0) -> None:
        """Carry ``store``'s quotes over the bus under ``subjects``: streams, live subscription, last quotes, and
        ``store.publisher`` set to :meth:`publish`."""
        self.store = store
        self._announcer.start()
        self._call(self._attach(subjects, timeout_s), timeout_s + 5)
        store.publisher = self.publish

    async def _attach(self, subjects: Subjects, timeout_s: float) -> None:
        nc = self.client.nc
        assert nc is not None
        loop = asyncio.get_running_loop()
        self.quotes = QuoteBus(nc.jetstream(), subjects, origin=self.origin, retain_s=self.retain_s)
        await self.quotes.ensure_streams()
        self.publisher = BatchPublisher(nc, subjects, self.origin, loop, ack_timeout_s=self.ack_timeout_s)
        await self.publisher.start()
        self.receiver = LiveReceiver(nc, self.quotes, self._apply, loop, origin=self.origin)
        await self.receiver.start(timeout_s)

    def close(self) -> None:
        """Flush what is queued, close the connection, stop the threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.store is not None and getattr(self.store, "publisher", None) == self.publish:
            self.store.publisher = None
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown(), 15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        if self._announcer.is_alive():
            self._announce.put(None)
            self._announcer.join(10)

    async def _shutdown(self) -> None:
        if self.publisher is not None:
            if self.client.connected:
                await self.publisher.flush(5)
            await self.publisher.close()
        if self.receiver is not None:
            await self.receiver.stop()
        await self.client.close()

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True when connected and current (caught up with the stream since the last reconnect)."""
        return self.receiver is not None and self.receiver.current and self.client.connected

    def is_connected(self) -> bool:
        """``connected`` as a callable (what ``LivePrices`` takes)."""
        return self.connected

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` check: ok while connected and current."""
        check: dict[str, Any] = {
            "ok": self.connected,
            "url": redact(self.endpoint.url),
            "server": self.server_info.get("server_name"),
            "namespace": self.quotes.subjects.namespace if self.quotes else None,
            "disconnects": self.client.disconnects,
            "reconnects": self.client.reconnects,
            "applied": self.applied,
            **(self.publisher.stats() if self.publisher else {}),
            **({"receiver": self.receiver.stats()} if self.receiver else {}),
        }
        if not check["ok"]:
            check["reason"] = "cut off from the price bus: every price of this process is stale"
        return check

    # -- callbacks (on the loop) -------------------------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        if self.receiver is not None:
            self.receiver.disconnected()

    async def _on_reconnected(self) -> None:
        # Quotes published meanwhile were missed: catch up from the stream before the prices count as current
        # again; resend what was in flight, then what was queued.
        if self.receiver is not None:
            self.receiver.resync()
        if self.publisher is not None:
            await self.publisher.on_reconnected()

    def _apply(self, quotes: list[Quote]) -> None:
        store = self.store
        if store is None:
            return
        apply_many = getattr(store, "apply_many", None)
        if apply_many is not None:
            stored = apply_many(quotes)
        else:
            stored = [s for s in map(store.apply, quotes) if s is not None]
        if stored:
            self.applied += len(stored)
            ticks = getattr(store, "ticks", None)
            if ticks is None or len(ticks):  # nobody listening: nothing to hand over
                self._announce.put(stored)

    def _run_announcer(self) -> None:
        while True:
            batch = self._announce.get()
            if batch is None:
                return
            for q in batch:
                try:
                    self.store.announce(q)
                except Exception:  # a subscriber's failure is the stream's to log; keep announcing
                    _log.exception("announcing a bus quote failed")

    # -- publishing --------------------------------------------------------------------------------------------

    def publish(self, quote: Quote) -> None:
        """Send an accepted quote to every other process (non-blocking, from any thread; batched)."""
        publisher = self.publisher
        if self._closed or publisher is None:
            return
        publisher.submit(quote)
