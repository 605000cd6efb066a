"""The Massive (formerly Polygon.io) provider: REST snapshots through the official ``massive`` client.

Routing by asset class (``TICKERS`` below; a ``tickers`` argument overrides it):

- forex and metals: ``C:EURUSD``, ``C:XAUUSD`` -- last quote ``/v1/last_quote/currencies/EUR/USD``;
- crypto: ``X:BTCUSD`` -- last trade ``/v1/last/crypto/BTC/USD`` (Massive has no crypto last-quote REST call);
- equities: ``AAPL`` -- last quote ``/v2/last/nbbo/AAPL``, last trade ``/v2/last/trade/AAPL``;
- indices: ``I:SPX`` (US500), ``I:NDX`` (US100), ``I:DJI`` (US30) -- values only, so aggregates only;
- energy: WTIUSD has no spot ticker on Massive; its proxy is the ``USO`` ETF (routed as an equity). The proxy
  tracks crude's *moves*, not its price level: a USO price is not a barrel price. It is off by default
  (``WTI_PROXY`` is applied only with ``proxies=True``) so a WTI quote never silently carries an ETF price;
  without it WTIUSD is rejected as missing.

``latest(symbol)`` runs the fallback chain last quote -> last trade (bid = ask = price) -> latest minute
aggregate close (bid = ask = close, over ``aggs_lookback``) -> None (missing), skipping the steps an asset class
does not have, and logs which step answered. Each quote's ``source`` says the step: ``massive`` (a quote),
``massive-trade`` or ``massive-agg``. Prices are rounded to the instrument's precision; a crossed or non-positive
answer counts as no answer.

Rate limits and outages: the client's own urllib3 retries are switched off (they would sleep in real time and hide
the status); a 429 or 5xx is retried here up to ``max_attempts`` times with exponential backoff
(``backoff_s * 2**n``, capped at ``max_backoff_s``), honouring ``Retry-After`` (seconds) when the server sends one;
``sleep`` is injectable so tests do not wait. A step whose retries run out on a 5xx falls through to the next
step; a rate limit that outlasts the retries ends the chain (the other steps would be limited too). A 401/403
raises ``MassiveAuthError``: a bad key is a configuration error, not a missing price.

``candles(symbol, start, end)`` fetches minute aggregates; a minute of an open market (by the session calendar)
that the aggregates leave empty is synthesised from the ticks PropDesk recorded (``recorded``: e.g. the candle
recorder's bars or the ``candles`` table) or, failing that, carries the previous close forward; either way it is
flagged ``synthetic``. The WebSocket streams live in ``massive_stream.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from ...domain.clock import Clock
from ...domain.instruments import DEFAULT_CATALOGUE, AssetClass, Catalogue, Instrument
from ...domain.quotes import Quote
from ..candles import Candle, minute_of
from ..recorder import open_minutes
from ..sessions import SessionCalendar, default_calendar

log = logging.getLogger(__name__)

ENV_API_KEY = "PROPDESK_MASSIVE_API_KEY"
NAME = "massive"
RETRYABLE = frozenset({429, 500, 502, 503, 504})

INDEX_TICKERS = {"US500": "I:SPX", "US100": "I:NDX", "US30": "I:DJI"}
WTI_PROXY = {"WTIUSD": "USO"}


class MassiveError(RuntimeError):
    """A Massive call failed for good (after retries)."""


class MassiveAuthError(MassiveError):
    """The API key was refused (401/403) or is absent."""


class MassiveRateLimited(MassiveError):
    """Still rate-limited after the bounded retries."""


@dataclass(frozen=True)
class Route:
    """How a catalogue symbol is asked for: the Massive ticker and the market it lives in."""

    symbol: str
    ticker: str
    market: str  # "forex", "crypto", "stocks", "indices"

    @property
    def pair(self) -> tuple[str, str]:
        """``C:EURUSD`` -> (``EUR``, ``USD``); for forex and crypto tickers."""
        body = self.ticker.split(":", 1)[-1]
        return body[:-3], body[-3:]


def route_for(inst: Instrument, overrides: Mapping[str, str] | None = None, proxies: bool = False) -> Route | None:
    """The Massive route of an instrument, or None when Massive has no ticker for it."""
    ticker = (overrides or {}).get(inst.symbol)
    if ticker is None and proxies:
        ticker = WTI_PROXY.get(inst.symbol)
    if ticker is not None:
        return Route(inst.symbol, ticker, _market_of_ticker(ticker))
    cls = inst.asset_class
    if cls in (AssetClass.FOREX, AssetClass.METAL):
        return Route(inst.symbol, f"C:{inst.symbol}", "forex")
    if cls == AssetClass.CRYPTO:
        return Route(inst.symbol, f"X:{inst.symbol}", "crypto")
    if cls == AssetClass.EQUITY:
        return Route(inst.symbol, inst.symbol, "stocks")
    if cls == AssetClass.INDEX and inst.symbol in INDEX_TICKERS:
        return Route(inst.symbol, INDEX_TICKERS[inst.symbol], "indices")
    return None


def route_symbols(
    symbols: Iterable[str], catalogue: Catalogue, overrides: Mapping[str, str] | None = None, proxies: bool = False
) -> tuple[dict[str, Route], list[str]]:
    """Routes of ``symbols`` (by symbol) and the symbols Massive has no ticker for; an unknown symbol is an error."""
    routes: dict[str, Route] = {}
    unroutable: list[str] = []
    for sym in symbols:
        inst = catalogue.get(sym)
        if inst is None:
            raise ValueError(f"unknown symbol {sym!r}")
        r = route_for(inst, overrides, proxies)
        if r is None:
            unroutable.append(sym)
        else:
            routes[sym] = r
    return routes, unroutable


def _market_of_ticker(ticker: str) -> str:
    prefix = ticker.split(":", 1)[0] if ":" in ticker else ""
    return {"C": "forex", "X": "crypto", "I": "indices"}.get(prefix, "stocks")


class _StatusRecorder:
    """Wraps the client's urllib3 pool to remember the last response's status and Retry-After (per thread).

    The ``massive`` client raises ``BadResponse(body)`` on any non-200 and drops the status; the backoff needs it.
    """

    def __init__(self, pool: Any):
        self._pool = pool
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._local.status, self._local.retry_after = None, None
        resp = self._pool.request(*args, **kwargs)
        self._local.status = getattr(resp, "status", None)
        headers = getattr(resp, "headers", None) or {}
        self._local.retry_after = headers.get("Retry-After")
        return resp

    def last(self) -> tuple[int | None, str | None]:
        return getattr(self._local, "status", None), getattr(self._local, "retry_after", None)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._pool, item)


def make_client(api_key: str, base_url: str | None = None, timeout_s: float = 10.0) -> Any:
    """An official ``massive.RESTClient`` with its own retries off (this module retries, honouring Retry-After)."""
    from massive import RESTClient
    from urllib3.util.retry import Retry

    kwargs: dict[str, Any] = {
        "api_key": api_key,
        "connect_timeout": timeout_s,
        "read_timeout": timeout_s,
        "retries": 0,
        "pagination": False,
        "connection_pool_kw": {
            "retries": Retry(
                total=0, status_forcelist=(), respect_retry_after_header=False, raise_on_status=False, redirect=0
            )
        },
    }
    if base_url:
        kwargs["base"] = base_url.rstrip("/")
    return RESTClient(**kwargs)


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and d > 0 else None


def _ts(value: Any) -> datetime | None:
    """A Massive timestamp (ns, us, ms or s since the epoch, guessed from its size) as aware UTC."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    v = float(value)
    scale = 1e9 if v > 1e17 else 1e6 if v > 1e14 else 1e3 if v > 1e11 else 1.0
    return datetime.fromtimestamp(v / scale, UTC)


