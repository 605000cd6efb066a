"""Persisted candles: the recorder that writes minute bars from the tick stream, and the reads that serve charts.

``CandleRecorder`` subscribes to a ``TickStream`` (``platform.ticks``), aggregates mid-price minute bars with a
``CandleAggregator`` and upserts them into the ``candles`` table (timeframe ``1m``):

- a bar is written as soon as it closes (the first tick of a later minute arrives), and
- the open bar is written at most once per ``flush_interval_s`` (by the injected clock), so a chart read from the
  table lags the live bar by at most that long, while a busy feed costs one small upsert per second, not per tick.

Writes run on the publisher's thread, serialised by a lock so a newer snapshot of a bar is never overwritten by an
older one. The upsert merges (keeps the first open, widens high/low, takes the newer close and tick count), so two
recorders (``propdesk serve`` and a ``propdesk feed`` process) or a restart in mid-minute never lose a bar's range;
a synthetic bar never replaces a real one. Memory is bounded: bars older than ``retain`` are forgotten.

``load_candles`` reads the persisted bars of a symbol, merges the recorder's open bar (fresher than the table),
fills the minutes the market was open but no tick came with synthetic bars carrying the last close forward
(``synthetic: true``), and resamples to 5m/15m/1h on request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ..domain.clock import Clock
from ..domain.quotes import Quote
from .candles import Candle, CandleAggregator, minute_of
from .sessions import SessionCalendar
from .stream import TickStream

BASE_TIMEFRAME = "1m"
TIMEFRAMES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}
"""Timeframes the read side serves (minutes per bar). Only ``1m`` is stored; the rest are resampled from it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)

_UPSERT = (
    "INSERT INTO candles (symbol, timeframe, start, open, high, low, close, tick_count, synthetic, source, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (symbol, timeframe, start) DO UPDATE SET"
    " open = CASE WHEN candles.synthetic THEN EXCLUDED.open ELSE candles.open END,"
    " high = CASE WHEN candles.synthetic THEN EXCLUDED.high ELSE GREATEST(candles.high, EXCLUDED.high) END,"
    " low = CASE WHEN candles.synthetic THEN EXCLUDED.low ELSE LEAST(candles.low, EXCLUDED.low) END,"
    " close = EXCLUDED.close,"
    " tick_count = CASE WHEN candles.synthetic THEN EXCLUDED.tick_count"
    " ELSE GREATEST(candles.tick_count, EXCLUDED.tick_count) END,"
    " synthetic = EXCLUDED.synthetic, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at"
    " WHERE NOT (EXCLUDED.synthetic AND NOT candles.synthetic)"
)


def upsert_candles(conn: Any, candles: list[Candle], updated_at: datetime, timeframe: str = BASE_TIMEFRAME) -> None:
    """Write ``candles`` (merge on conflict, see the module docstring) on ``conn`` (an engine connection)."""
    if not candles:
        return
    with conn.cursor() as cur:
        cur.executemany(
            _UPSERT,
            [
                (
                    c.symbol,
                    timeframe,
                    c.minute,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.ticks,
                    c.synthetic,
                    c.source,
                    updated_at,
                )
                for c in candles
            ],
        )


