"""Minute candles aggregated from ticks (on mid), per symbol, with gaps filled by synthetic carried-forward bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..domain.quotes import Quote

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)


def minute_of(ts: datetime) -> datetime:
    """The start of the minute holding ``ts`` (UTC)."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass(slots=True)
class Candle:
    """One minute of mid prices. ``synthetic``: no ticks behind it from the bar's own source (the previous close
    carried forward, or a provider's empty minute rebuilt from recorded ticks); ``source`` says where it came from
    (``ticks``, ``carried``, or a provider label such as ``massive-agg``)."""

    symbol: str
    minute: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    ticks: int = 0
    synthetic: bool = False
    source: str = "ticks"


class CandleAggregator:
    """Builds minute candles per symbol from quotes in time order.

    A quote older than the last one seen for its symbol is not aggregated (counted in ``late``): the quote store
    drops those upstream, so this only guards direct callers. ``on_close`` is called with each finished candle
    when the first tick of a later minute arrives.
    """

    def __init__(self, on_close: Callable[[Candle], None] | None = None):
        self._candles: dict[str, dict[int, Candle]] = {}
        self._current: dict[str, Candle] = {}
        self._current_key: dict[str, int] = {}
        self._last_ts: dict[str, datetime] = {}
        self._on_close = on_close
        self.late = 0

    def add(self, quote: Quote) -> Candle:
        """Aggregate ``quote``; returns the candle it went into."""
        sym = quote.symbol
        last = self._last_ts.get(sym)
        ts = quote.ts
        if last is not None and ts < last:
            self.late += 1
            return self._current[sym]
        self._last_ts[sym] = ts
        key = int((ts - _EPOCH).total_seconds()) // 60
        mid = (quote.bid + quote.ask) / 2
        cur = self._current.get(sym)
        if cur is not None and self._current_key[sym] == key:
            if mid > cur.high:
                cur.high = mid
            elif mid < cur.low:
                cur.low = mid
            cur.close = mid
            cur.ticks += 1
            return cur
        if cur is not None and self._on_close is not None:
            self._on_close(cur)
        cur = Candle(sym, _EPOCH + key * _MINUTE, mid, mid, mid, mid, 1)
        self._candles.setdefault(sym, {})[key] = cur
        self._current[sym] = cur
        self._current_key[sym] = key
        return cur

    def candle(self, symbol: str, minute: datetime) -> Candle | None:
        key = int((minute_of(minute) - _EPOCH).total_seconds()) // 60
        return self._candles.get(symbol, {}).get(key)

    def candles(self, symbol: str, start: datetime | None = None, end: datetime | None = None) -> list[Candle]:
        """The symbol's candles (real and synthesized) in time order, optionally within [start, end)."""
        out = sorted(self._candles.get(symbol, {}).values(), key=lambda c: c.minute)
        if start is not None:
            out = [c for c in out if c.minute >= minute_of(start)]
        if end is not None:
            out = [c for c in out if c.minute < end]
        return out

    def symbols(self) -> list[str]:
        return sorted(self._candles)

    def current(self, symbol: str) -> Candle | None:
        """The symbol's newest candle (the open bar while its minute lasts), or None."""
        return self._current.get(symbol)

    def prune(self, before: datetime) -> int:
        """Forget candles that start before ``before`` (a long-running recorder keeps memory bounded); the
        current bar of each symbol is always kept. Returns how many were dropped."""
        key = int((minute_of(before) - _EPOCH).total_seconds()) // 60
        dropped = 0
        for sym, book in self._candles.items():
            keep = self._current_key.get(sym)
            old = [k for k in book if k < key and k != keep]
            for k in old:
                del book[k]
            dropped += len(old)
        return dropped

    def synthesize(self, symbol: str, minute: datetime) -> Candle:
        """The candle of ``minute``: the real one if ticks arrived, else the last close before it carried forward
        (flat, no ticks, ``synthetic=True``). Raises LookupError when no earlier candle exists."""
        m = minute_of(minute)
        key = int((m - _EPOCH).total_seconds()) // 60
        book = self._candles.get(symbol, {})
        if key in book:
            return book[key]
        earlier = [k for k in book if k < key]
        if not earlier:
            raise LookupError(f"no candle for {symbol} before {m.isoformat()} to carry forward")
        close = book[max(earlier)].close
        c = Candle(symbol, m, close, close, close, close, 0, True, "carried")
        book[key] = c
        return c

    def fill_gaps(self, symbol: str, start: datetime, end: datetime) -> list[Candle]:
        """Every minute in [start, end) as a candle, synthesizing the empty ones (after the first real one)."""
        out: list[Candle] = []
        m = minute_of(start)
        while m < end:
            try:
                out.append(self.synthesize(symbol, m))
            except LookupError:
                pass
            m += _MINUTE
        return out
