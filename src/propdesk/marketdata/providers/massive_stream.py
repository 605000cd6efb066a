"""The Massive (Polygon.io) WebSocket streams through the official ``massive`` client's ``WebSocketClient``.

Routing by asset class (the same routes as the REST provider, ``massive.route_for``), one client per market:

- forex and metals: market ``forex``, channel ``C.EUR/USD`` (event ``C``: ``p`` pair, ``b``/``a`` bid/ask,
  ``t`` ms);
- crypto: market ``crypto``, channel ``XQ.BTC-USD`` (event ``XQ``: ``pair``, ``bp``/``ap``, ``t`` ms);
- equities (and the opt-in USO proxy of WTI): market ``stocks``, channel ``Q.AAPL`` (event ``Q``: ``sym``,
  ``bp``/``ap``, ``t`` ms);
- indices: market ``indices``, channel ``V.I:SPX`` (event ``V``: ``T`` ticker, ``val`` value, ``t`` ms), a value
  with no spread, so bid = ask = value.

Numbers are decoded from the JSON text straight into ``Decimal`` (the client accepts a ``custom_json`` module), so a
price is never a binary float on its way in, and are put on the instrument's precision as in the REST path.

Connection handling. The client authenticates (``auth_failed`` raises ``MassiveAuthError``: a bad key is a
configuration error) and subscribes; on a dropped connection it reconnects, re-authenticates and re-subscribes by
itself. This provider adds what the client lacks:

- a server that closes cleanly (the client then returns) or a client that gives up is restarted with a fresh
  client after ``reconnect_delay_s`` (doubling, capped at 30 s) until ``stop()``;
- a stream that goes silent for ``stale_after_s`` while one of its symbols' markets is open (by the session
  calendar) is declared stale (``stats.stale``, logged) and its connection is dropped so a fresh one is made;
- quotes older than the last one passed on for their symbol (a replay after a reconnect) are dropped here and
  counted (``stats.out_of_order``), so time never goes backwards per symbol; an exact repeat reaches the quote
  store, which drops and counts duplicates.

``quotes()`` yields quotes as they arrive (from the client's thread, through a queue) until ``stop()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlsplit

from ...domain.clock import Clock
from ...domain.instruments import DEFAULT_CATALOGUE, Catalogue, Instrument
from ...domain.quotes import Quote
from ..sessions import SessionCalendar, default_calendar
from .massive import MassiveAuthError, MassiveError, Route, _decimal, _ts, route_symbols

log = logging.getLogger(__name__)

NAME = "massive"
SOURCE = "massive-ws"
ENV_WS_URL = "PROPDESK_MASSIVE_WS_URL"
DEFAULT_WS_URL = "wss://socket.massive.com"

_CHANNEL = {"forex": "C", "crypto": "XQ", "stocks": "Q", "indices": "V"}


class _DecimalJSON:
    """A ``custom_json`` for the client: numbers decode as exact Decimals (what the server wrote)."""

    @staticmethod
    def loads(s: str | bytes) -> Any:
        return json.loads(s, parse_float=Decimal)

    @staticmethod
    def dumps(obj: Any) -> str:
        return json.dumps(obj)


def channel_of(r: Route) -> str:
    """The subscription channel of a route: ``C.EUR/USD``, ``XQ.BTC-USD``, ``Q.AAPL``, ``V.I:SPX``."""
    if r.market == "forex":
        base, quote = r.pair
        return f"C.{base}/{quote}"
    if r.market == "crypto":
        base, quote = r.pair
        return f"XQ.{base}-{quote}"
    return f"{_CHANNEL[r.market]}.{r.ticker}"


def _key_of(r: Route) -> str:
    """How a route's events name it (``p``/``pair``/``sym``/``T``)."""
    return channel_of(r).split(".", 1)[1]