class CandleRecorder:
    """Aggregates the tick stream into minute bars and persists them (closed bars at once, the open bar throttled).

    ``start()`` subscribes to ``ticks``; ``stop()`` unsubscribes and writes what is pending. ``on_quote`` may also
    be called directly (tests, or a feed without a stream).
    """

    def __init__(
        self,
        db: Any,
        clock: Clock,
        ticks: TickStream | None = None,
        *,
        flush_interval_s: float = 1.0,
        retain: timedelta = timedelta(hours=2),
        log: Any | None = None,
    ):
        if flush_interval_s < 0:
            raise ValueError("flush_interval_s must not be negative")
        self.db = db
        self.clock = clock
        self.ticks = ticks
        self.flush_interval_s = float(flush_interval_s)
        self.retain = retain
        self._log = log
        self._closed: list[Candle] = []
        self._agg = CandleAggregator(on_close=self._closed.append)
        self._dirty: set[str] = set()
        self._lock = threading.Lock()  # guards the aggregator and the pending sets
        self._flush_lock = threading.Lock()  # serialises writes so they land in snapshot order
        self._last_flush: datetime | None = None
        self._last_prune: datetime | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.written = 0
        self.failures = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CandleRecorder:
        if self.ticks is None:
            raise RuntimeError("no tick stream to record from")
        if self._unsubscribe is None:
            self._unsubscribe = self.ticks.subscribe(self.on_quote)
        return self

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.flush()

    # ------------------------------------------------------------------ ticks in
    def on_quote(self, quote: Quote) -> None:
        """Aggregate one stored quote; write closed bars now and the open bar if the throttle allows."""
        now = self.clock.now()
        with self._lock:
            self._agg.add(quote)
            self._dirty.add(quote.symbol)
            due = (
                bool(self._closed)
                or self._last_flush is None
                or ((now - self._last_flush).total_seconds() >= self.flush_interval_s)
            )
        if due:
            self.flush()

    def open_bar(self, symbol: str) -> Candle | None:
        """A copy of the symbol's newest bar in memory (fresher than the table), or None."""
        with self._lock:
            c = self._agg.current(symbol)
            return (
                None
                if c is None
                else Candle(c.symbol, c.minute, c.open, c.high, c.low, c.close, c.ticks, c.synthetic, c.source)
            )

    def flush(self) -> int:
        """Write the closed bars and the dirty open bars; returns how many rows were written. A failed write is
        logged and retried with the next flush (the bars stay pending)."""
        with self._flush_lock:
            now = self.clock.now()
            with self._lock:
                batch = list(self._closed)
                for sym in sorted(self._dirty):
                    cur = self._agg.current(sym)
                    if cur is not None:
                        batch.append(
                            Candle(
                                cur.symbol,
                                cur.minute,
                                cur.open,
                                cur.high,
                                cur.low,
                                cur.close,
                                cur.ticks,
                                cur.synthetic,
                                cur.source,
                            )
                        )
                self._closed.clear()
                self._dirty.clear()
                self._last_flush = now
                if self._last_prune is None or now - self._last_prune >= timedelta(minutes=10):
                    self._agg.prune(now - self.retain)
                    self._last_prune = now
            if not batch:
                return 0
            try:
                with self.db.tx() as conn:
                    upsert_candles(conn, batch, now)
            except Exception as exc:  # the feed must not die of a chart write; keep the bars for the next try
                self.failures += 1
                if self._log is not None:
                    self._log.error("candle_write_failed", bars=len(batch), error=repr(exc)[:300])
                with self._lock:
                    self._closed[:0] = batch  # re-sent in order next time; the merge upsert makes repeats harmless
                return 0
            self.written += len(batch)
            return len(batch)


# ---------------------------------------------------------------------------------------------- reads
def _row_candle(r: Any) -> Candle:
    return Candle(
        r["symbol"],
        r["start"],
        r["open"],
        r["high"],
        r["low"],
        r["close"],
        r["tick_count"],
        r["synthetic"],
        r["source"],
    )


