"""The simulated provider: determinism, quantization, sessions (incl. DST), weekend demo, volatility, jumps."""

from __future__ import annotations

import itertools
import math
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propdesk.clock import ManualClock
from propdesk.domain.instruments import DEFAULT_CATALOGUE, AssetClass
from propdesk.marketdata.calibration import (
    CALIBRATION_PATH,
    DEFAULT_DATA_DIR,
    calibrate,
    load_calibration,
)
from propdesk.marketdata.providers.base import QuoteProvider
from propdesk.marketdata.providers.simulated import (
    DEMO_SOURCE,
    SOURCE,
    SimulatedProvider,
    in_session,
)

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def provider(symbols: list[str], seed: int = 7, start: datetime | None = None, **kw: object) -> SimulatedProvider:
    clock = ManualClock(start or ny(2024, 7, 10, 12, 0))
    return SimulatedProvider(DEFAULT_CATALOGUE, clock, seed=seed, symbols=symbols, **kw)  # type: ignore[arg-type]


def run(p: SimulatedProvider, start: datetime, steps: int, dt_s: float) -> list:
    out = []
    for k in range(steps):
        out.extend(p.step(start + timedelta(seconds=k * dt_s)))
    return out


MONDAY_NOON = ny(2024, 7, 8, 12, 0)


def test_is_a_quote_provider() -> None:
    p: QuoteProvider = provider(["EURUSD"])
    assert p.name == SOURCE


def test_same_seed_same_quotes_and_other_seed_differs() -> None:
    syms = ["EURUSD", "XAUUSD", "AAPL", "BTCUSD"]
    a = run(provider(syms, seed=11), MONDAY_NOON, 300, 1.0)
    b = run(provider(syms, seed=11), MONDAY_NOON, 300, 1.0)
    c = run(provider(syms, seed=12), MONDAY_NOON, 300, 1.0)
    assert a == b
    assert len(a) == 4 * 300
    assert [q.bid for q in a] != [q.bid for q in c]


def test_a_symbol_path_does_not_depend_on_the_other_symbols() -> None:
    alone = run(provider(["EURUSD"]), MONDAY_NOON, 200, 1.0)
    mixed = [q for q in run(provider(["BTCUSD", "EURUSD", "US500"]), MONDAY_NOON, 200, 1.0) if q.symbol == "EURUSD"]
    assert alone == mixed


def test_seq_increases_and_a_repeated_time_emits_nothing() -> None:
    p = provider(["EURUSD"])
    first = p.step(MONDAY_NOON)
    assert p.step(MONDAY_NOON) == []
    assert p.step(MONDAY_NOON - timedelta(seconds=1)) == []
    second = p.step(MONDAY_NOON + timedelta(seconds=1))
    assert [q.seq for q in first + second] == [1, 2]
    assert second[0].ts == (MONDAY_NOON + timedelta(seconds=1)).astimezone(UTC)


@settings(max_examples=300, deadline=None)
@given(sym=st.sampled_from(DEFAULT_CATALOGUE.symbols()), mid=st.floats(1e-3, 1e6), spread_bps=st.floats(0.0, 500.0))
def test_quantized_quotes_have_precision_and_positive_spread(sym: str, mid: float, spread_bps: float) -> None:
    inst = DEFAULT_CATALOGUE.get(sym)
    assert inst is not None
    bid, ask = SimulatedProvider.quantize(inst, mid, spread_bps)
    assert ask > bid > 0
    assert ask - bid >= inst.tick_size
    assert bid.as_tuple().exponent == -inst.price_precision
    assert ask.as_tuple().exponent == -inst.price_precision
    assert bid % inst.tick_size == 0 and ask % inst.tick_size == 0
    expected = mid * spread_bps / 10_000
    assert float(ask - bid) <= max(float(inst.tick_size), expected + float(inst.tick_size) / 2 + 1e-12)


def test_every_quote_of_a_long_path_is_well_formed() -> None:
    syms = DEFAULT_CATALOGUE.symbols()
    quotes = run(provider(syms, weekend_demo=True), MONDAY_NOON, 2000, 5.0)
    assert {q.symbol for q in quotes} == set(syms)
    for q in quotes:
        inst = DEFAULT_CATALOGUE.get(q.symbol)
        assert inst is not None
        assert q.ask > q.bid > 0
        assert q.bid.as_tuple().exponent == -inst.price_precision
        assert q.source == DEMO_SOURCE


def test_median_spread_matches_the_calibration() -> None:
    cal = load_calibration()["instruments"]
    for sym in ["GBPUSD", "BTCUSD", "XAUUSD"]:
        quotes = run(provider([sym], weekend_demo=True), MONDAY_NOON, 3000, 1.0)
        bps = statistics.median(float((q.ask - q.bid) / q.mid) * 10_000 for q in quotes)
        assert bps == pytest.approx(cal[sym]["spread_bps"], rel=0.15), sym


