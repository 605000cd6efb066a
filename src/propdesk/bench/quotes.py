"""``propdesk bench quotes``: ingest replayed ticks into the quote store and candles vs parsing the same file alone.

Our path, per tick of a replay file: parse it into a ``Quote`` (``ReplayProvider``), ``QuoteStore.put`` (in
memory: out-of-order and duplicate ticks dropped and counted, sequence assigned), a staleness check (the gap since
the symbol's previous accepted tick against the asset class's threshold: a gap means the feed was stale), and for
accepted ticks ``CandleAggregator.add`` (minute candles on mid).
The limit: parsing alone of the same ticks of the same file (the same reader, consumed into a list).

Data: the first T ticks of a real shared file when ``../shared/data/market`` is present (HistData EURUSD ticks,
then the FXCM GBPUSD bid/ask minute bars expanded into ticks when T is larger), else the shipped fixture.
Cost per tick for ``ratio_to_limit``: one timer around each whole run over T ticks; trials interleaved (path,
limit, ...), medians over trials. Latency per tick: per-tick ``perf_counter_ns`` samples of the ingest step.
``correct``: accepted + dropped == parsed, and on a sample of minutes the candles' open/high/low/close and tick
counts equal a slow reference computed directly from the parsed ticks (keeping a tick when it is not older than
the symbol's newest kept tick, as the store does).
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..domain.instruments import DEFAULT_CATALOGUE, AssetClass
from ..domain.quotes import Quote
from ..marketdata.candles import CandleAggregator, minute_of
from ..marketdata.providers.replay import ReplayProvider
from ..marketdata.store import QuoteStore
from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "market"
STALE_AFTER_S = {
    AssetClass.FOREX: 30.0,
    AssetClass.METAL: 30.0,
    AssetClass.ENERGY: 30.0,
    AssetClass.INDEX: 30.0,
    AssetClass.EQUITY: 60.0,
    AssetClass.CRYPTO: 30.0,
}


def shared_market_dir() -> Path | None:
    """``/work/shared/data/market`` or ``../shared/data/market`` relative to the repository, if present."""
    for d in (
        os.environ.get("PROPDESK_MARKET_DATA"),
        REPO.parent / "shared" / "data" / "market",
        Path("/work/shared/data/market"),
    ):
        if d and Path(d).is_dir():
            return Path(d)
    return None


def sources(ticks: int) -> tuple[list[Path], str, str]:
    """(files, symbol, label) of the data to replay: a real shared file with enough ticks when present."""
    base = shared_market_dir()
    if base is not None:
        hist = base / "nautilus_trader" / "quote_tick_data.csv"
        fxcm = base / "nautilus_trader" / "fxcm" / "gbpusd-m1-bid-2012.csv"
        if hist.is_file() and (ticks <= 9500 or not fxcm.is_file()):
            return [hist], "EURUSD", "shared:nautilus_trader/quote_tick_data.csv (HistData EURUSD ticks)"
        if fxcm.is_file():
            return [fxcm], "GBPUSD", "shared:nautilus_trader/fxcm/gbpusd-m1-{bid,ask}-2012.csv (bars -> ticks)"
    return [FIXTURES / "histdata_eurusd_ticks.csv"], "EURUSD", "fixture:histdata_eurusd_ticks.csv"


def _take(files: list[Path], symbol: str, n: int) -> Iterator[Quote]:
    return itertools.islice(ReplayProvider(files, symbol=symbol).quotes(), n)


def parse_only(files: list[Path], symbol: str, n: int) -> list[Quote]:
    return list(_take(files, symbol, n))


class Ingest:
    """The path's state: a fresh in-memory store and aggregator per run."""

    def __init__(self) -> None:
        self.store = QuoteStore(db=None)
        self.candles = CandleAggregator()
        self.stale_gaps = 0
        self._last: dict[str, datetime] = {}
        self._stale: dict[str, timedelta] = {}

    def on_tick(self, q: Quote) -> Quote | None:
        stored = self.store.put(q)
        if stored is None:
            return None
        sym = q.symbol
        limit = self._stale.get(sym)
        if limit is None:
            inst = DEFAULT_CATALOGUE.get(sym)
            limit = timedelta(seconds=STALE_AFTER_S.get(inst.asset_class, 30.0) if inst else 30.0)
            self._stale[sym] = limit
        prev = self._last.get(sym)
        if prev is not None and q.ts - prev > limit:
            self.stale_gaps += 1
        self._last[sym] = q.ts
        self.candles.add(stored)
        return stored

    @property
    def dropped(self) -> int:
        s = self.store.stats
        return s.dropped_out_of_order + s.dropped_duplicate


def run_path(files: list[Path], symbol: str, n: int) -> tuple[Ingest, int]:
    ing = Ingest()
    parsed = 0
    on_tick = ing.on_tick
    for q in _take(files, symbol, n):
        parsed += 1
        on_tick(q)
    return ing, parsed


