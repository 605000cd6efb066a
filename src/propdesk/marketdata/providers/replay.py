"""The replay provider: ticks or bars from the CSV files of ``../shared/data/market/`` as a time-ordered feed.

Formats (auto-detected from the first line; ``,`` or TAB separated):

- HistData ticks, no header: ``YYYYMMDD HHMMSSfff,bid,ask,vol``. HistData stamps are EST *without* daylight
  saving, i.e. a fixed UTC-5 offset: ``20200101 170000065`` is 2020-01-01 22:00:00.065 UTC.
- ``timestamp,bid,ask`` ticks (any column order, case-insensitive, e.g. TrueFX, backtrader ``TIMESTAMP,BID,ASK``
  with US ``MM/DD/YYYY HH:MM:SS`` dates, Dukascopy ``Local time,Ask,Bid,...`` with ``DD.MM.YYYY ... GMT+0300``).
- OHLC bars: a time column (``timestamp``/``time``/``datetime``/``date``, optionally a separate ``time`` column;
  rows carrying a ``HH:MM:SS`` field the header does not name are read as date + time) and ``open,high,low,close``.
  A file whose name has a ``bid``/``ask`` token is that side; its sibling (``-bid-`` <-> ``-ask-``) is paired with
  it when it exists, joined on the bar time (bars present on one side only are skipped and counted). A bar file
  with no side is a traded/mid price: bid = ask = price.

Timestamps without an offset are UTC; every Quote carries a timezone-aware UTC ``ts``.

Bars become ticks without losing their high and low: open -> the extreme nearer the open -> the other extreme ->
close, at 0, 1/4, 1/2 and 3/4 of the bar's duration (the duration is the smallest gap between the first bars, and
never reaches into the next bar), so minute candles rebuilt from the ticks equal the bars. A point equal to the
previous one (flat bars) is not repeated.

The symbol is the ``symbol`` argument or is inferred from the file name (a catalogue symbol, or an alias such as
``XBTUSD`` -> ``BTCUSD``, ``USA500`` -> ``US500``); failing both, a ``ReplayFormatError`` asks for ``--symbol``.
A malformed line raises ``ReplayFormatError`` naming the file and line number.
"""

from __future__ import annotations

import heapq
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ...clock import ManualClock, SystemClock
from ...domain.clock import Clock
from ...domain.instruments import DEFAULT_CATALOGUE
from ...domain.quotes import Quote

HISTDATA_TZ = timezone(timedelta(hours=-5), "EST")  # fixed UTC-5, no daylight saving
_HISTDATA_SHIFT = timedelta(hours=5)
_HISTDATA_RE = re.compile(r"^\d{8} \d{9}$")
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
_TIME_COLS = ("timestamp", "timestamp_utc", "datetime", "date", "time", "local time", "ts")
ALIASES = {
    "XBTUSD": "BTCUSD",
    "XBT": "BTCUSD",
    "BTC": "BTCUSD",
    "ETH": "ETHUSD",
    "USA500": "US500",
    "SPX": "US500",
    "NDX": "US100",
    "AAPLUS": "AAPL",
    "AAPLUSUSD": "AAPL",
    "GOLD": "XAUUSD",
}


class ReplayFormatError(ValueError):
    """A replay file cannot be read: the message names the file and, for a bad line, the line number."""


@dataclass(frozen=True, slots=True)
class Bar:
    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass
class ReplayStats:
    files: int = 0
    quotes: int = 0
    bars: int = 0
    unpaired_bars: int = 0
    by_file: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers
def infer_symbol(path: str | Path) -> str | None:
    """A catalogue symbol (or alias) named by the file name's tokens, or None."""
    name = Path(path).name.upper()
    for ext in (".GZ", ".CSV", ".TXT", ".TSV"):
        name = name.removesuffix(ext)
    tokens = [t for t in re.split(r"[^A-Z0-9]+", name) if t]
    for tok in tokens:
        if DEFAULT_CATALOGUE.get(tok) is not None:
            return tok
        if tok in ALIASES:
            return ALIASES[tok]
    for tok in tokens:
        for inst in DEFAULT_CATALOGUE:
            if len(inst.symbol) >= 4 and tok.startswith(inst.symbol):
                return inst.symbol
    return None


