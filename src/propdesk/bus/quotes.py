"""Quotes on the bus: the wire format, the streams, publishing and subscribing (asyncio; ``bridge.py`` runs it on
a background thread for the synchronous code).

- One subject per symbol: ``pd.<ns>.quotes.<SYMBOL>`` (``subjects.py``).
- ``PD_<NS>_QUOTES`` keeps every quote for ``retain_s`` (at least an hour) so a shard can replay a window;
  ``PD_<NS>_LAST`` sources it with ``max_msgs_per_subject=1``: the last quote of every symbol, with no age limit,
  read at once by a process that starts or reconnects.
- Wire format: orjson ``{"s": symbol, "b": bid, "a": ask, "t": epoch microseconds, "src": source, "o": origin}``;
  prices are the Decimal's exact string, the time is an integer (a datetime holds microseconds), so a quote
  round-trips exactly. ``o`` names the publishing process, which skips its own quotes coming back.
- Publishing is JetStream ``publish_async``: acks are pipelined (up to ``max_pending`` in flight), so the rate is
  not bounded by one round trip per quote; failed acks are counted.
- Live delivery is an ordered push consumer (stream order, gap detection) from the moment of subscribing; order
  across processes is (ts, stream sequence): the store drops a quote older than the one held and takes a later
  arrival (a higher stream sequence) at an equal time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig, StreamSource
from nats.js.errors import NotFoundError

from ..domain.quotes import Quote
from .subjects import Subjects

__all__ = ["DEFAULT_RETAIN_S", "QuoteBus", "decode", "encode"]

DEFAULT_RETAIN_S = 3600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

QuoteHandler = Callable[[Quote], None]


def encode(quote: Quote, origin: str = "") -> bytes:
    """The wire form of ``quote`` (exact: Decimal strings, integer microseconds)."""
    delta = quote.ts - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return orjson.dumps(
        {"s": quote.symbol, "b": str(quote.bid), "a": str(quote.ask), "t": micros, "src": quote.source, "o": origin}
    )


def decode(data: bytes) -> tuple[Quote, str]:
    """``(quote, origin)`` from the wire form; the quote's ``seq`` is 0 (the receiving store numbers it)."""
    m = orjson.loads(data)
    ts = _EPOCH + timedelta(microseconds=int(m["t"]))
    return Quote(m["s"], Decimal(m["b"]), Decimal(m["a"]), ts, 0, m.get("src") or "bus"), m.get("o", "")


class QuoteBus:
    """Quotes of one instance namespace over one connection's JetStream context (use on its event loop only)."""

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, *, origin: str = "", retain_s: float = DEFAULT_RETAIN_S
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.origin = origin
        self.retain_s = retain_s
        self.published = 0
        self.ack_errors = 0
        self._sub: Any = None

    async def ensure_streams(self) -> None:
        """Create the quotes and last-quote streams if missing (several processes may race: both succeed)."""
        s = self.subjects
        wanted = [
            StreamConfig(
                name=s.quotes_stream,
                subjects=[s.all_quotes],
                storage=StorageType.FILE,
                max_age=self.retain_s,
                discard=DiscardPolicy.OLD,
                allow_direct=True,
                description="PropDesk: every accepted quote, kept for replay",
            ),
            StreamConfig(
                name=s.last_stream,
                storage=StorageType.FILE,
                max_msgs_per_subject=1,
                sources=[StreamSource(name=s.quotes_stream)],
                allow_direct=True,
                description="PropDesk: the last quote of each symbol",
            ),
        ]
        for cfg in wanted:
            try:
                await self.js.stream_info(cfg.name or "")
            except NotFoundError:
                with contextlib.suppress(Exception):  # created by a concurrent process meanwhile
                    await self.js.add_stream(cfg)
                await self.js.stream_info(cfg.name or "")

    async def publish(self, quote: Quote) -> asyncio.Future[Any]:
        """Publish ``quote``; returns the ack future (already watched: a failed ack is counted)."""
        fut = await self.js.publish_async(self.subjects.quote(quote.symbol), encode(quote, self.origin))
        self.published += 1
        fut.add_done_callback(self._on_ack)
        return fut

    def _on_ack(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.ack_errors += 1

    async def last_quotes(self, timeout_s: float = 5.0) -> list[Quote]:
        """The last quote of every symbol (from the last-quote stream), oldest stream position first."""
        try:
            info = await self.js.stream_info(self.subjects.last_stream)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        out: list[Quote] = []
        done = asyncio.Event()
        last_seq = info.state.last_seq

        async def take(msg: Any) -> None:
            out.append(decode(msg.data)[0])
            if msg.metadata.sequence.stream >= last_seq or msg.metadata.num_pending == 0:
                done.set()

        sub = await self.js.subscribe(
            self.subjects.all_quotes,
            stream=self.subjects.last_stream,
            cb=take,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out

    async def subscribe(self, handler: QuoteHandler) -> None:
        """Call ``handler(quote)`` for every quote published from now on by other processes (stream order)."""
        await self.unsubscribe()
        origin = self.origin.encode()
        tag = b'"o":"' + origin + b'"'

        async def on_msg(msg: Any) -> None:
            # Our own quotes come back too; the cheap byte test avoids decoding them.
            if origin and tag in msg.data:
                return
            handler(decode(msg.data)[0])

        self._sub = await self.js.subscribe(
            self.subjects.all_quotes,
            stream=self.subjects.quotes_stream,
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            pending_msgs_limit=1_000_000,
        )

    async def unsubscribe(self) -> None:
        """Stop the live subscription (no-op without one)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