# --------------------------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    ("when", "cls", "is_open"),
    [
        # FX week: Sunday 17:00 New York (open, inclusive) to Friday 17:00 (closed, exclusive)
        (ny(2024, 7, 7, 16, 59, 59), AssetClass.FOREX, False),
        (ny(2024, 7, 7, 17, 0, 0), AssetClass.FOREX, True),
        (ny(2024, 7, 12, 16, 59, 59), AssetClass.FOREX, True),
        (ny(2024, 7, 12, 17, 0, 0), AssetClass.FOREX, False),
        (ny(2024, 7, 13, 12, 0), AssetClass.METAL, False),
        (ny(2024, 7, 10, 2, 0), AssetClass.ENERGY, True),
        # US cash session 09:30-16:00 New York
        (ny(2024, 7, 8, 9, 29, 59), AssetClass.EQUITY, False),
        (ny(2024, 7, 8, 9, 30, 0), AssetClass.EQUITY, True),
        (ny(2024, 7, 8, 15, 59, 59), AssetClass.EQUITY, True),
        (ny(2024, 7, 8, 16, 0, 0), AssetClass.EQUITY, False),
        # index CFDs follow the CME futures (24/5 here), not the cash session
        (ny(2024, 7, 8, 16, 0, 0), AssetClass.INDEX, True),
        (ny(2024, 7, 8, 5, 0, 0), AssetClass.INDEX, True),
        (ny(2024, 7, 13, 12, 0), AssetClass.INDEX, False),
        (ny(2024, 7, 13, 11, 0), AssetClass.EQUITY, False),
        (ny(2024, 7, 7, 3, 0), AssetClass.CRYPTO, True),
    ],
)
def test_session_boundaries(when: datetime, cls: AssetClass, is_open: bool) -> None:
    assert in_session(cls, when) is is_open


@pytest.mark.parametrize(
    ("utc", "cls", "is_open"),
    [
        # summer (EDT, UTC-4): the cash open is 13:30 UTC
        (datetime(2024, 7, 8, 13, 29, 59, tzinfo=UTC), AssetClass.EQUITY, False),
        (datetime(2024, 7, 8, 13, 30, tzinfo=UTC), AssetClass.EQUITY, True),
        (datetime(2024, 7, 8, 20, 0, tzinfo=UTC), AssetClass.EQUITY, False),
        # winter (EST, UTC-5): the cash open is 14:30 UTC
        (datetime(2024, 1, 8, 13, 30, tzinfo=UTC), AssetClass.EQUITY, False),
        (datetime(2024, 1, 8, 14, 30, tzinfo=UTC), AssetClass.EQUITY, True),
        (datetime(2024, 1, 8, 20, 59, 59, tzinfo=UTC), AssetClass.EQUITY, True),
        # DST starts on Sunday 2024-03-10: FX opens at 17:00 EDT = 21:00 UTC
        (datetime(2024, 3, 10, 20, 59, 59, tzinfo=UTC), AssetClass.FOREX, False),
        (datetime(2024, 3, 10, 21, 0, tzinfo=UTC), AssetClass.FOREX, True),
        # DST ends on Sunday 2024-11-03: FX opens at 17:00 EST = 22:00 UTC
        (datetime(2024, 11, 3, 21, 59, 59, tzinfo=UTC), AssetClass.FOREX, False),
        (datetime(2024, 11, 3, 22, 0, tzinfo=UTC), AssetClass.FOREX, True),
        # Friday close in winter: 22:00 UTC
        (datetime(2024, 11, 8, 21, 59, 59, tzinfo=UTC), AssetClass.FOREX, True),
        (datetime(2024, 11, 8, 22, 0, tzinfo=UTC), AssetClass.FOREX, False),
    ],
)
def test_session_boundaries_across_dst(utc: datetime, cls: AssetClass, is_open: bool) -> None:
    assert in_session(cls, utc) is is_open


def test_crypto_quotes_at_3am_sunday_and_the_rest_is_quiet() -> None:
    sunday_3am = ny(2024, 7, 7, 3, 0)
    p = provider(["EURUSD", "XAUUSD", "AAPL", "US500", "BTCUSD", "ETHUSD"], start=sunday_3am)
    quotes = run(p, sunday_3am, 10, 1.0)
    assert {q.symbol for q in quotes} == {"BTCUSD", "ETHUSD"}
    assert all(q.source == SOURCE for q in quotes)


def test_weekend_demo_runs_fx_through_the_weekend_and_is_labelled() -> None:
    sunday_3am = ny(2024, 7, 7, 3, 0)
    p = provider(["EURUSD", "XAUUSD", "AAPL", "BTCUSD"], start=sunday_3am, weekend_demo=True)
    assert p.name == DEMO_SOURCE
    quotes = run(p, sunday_3am, 10, 1.0)
    assert {q.symbol for q in quotes} == {"EURUSD", "XAUUSD", "BTCUSD"}  # equities stay quiet
    assert all(q.source == DEMO_SOURCE for q in quotes)