def open_minutes(calendar: SessionCalendar, symbol: str, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every minute start in [start, end) during which ``symbol``'s market is open (jumps over closed spans
    using the calendar's next open/close instead of asking minute by minute)."""
    m = minute_of(start)
    while m < end:
        st = calendar.status(symbol, m)
        if st.open:
            until = st.next_close if st.next_close is not None else end
            while m < end and m < until:
                yield m
                m += _MINUTE
        else:
            if st.next_open is None:
                return
            nxt = minute_of(st.next_open)
            m = nxt if nxt > m else m + _MINUTE


def fill_gaps(
    bars: list[Candle], calendar: SessionCalendar | None, end: datetime, window: int | None = None
) -> list[Candle]:
    """``bars`` (1m, ascending) plus a synthetic carried-forward bar for every open-market minute without one,
    from the first bar up to (not including) ``end``'s minute (at most the last ``window`` minutes or 14 days)."""
    if not bars or calendar is None:
        return bars
    symbol = bars[0].symbol
    have = {b.minute: b for b in bars}
    stop = minute_of(end)
    start = bars[0].minute
    if window is not None:
        # Bound the work: ``window`` open-market minutes can span a weekend or a holiday, so allow for that.
        start = max(start, stop - max(window * _MINUTE, timedelta(days=14)))
    out: dict[datetime, Candle] = dict(have)
    ordered = sorted(have)
    idx = 0
    last: Candle | None = None
    for m in open_minutes(calendar, symbol, start, stop):
        while idx < len(ordered) and ordered[idx] <= m:
            last = have[ordered[idx]]
            idx += 1
        if m in have or last is None:
            continue
        carried = Candle(symbol, m, last.close, last.close, last.close, last.close, 0, True, "carried")
        out[m] = carried
        last = carried
    return [out[k] for k in sorted(out)]


def resample(bars: list[Candle], minutes: int) -> list[Candle]:
    """1m bars (ascending) grouped into ``minutes``-long bars aligned on the epoch (UTC). A group is synthetic
    only when every bar in it is."""
    if minutes == 1:
        return bars
    out: list[Candle] = []
    for b in bars:
        key = int((b.minute - _EPOCH).total_seconds()) // 60 // minutes
        start = _EPOCH + key * minutes * _MINUTE
        cur = out[-1] if out and out[-1].minute == start else None
        if cur is None:
            out.append(Candle(b.symbol, start, b.open, b.high, b.low, b.close, b.ticks, b.synthetic, b.source))
            continue
        if cur.synthetic and not b.synthetic:  # the first real bar of the group sets the open
            cur.open, cur.high, cur.low, cur.source = b.open, b.high, b.low, b.source
        else:
            cur.high, cur.low = max(cur.high, b.high), min(cur.low, b.low)
        cur.close = b.close
        cur.ticks += b.ticks
        cur.synthetic = cur.synthetic and b.synthetic
    return out


def load_candles(
    conn: Any,
    symbol: str,
    timeframe: str,
    limit: int,
    *,
    now: datetime,
    calendar: SessionCalendar | None = None,
    open_bar: Candle | None = None,
) -> list[Candle]:
    """The newest ``limit`` bars of ``symbol`` at ``timeframe`` (ascending): persisted 1m bars, the recorder's
    open bar merged in, open-market gaps carried forward (synthetic), resampled."""
    per = TIMEFRAMES[timeframe]
    need = limit * per
    rows = conn.execute(
        "SELECT symbol, start, open, high, low, close, tick_count, synthetic, source FROM candles"
        " WHERE symbol = %s AND timeframe = %s AND start <= %s ORDER BY start DESC LIMIT %s",
        (symbol, BASE_TIMEFRAME, now, need),
    ).fetchall()
    bars = [_row_candle(r) for r in reversed(rows)]
    if open_bar is not None and open_bar.minute <= now:
        if bars and bars[-1].minute == open_bar.minute:
            bars[-1] = open_bar if open_bar.ticks >= bars[-1].ticks or bars[-1].synthetic else bars[-1]
        elif not bars or open_bar.minute > bars[-1].minute:
            bars.append(open_bar)
    bars = fill_gaps(bars, calendar, now, window=need)
    return resample(bars, per)[-limit:]


__all__ = [
    "BASE_TIMEFRAME",
    "TIMEFRAMES",
    "CandleRecorder",
    "fill_gaps",
    "load_candles",
    "open_minutes",
    "resample",
    "upsert_candles",
]