def _side(path: Path) -> str | None:
    tokens = re.split(r"[^a-z0-9]+", path.name.lower())
    if "bid" in tokens:
        return "bid"
    if "ask" in tokens:
        return "ask"
    return None


def _sibling(path: Path, side: str) -> Path:
    other = "ask" if side == "bid" else "bid"
    return path.with_name(re.sub(rf"(?i)(?<![a-z0-9]){side}(?![a-z0-9])", other, path.name, count=1))


def _fail(path: Path, lineno: int, msg: str) -> ReplayFormatError:
    return ReplayFormatError(f"{path}:{lineno}: {msg}")


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt if dt.utcoffset() == timedelta(0) and dt.tzinfo is UTC else dt.astimezone(UTC)


def _parse_iso(s: str) -> datetime:
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _parse_us(s: str) -> datetime:
    return datetime.strptime(s, "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)


def _parse_dukascopy(s: str) -> datetime:
    # "04.09.2023 01:00:05.962 GMT+0300"
    return datetime.strptime(s.replace("GMT", ""), "%d.%m.%Y %H:%M:%S.%f %z").astimezone(UTC)


def _parse_dotted(s: str) -> datetime:
    return datetime.strptime(s, "%d.%m.%Y %H:%M:%S").replace(tzinfo=UTC)


_TS_PARSERS: tuple[Callable[[str], datetime], ...] = (_parse_iso, _parse_us, _parse_dukascopy, _parse_dotted)


def _pick_ts_parser(sample: str) -> Callable[[str], datetime] | None:
    for p in _TS_PARSERS:
        try:
            p(sample)
        except ValueError:
            continue
        return p
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if path.suffix == ".gz":
        import gzip

        fh = gzip.open(path, "rt", encoding="utf-8", newline="")  # noqa: SIM115 - closed by the with below
    else:
        fh = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by the with below
    with fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield n, line


# ------------------------------------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class Layout:
    """What the first line says about a file."""

    kind: str  # "histdata" | "ticks" | "bars"
    sep: str
    header: bool
    time_col: int = 0
    clock_col: int | None = None  # separate time-of-day column
    cols: tuple[int, ...] = ()  # bid, ask (ticks) or open, high, low, close (bars)


def detect(path: str | Path) -> Layout:
    """The layout of ``path`` from its first non-empty line."""
    p = Path(path)
    first = next(_lines(p), None)
    if first is None:
        raise ReplayFormatError(f"{p}: empty file")
    _, line = first
    sep = "\t" if "\t" in line else ","
    fields = [f.strip() for f in line.split(sep)]
    if _HISTDATA_RE.match(fields[0]):
        if len(fields) < 3:
            raise _fail(p, 1, "HistData tick line needs 'YYYYMMDD HHMMSSfff,bid,ask[,vol]'")
        return Layout("histdata", sep, False, 0, None, (1, 2))
    names = [f.lower().strip('"') for f in fields]
    tcol = next((names.index(c) for c in _TIME_COLS if c in names), None)
    if tcol is None:
        raise ReplayFormatError(
            f"{p}:1: unrecognised format: no time column in header {fields!r} (expected "
            f"HistData ticks, timestamp,bid,ask ticks or timestamp,open,high,low,close bars)"
        )
    clock_col = names.index("time") if names[tcol] == "date" and "time" in names else None
    if "bid" in names and "ask" in names:
        return Layout("ticks", sep, True, tcol, clock_col, (names.index("bid"), names.index("ask")))
    if all(c in names for c in ("open", "high", "low", "close")):
        return Layout(
            "bars", sep, True, tcol, clock_col, tuple(names.index(c) for c in ("open", "high", "low", "close"))
        )
    raise ReplayFormatError(f"{p}:1: unrecognised header {fields!r}: need bid and ask, or open, high, low, close")


def _dec(path: Path, n: int, s: str) -> Decimal:
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise _fail(path, n, f"not a number: {s!r}") from None
    if not d.is_finite() or d <= 0:
        raise _fail(path, n, f"not a positive price: {s!r}")
    return d


# ------------------------------------------------------------------------------------------------ readers
def read_histdata(path: Path, symbol: str, source: str = "replay") -> Iterator[Quote]:
    """HistData ticks (EST = fixed UTC-5) as UTC quotes."""
    D = Decimal  # noqa: N806 - a local alias in the hot loop
    for n, line in _lines(path):
        parts = line.split(",")
        try:
            s = parts[0]
            ts = (
                datetime(
                    int(s[0:4]),
                    int(s[4:6]),
                    int(s[6:8]),
                    int(s[9:11]),
                    int(s[11:13]),
                    int(s[13:15]),
                    int(s[15:18]) * 1000,
                    tzinfo=UTC,
                )
                + _HISTDATA_SHIFT
            )
            bid, ask = D(parts[1]), D(parts[2])
        except (ValueError, IndexError, InvalidOperation) as exc:
            raise _fail(
                path,
                n,
                f"bad HistData tick {line!r} ({exc or type(exc).__name__}); expected 'YYYYMMDD HHMMSSfff,bid,ask,vol'",
            ) from None
        if len(s) != 18 or s[8] != " " or not (bid > 0 and ask > 0):
            raise _fail(path, n, f"bad HistData tick {line!r}")
        yield Quote(symbol, bid, ask, ts, 0, source)


def _rows(path: Path, lay: Layout) -> Iterator[tuple[int, datetime, list[str]]]:
    """Data rows with their parsed UTC time (the header skipped)."""
    parse: Callable[[str], datetime] | None = None
    width = 0
    merge_time = False
    for n, line in _lines(path):
        if width == 0:  # the header (the first non-empty line)
            width = len(line.split(lay.sep))
            continue
        parts = [f.strip() for f in line.split(lay.sep)]
        if parse is None:
            # rows with a time-of-day field the header does not name (backtrader 'Date,Open,...' minute files)
            merge_time = (
                lay.clock_col is None
                and len(parts) == width + 1
                and _TIME_RE.match(parts[lay.time_col + 1]) is not None
            )
        if merge_time:
            parts[lay.time_col] = f"{parts[lay.time_col]} {parts.pop(lay.time_col + 1)}"
        elif lay.clock_col is not None:
            parts[lay.time_col] = f"{parts[lay.time_col]} {parts[lay.clock_col]}"
        if len(parts) < width:
            raise _fail(path, n, f"expected {width} fields, got {len(parts)}: {line!r}")
        raw = parts[lay.time_col]
        if parse is None:
            parse = _pick_ts_parser(raw)
            if parse is None:
                raise _fail(path, n, f"unrecognised timestamp {raw!r}")
        try:
            ts = parse(raw)
        except ValueError:
            raise _fail(path, n, f"bad timestamp {raw!r}") from None
        yield n, ts, parts


def read_ticks(path: Path, lay: Layout, symbol: str, source: str = "replay") -> Iterator[Quote]:
    bi, ai = lay.cols
    for n, ts, parts in _rows(path, lay):
        yield Quote(symbol, _dec(path, n, parts[bi]), _dec(path, n, parts[ai]), ts, 0, source)


def read_bars(path: Path, lay: Layout | None = None) -> Iterator[Bar]:
    """The bars of an OHLC file (checked: low <= open, close <= high)."""
    lay = lay or detect(path)
    if lay.kind != "bars":
        raise ReplayFormatError(f"{path}: not an OHLC bar file")
    oi, hi, li, ci = lay.cols
    for n, ts, parts in _rows(path, lay):
        o, h, lo, c = (_dec(path, n, parts[i]) for i in (oi, hi, li, ci))
        if not (lo <= o <= h and lo <= c <= h):
            raise _fail(path, n, f"inconsistent bar (open/close outside low..high): {parts!r}")
        yield Bar(ts, o, h, lo, c)


def _with_durations(bars: Iterable[Bar], probe: int = 50) -> Iterator[tuple[Bar, timedelta]]:
    """Each bar with the time its ticks may spread over: the typical bar length, never reaching the next bar."""
    it = iter(bars)
    head: list[Bar] = []
    for b in it:
        head.append(b)
        if len(head) >= probe:
            break
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(head) if b.ts > a.ts]
    dur = min(gaps) if gaps else timedelta(minutes=1)
    prev: Bar | None = None
    for b in head:
        if prev is not None:
            yield prev, min(dur, b.ts - prev.ts) if b.ts > prev.ts else dur
        prev = b
    for b in it:
        if prev is not None:
            yield prev, min(dur, b.ts - prev.ts) if b.ts > prev.ts else dur
        prev = b
    if prev is not None:
        yield prev, dur