def test_fx_goes_quiet_at_the_friday_close_and_resumes_sunday_with_a_gap() -> None:
    p = provider(["EURUSD"])
    before = p.step(ny(2024, 7, 12, 16, 59, 59))
    assert p.step(ny(2024, 7, 12, 17, 0)) == []
    assert p.step(ny(2024, 7, 13, 12, 0)) == []
    after = p.step(ny(2024, 7, 14, 17, 0))
    assert len(before) == 1 and len(after) == 1
    assert after[0].seq == before[0].seq + 1
    assert after[0].bid != before[0].bid  # the weekend gap moved the price


def test_quotes_loop_uses_the_clock_and_stops() -> None:
    clock = ManualClock(MONDAY_NOON)
    p = SimulatedProvider(DEFAULT_CATALOGUE, clock, seed=3, interval_s=0.01, symbols=["EURUSD", "BTCUSD"])
    gen = p.quotes()
    first = [next(gen), next(gen)]
    assert {q.symbol for q in first} == {"EURUSD", "BTCUSD"}
    assert all(q.ts == MONDAY_NOON.astimezone(UTC) for q in first)
    p.stop()
    assert list(gen) == []


def test_unknown_symbol_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown symbol"):
        provider(["NOPE"])


# ------------------------------------------------------------------------------------- volatility, jumps


@pytest.mark.parametrize("sym", ["EURUSD", "BTCUSD", "AAPL"])
def test_realized_volatility_matches_the_calibration(sym: str) -> None:
    """Diffusion plus jumps reproduce the calibrated per-minute variance (one-minute steps, 20,000 of them)."""
    target = load_calibration()["instruments"][sym]["vol_per_min"]
    p = provider([sym], seed=5, interval_s=60.0)
    t = ny(2024, 7, 8, 9, 30)
    rets: list[float] = []
    prev: tuple[datetime, float] | None = None
    while len(rets) < 20_000:
        if p.step(t):
            cur = (t, math.log(p.mid(sym)))
            if prev is not None and cur[0] - prev[0] == timedelta(minutes=1):  # in-session minutes only
                rets.append(cur[1] - prev[1])
            prev = cur
        t += timedelta(minutes=1)
    assert statistics.pstdev(rets) == pytest.approx(target, rel=0.06)


def test_interval_scaling_of_volatility() -> None:
    """At one-second ticks the per-step volatility is the per-minute one / sqrt(60)."""
    target = load_calibration()["instruments"]["BTCUSD"]["vol_per_min"] / math.sqrt(60)
    p = provider(["BTCUSD"], seed=9, interval_s=1.0)
    mids = []
    for k in range(30_000):
        p.step(MONDAY_NOON + timedelta(seconds=k))
        mids.append(math.log(p.mid("BTCUSD")))
    rets = [b - a for a, b in itertools.pairwise(mids)]
    assert statistics.pstdev(rets) == pytest.approx(target, rel=0.08)


def test_jumps_occur_at_the_seeded_rate_and_are_large() -> None:
    jumps_cfg = load_calibration()["jumps"]
    vol = load_calibration()["instruments"]["BTCUSD"]["vol_per_min"]
    minutes = 40_000
    total = 0
    big = 0
    for seed in range(3):
        p = provider(["BTCUSD"], seed=seed, interval_s=60.0)
        prev = math.log(p.mid("BTCUSD"))
        for k in range(minutes):
            p.step(MONDAY_NOON + timedelta(minutes=k))
            cur = math.log(p.mid("BTCUSD"))
            big += abs(cur - prev) > 2.9 * vol
            prev = cur
        total += p.jump_count("BTCUSD")
    expected = 3 * minutes * jumps_cfg["rate_per_day"] / 1440
    assert abs(total - expected) < 4 * math.sqrt(expected)
    assert big >= total * 0.8  # most jumps are visible as > ~3-sigma moves


# ------------------------------------------------------------------------------------------ calibration


def test_the_committed_calibration_covers_the_catalogue() -> None:
    cal = load_calibration()
    for inst in DEFAULT_CATALOGUE:
        entry = cal["instruments"][inst.symbol]
        assert 0 < entry["vol_per_min"] < 0.01
        assert 0 < entry["spread_bps"] < 50
        assert entry["proxy"] is None or entry["proxy"] in cal["instruments"]


@pytest.mark.skipif(not DEFAULT_DATA_DIR.is_dir(), reason="shared market data not present")
def test_the_committed_calibration_is_what_the_data_gives() -> None:
    assert calibrate(DEFAULT_DATA_DIR) == load_calibration(CALIBRATION_PATH)


def test_start_prices_are_honoured() -> None:
    p = provider(["EURUSD"], start_prices={"EURUSD": Decimal("1.20000")})
    q = p.step(MONDAY_NOON)[0]
    assert Decimal("1.1999") < q.mid < Decimal("1.2001")