def _latencies(files: list[Path], symbol: str, n: int) -> list[int]:
    ing = Ingest()
    out: list[int] = []
    clock = time.perf_counter_ns
    it = _take(files, symbol, n)
    while True:
        t0 = clock()
        q = next(it, None)
        if q is None:
            break
        ing.on_tick(q)
        out.append(clock() - t0)
    return out


def reference_candles(parsed: list[Quote], minutes: set[datetime]) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    """(open, high, low, close, ticks) per (symbol, minute) straight from the parsed ticks."""
    newest: dict[str, datetime] = {}
    prev: dict[str, Quote] = {}
    ref: dict[tuple[str, datetime], list[Any]] = {}
    for q in parsed:
        if q.symbol in newest and q.ts < newest[q.symbol]:
            continue
        p = prev.get(q.symbol)
        if p is not None and p.ts == q.ts and p.bid == q.bid and p.ask == q.ask:
            continue  # duplicate
        newest[q.symbol] = q.ts
        prev[q.symbol] = q
        m = minute_of(q.ts)
        if m not in minutes:
            continue
        mid = (q.bid + q.ask) / Decimal(2)
        r = ref.get((q.symbol, m))
        if r is None:
            ref[(q.symbol, m)] = [mid, mid, mid, mid, 1]
        else:
            r[1], r[2], r[3], r[4] = max(r[1], mid), min(r[2], mid), mid, r[4] + 1
    return {k: tuple(v) for k, v in ref.items()}


def run(
    *, ticks: int = 9000, trials: int = 5, sample: int = 200, seed: int = 42, progress: ProgressFn = no_progress
) -> BenchResult:
    files, symbol, label = sources(ticks)
    problems: list[str] = []

    # Correctness (also warms both up).
    parsed = parse_only(files, symbol, ticks)
    ing, n_path = run_path(files, symbol, ticks)
    st = ing.store.stats
    if n_path != len(parsed):
        problems.append(f"path parsed {n_path} ticks, parsing alone {len(parsed)}")
    if st.accepted + ing.dropped != len(parsed):
        problems.append(f"accepted {st.accepted} + dropped {ing.dropped} != parsed {len(parsed)}")
    all_minutes = sorted({minute_of(q.ts) for q in parsed})
    rng = random.Random(seed)
    chosen = set(rng.sample(all_minutes, min(sample, len(all_minutes))))
    ref = reference_candles(parsed, chosen)
    mismatches = 0
    for (sym, m), want in ref.items():
        c = ing.candles.candle(sym, m)
        got = (c.open, c.high, c.low, c.close, c.ticks) if c is not None else None
        if got != want:
            mismatches += 1
            if len(problems) < 10:
                problems.append(f"candle {sym} {m.isoformat()}: path {got}, reference {want}")
    progress("quotes: checked", 0.1)

    path_trials: list[dict[str, float]] = []
    limit_trials: list[dict[str, float]] = []
    n = max(1, len(parsed))
    for _ in range(trials):
        gc.collect()
        t0 = time.perf_counter_ns()
        run_path(files, symbol, ticks)
        dt = time.perf_counter_ns() - t0
        lat = _latencies(files, symbol, ticks)
        path_trials.append({**latency_summary(lat), "ns_per_tick": dt / n})
        gc.collect()
        t0 = time.perf_counter_ns()
        parse_only(files, symbol, ticks)
        dt = time.perf_counter_ns() - t0
        limit_trials.append({"ns_per_tick": dt / n})
        progress("quotes: timing", 0.9 / trials)

    p_ns, l_ns = median_of(path_trials, "ns_per_tick"), median_of(limit_trials, "ns_per_tick")
    metrics = {
        "latency_us_p50": median_of(path_trials, "latency_us_p50"),
        "latency_us_p99": median_of(path_trials, "latency_us_p99"),
        "latency_us_max": median_of(path_trials, "latency_us_max"),
        "throughput_per_s": round(1e9 / p_ns, 1) if p_ns else 0.0,
        "ticks_per_s": round(1e9 / p_ns, 1) if p_ns else 0.0,
        "ns_per_tick": p_ns,
        "ticks_parsed": len(parsed),
        "ticks_accepted": st.accepted,
        "dropped_out_of_order": st.dropped_out_of_order,
        "dropped_duplicate": st.dropped_duplicate,
        "stale_gaps": ing.stale_gaps,
        "candles": len(ing.candles.candles(symbol)),
        "sample_minutes": len(ref),
        "candle_mismatches": mismatches,
    }
    limit = {
        "ticks_per_s": round(1e9 / l_ns, 1) if l_ns else 0.0,
        "throughput_per_s": round(1e9 / l_ns, 1) if l_ns else 0.0,
        "ns_per_tick": l_ns,
    }
    correct = not problems and mismatches == 0 and len(parsed) > 0 and len(ref) > 0
    return BenchResult(
        "quotes",
        {"ticks": ticks, "trials": trials, "sample": sample, "seed": seed, "data": label, "symbol": symbol},
        metrics,
        limit,
        round(p_ns / l_ns, 3) if l_ns else 0.0,
        correct,
        machine_info(),
        problems,
    )