def expand(ts: datetime, dur: timedelta, bid: Bar, ask: Bar | None = None) -> list[tuple[datetime, Decimal, Decimal]]:
    """A bar (or a bid/ask pair of bars) as up to four (ts, bid, ask) points keeping its high and low."""
    ask = ask or bid
    up = (bid.high + ask.high) - (bid.open + ask.open)
    down = (bid.open + ask.open) - (bid.low + ask.low)
    if up <= down:
        bids = (bid.open, bid.high, bid.low, bid.close)
        asks = (ask.open, ask.high, ask.low, ask.close)
    else:
        bids = (bid.open, bid.low, bid.high, bid.close)
        asks = (ask.open, ask.low, ask.high, ask.close)
    step = dur / 4
    out: list[tuple[datetime, Decimal, Decimal]] = []
    for k in range(4):
        if out and out[-1][1] == bids[k] and out[-1][2] == asks[k]:
            continue
        out.append((ts + step * k, bids[k], asks[k]))
    return out


def _paired(bids: Iterator[Bar], asks: Iterator[Bar], stats: ReplayStats) -> Iterator[tuple[Bar, Bar]]:
    b, a = next(bids, None), next(asks, None)
    while b is not None and a is not None:
        if b.ts == a.ts:
            yield b, a
            b, a = next(bids, None), next(asks, None)
        elif b.ts < a.ts:
            stats.unpaired_bars += 1
            b = next(bids, None)
        else:
            stats.unpaired_bars += 1
            a = next(asks, None)
    stats.unpaired_bars += sum(1 for _ in bids) + sum(1 for _ in asks) + (b is not None) + (a is not None)


