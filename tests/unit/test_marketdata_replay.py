"""The replay provider: every supported format on the shipped fixtures, bar expansion, pacing, errors, real files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from propdesk.clock import ManualClock
from propdesk.marketdata.candles import CandleAggregator
from propdesk.marketdata.providers.replay import ReplayFormatError, ReplayProvider, detect, infer_symbol, read_bars
from propdesk.marketdata.store import QuoteStore

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "market"
REPO = Path(__file__).resolve().parents[2]


def _all(*names: str, symbol: str | None = None) -> list:
    return list(ReplayProvider([FIX / n for n in names], symbol=symbol).parsed())


def test_histdata_ticks_are_est_fixed_utc_minus_5() -> None:
    qs = _all("histdata_eurusd_ticks.csv", symbol="EURUSD")
    assert len(qs) == 40
    assert qs[0].ts == datetime(2020, 1, 1, 22, 0, 0, 65000, tzinfo=UTC)  # 20200101 170000065 EST
    assert (qs[0].bid, qs[0].ask) == (Decimal("1.121200"), Decimal("1.121720"))
    assert all(q.symbol == "EURUSD" and q.ts.tzinfo is UTC for q in qs)


def test_histdata_needs_a_symbol_when_the_name_has_none(tmp_path: Path) -> None:
    f = tmp_path / "quote_tick_data.csv"
    f.write_text((FIX / "histdata_eurusd_ticks.csv").read_text())
    with pytest.raises(ReplayFormatError, match="--symbol"):
        ReplayProvider([f])
    assert _all("histdata_eurusd_ticks.csv")[0].symbol == "EURUSD"  # inferred from the name


def test_timestamp_bid_ask_ticks_and_symbol_from_name() -> None:
    qs = _all("usdjpy-ticks.csv")
    assert len(qs) == 30 and qs[0].symbol == "USDJPY"
    assert qs[0].ts == datetime(2013, 1, 1, 22, 0, 0, 295000, tzinfo=UTC)


def test_dukascopy_ticks_local_time_with_offset_and_ask_before_bid() -> None:
    qs = _all("USA500.IDXUSD_Ticks.csv")
    assert qs[0].symbol == "US500"
    assert qs[0].ts == datetime(2023, 9, 3, 22, 0, 5, 962000, tzinfo=UTC)  # 01:00:05.962 GMT+0300
    assert qs[0].ask == Decimal("4516.181") and qs[0].bid < qs[0].ask


def test_bid_ask_bar_files_are_paired_and_keep_every_high_and_low() -> None:
    bids = list(read_bars(FIX / "gbpusd-m1-bid-2012.csv"))
    asks = list(read_bars(FIX / "gbpusd-m1-ask-2012.csv"))
    for given in (["gbpusd-m1-bid-2012.csv"], ["gbpusd-m1-bid-2012.csv", "gbpusd-m1-ask-2012.csv"]):
        qs = _all(*given)
        assert {q.symbol for q in qs} == {"GBPUSD"}
        for b, a in zip(bids, asks, strict=True):
            inside = [q for q in qs if b.ts <= q.ts < b.ts + timedelta(minutes=1)]
            assert inside[0].bid == b.open and inside[0].ask == a.open and inside[-1].bid == b.close
            assert max(q.bid for q in inside) == b.high and min(q.bid for q in inside) == b.low
            assert max(q.ask for q in inside) == a.high and min(q.ask for q in inside) == a.low


def test_bar_expansion_order_open_nearer_extreme_other_close() -> None:
    qs = _all("btcusd-1m.csv")
    bars = list(read_bars(FIX / "btcusd-1m.csv"))
    b = bars[0]  # 46319, 46385, 46319, 46377: open == low, so low (nearer) comes before high
    first = [q for q in qs if q.ts < b.ts + timedelta(minutes=1)]
    assert [q.bid for q in first] == [b.open, b.high, b.close]
    assert all(q.bid == q.ask for q in qs)  # a price file: bid = ask
    assert [q.ts - b.ts for q in first] == [timedelta(0), timedelta(seconds=30), timedelta(seconds=45)]


def test_tab_separated_h4_bars_and_candles_rebuild_highs_and_lows() -> None:
    assert detect(FIX / "XAUUSD_H4.csv").sep == "\t"
    qs = _all("XAUUSD_H4.csv")
    assert qs[0].symbol == "XAUUSD"
    bars = list(read_bars(FIX / "XAUUSD_H4.csv"))
    assert len(bars) == 24
    for b in bars:
        inside = [q.bid for q in qs if b.ts <= q.ts < b.ts + timedelta(hours=4)]
        assert (inside[0], max(inside), min(inside), inside[-1]) == (b.open, b.high, b.low, b.close)


def test_files_merge_in_time_order() -> None:
    qs = _all("usdjpy-ticks.csv", "gbpusd-m1-bid-2012.csv")
    assert [q.ts for q in qs] == sorted(q.ts for q in qs)
    assert {q.symbol for q in qs} == {"USDJPY", "GBPUSD"}


def test_out_of_order_and_duplicate_ticks_are_dropped(tmp_path: Path) -> None:
    f = tmp_path / "eurusd-ticks.csv"
    f.write_text(
        "timestamp,bid,ask\n2024-01-02 10:00:01,1.1,1.2\n2024-01-02 10:00:00,1.0,1.3\n"
        "2024-01-02 10:00:01,1.1,1.2\n2024-01-02 10:00:02,1.15,1.25\n"
    )
    store, candles = QuoteStore(), CandleAggregator()
    for q in ReplayProvider([f]).quotes():
        if (s := store.put(q)) is not None:
            candles.add(s)
    assert store.stats.accepted == 2 and store.stats.dropped_out_of_order == 1 and store.stats.dropped_duplicate == 1
    (c,) = candles.candles("EURUSD")
    assert (c.open, c.high, c.low, c.ticks) == (Decimal("1.15"), Decimal("1.2"), Decimal("1.15"), 2)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "eurusd-ticks.csv"
    f.write_text("timestamp,bid,ask\n2024-01-02 10:00:01,1.1,1.2\n2024-01-02 10:00:02,oops,1.2\n")
    with pytest.raises(ReplayFormatError, match=rf"{f}:3: not a number"):
        list(ReplayProvider([f]).quotes())
    g = tmp_path / "eurusd-x.csv"
    g.write_text("foo,bar\n1,2\n")
    with pytest.raises(ReplayFormatError, match="unrecognised"):
        ReplayProvider([g])
    h = tmp_path / "eurusd-bars.csv"
    h.write_text("timestamp,open,high,low,close\n2024-01-02 10:00,1.1,1.0,1.05,1.1\n")
    with pytest.raises(ReplayFormatError, match=rf"{h}:2: inconsistent bar"):
        list(ReplayProvider([h]).quotes())


def test_speed_paces_market_time_on_a_manual_clock() -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    start = clock.now()
    p = ReplayProvider([FIX / "usdjpy-ticks.csv"], speed=10, clock=clock)
    qs = list(p.quotes())
    span = (qs[-1].ts - qs[0].ts).total_seconds()
    assert (clock.now() - start).total_seconds() == pytest.approx(span / 10, abs=1e-3)
    fast = ReplayProvider([FIX / "usdjpy-ticks.csv"], speed=0, clock=ManualClock(start))
    assert len(list(fast.quotes())) == len(qs) and fast.slept_s == 0


def test_infer_symbol() -> None:
    assert infer_symbol("gbpusd-m1-bid-2012.csv") == "GBPUSD"
    assert infer_symbol("AAPLUSUSD_M15.csv") == "AAPL"
    assert infer_symbol("bitmex_trades_XBTUSD.csv") == "BTCUSD"
    assert infer_symbol("quote_tick_data.csv") is None


def _shared() -> Path | None:
    for d in (Path("/work/shared/data/market"), REPO.parent / "shared" / "data" / "market"):
        if d.is_dir():
            return d
    return None


@pytest.mark.parametrize(
    ("rel", "symbol", "at_least"),
    [
        ("nautilus_trader/quote_tick_data.csv", "EURUSD", 9000),
        ("nautilus_trader/truefx/usdjpy-ticks.csv", None, 1000),
        ("nautilus_trader/fxcm/gbpusd-m1-bid-2012.csv", None, 30000),
        ("nautilus_trader/fxcm/usdjpy-m1-ask-2013.csv", None, 28000),
        ("nautilus_trader/btc-perp-20211231-20220201_1m.csv", None, 45000),
        ("backtrader/bidask.csv", "AUDUSD", 10),
        ("backtrader/2006-min-005.txt", "US500", 2000),
        ("backtrader/2006-01-02-volume-min-001.txt", "US500", 30000),
        ("backtrader/nvda-1999-2014.txt", None, 4000),
        ("snowguru/EURUSD_H4.csv", None, 25000),
        ("snowguru/USA500.IDXUSD_Ticks_04.09.2023-04.09.2023.csv", None, 10000),
    ],
)
def test_real_shared_files(rel: str, symbol: str | None, at_least: int) -> None:
    base = _shared()
    if base is None:
        pytest.skip("shared market data (/work/shared/data/market or ../shared/data/market) is absent")
    path = base / rel
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    store = QuoteStore()
    n = 0
    for q in ReplayProvider([path], symbol=symbol).quotes():
        assert q.ts.tzinfo is UTC and q.bid > 0 and q.ask > 0
        store.put(q)
        n += 1
    st = store.stats
    assert n >= at_least and st.accepted + st.dropped_out_of_order + st.dropped_duplicate == n
