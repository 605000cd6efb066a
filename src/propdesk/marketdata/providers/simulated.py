"""The simulated provider: the default price source (no key, no internet), calibrated from real data.

Per instrument a geometric random walk whose per-minute volatility and median spread come from
``marketdata/calibration.json`` (see docs/MARKET_DATA.md), plus occasional jumps (a seeded Poisson process, a
few sigma each) and session behaviour by asset class:

- forex, metals, energy, index CFDs: 24/5, Sunday 17:00 to Friday 17:00 New York (no daily breaks, no holidays
  here; index CFDs follow the CME futures, see sessions.py);
- equities: the US cash session 09:30-16:00 New York, Monday to Friday (no exchange holidays here);
- crypto: 24/7.

Out of session a symbol emits nothing. ``weekend_demo=True`` is a clearly labelled demo mode: the 24/5 group
(forex, metals, energy, indices) runs through the weekend, and every quote of such a provider says
``source="simulated-demo"``. Equities stay quiet outside their session even then, unless ``always_open=True``
(the demo's "every market open" setting, PROPDESK_DEMO_ALWAYS_OPEN), under which every symbol quotes at any hour
(also labelled ``simulated-demo``).

Deterministic: each symbol has its own RNG seeded from (seed, symbol), so a path does not depend on which other
symbols are simulated. ``step(now)`` returns the quotes for one tick time (tests drive it with any clock);
``quotes()`` loops on the clock and waits ``interval_s`` between ticks until ``stop()``.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ...domain.clock import Clock
from ...domain.instruments import AssetClass, Catalogue, Instrument
from ...domain.quotes import Quote
from ..calibration import load_calibration

NEW_YORK = ZoneInfo("America/New_York")
FX_ROLL = time(17, 0)
CASH_OPEN, CASH_CLOSE = time(9, 30), time(16, 0)
TWENTY_FOUR_FIVE = frozenset({AssetClass.FOREX, AssetClass.METAL, AssetClass.ENERGY, AssetClass.INDEX})
CASH_SESSION = frozenset({AssetClass.EQUITY})

SOURCE = "simulated"
DEMO_SOURCE = "simulated-demo"

# When a symbol resumes after a gap (market closed, feed paused), the price moves as if the gap had this fraction
# of an in-session period's variance: markets drift far less while closed, but a weekend gap is real.
GAP_VARIANCE_FACTOR = 0.1
SPREAD_NOISE = 0.2  # lognormal noise on the spread (median-preserving)
JUMP_SPREAD_WIDENING = 3.0  # a quote carrying a jump shows a wider spread

# Where a catalogue symbol has no calibration entry, its asset class borrows this instrument's.
CLASS_FALLBACK = {
    AssetClass.FOREX: "EURUSD",
    AssetClass.METAL: "XAUUSD",
    AssetClass.ENERGY: "WTIUSD",
    AssetClass.INDEX: "US500",
    AssetClass.EQUITY: "AAPL",
    AssetClass.CRYPTO: "BTCUSD",
}

DEFAULT_START_PRICES: dict[str, str] = {
    "EURUSD": "1.08000",
    "GBPUSD": "1.27000",
    "USDJPY": "150.000",
    "AUDUSD": "0.66000",
    "USDCAD": "1.36000",
    "USDCHF": "0.88000",
    "NZDUSD": "0.61000",
    "EURGBP": "0.85000",
    "EURJPY": "162.000",
    "GBPJPY": "190.500",
    "XAUUSD": "2350.00",
    "XAGUSD": "28.000",
    "WTIUSD": "78.00",
    "US500": "5200.00",
    "US100": "18200.00",
    "US30": "39000.00",
    "AAPL": "190.00",
    "MSFT": "420.00",
    "NVDA": "880.00",
    "AMZN": "180.00",
    "TSLA": "175.00",
    "BTCUSD": "65000.00",
    "ETHUSD": "3400.00",
}


def in_session(asset_class: AssetClass, when: datetime) -> bool:
    """Is a market of ``asset_class`` open at ``when`` (aware)? Boundaries: open inclusive, close exclusive."""
    if asset_class == AssetClass.CRYPTO:
        return True
    ny = when.astimezone(NEW_YORK)
    wd, t = ny.weekday(), ny.time()  # Monday = 0 ... Sunday = 6
    if asset_class in TWENTY_FOUR_FIVE:
        if wd == 5:
            return False
        if wd == 6:
            return t >= FX_ROLL
        if wd == 4:
            return t < FX_ROLL
        return True
    if asset_class in CASH_SESSION:
        return wd < 5 and CASH_OPEN <= t < CASH_CLOSE
    return False


@dataclass(frozen=True)
class SymbolParams:
    vol_per_min: float
    spread_bps: float
    jump_rate_per_min: float
    jump_min_sigmas: float
    jump_max_sigmas: float

    @property
    def diffusion_vol_per_min(self) -> float:
        """The Gaussian part, reduced so that diffusion plus jumps has the calibrated total variance."""
        a, b = self.jump_min_sigmas, self.jump_max_sigmas
        jump_var_share = self.jump_rate_per_min * (a * a + a * b + b * b) / 3  # E[U^2] for U ~ uniform(a, b)
        return self.vol_per_min * math.sqrt(max(0.0, 1.0 - jump_var_share))


@dataclass
class _State:
    rng: random.Random
    mid: float
    last_ts: datetime | None = None
    seq: int = 0
    jumps: int = 0
    steps: int = 0


def _symbol_seed(seed: int, symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{symbol}".encode()).digest()[:8], "big")


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method (lam is small here: jumps are rare)."""
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class SimulatedProvider:
    """Seeded, calibrated, session-aware simulated quotes (a QuoteProvider)."""

    def __init__(
        self,
        catalogue: Catalogue,
        clock: Clock,
        seed: int = 7,
        interval_s: float = 1.0,
        symbols: Iterable[str] | None = None,
        weekend_demo: bool = False,
        start_prices: Mapping[str, Decimal | str | float] | None = None,
        calibration: Mapping[str, Any] | None = None,
        always_open: bool = False,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.catalogue = catalogue
        self.clock = clock
        self.seed = seed
        self.interval_s = float(interval_s)
        self.weekend_demo = weekend_demo
        self.always_open = always_open
        self.name = DEMO_SOURCE if weekend_demo or always_open else SOURCE
        cal = dict(calibration) if calibration is not None else load_calibration()
        chosen = list(symbols) if symbols is not None else [i.symbol for i in catalogue if i.enabled]
        starts = dict(start_prices or {})
        self.instruments: dict[str, Instrument] = {}
        self.params: dict[str, SymbolParams] = {}
        self._state: dict[str, _State] = {}
        for sym in chosen:
            inst = catalogue.get(sym)
            if inst is None:
                raise ValueError(f"unknown symbol: {sym!r}")
            self.instruments[sym] = inst
            self.params[sym] = self._params_for(inst, cal)
            start = starts.get(sym, DEFAULT_START_PRICES.get(sym))
            if start is None:
                raise ValueError(f"no start price for {sym} (pass start_prices)")
            mid = float(start)
            if not mid > 0:
                raise ValueError(f"start price for {sym} must be positive")
            self._state[sym] = _State(random.Random(_symbol_seed(seed, sym)), mid)
        self._stop = threading.Event()

    @staticmethod
    def _params_for(inst: Instrument, cal: Mapping[str, Any]) -> SymbolParams:
        table = cal["instruments"]
        entry = table.get(inst.symbol) or table.get(CLASS_FALLBACK[inst.asset_class])
        if entry is None:
            raise ValueError(f"no calibration for {inst.symbol}")
        jumps = cal.get("jumps", {})
        return SymbolParams(
            float(entry["vol_per_min"]),
            float(entry["spread_bps"]),
            float(jumps.get("rate_per_day", 0.0)) / 1440.0,
            float(jumps.get("min_sigmas", 3.0)),
            float(jumps.get("max_sigmas", 6.0)),
        )

    # ---------------------------------------------------------------------------------------------- queries

    @property
    def symbols(self) -> list[str]:
        return list(self._state)

    def is_open(self, symbol: str, when: datetime) -> bool:
        """Does ``symbol`` quote at ``when`` in this provider (session, or the weekend demo for the 24/5 group)?"""
        cls = self.instruments[symbol].asset_class
        if self.always_open:
            return True
        if self.weekend_demo and cls in TWENTY_FOUR_FIVE:
            return True
        return in_session(cls, when)

    def mid(self, symbol: str) -> float:
        """The current unquantized mid of the walk."""
        return self._state[symbol].mid

    def shift(self, symbol: str, pct: float) -> None:
        """Move a symbol's walk by ``pct`` percent at once (the demo scripts use this to make P&L)."""
        self._state[symbol].mid *= 1 + pct / 100

    def jump_count(self, symbol: str) -> int:
        return self._state[symbol].jumps

    # ---------------------------------------------------------------------------------------------- ticking

    def step(self, now: datetime) -> list[Quote]:
        """Advance every open symbol to ``now`` and return one quote each (nothing for a closed symbol, nothing
        for a symbol already quoted at or after ``now``)."""
        if now.tzinfo is None:
            raise ValueError("step needs a timezone-aware time")
        now = now.astimezone(UTC)
        out: list[Quote] = []
        for sym, st in self._state.items():
            if not self.is_open(sym, now) or (st.last_ts is not None and now <= st.last_ts):
                continue
            out.append(self._advance(sym, st, now))
        return out

    def _advance(self, sym: str, st: _State, now: datetime) -> Quote:
        p = self.params[sym]
        n_jumps = 0
        if st.last_ts is not None:
            dt_min = (now - st.last_ts).total_seconds() / 60.0
            step_min = self.interval_s / 60.0
            if dt_min > 2 * step_min:  # a gap: closed market or paused feed
                dt_min = step_min + GAP_VARIANCE_FACTOR * (dt_min - step_min)
            r = st.rng.gauss(0.0, p.diffusion_vol_per_min * math.sqrt(dt_min))
            n_jumps = _poisson(st.rng, p.jump_rate_per_min * dt_min)
            for _ in range(n_jumps):
                size = st.rng.uniform(p.jump_min_sigmas, p.jump_max_sigmas) * p.vol_per_min
                r += size if st.rng.random() < 0.5 else -size
            st.mid *= math.exp(r)
            st.jumps += n_jumps
            st.steps += 1
        spread_bps = p.spread_bps * math.exp(st.rng.gauss(0.0, SPREAD_NOISE))
        if n_jumps:
            spread_bps *= JUMP_SPREAD_WIDENING
        st.last_ts = now
        st.seq += 1
        bid, ask = self.quantize(self.instruments[sym], st.mid, spread_bps)
        return Quote(sym, bid, ask, now, st.seq, self.name)

    @staticmethod
    def quantize(inst: Instrument, mid: float, spread_bps: float) -> tuple[Decimal, Decimal]:
        """Bid and ask on the instrument's tick grid at its precision; the spread is at least one tick."""
        tick = inst.tick_size
        tick_f = float(tick)
        n = max(1, round(mid * spread_bps / 10_000 / tick_f))
        bid_ticks = max(1, round(mid / tick_f - n / 2))
        q = Decimal(1).scaleb(-inst.price_precision)
        bid = (Decimal(bid_ticks) * tick).quantize(q)
        ask = (Decimal(bid_ticks + n) * tick).quantize(q)
        return bid, ask

    def quotes(self) -> Iterator[Quote]:
        """Quotes on the clock every ``interval_s`` until ``stop()``."""
        while not self._stop.is_set():
            yield from self.step(self.clock.now())
            if self._stop.wait(self.interval_s):
                break

    def stop(self) -> None:
        self._stop.set()