def bar_quotes(
    path: Path, symbol: str, source: str = "replay", stats: ReplayStats | None = None, pair: Path | None = None
) -> Iterator[Quote]:
    """Quotes from a bar file: paired with its bid/ask sibling when it has one, else bid = ask = price."""
    stats = stats if stats is not None else ReplayStats()
    side = _side(path)
    if side is not None and pair is None:
        sib = _sibling(path, side)
        pair = sib if sib != path and sib.exists() else None
    if side is not None and pair is not None:
        bid_path, ask_path = (path, pair) if side == "bid" else (pair, path)
        joined = _paired(read_bars(bid_path), read_bars(ask_path), stats)
        for (bb, ab), dur in _with_pairs_durations(joined):
            stats.bars += 1
            for ts, bid, ask in expand(bb.ts, dur, bb, ab):
                yield Quote(symbol, bid, ask, ts, 0, source)
        return
    for bar, dur in _with_durations(read_bars(path)):
        stats.bars += 1  # one side only (no sibling to pair with) or a price: used as both bid and ask
        for ts, bid, ask in expand(bar.ts, dur, bar):
            yield Quote(symbol, bid, ask, ts, 0, source)


def _with_pairs_durations(pairs: Iterator[tuple[Bar, Bar]]) -> Iterator[tuple[tuple[Bar, Bar], timedelta]]:
    buf: dict[datetime, Bar] = {}

    def bids() -> Iterator[Bar]:
        for bb, ab in pairs:
            buf[bb.ts] = ab
            yield bb

    for bb, dur in _with_durations(bids()):
        yield (bb, buf.pop(bb.ts)), dur