class MassiveProvider:
    """Polls Massive REST snapshots for ``symbols`` every ``interval_s`` (``quotes()``); ``latest()`` on demand."""

    name = NAME

    def __init__(
        self,
        api_key: str | None,
        symbols: Iterable[str],
        clock: Clock,
        interval_s: float = 1.0,
        base_url: str | None = None,
        client: Any = None,
        *,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        tickers: Mapping[str, str] | None = None,
        proxies: bool = False,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], object] | None = None,
        aggs_lookback: timedelta = timedelta(days=4),
    ):
        if client is None:
            if not api_key:
                raise MassiveAuthError(f"a Massive API key is needed: set {ENV_API_KEY}")
            client = make_client(api_key, base_url)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.client = client
        self._recorder: _StatusRecorder | None = None
        pool = getattr(client, "client", None)
        if pool is not None and hasattr(pool, "request"):
            self._recorder = pool if isinstance(pool, _StatusRecorder) else _StatusRecorder(pool)
            client.client = self._recorder
        self.clock = clock
        self.interval_s = float(interval_s)
        self.catalogue = catalogue
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep: Callable[[float], object] = sleep or time.sleep
        self.aggs_lookback = aggs_lookback
        self.routes, self.unroutable = route_symbols(symbols, catalogue, tickers, proxies)
        self.symbols = list(self.routes) + self.unroutable
        self.last_step: dict[str, str] = {}
        self._last: dict[str, Quote] = {}
        self._seq: dict[str, int] = {}
        self._stop = threading.Event()

    @classmethod
    def from_env(cls, symbols: Iterable[str], clock: Clock, **kw: Any) -> MassiveProvider:
        """Key from ``PROPDESK_MASSIVE_API_KEY``; refuses (MassiveAuthError) without it."""
        key = os.environ.get(ENV_API_KEY, "").strip()
        if not key:
            raise MassiveAuthError(f"{ENV_API_KEY} is not set: the Massive feed needs an API key")
        return cls(key, symbols, clock, **kw)

    # ------------------------------------------------------------------------------------------ HTTP + retries
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client; retry 429/5xx with backoff; return None on 404 (no data)."""
        from massive.exceptions import BadResponse

        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except BadResponse as exc:
                status, retry_after = self._recorder.last() if self._recorder else (None, None)
                if status in (401, 403):
                    raise MassiveAuthError(f"Massive refused the API key ({status}) on {what}") from exc
                if status == 404:
                    return None
                if status not in RETRYABLE:
                    raise MassiveError(f"{what}: HTTP {status}: {str(exc)[:200]}") from exc
                if attempt == self.max_attempts:
                    if status == 429:
                        raise MassiveRateLimited(f"{what}: still rate-limited after {attempt} attempts") from exc
                    raise MassiveError(f"{what}: HTTP {status} after {attempt} attempts") from exc
                delay = self._delay(attempt, retry_after)
                log.warning("massive_retry what=%s status=%s attempt=%d delay=%.2fs", what, status, attempt, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(0.0, float(retry_after)), self.max_backoff_s)
            except ValueError:
                pass  # an HTTP-date: fall back to the exponential delay
        return float(min(self.backoff_s * 2.0 ** (attempt - 1), self.max_backoff_s))

    # ------------------------------------------------------------------------------------------ the chain
    def _last_quote(self, r: Route) -> tuple[Any, Any, Any] | None:
        if r.market == "forex":
            base, quote = r.pair
            res = self._call(f"last quote {r.ticker}", self.client.get_last_forex_quote, base, quote)
            last = getattr(res, "last", None)
            if last is None:
                return None
            return last.bid, last.ask, last.timestamp
        if r.market == "stocks":
            res = self._call(f"last quote {r.ticker}", self.client.get_last_quote, r.ticker)
            if res is None or isinstance(res, list):
                return None
            return res.bid_price, res.ask_price, res.sip_timestamp or res.participant_timestamp
        return None  # crypto and indices: no last-quote REST call

    def _last_trade(self, r: Route) -> tuple[Any, Any, Any] | None:
        if r.market == "crypto":
            base, quote = r.pair
            res = self._call(f"last trade {r.ticker}", self.client.get_last_crypto_trade, base, quote)
            if res is None or isinstance(res, list):
                return None
            return res.price, res.price, res.timestamp
        if r.market == "stocks":
            res = self._call(f"last trade {r.ticker}", self.client.get_last_trade, r.ticker)
            if res is None or isinstance(res, list):
                return None
            return res.price, res.price, res.sip_timestamp or res.participant_timestamp
        return None  # forex and indices: no last-trade REST call

    def _latest_agg(self, r: Route) -> tuple[Any, Any, Any] | None:
        now = self.clock.now()
        start = now - self.aggs_lookback
        res = self._call(
            f"aggregates {r.ticker}",
            self.client.get_aggs,
            r.ticker,
            1,
            "minute",
            int(start.timestamp() * 1000),
            int(now.timestamp() * 1000),
            sort="desc",
            limit=10,
        )
        bars = [b for b in (res or []) if getattr(b, "close", None) is not None and b.timestamp is not None]
        if not bars:
            return None
        bar = max(bars, key=lambda b: b.timestamp)
        end_ms = bar.timestamp + 60_000  # the close is the price at the end of the minute (capped at now)
        return bar.close, bar.close, min(end_ms, int(now.timestamp() * 1000))

    def latest(self, symbol: str) -> Quote | None:
        """The freshest Massive price for ``symbol`` via the fallback chain, or None (missing)."""
        r = self.routes.get(symbol)
        inst = self.catalogue.get(symbol)
        if r is None or inst is None:
            log.info("massive_unroutable symbol=%s", symbol)
            return None
        steps: tuple[tuple[str, Callable[[Route], tuple[Any, Any, Any] | None], str], ...] = (
            ("quote", self._last_quote, NAME),
            ("trade", self._last_trade, f"{NAME}-trade"),
            ("agg", self._latest_agg, f"{NAME}-agg"),
        )
        for step, fn, source in steps:
            try:
                raw = fn(r)
            except MassiveRateLimited as exc:
                log.warning("massive_missing symbol=%s step=%s reason=%s", symbol, step, exc)
                return None
            except MassiveAuthError:
                raise
            except MassiveError as exc:
                log.warning("massive_step_failed symbol=%s step=%s reason=%s", symbol, step, exc)
                continue
            q = self._to_quote(inst, raw, source) if raw is not None else None
            if q is not None:
                self.last_step[symbol] = step
                log.info("massive_answer symbol=%s ticker=%s step=%s", symbol, r.ticker, step)
                return q
        self.last_step[symbol] = "missing"
        log.info("massive_missing symbol=%s ticker=%s reason=no step answered", symbol, r.ticker)
        return None

    def _to_quote(self, inst: Instrument, raw: tuple[Any, Any, Any], source: str) -> Quote | None:
        bid, ask, ts = _decimal(raw[0]), _decimal(raw[1]), _ts(raw[2])
        if bid is None or ask is None or ts is None:
            return None
        q = Decimal(1).scaleb(-inst.price_precision)
        bid, ask = bid.quantize(q, ROUND_HALF_EVEN), ask.quantize(q, ROUND_HALF_EVEN)
        if bid <= 0 or bid > ask:
            return None
        return Quote(inst.symbol, bid, ask, ts, 0, source)

    # ------------------------------------------------------------------------------------------ candles
    def candles(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        recorded: Callable[[str, datetime, datetime], list[Candle]] | None = None,
        calendar: SessionCalendar | None = None,
    ) -> list[Candle]:
        """Minute bars of ``symbol`` in [start, end): Massive's aggregates, with every open-market minute they
        leave empty synthesised from ``recorded`` ticks' bars, else the previous close carried forward
        (``synthetic=True``). Closed-market minutes stay empty."""
        r = self.routes.get(symbol)
        inst = self.catalogue.get(symbol)
        if r is None or inst is None:
            raise MassiveError(f"{symbol} has no Massive route")
        res = self._call(
            f"aggregates {r.ticker}",
            self.client.get_aggs,
            r.ticker,
            1,
            "minute",
            int(start.timestamp() * 1000),
            int(end.timestamp() * 1000) - 1,
            sort="asc",
            limit=50_000,
        )
        step = Decimal(1).scaleb(-inst.price_precision)
        real: dict[datetime, Candle] = {}
        for b in res or []:
            vals = [_decimal(getattr(b, k, None)) for k in ("open", "high", "low", "close")]
            when = _ts(getattr(b, "timestamp", None))
            if when is None or any(v is None for v in vals):
                continue
            o, h, lo, c = (v.quantize(step, ROUND_HALF_EVEN) for v in vals if v is not None)
            m = minute_of(when)
            real[m] = Candle(symbol, m, o, h, lo, c, int(getattr(b, "transactions", 0) or 0), False, f"{NAME}-agg")
        ticks = {c.minute: c for c in (recorded(symbol, start, end) if recorded is not None else []) if c.ticks}
        cal = calendar or default_calendar()
        out: list[Candle] = []
        prev: Candle | None = None
        for m in open_minutes(cal, symbol, start, end):
            bar = real.get(m)
            if bar is None and m in ticks:
                t = ticks[m]
                bar = Candle(symbol, m, t.open, t.high, t.low, t.close, t.ticks, True, "ticks")
            if bar is None and prev is not None:
                bar = Candle(symbol, m, prev.close, prev.close, prev.close, prev.close, 0, True, "carried")
            if bar is not None:
                out.append(bar)
                prev = bar
        synthetic = sum(1 for b in out if b.synthetic)
        if synthetic:
            log.info("massive_candles_synthesised symbol=%s bars=%d synthetic=%d", symbol, len(out), synthetic)
        return out

    # ------------------------------------------------------------------------------------------ polling
    def poll(self) -> list[Quote]:
        """One round over the symbols: the new quotes (a repeat or an older answer than the last is not new)."""
        out: list[Quote] = []
        for sym in self.routes:
            q = self.latest(sym)
            if q is None:
                continue
            prev = self._last.get(sym)
            if prev is not None and (q.ts < prev.ts or (q.ts == prev.ts and (q.bid, q.ask) == (prev.bid, prev.ask))):
                continue
            seq = self._seq.get(sym, 0) + 1
            self._seq[sym] = seq
            q = Quote(q.symbol, q.bid, q.ask, q.ts, seq, q.source)
            self._last[sym] = q
            out.append(q)
        return out

    def quotes(self) -> Iterator[Quote]:
        """Polls every ``interval_s`` until ``stop()``; per symbol, time never goes backwards."""
        while not self._stop.is_set():
            yield from self.poll()
            if self._stop.wait(self.interval_s):
                break

    def stop(self) -> None:
        self._stop.set()
