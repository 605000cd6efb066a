"""Quotes on the bus: the wire format and the streams (asyncio; ``bridge.py`` runs it on a background thread for
the synchronous code, ``publisher.py`` sends, ``receiver.py`` takes them in).

- Quotes are published on one subject per symbol: ``pd.<ns>.quotes.<SYMBOL>`` (``subjects.py``).
- ``PD_<NS>_QUOTES`` keeps every quote for ``retain_s`` (at least an hour) so a shard, or a process that was cut
  off, can replay a window by stream sequence; it dedupes a republished quote by its ``Nats-Msg-Id`` within
  ``DUPLICATE_WINDOW_S``. Every stored quote is *republished* by the stream on ``pd.<ns>.live.<SYMBOL>`` with its
  stream sequence in ``Nats-Sequence``: live delivery is one plain core-NATS wildcard subscription per process, in
  stream order, and a process knows from the sequence alone whether it missed anything (``receiver.py`` fills a gap
  from this stream).
- ``PD_<NS>_LAST`` sources the quotes stream with ``max_msgs_per_subject=1``: the last quote of every symbol, with
  no age limit, read at once by a process that starts (or is too far behind to replay); each message names the
  quotes stream sequence it came from (``Nats-Stream-Source``), where the replay continues.
- Wire format: orjson ``{"s": symbol, "b": bid, "a": ask, "t": epoch microseconds, "src": source, "o": origin}``;
  prices are the Decimal's exact string, the time is an integer (a datetime holds microseconds), so a quote
  round-trips exactly. ``o`` names the publishing process, which skips its own quotes coming back.
- Order across processes is (ts, stream sequence): a process applies quotes in stream sequence and its store drops
  a quote older than the one held and takes a later one (a higher stream sequence) at an equal time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig, StreamSource
from nats.js.errors import NotFoundError

from ..domain.quotes import Quote
from .subjects import Subjects

__all__ = ["DEFAULT_RETAIN_S", "DUPLICATE_WINDOW_S", "QuoteBus", "StreamState", "decode", "encode", "quote_of"]

_log = logging.getLogger(__name__)

DEFAULT_RETAIN_S = 3600.0
DUPLICATE_WINDOW_S = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def encode(quote: Quote, origin: str = "", n: int = 0) -> bytes:
    """The wire form of ``quote`` (exact: Decimal strings, integer microseconds); ``n`` numbers the quotes of
    ``origin`` (1, 2, ...), so a receiver sees a gap or a duplicate at once."""
    delta = quote.ts - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return orjson.dumps(
        {
            "s": quote.symbol,
            "b": str(quote.bid),
            "a": str(quote.ask),
            "t": micros,
            "src": quote.source,
            "o": origin,
            "n": n,
        }
    )


def quote_of(m: dict[str, Any]) -> Quote:
    """The quote of a decoded wire message; its ``seq`` is 0 (the receiving store numbers it)."""
    ts = _EPOCH + timedelta(microseconds=m["t"])
    return Quote(m["s"], Decimal(m["b"]), Decimal(m["a"]), ts, 0, m.get("src") or "bus")


def decode(data: bytes) -> tuple[Quote, str]:
    """``(quote, origin)`` from the wire form."""
    m = orjson.loads(data)
    return quote_of(m), m.get("o", "")


def source_sequence(headers: dict[str, str] | None) -> int:
    """The quotes stream sequence a last-quote stream message was sourced from (0 when it does not say)."""
    value = (headers or {}).get("Nats-Stream-Source", "")
    parts = value.split(" ")
    try:
        return int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class StreamState:
    """Where the quotes stream is: its first and last sequence."""

    first_seq: int
    last_seq: int


class QuoteBus:
    """The streams of one instance namespace over one connection's JetStream context (use on its event loop)."""

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, *, origin: str = "", retain_s: float = DEFAULT_RETAIN_S
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.origin = origin
        self.retain_s = retain_s

    def _configs(self) -> list[StreamConfig]:
        s = self.subjects
        return [
            StreamConfig(
                name=s.quotes_stream,
                subjects=[s.all_quotes],
                storage=StorageType.FILE,
                max_age=self.retain_s,
                discard=DiscardPolicy.OLD,
                duplicate_window=DUPLICATE_WINDOW_S,
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

    async def ensure_streams(self) -> None:
        """Create the quotes and last-quote streams if missing (several processes may race: both succeed)."""
        for cfg in self._configs():
            try:
                await self.js.stream_info(cfg.name or "")
            except NotFoundError:
                with contextlib.suppress(Exception):  # created by a concurrent process meanwhile
                    await self.js.add_stream(cfg)
                await self.js.stream_info(cfg.name or "")

    async def state(self) -> StreamState:
        """The quotes stream's first and last sequence now."""
        info = await self.js.stream_info(self.subjects.quotes_stream)
        return StreamState(info.state.first_seq, info.state.last_seq)

    async def last_quotes(self, timeout_s: float = 5.0) -> list[tuple[int, bytes]]:
        """``(quotes stream sequence, wire data)`` of every symbol's last quote (from the last-quote stream),
        oldest stream position first."""
        try:
            info = await self.js.stream_info(self.subjects.last_stream)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        out: list[tuple[int, bytes]] = []
        done = asyncio.Event()
        last_seq = info.state.last_seq

        async def take(msg: Any) -> None:
            out.append((source_sequence(msg.headers), msg.data))
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

    async def replay(
        self,
        start_seq: int,
        stop_seq: int,
        handler: Callable[[list[tuple[int, bytes]]], None],
        *,
        start_time: datetime | None = None,
        timeout_s: float = 60.0,
        batch: int = 1000,
    ) -> None:
        """Hand ``handler`` the quotes stream's messages ``start_seq..stop_seq`` (or from ``start_time`` to
        ``stop_seq``) as ``(sequence, data)`` batches, in stream order (from the first one still kept when the
        start has aged out)."""
        if stop_seq < start_seq:
            return
        done = asyncio.Event()
        chunk: list[tuple[int, bytes]] = []

        async def take(msg: Any) -> None:
            seq = msg.metadata.sequence.stream
            if seq <= stop_seq:
                chunk.append((seq, msg.data))
            if seq >= stop_seq or msg.metadata.num_pending == 0:
                done.set()
            elif len(chunk) >= batch:
                handler(chunk[:])
                chunk.clear()

        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start_time)
            if start_time is not None
            else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq))
        )
        sub = await self.js.subscribe(
            self.subjects.all_quotes,
            stream=self.subjects.quotes_stream,
            cb=take,
            ordered_consumer=True,
            pending_msgs_limit=1_000_000,
            config=config,
        )
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if chunk:
            handler(chunk[:])
            chunk.clear()
