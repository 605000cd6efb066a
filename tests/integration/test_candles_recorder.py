"""Candles: recorded from the tick stream into Postgres, served with open-market gaps flagged synthetic, and the
Massive candle fetch that fills a provider's empty minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.fakes.massive_server import FakeMassive

from propdesk.clock import ManualClock
from propdesk.domain.quotes import Quote
from propdesk.marketdata.candles import Candle
from propdesk.marketdata.providers.massive import MassiveProvider
from propdesk.marketdata.recorder import CandleRecorder, load_candles
from propdesk.marketdata.sessions import SessionCalendar
from propdesk.marketdata.stream import TickStream

D = Decimal
MON = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
FRI_CLOSE = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)  # Friday 17:00 New York: FX closes
SVC = "svc-token-for-market-tests"


def q(symbol: str, at: datetime, bid: str, ask: str) -> Quote:
    return Quote(symbol, D(bid), D(ask), at, 0, "test")


def stored(database: Any, symbol: str = "EURUSD") -> list[dict[str, Any]]:
    with database.read() as c:
        return c.execute("SELECT * FROM candles WHERE symbol=%s ORDER BY start", (symbol,)).fetchall()


def test_a_closed_bar_is_written_at_once_and_the_open_bar_at_most_once_a_second(database: Any) -> None:
    clock = ManualClock(MON)
    ticks = TickStream()
    rec = CandleRecorder(database, clock, ticks, flush_interval_s=1.0).start()
    ticks.publish(q("EURUSD", MON, "1.10000", "1.10010"))  # first tick: written at once
    clock.advance(0.5)
    ticks.publish(q("EURUSD", MON + timedelta(seconds=0.5), "1.10100", "1.10110"))  # throttled
    rows = stored(database)
    assert len(rows) == 1 and rows[0]["high"] == D("1.10005") and rows[0]["tick_count"] == 1
    clock.advance(0.6)
    ticks.publish(q("EURUSD", MON + timedelta(seconds=1.1), "1.09900", "1.09910"))  # a second later: written
    rows = stored(database)
    assert (rows[0]["high"], rows[0]["low"], rows[0]["close"], rows[0]["tick_count"]) == (
        D("1.10105"),
        D("1.09905"),
        D("1.09905"),
        3,
    )
    clock.advance(60)
    ticks.publish(q("EURUSD", MON + timedelta(minutes=1, seconds=2), "1.10200", "1.10210"))  # closes the bar
    rows = stored(database)
    assert [r["start"] for r in rows] == [MON, MON + timedelta(minutes=1)]
    assert rows[0]["open"] == D("1.10005") and not rows[0]["synthetic"] and rows[0]["source"] == "ticks"
    open_bar = rec.open_bar("EURUSD")
    assert open_bar is not None and open_bar.minute == MON + timedelta(minutes=1)
    rec.stop()
    assert len(ticks) == 0


def test_a_restarted_recorder_widens_a_bar_and_never_loses_its_open(database: Any) -> None:
    clock = ManualClock(MON)
    first = CandleRecorder(database, clock, flush_interval_s=0)
    first.on_quote(q("EURUSD", MON, "1.10000", "1.10000"))
    first.on_quote(q("EURUSD", MON + timedelta(seconds=5), "1.10300", "1.10300"))
    second = CandleRecorder(database, clock, flush_interval_s=0)  # a restart in mid-minute
    second.on_quote(q("EURUSD", MON + timedelta(seconds=10), "1.09800", "1.09800"))
    [row] = stored(database)
    assert (row["open"], row["high"], row["low"], row["close"]) == (D("1.1"), D("1.103"), D("1.098"), D("1.098"))


def test_reads_carry_forward_open_market_gaps_as_synthetic_and_leave_the_weekend_empty(database: Any) -> None:
    clock = ManualClock(FRI_CLOSE - timedelta(minutes=3))
    rec = CandleRecorder(database, clock, flush_interval_s=0)
    rec.on_quote(q("EURUSD", FRI_CLOSE - timedelta(minutes=3), "1.10000", "1.10000"))
    rec.on_quote(q("EURUSD", FRI_CLOSE - timedelta(minutes=1), "1.10100", "1.10100"))
    sunday_open = datetime(2026, 3, 8, 21, 0, tzinfo=UTC)  # Sunday 17:00 New York (EDT)
    rec.on_quote(q("EURUSD", sunday_open + timedelta(minutes=1), "1.10500", "1.10500"))
    rec.flush()
    with database.read() as c:
        bars = load_candles(c, "EURUSD", "1m", 50, now=sunday_open + timedelta(minutes=4), calendar=SessionCalendar())
    got = [(b.minute, b.close, b.synthetic) for b in bars]
    assert got == [
        (FRI_CLOSE - timedelta(minutes=3), D("1.1"), False),
        (FRI_CLOSE - timedelta(minutes=2), D("1.1"), True),  # Friday, open, no tick: carried forward
        (FRI_CLOSE - timedelta(minutes=1), D("1.101"), False),
        # the weekend: closed, nothing invented
        (sunday_open, D("1.101"), True),  # open, no tick yet
        (sunday_open + timedelta(minutes=1), D("1.105"), False),
        (sunday_open + timedelta(minutes=2), D("1.105"), True),
        (sunday_open + timedelta(minutes=3), D("1.105"), True),
    ]
    with database.read() as c:
        five = load_candles(c, "EURUSD", "5m", 10, now=sunday_open + timedelta(minutes=4), calendar=SessionCalendar())
    assert [(b.minute, b.open, b.close, b.synthetic, b.ticks) for b in five] == [
        (FRI_CLOSE - timedelta(minutes=5), D("1.1"), D("1.101"), False, 2),
        (sunday_open, D("1.105"), D("1.105"), False, 1),
    ]


def test_massive_candles_fill_empty_aggregates_from_recorded_ticks_then_carry_forward() -> None:
    clock = ManualClock(MON + timedelta(minutes=5))
    ms = int(MON.timestamp() * 1000)
    with FakeMassive("k") as fake:
        fake.add_agg("C:EURUSD", ms, 1.1, 1.1004, 1.0999, 1.1002)
        fake.add_agg("C:EURUSD", ms + 60_000, 1.1002, 1.1006, 1.1001, 1.1005)
        p = MassiveProvider("k", ["EURUSD"], clock, base_url=fake.base_url, sleep=lambda _s: None)
        ticks_bar = Candle(
            "EURUSD", MON + timedelta(minutes=3), D("1.10060"), D("1.10090"), D("1.10050"), D("1.10080"), 7
        )
        bars = p.candles(
            "EURUSD", MON, MON + timedelta(minutes=5), recorded=lambda s, a, b: [ticks_bar], calendar=SessionCalendar()
        )
        fake.data.aggs.clear()  # empty aggregates and no ticks: only carried-forward bars after a real one
        empty = p.candles("EURUSD", MON, MON + timedelta(minutes=2), calendar=SessionCalendar())
    assert [(b.minute - MON, b.close, b.synthetic, b.source) for b in bars] == [
        (timedelta(minutes=0), D("1.10020"), False, "massive-agg"),
        (timedelta(minutes=1), D("1.10050"), False, "massive-agg"),
        (timedelta(minutes=2), D("1.10050"), True, "carried"),
        (timedelta(minutes=3), D("1.10080"), True, "ticks"),
        (timedelta(minutes=4), D("1.10080"), True, "carried"),
    ]
    assert empty == []  # nothing to carry forward from: nothing is invented


# ---------------------------------------------------------------------------------------------- the HTTP API
@pytest.fixture
def platform(db_url: str, clock: ManualClock) -> Iterator[Any]:
    from propdesk.bootstrap import open_platform
    from propdesk.settings import load_settings

    settings = load_settings(service_token=SVC, db_role_prefix="pdtest")
    p = open_platform(settings, clock=clock, migrate=False, admin_url=db_url, configure_logs=False)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def client(platform: Any) -> Iterator[Any]:
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():
        # Starlette 1.x prefers the httpx2 fork for its test client; httpx works and is what the project ships.
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    from propdesk.web.app import create_app

    with TestClient(create_app(platform), headers={"Authorization": f"Bearer {SVC}"}) as c:
        yield c


def test_market_candles_api_serves_persisted_bars_the_open_bar_and_synthetic_gaps(
    platform: Any, client: Any, clock: ManualClock
) -> None:
    t0 = clock.now()
    platform.candles = CandleRecorder(platform.db, clock, platform.ticks, flush_interval_s=60).start()
    platform.ticks.publish(q("EURUSD", t0, "1.10000", "1.10010"))
    clock.advance(120)
    platform.ticks.publish(q("EURUSD", clock.now(), "1.10100", "1.10110"))  # open bar, not yet written
    clock.advance(10)
    r = client.get("/api/v1/market/candles", params={"symbol": "eurusd", "limit": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "EURUSD" and body["timeframe"] == "1m" and body["price"] == "mid"
    assert [(b["close"], b["synthetic"]) for b in body["bars"]] == [
        ("1.10005", False),
        ("1.10005", True),
        ("1.10105", False),
    ]
    assert body["session"]["open"] is True and body["session"]["reason"] == "open: FX 24/5 session"
    bad = client.get("/api/v1/market/candles", params={"symbol": "NOPE"})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "unknown_symbol"
    assert client.get("/api/v1/market/candles", params={"symbol": "EURUSD", "timeframe": "7m"}).status_code == 422
    assert client.get("/api/v1/market/candles", params={"symbol": "EURUSD", "limit": 0}).status_code == 422
    platform.candles.stop()


def test_market_quotes_api_reports_sessions_and_staleness(platform: Any, client: Any, clock: ManualClock) -> None:
    now = clock.now()  # Monday 05:00 New York: FX open, NYSE closed
    platform.quotes.put(q("EURUSD", now - timedelta(seconds=90), "1.10000", "1.10010"))
    platform.quotes.put(q("AAPL", now - timedelta(hours=12), "200.00", "200.02"))
    r = client.get("/api/v1/market/quotes", params={"symbols": "EURUSD,AAPL,BTCUSD"})
    assert r.status_code == 200, r.text
    items = {i["symbol"]: i for i in r.json()["items"]}
    assert items["EURUSD"]["stale"] is True and items["EURUSD"]["age_seconds"] == 90.0
    assert items["EURUSD"]["stale_after_seconds"] == 60.0 and items["EURUSD"]["mid"] == "1.10005"
    assert items["AAPL"]["stale"] is False and items["AAPL"]["session"]["open"] is False  # closed: not stale
    assert items["AAPL"]["session"]["next_open"] == "2026-03-02T14:30:00Z"
    assert items["BTCUSD"]["bid"] is None and items["BTCUSD"]["stale"] is True  # missing while open
    schema = client.get("/openapi.json").json()
    assert "CandlesOut" in schema["components"]["schemas"] and "MarketQuotesOut" in schema["components"]["schemas"]