@dataclass
class StreamStats:
    """What the streams did: messages and quotes, drops, (re)connections and stale periods."""

    messages: int = 0
    quotes: int = 0
    rejected: int = 0  # unusable events (crossed, non-positive, no timestamp)
    out_of_order: int = 0
    connections: int = 0
    stale: int = 0
    restarts: int = 0


def parse_ws_url(url: str) -> tuple[str, bool]:
    """``wss://host[:port]`` -> (the client's ``feed`` host, ``secure``)."""
    parts = urlsplit(url if "://" in url else f"wss://{url}")
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    return parts.netloc + parts.path.rstrip("/"), parts.scheme == "wss"


class MassiveStreamProvider:
    """Streams quotes for ``symbols`` from the Massive WebSocket feeds (a QuoteProvider)."""

    name = NAME

    def __init__(
        self,
        api_key: str | None,
        symbols: Iterable[str],
        clock: Clock,
        *,
        url: str | None = None,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        tickers: Mapping[str, str] | None = None,
        proxies: bool = False,
        calendar: SessionCalendar | None = None,
        stale_after_s: float = 30.0,
        reconnect_delay_s: float = 1.0,
        max_reconnects: int | None = 20,
        queue_size: int = 100_000,
    ):
        if not api_key:
            raise MassiveAuthError("a Massive API key is needed: set PROPDESK_MASSIVE_API_KEY")
        self.api_key = api_key
        self.clock = clock
        self.catalogue = catalogue
        self.calendar = calendar or default_calendar()
        self.feed, self.secure = parse_ws_url(url or DEFAULT_WS_URL)
        self.stale_after_s = float(stale_after_s)
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.max_reconnects = max_reconnects
        self.routes, self.unroutable = route_symbols(symbols, catalogue, tickers, proxies)
        self.symbols = list(self.routes) + self.unroutable
        # market -> (event key -> instrument)
        self._by_market: dict[str, dict[str, Instrument]] = {}
        for sym, r in self.routes.items():
            inst = catalogue.get(sym)
            assert inst is not None
            self._by_market.setdefault(r.market, {})[_key_of(r)] = inst
        self.stats = StreamStats()
        self.error: BaseException | None = None
        self._last: dict[str, Quote] = {}
        self._queue: queue.Queue[Quote | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, Any] = {}
        self._heard: dict[str, float] = {}  # market -> loop time of the last message

    # ------------------------------------------------------------------ messages -> quotes
    def to_quote(self, market: str, event: Any) -> Quote | None:
        """Map one client message model to a Quote (None: not for us, or unusable)."""
        book = self._by_market.get(market, {})
        if market in ("forex", "crypto"):
            key, bid, ask, ts = getattr(event, "pair", None), event.bid_price, event.ask_price, event.timestamp
        elif market == "stocks":
            key, bid, ask, ts = getattr(event, "symbol", None), event.bid_price, event.ask_price, event.timestamp
        elif market == "indices":
            value = getattr(event, "value", None)
            key, bid, ask, ts = getattr(event, "ticker", None), value, value, getattr(event, "timestamp", None)
        else:
            return None
        inst = book.get(str(key)) if key is not None else None
        if inst is None:
            return None
        b, a = _decimal(bid), _decimal(ask)
        when = _ts(int(ts) if isinstance(ts, Decimal) else ts)
        if b is None or a is None or when is None:
            self.stats.rejected += 1
            return None
        step = Decimal(1).scaleb(-inst.price_precision)
        b, a = b.quantize(step, ROUND_HALF_EVEN), a.quantize(step, ROUND_HALF_EVEN)
        if b <= 0 or b > a:
            self.stats.rejected += 1
            return None
        return Quote(inst.symbol, b, a, when, 0, SOURCE)

    def _accept(self, q: Quote) -> None:
        prev = self._last.get(q.symbol)
        if prev is not None and q.ts < prev.ts:
            self.stats.out_of_order += 1
            return
        self._last[q.symbol] = q
        self.stats.quotes += 1
        self._queue.put(q)

    # ------------------------------------------------------------------ the asyncio side
    def _client(self, market: str) -> Any:
        from massive import WebSocketClient

        subs = sorted(channel_of(self.routes[inst.symbol]) for inst in self._by_market[market].values())
        return WebSocketClient(
            api_key=self.api_key,
            feed=self.feed,
            market=market,
            secure=self.secure,
            subscriptions=subs,
            max_reconnects=self.max_reconnects,
            custom_json=_DecimalJSON,
        )

    def _market_open(self, market: str, at: datetime) -> bool:
        return any(self.calendar.is_open(inst.symbol, at) for inst in self._by_market[market].values())

    async def _run_market(self, market: str) -> None:
        from massive.exceptions import AuthError

        delay = self.reconnect_delay_s
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            client = self._client(market)
            self._clients[market] = client
            self._heard[market] = loop.time()
            self.stats.connections += 1

            async def process(msgs: list[Any], _market: str = market) -> None:
                self._heard[_market] = loop.time()
                for m in msgs:
                    self.stats.messages += 1
                    q = self.to_quote(_market, m)
                    if q is not None:
                        self._accept(q)

            try:
                await client.connect(process)
                delay = self.reconnect_delay_s  # a session that ran and closed: start the backoff afresh
            except AuthError as exc:
                raise MassiveAuthError(f"Massive refused the API key on the {market} stream: {exc}") from exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the client gave up reconnecting; start a fresh one after a pause
                log.warning("massive_stream_failed market=%s error=%r", market, exc)
            if self._stop.is_set():
                break
            self.stats.restarts += 1
            log.info("massive_stream_restart market=%s delay=%.2fs", market, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            await asyncio.sleep(min(1.0, max(0.05, self.stale_after_s / 4)))
            now = self.clock.now()
            for market, client in list(self._clients.items()):
                quiet = loop.time() - self._heard.get(market, loop.time())
                if quiet <= self.stale_after_s or not self._market_open(market, now):
                    continue
                self.stats.stale += 1
                log.warning("massive_stream_stale market=%s quiet_s=%.1f: reconnecting", market, quiet)
                self._heard[market] = loop.time()
                ws = getattr(client, "websocket", None)
                transport = getattr(ws, "transport", None)
                if transport is not None:
                    # An abnormal close: the client treats it as a drop and reconnects, re-authenticates and
                    # re-subscribes by itself.
                    transport.abort()

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._run_market(m)) for m in sorted(self._by_market)]
        tasks.append(asyncio.create_task(self._watchdog()))
        stopper = asyncio.create_task(asyncio.to_thread(self._stop.wait))
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            for client in self._clients.values():
                try:
                    if getattr(client, "websocket", None) is not None:
                        await client.close()
                except Exception as exc:  # closing on the way out: nothing left to save
                    log.debug("massive_stream_close_failed error=%r", exc)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._stop.set()
            stopper.cancel()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the consumer of quotes()
            self.error = exc
        finally:
            self._stop.set()
            self._queue.put(None)

    # ------------------------------------------------------------------ the QuoteProvider side
    def start(self) -> MassiveStreamProvider:
        if not self.routes:
            raise MassiveError("no symbol can be routed to a Massive stream")
        if self._thread is None:
            self._thread = threading.Thread(target=self._thread_main, name="massive-stream", daemon=True)
            self._thread.start()
        return self

    def quotes(self) -> Iterator[Quote]:
        """Quotes as they arrive until ``stop()``; raises MassiveAuthError if the key is refused."""
        self.start()
        while True:
            try:
                q = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set() and self._thread is not None and not self._thread.is_alive():
                    break
                continue
            if q is None:
                break
            yield q
        if isinstance(self.error, MassiveAuthError):
            raise self.error
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise MassiveError(f"the Massive stream failed: {self.error!r}") from self.error

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


__all__ = ["DEFAULT_WS_URL", "ENV_WS_URL", "MassiveStreamProvider", "StreamStats", "channel_of", "parse_ws_url"]