def read_file(
    path: str | Path,
    symbol: str | None = None,
    source: str = "replay",
    stats: ReplayStats | None = None,
    pair: Path | None = None,
) -> Iterator[Quote]:
    """The quotes of one file, in file order (a bid/ask bar file brings its sibling along)."""
    p = Path(path)
    if not p.is_file():
        raise ReplayFormatError(f"{p}: no such file")
    sym = symbol or infer_symbol(p)
    if not sym:
        raise ReplayFormatError(f"{p}: cannot infer the symbol from the file name; pass --symbol")
    lay = detect(p)
    if lay.kind == "histdata":
        return read_histdata(p, sym, source)
    if lay.kind == "ticks":
        return read_ticks(p, lay, sym, source)
    return bar_quotes(p, sym, source, stats, pair)


def plan(paths: Sequence[str | Path]) -> list[tuple[Path, Path | None]]:
    """The files to read: a bid and an ask bar file given together (or found side by side) are read once, paired."""
    seen: set[Path] = set()
    out: list[tuple[Path, Path | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        side = _side(p)
        pair: Path | None = None
        if side is not None:
            sib = _sibling(p, side)
            if sib != p and sib.exists():
                pair = sib
                seen.add(sib.resolve())
        out.append((p, pair))
    return out


# ------------------------------------------------------------------------------------------------ provider
class ReplayProvider:
    """Replays files as one feed merged in time order.

    ``speed`` X: X seconds of market time pass per second of ``clock`` time (the provider sleeps the difference);
    0: as fast as possible, no sleeping. With a ``ManualClock`` and no ``sleep`` the sleeps advance the clock, so
    tests drive replays without waiting.
    """

    name = "replay"

    def __init__(
        self,
        paths: Sequence[str | Path] | str | Path,
        symbol: str | None = None,
        speed: float = 0,
        clock: Clock | None = None,
        sleep: Callable[[float], object] | None = None,
    ):
        if isinstance(paths, str | Path):
            paths = [paths]
        if not paths:
            raise ReplayFormatError("no files to replay")
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self.paths = [Path(p) for p in paths]
        self.symbol = symbol
        self.speed = float(speed)
        self.clock: Clock = clock or SystemClock()
        if sleep is None:
            clk = self.clock
            sleep = (lambda s: clk.advance(s)) if isinstance(clk, ManualClock) else time.sleep
        self._sleep: Callable[[float], object] = sleep
        self.stats = ReplayStats()
        self.slept_s = 0.0
        for p, _ in plan(self.paths):  # fail early: missing files, unknown formats or symbols
            if not p.is_file():
                raise ReplayFormatError(f"{p}: no such file")
            detect(p)
            if not (symbol or infer_symbol(p)):
                raise ReplayFormatError(f"{p}: cannot infer the symbol from the file name; pass --symbol")

    def _streams(self) -> list[Iterator[Quote]]:
        files = plan(self.paths)
        self.stats.files = len(files)
        return [read_file(p, self.symbol, self.name, self.stats, pair) for p, pair in files]

    def parsed(self) -> Iterator[Quote]:
        """All quotes, merged in time order, without pacing."""
        streams = self._streams()
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda q: q.ts)

    def quotes(self) -> Iterator[Quote]:
        start_market: datetime | None = None
        start_wall: datetime | None = None
        for q in self.parsed():
            if self.speed > 0:
                if start_market is None or start_wall is None:
                    start_market, start_wall = q.ts, self.clock.now()
                else:
                    due = (q.ts - start_market).total_seconds() / self.speed
                    lag = due - (self.clock.now() - start_wall).total_seconds()
                    if lag > 0:
                        self._sleep(lag)
                        self.slept_s += lag
            self.stats.quotes += 1
            yield _to_precision(q)


def _to_precision(q: Quote) -> Quote:
    """The quote at its instrument's price precision (bid rounded down, ask up, so the spread never crosses);
    recorded files sometimes carry more decimals than the instrument is quoted in."""
    from decimal import ROUND_CEILING, ROUND_FLOOR

    from ...domain.instruments import DEFAULT_CATALOGUE

    inst = DEFAULT_CATALOGUE.get(q.symbol)
    if inst is None:
        return q
    step = Decimal(1).scaleb(-inst.price_precision)
    bid, ask = q.bid.quantize(step, rounding=ROUND_FLOOR), q.ask.quantize(step, rounding=ROUND_CEILING)
    if bid == q.bid and ask == q.ask:
        return q
    return replace(q, bid=bid, ask=ask)
