"""The price bus for synchronous code: the asyncio NATS client on a background thread, wired to a quote store.

:class:`PriceBus` is what a process holds (``platform.bus``):

- ``connect()`` starts the thread and connects; ``attach(subjects, store)`` creates the streams, subscribes, loads
  every symbol's last quote into the store, and makes the store publish the quotes it accepts (``store.put`` ->
  ``store.publisher`` -> :meth:`publish`). Quotes from other processes are applied with ``store.apply`` on the
  event loop (a dict update under a lock, so the loop never waits on a database), then announced to the store's
  tick stream on a separate thread (its subscribers may write candles or push pages).
- ``connected`` is false from the moment the connection drops until it is back *and* the last quotes are loaded
  again: the execution core's prices (``marketdata/live.py``) are stale meanwhile and ``/healthz`` says degraded.
- ``publish`` never blocks the caller: it hands the quote to the loop; while disconnected the quote is counted
  as not published and dropped (the accepting process persisted it, and every process's prices are stale then).
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
from .quotes import DEFAULT_RETAIN_S, QuoteBus
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
    ) -> None:
        self.endpoint = endpoint
        self.origin = secrets.token_hex(8)
        self.retain_s = retain_s
        self.client = BusClient(
            endpoint,
            name=name,
            reconnect_wait_s=reconnect_wait_s,
            on_disconnected=self._on_disconnected,
            on_reconnected=self._on_reconnected,
        )
        self.quotes: QuoteBus | None = None
        self.store: Any = None
        self.applied = 0
        self.dropped_disconnected = 0
        self._fresh = False  # connected and the last quotes loaded since
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="price-bus", daemon=True)
        self._outbox: asyncio.Queue[Quote] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._announce: queue.SimpleQueue[Quote | None] = queue.SimpleQueue()
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
        self._call(self._attach(subjects), timeout_s)
        store.publisher = self.publish

    async def _attach(self, subjects: Subjects) -> None:
        nc = self.client.nc
        assert nc is not None
        self.quotes = QuoteBus(nc.jetstream(), subjects, origin=self.origin, retain_s=self.retain_s)
        self._outbox = asyncio.Queue()
        await self.quotes.ensure_streams()
        await self._resync()
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain_outbox()))

    async def _resync(self) -> None:
        """Subscribe from now on, then load every symbol's last quote (the store keeps the newest of both)."""
        assert self.quotes is not None
        await self.quotes.subscribe(self._on_quote)
        for q in await self.quotes.last_quotes():
            self._apply(q)
        self._fresh = True

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
        self._fresh = False
        if self._outbox is not None and self.client.connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 5)
        for task in self._tasks:
            task.cancel()
        if self.quotes is not None:
            await self.quotes.unsubscribe()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.quotes.js.publish_async_completed(), 5)
        await self.client.close()

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True when connected and current (the last quotes reloaded since the last reconnect)."""
        return self._fresh and self.client.connected

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
            "published": self.quotes.published if self.quotes else 0,
            "ack_errors": self.quotes.ack_errors if self.quotes else 0,
            "applied": self.applied,
            "dropped_disconnected": self.dropped_disconnected,
        }
        if not check["ok"]:
            check["reason"] = "cut off from the price bus: every price of this process is stale"
        return check

    # -- callbacks (on the loop) -------------------------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        self._fresh = False
        # Acks of publishes in flight may never come now; nats-py would hold them (and their slots of the pending
        # window) forever, so give them up: those quotes count as ack errors.
        pending = getattr(self.quotes.js, "_publish_async_futures", {}) if self.quotes is not None else {}
        for fut in list(pending.values()):
            fut.cancel()

    async def _on_reconnected(self) -> None:
        # The live consumer may have been lost with the server (and quotes missed meanwhile): subscribe anew and
        # reload every symbol's last quote before the prices count as current again.
        if self.quotes is None:
            return
        try:
            await self._resync()
        except Exception as exc:
            _log.warning("bus resync after reconnect failed: %r; retrying", exc)
            asyncio.get_running_loop().call_later(1.0, self._retry_resync)

    def _retry_resync(self) -> None:
        if self.client.connected and not self._fresh and not self._closed:
            self._tasks.append(asyncio.get_running_loop().create_task(self._on_reconnected()))

    def _on_quote(self, quote: Quote) -> None:
        self._apply(quote)

    def _apply(self, quote: Quote) -> None:
        stored = self.store.apply(quote) if self.store is not None else None
        if stored is not None:
            self.applied += 1
            self._announce.put(stored)

    def _run_announcer(self) -> None:
        while True:
            q = self._announce.get()
            if q is None:
                return
            try:
                self.store.announce(q)
            except Exception:  # a subscriber's failure is the stream's to log; keep announcing
                _log.exception("announcing a bus quote failed")

    # -- publishing --------------------------------------------------------------------------------------------

    def publish(self, quote: Quote) -> None:
        """Send an accepted quote to every other process (non-blocking, from any thread)."""
        if self._closed or self._outbox is None:
            return
        if not self.client.connected:
            self.dropped_disconnected += 1
            return
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, quote)

    async def _drain_outbox(self) -> None:
        assert self._outbox is not None and self.quotes is not None
        while True:
            quote = await self._outbox.get()
            try:
                if self.client.connected:
                    await self.quotes.publish(quote)
                else:
                    self.dropped_disconnected += 1
            except Exception as exc:
                self.quotes.ack_errors += 1
                _log.warning("bus publish failed: %r", exc)
            finally:
                self._outbox.task_done()
