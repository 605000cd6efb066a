"""The Massive provider through the official ``massive`` client against a fake Massive REST server on loopback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from tests.fakes.massive_server import FakeMassive

from propdesk.clock import ManualClock
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.marketdata.providers.massive import (
    ENV_API_KEY,
    MassiveAuthError,
    MassiveProvider,
    route_for,
)

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)
NS = MS * 1_000_000
KEY = "test-key"


@pytest.fixture
def fake() -> Iterator[FakeMassive]:
    with FakeMassive(KEY) as f:
        yield f


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def provider(
    fake: FakeMassive,
    clock: ManualClock,
    symbols: list[str],
    key: str = KEY,
    sleeps: list[float] | None = None,
    **kw: object,
) -> MassiveProvider:
    log = sleeps if sleeps is not None else []
    return MassiveProvider(key, symbols, clock, base_url=fake.base_url, sleep=log.append, **kw)  # type: ignore[arg-type]


def test_routing_by_asset_class() -> None:
    want = {
        "EURUSD": "C:EURUSD",
        "USDJPY": "C:USDJPY",
        "XAUUSD": "C:XAUUSD",
        "XAGUSD": "C:XAGUSD",
        "BTCUSD": "X:BTCUSD",
        "ETHUSD": "X:ETHUSD",
        "AAPL": "AAPL",
        "US500": "I:SPX",
        "US100": "I:NDX",
        "US30": "I:DJI",
    }
    for sym, ticker in want.items():
        inst = DEFAULT_CATALOGUE.get(sym)
        assert inst is not None
        r = route_for(inst)
        assert r is not None and r.ticker == ticker, sym
    wti = DEFAULT_CATALOGUE.get("WTIUSD")
    assert wti is not None
    assert route_for(wti) is None  # no proxy unless asked for
    proxied = route_for(wti, proxies=True)
    assert proxied is not None and (proxied.ticker, proxied.market) == ("USO", "stocks")
    override = route_for(wti, {"WTIUSD": "C:WTIUSD"})
    assert override is not None and override.market == "forex"


def test_forex_last_quote(fake: FakeMassive, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    fake.set_forex_quote("EUR/USD", 1.084123, 1.084251, MS - 500)
    p = provider(fake, clock, ["EURUSD"])
    with caplog.at_level(logging.INFO, logger="propdesk.marketdata.providers.massive"):
        q = p.latest("EURUSD")
    assert q is not None
    assert (q.symbol, q.bid, q.ask, q.source) == ("EURUSD", Decimal("1.08412"), Decimal("1.08425"), "massive")
    assert q.ts == T0 - timedelta(milliseconds=500) and q.ts.tzinfo is not None
    assert fake.paths() == ["/v1/last_quote/currencies/EUR/USD"]
    assert fake.requests[0].auth == "bearer"
    assert p.last_step["EURUSD"] == "quote"
    assert "step=quote" in caplog.text


def test_stock_last_quote_then_trade_fallback(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_stock_quote("AAPL", 189.98, 190.02, NS)
    fake.set_stock_trade("MSFT", 420.5, NS + 7)
    p = provider(fake, clock, ["AAPL", "MSFT"])
    a = p.latest("AAPL")
    assert a is not None and (a.bid, a.ask, a.ts) == (Decimal("189.98"), Decimal("190.02"), T0)
    m = p.latest("MSFT")  # no NBBO (404) -> last trade
    assert m is not None and (m.bid, m.ask, m.source) == (Decimal("420.50"), Decimal("420.50"), "massive-trade")
    assert p.last_step["MSFT"] == "trade"
    assert fake.paths()[-2:] == ["/v2/last/nbbo/MSFT", "/v2/last/trade/MSFT"]


def test_crypto_last_trade(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_crypto_trade("BTC/USD", 65012.345, MS)
    p = provider(fake, clock, ["BTCUSD"])
    q = p.latest("BTCUSD")
    assert q is not None and q.bid == q.ask == Decimal("65012.34") and q.ts == T0  # half-even at 2 places
    assert fake.paths() == ["/v1/last/crypto/BTC/USD"]


def test_index_from_latest_minute_aggregate(fake: FakeMassive, clock: ManualClock) -> None:
    fake.add_agg("I:SPX", MS - 180_000, 5200.1, 5201.0, 5199.5, 5200.75)
    fake.add_agg("I:SPX", MS - 120_000, 5200.75, 5202.0, 5200.0, 5201.25)
    p = provider(fake, clock, ["US500"])
    q = p.latest("US500")
    assert q is not None and q.bid == q.ask == Decimal("5201.25") and q.source == "massive-agg"
    assert q.ts == T0 - timedelta(minutes=1)  # the end of the bar
    (path,) = fake.paths()
    assert path.startswith("/v2/aggs/ticker/I:SPX/range/1/minute/")
    assert fake.requests[0].query["sort"] == ["desc"]


def test_forex_falls_back_to_aggregates_and_empty_aggregates_are_missing(
    fake: FakeMassive, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_agg("C:GBPUSD", MS - 60_000, 1.27, 1.271, 1.269, 1.27049)
    p = provider(fake, clock, ["GBPUSD", "USDJPY"])
    q = p.latest("GBPUSD")
    assert q is not None and q.bid == Decimal("1.27049") and p.last_step["GBPUSD"] == "agg"
    with caplog.at_level(logging.INFO, logger="propdesk.marketdata.providers.massive"):
        assert p.latest("USDJPY") is None  # no quote, no aggregates: missing
    assert p.last_step["USDJPY"] == "missing"
    assert "massive_missing symbol=USDJPY" in caplog.text


def test_crossed_quote_is_no_answer(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_stock_quote("NVDA", 880.10, 880.00, NS)
    fake.set_stock_trade("NVDA", 880.05, NS)
    q = provider(fake, clock, ["NVDA"]).latest("NVDA")
    assert q is not None and q.source == "massive-trade"


def test_bad_key_is_an_auth_error(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_forex_quote("EUR/USD", 1.08, 1.0801, MS)
    p = provider(fake, clock, ["EURUSD"], key="wrong")
    with pytest.raises(MassiveAuthError, match="401"):
        p.latest("EURUSD")
    assert fake.requests[0].auth is None


def test_rate_limit_honours_retry_after(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_forex_quote("EUR/USD", 1.08, 1.0801, MS)
    fake.rate_limit(r"/v1/last_quote/", retry_after="2", times=2)
    sleeps: list[float] = []
    q = provider(fake, clock, ["EURUSD"], sleeps=sleeps).latest("EURUSD")
    assert q is not None and q.source == "massive"
    assert sleeps == [2.0, 2.0]
    assert len(fake.paths()) == 3


def test_server_errors_back_off_exponentially(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_stock_quote("AAPL", 190.0, 190.01, NS)
    fake.script(r"/v2/last/nbbo/", 503, {"status": "ERROR", "error": "unavailable"}, times=2)
    fake.script(r"/v2/last/nbbo/", 429, {"status": "ERROR"}, times=1)  # no Retry-After: exponential
    sleeps: list[float] = []
    q = provider(fake, clock, ["AAPL"], sleeps=sleeps, backoff_s=0.25).latest("AAPL")
    assert q is not None and q.source == "massive"
    assert sleeps == [0.25, 0.5, 1.0]


def test_persistent_rate_limit_is_bounded_and_missing(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_stock_trade("AAPL", 190.0, NS)
    fake.rate_limit(r"/v2/last/nbbo/", retry_after="100", times=99)
    sleeps: list[float] = []
    p = provider(fake, clock, ["AAPL"], sleeps=sleeps, max_attempts=3, max_backoff_s=5)
    assert p.latest("AAPL") is None
    assert sleeps == [5.0, 5.0]  # Retry-After capped
    assert fake.paths() == ["/v2/last/nbbo/AAPL"] * 3  # no fall-through into more rate-limited calls


def test_persistent_server_error_falls_through(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_stock_trade("AAPL", 190.0, NS)
    fake.script(r"/v2/last/nbbo/", 500, {"status": "ERROR"}, times=99)
    q = provider(fake, clock, ["AAPL"], max_attempts=2).latest("AAPL")
    assert q is not None and q.source == "massive-trade"


def test_poll_dedupes_numbers_and_keeps_time_order(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_forex_quote("EUR/USD", 1.08, 1.0801, MS)
    p = provider(fake, clock, ["EURUSD", "WTIUSD"])
    assert p.unroutable == ["WTIUSD"]
    first = p.poll()
    assert [q.seq for q in first] == [1]
    assert p.poll() == []  # same answer again: nothing new
    fake.set_forex_quote("EUR/USD", 1.07, 1.0701, MS - 1000)  # older than what was published
    assert p.poll() == []
    fake.set_forex_quote("EUR/USD", 1.0802, 1.0803, MS + 1000)
    (q,) = p.poll()
    assert q.seq == 2 and q.bid == Decimal("1.08020")


def test_quotes_stops(fake: FakeMassive, clock: ManualClock) -> None:
    fake.set_crypto_trade("ETH/USD", 3400.0, MS)
    p = provider(fake, clock, ["ETHUSD"], interval_s=0.01)
    it = p.quotes()
    q = next(it)
    p.stop()
    assert q.symbol == "ETHUSD" and list(it) == []


def test_key_comes_from_the_environment(fake: FakeMassive, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    with pytest.raises(MassiveAuthError, match=ENV_API_KEY):
        MassiveProvider.from_env(["EURUSD"], clock, base_url=fake.base_url)
    with pytest.raises(MassiveAuthError):
        MassiveProvider(None, ["EURUSD"], clock)
    monkeypatch.setenv(ENV_API_KEY, KEY)
    fake.set_forex_quote("EUR/USD", 1.08, 1.0801, MS)
    assert MassiveProvider.from_env(["EURUSD"], clock, base_url=fake.base_url).latest("EURUSD") is not None


def test_cli_feed_massive_refuses_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_API_KEY}
    proc = subprocess.run(
        [sys.executable, "-m", "propdesk", "feed", "massive", "--symbols", "EURUSD"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert ENV_API_KEY in proc.stderr
