"""Calibration of the simulated feed from the real market data in ``../shared/data/market/`` (run offline).

``propdesk feed calibrate [--data DIR]`` reads the files below, computes per instrument the per-minute log-return
volatility and the median bid/ask spread in basis points, and writes ``calibration.json`` next to this module.
The JSON is committed: the simulated provider needs no shared data at run time. The output is deterministic
(no timestamps, rounded floats), so regenerating from the same files gives the same bytes.

Method:
- volatility: sample standard deviation of log returns between *consecutive* bars/minutes only (a gap, a weekend
  or a missing minute is skipped, never counted as one step), scaled to one minute by sqrt(bar minutes);
  tick files are first reduced to the last mid of each minute.
- spread: median of (ask - bid) / mid over all quotes of a bid/ask file (bps).
- instruments without data use a documented proxy (another instrument's calibrated value times a factor) or,
  for spreads where no file has bid and ask, a documented assumption.

Only the standard library is used (no pandas): the Binance parquet files need pyarrow, which is not a project
dependency, so they are not read.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[4] / "shared" / "data" / "market"

# Jumps are not calibrated (the samples are too short to estimate a rare-event rate): an assumption, documented.
JUMPS: dict[str, float] = {"rate_per_day": 4.0, "min_sigmas": 3.0, "max_sigmas": 6.0}


@dataclass
class Estimate:
    value: float
    n: int
    source: str
    method: str


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def _open_text(path: Path) -> Iterator[str]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        yield from fh


def _rows(path: Path, delimiter: str = ",", header: bool = True) -> Iterator[list[str]]:
    reader = csv.reader(_open_text(path), delimiter=delimiter)
    if header:
        next(reader, None)
    for row in reader:
        if row and row[0].strip():
            yield row


def _vol(series: Iterable[tuple[datetime, float]], step: timedelta) -> tuple[float, int]:
    """Per-minute volatility from prices at a fixed ``step``; only consecutive observations make a return."""
    rets: list[float] = []
    prev: tuple[datetime, float] | None = None
    for ts, px in series:
        if prev is not None and ts - prev[0] == step and px > 0 and prev[1] > 0:
            rets.append(math.log(px / prev[1]))
        prev = (ts, px)
    if len(rets) < 2:
        raise ValueError("too few consecutive returns")
    minutes = step.total_seconds() / 60
    return statistics.stdev(rets) / math.sqrt(minutes), len(rets)


def _minute_last(ticks: Iterable[tuple[datetime, float]]) -> Iterator[tuple[datetime, float]]:
    """The last price of each minute (labelled by the minute's start)."""
    cur: datetime | None = None
    last = 0.0
    for ts, px in ticks:
        m = ts.replace(second=0, microsecond=0)
        if cur is not None and m != cur:
            yield cur, last
        cur, last = m, px
    if cur is not None:
        yield cur, last


def _spread_bps(pairs: Iterable[tuple[float, float]]) -> tuple[float, int]:
    bps = [(a - b) / ((a + b) / 2) * 10_000 for b, a in pairs if a > 0 and b > 0 and a >= b]
    if not bps:
        raise ValueError("no bid/ask pairs")
    return statistics.median(bps), len(bps)


# ------------------------------------------------------------------------------------------------ readers


def _fxcm(data: Path, stem: str) -> tuple[Estimate, Estimate]:
    """FXCM m1 bid and ask files: mid close per minute (vol) and close spread (bps)."""
    bid = {r[0]: float(r[4]) for r in _rows(data / f"{stem.replace('{side}', 'bid')}")}
    ask = {r[0]: float(r[4]) for r in _rows(data / f"{stem.replace('{side}', 'ask')}")}
    keys = sorted(k for k in bid if k in ask)
    mids = ((datetime.fromisoformat(k), (bid[k] + ask[k]) / 2) for k in keys)
    vol, n = _vol(mids, timedelta(minutes=1))
    spread, m = _spread_bps((bid[k], ask[k]) for k in keys)
    src = stem.replace("{side}", "bid|ask")
    return (Estimate(vol, n, src, "m1 mid close, consecutive minutes"), Estimate(spread, m, src, "median close spread"))


def _ohlc(
    data: Path,
    rel: str,
    step: timedelta,
    fmt: str,
    delimiter: str = ",",
    close_col: int = 4,
    method: str = "",
    time_col: int | None = None,
) -> Estimate:
    """Bar closes; ``time_col`` when the date and the time are separate columns (then close_col counts both)."""
    rows = _rows(data / rel, delimiter)
    series = (
        (datetime.strptime(r[0].strip() if time_col is None else f"{r[0]} {r[time_col]}", fmt), float(r[close_col]))
        for r in rows
    )
    vol, n = _vol(series, step)
    return Estimate(vol, n, rel, method or f"{int(step.total_seconds() // 60)}-minute closes, /sqrt(minutes)")


def _daily(data: Path, rel: str) -> Estimate:
    """Daily adjusted closes (Yahoo): consecutive trading days, scaled by sqrt(390) cash-session minutes."""
    closes = [float(r[5]) for r in _rows(data / rel)]
    rets = [math.log(b / a) for a, b in itertools.pairwise(closes) if a > 0 and b > 0]
    return Estimate(
        statistics.stdev(rets) / math.sqrt(390),
        len(rets),
        rel,
        "daily adj. close returns / sqrt(390) (includes overnight moves)",
    )


def _histdata_ticks(data: Path, rel: str) -> tuple[Estimate, Estimate]:
    """HistData ticks ``YYYYMMDD HHMMSSfff,bid,ask,vol`` (EST, fixed UTC-5)."""
    est = timezone(timedelta(hours=-5))
    ticks: list[tuple[datetime, float, float]] = []
    for r in _rows(data / rel, header=False):
        ts = datetime.strptime(r[0][:15], "%Y%m%d %H%M%S").replace(tzinfo=est)
        ticks.append((ts, float(r[1]), float(r[2])))
    vol, n = _vol(_minute_last((t, (b + a) / 2) for t, b, a in ticks), timedelta(minutes=1))
    spread, m = _spread_bps((b, a) for _, b, a in ticks)
    return (Estimate(vol, n, rel, "ticks -> last mid per minute"), Estimate(spread, m, rel, "median tick spread"))


def _dukascopy_ticks(data: Path, rel: str) -> tuple[Estimate, Estimate]:
    """Dukascopy-style ticks ``DD.MM.YYYY HH:MM:SS.fff GMT+0300,Ask,Bid,...``."""
    ticks: list[tuple[datetime, float, float]] = []
    for r in _rows(data / rel):
        stamp, off = r[0].rsplit(" GMT", 1)
        tz = timezone(timedelta(hours=int(off[:3]), minutes=int(off[0] + off[3:5])))
        ts = datetime.strptime(stamp, "%d.%m.%Y %H:%M:%S.%f").replace(tzinfo=tz).astimezone(UTC)
        ticks.append((ts, float(r[2]), float(r[1])))
    vol, n = _vol(_minute_last((t, (b + a) / 2) for t, b, a in ticks), timedelta(minutes=1))
    spread, m = _spread_bps((b, a) for _, b, a in ticks)
    return (Estimate(vol, n, rel, "ticks -> last mid per minute"), Estimate(spread, m, rel, "median tick spread"))


# ------------------------------------------------------------------------------------------------ proxies

# symbol -> (proxy symbol, vol factor, spread factor, why). Applied to the proxy's calibrated values.
PROXIES: dict[str, tuple[str, float, float, str]] = {
    "AUDUSD": ("GBPUSD", 1.0, 1.5, "no AUDUSD file; a USD major of similar volatility, wider spread than cable"),
    "NZDUSD": ("GBPUSD", 1.0, 2.0, "no NZDUSD file; a USD major of similar volatility, less liquid"),
    "USDCAD": ("GBPUSD", 0.9, 1.5, "no USDCAD file; a USD major slightly calmer than cable"),
    "USDCHF": ("GBPUSD", 1.0, 1.5, "no USDCHF file; a USD major of similar volatility"),
    "EURGBP": ("GBPUSD", 0.6, 1.5, "no EURGBP file; a cross of two correlated majors moves less than either"),
    "EURJPY": ("USDJPY", 1.1, 1.5, "no EURJPY file; a yen cross, a little more volatile than USDJPY"),
    "GBPJPY": ("USDJPY", 1.4, 2.5, "no GBPJPY file; the most volatile yen cross, wider spread"),
    "XAGUSD": ("XAUUSD", 1.6, 2.0, "no silver file; silver is about 1.6x as volatile as gold"),
    "WTIUSD": ("XAUUSD", 1.8, 1.5, "no crude file; WTI is roughly 1.8x as volatile as gold"),
    "US100": ("US500", 1.25, 1.0, "no Nasdaq-100 file; more volatile than the S&P 500"),
    "US30": ("US500", 0.9, 1.0, "no Dow file; slightly calmer than the S&P 500"),
    "MSFT": ("AAPL", 1.0, 1.0, "no MSFT file; a mega-cap of similar volatility"),
    "AMZN": ("AAPL", 1.1, 1.0, "no AMZN file; a mega-cap a little more volatile"),
    "TSLA": ("NVDA", 1.0, 1.5, "no TSLA file; a high-volatility growth name like NVDA"),
    "ETHUSD": ("BTCUSD", 1.25, 1.5, "no ETH file; ether is about 1.25x as volatile as bitcoin"),
}

# Spreads assumed where no file holds both bid and ask for the instrument (bps of mid).
ASSUMED_SPREAD_BPS: dict[str, tuple[float, str]] = {
    "XAUUSD": (1.5, "H4 bars have no bid/ask; about $0.35 on $2,350, a typical retail gold spread"),
    "AAPL": (1.5, "M15 bars have no bid/ask; a typical retail CFD spread on a mega-cap"),
    "NVDA": (2.0, "daily bars have no bid/ask; a typical retail CFD spread"),
    "BTCUSD": (3.0, "the Binance quotes are parquet (needs pyarrow, not a dependency); a typical CFD spread"),
}


def calibrate(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """Compute the calibration from the files under ``data_dir``; returns the JSON-ready document."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"market data directory not found: {d}")
    vols: dict[str, Estimate] = {}
    spreads: dict[str, Estimate] = {}

    vols["GBPUSD"], spreads["GBPUSD"] = _fxcm(d, "nautilus_trader/fxcm/gbpusd-m1-{side}-2012.csv")
    vols["USDJPY"], spreads["USDJPY"] = _fxcm(d, "nautilus_trader/fxcm/usdjpy-m1-{side}-2013.csv")
    vols["EURUSD"] = _ohlc(
        d,
        "nautilus_trader/xcme/6EH4.XCME_1min_bars_20240101_20240131.csv.gz",
        timedelta(minutes=1),
        "%Y-%m-%d %H:%M:%S",
        method="CME 6E future m1 closes (EUR/USD), consecutive minutes",
    )
    _, spreads["EURUSD"] = _histdata_ticks(d, "nautilus_trader/quote_tick_data.csv")
    us500_holiday_vol, spreads["US500"] = _dukascopy_ticks(d, "snowguru/USA500.IDXUSD_Ticks_04.09.2023-04.09.2023.csv")
    vols["US500"] = _ohlc(
        d,
        "backtrader/2006-min-005.txt",
        timedelta(minutes=5),
        "%Y-%m-%d %H:%M:%S",
        close_col=5,
        time_col=1,
        method="5-minute index closes (2006, Euro Stoxx 50-like), /sqrt(5); the only S&P 500 "
        "file is one US holiday (Labor Day 2023, cash market shut) whose minute vol "
        f"{us500_holiday_vol.value * 1e4:.2f} bps understates a normal session",
    )
    vols["XAUUSD"] = _ohlc(d, "snowguru/XAUUSD_H4.csv", timedelta(hours=4), "%Y-%m-%d %H:%M:%S", "\t")
    vols["AAPL"] = _ohlc(d, "snowguru/AAPLUSUSD_M15.csv", timedelta(minutes=15), "%Y-%m-%d %H:%M:%S", "\t")
    vols["NVDA"] = _daily(d, "backtrader/nvda-1999-2014.txt")
    vols["BTCUSD"] = _ohlc(
        d,
        "nautilus_trader/btc-perp-20211231-20220201_1m.csv",
        timedelta(minutes=1),
        "%Y-%m-%d %H:%M:%S.%f",
        method="FTX BTC-PERP m1 closes, consecutive minutes",
    )

    out: dict[str, dict[str, Any]] = {}
    for sym, v in vols.items():
        s = spreads.get(sym)
        if s is not None:
            spread_bps, spread_src, spread_n = s.value, s.source, s.n
            spread_note = s.method
        else:
            spread_bps, spread_note = ASSUMED_SPREAD_BPS[sym]
            spread_src, spread_n = "assumed", 0
        out[sym] = {
            "vol_per_min": _sig(v.value),
            "vol_source": v.source,
            "vol_n": v.n,
            "vol_method": v.method,
            "spread_bps": _sig(spread_bps, 4),
            "spread_source": spread_src,
            "spread_n": spread_n,
            "spread_method": spread_note,
            "proxy": None,
        }
    for sym, (proxy, vf, sf, why) in PROXIES.items():
        base = out[proxy]
        out[sym] = {
            "vol_per_min": _sig(base["vol_per_min"] * vf),
            "vol_source": f"proxy {proxy} x{vf:g}",
            "vol_n": 0,
            "vol_method": why,
            "spread_bps": _sig(base["spread_bps"] * sf, 4),
            "spread_source": f"proxy {proxy} x{sf:g}",
            "spread_n": 0,
            "spread_method": why,
            "proxy": proxy,
        }
    return {
        "generated_by": "propdesk feed calibrate",
        "data": "../shared/data/market (see SOURCES.md)",
        "jumps": JUMPS,
        "instruments": dict(sorted(out.items())),
    }


def write_calibration(doc: dict[str, Any], path: Path = CALIBRATION_PATH) -> Path:
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_calibration(path: Path | None = None) -> dict[str, Any]:
    """The committed calibration (no shared data needed at run time)."""
    p = path or CALIBRATION_PATH
    doc: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return doc


def markdown_table(doc: dict[str, Any]) -> str:
    """The calibration as a Markdown table (for docs/MARKET_DATA.md)."""
    lines = [
        "| Instrument | Volatility source | Returns (n) | Vol / minute | Vol / minute (bps) | Spread source "
        "| Quotes (n) | Median spread (bps) | Proxy / note |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for sym, c in doc["instruments"].items():
        notes = [c["vol_method"]] if c["proxy"] or "understates" in c["vol_method"] else []
        if c["spread_source"] == "assumed":
            notes.append("spread assumed: " + c["spread_method"])
        note = "; ".join(notes)
        lines.append(
            f"| {sym} | {c['vol_source']} | {c['vol_n'] or '-'} | {c['vol_per_min']:.3g} "
            f"| {c['vol_per_min'] * 1e4:.2f} | {c['spread_source']} | {c['spread_n'] or '-'} "
            f"| {c['spread_bps']:.3g} | {note} |"
        )
    return "\n".join(lines)
