"""One contract, every provider: simulated (ManualClock), replay (the shipped fixture files), Massive REST (the
official client polling a fake Massive REST server on loopback) and the Massive WebSocket streams (the official
client's WebSocketClient against a fake Massive WebSocket server on loopback, with a dropped connection).

Every provider yields Quotes with a UTC-aware ``ts``, 0 < bid <= ask, a catalogue symbol, prices at or inside the
instrument's precision, a ``source`` labelled by the provider, and non-decreasing time per symbol.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from tests.fakes.massive_server import FakeMassive, FakeMassiveStream

from propdesk.clock import ManualClock
from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.quotes import Quote
from propdesk.marketdata.providers.base import QuoteProvider
from propdesk.marketdata.providers.massive import MassiveProvider
from propdesk.marketdata.providers.massive_stream import MassiveStreamProvider
from propdesk.marketdata.providers.replay import ReplayProvider
from propdesk.marketdata.providers.simulated import SimulatedProvider

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 New York: every market open
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "market"
LIMIT = 400

Factory = Callable[[], Iterator[tuple[QuoteProvider, list[Quote]]]]


def simulated() -> Iterator[tuple[QuoteProvider, list[Quote]]]:
    clock = ManualClock(T0)
    p = SimulatedProvider(DEFAULT_CATALOGUE, clock, seed=11)
    out: list[Quote] = []
    for _ in range(20):
        out.extend(p.step(clock.now()))
        clock.advance(1)
    yield p, out


def replay() -> Iterator[tuple[QuoteProvider, list[Quote]]]:
    files = sorted(f for f in FIXTURES.iterdir() if f.suffix == ".csv")
    assert files, "the shipped market fixtures are missing"
    p = ReplayProvider(files, speed=0)
    yield p, list(itertools.islice(p.quotes(), LIMIT * 5))


def massive() -> Iterator[tuple[QuoteProvider, list[Quote]]]:
    clock = ManualClock(T0)
    with FakeMassive("contract-key") as fake:
        p = MassiveProvider(
            "contract-key",
            ["EURUSD", "USDJPY", "XAUUSD", "AAPL", "MSFT", "BTCUSD", "US500"],
            clock,
            base_url=fake.base_url,
            sleep=lambda _s: None,
        )
        out: list[Quote] = []
        for i in range(12):
            ms = int(clock.now().timestamp() * 1000)
            wiggle = math.sin(i) / 1000
            fake.set_forex_quote("EUR/USD", 1.0841234 + wiggle, 1.0842345 + wiggle, ms)
            fake.set_forex_quote("USD/JPY", 150.12345 + wiggle, 150.13456 + wiggle, ms)
            fake.set_forex_quote("XAU/USD", 2350.123 + wiggle, 2350.456 + wiggle, ms)
            fake.set_stock_quote("AAPL", 189.995 + wiggle, 190.015 + wiggle, ms * 1_000_000)
            fake.set_stock_trade("MSFT", 420.123 + wiggle, ms * 1_000_000)  # MSFT: no NBBO -> trades
            fake.set_crypto_trade("BTC/USD", 65000.987 + wiggle, ms)
            if i % 3 == 0:
                fake.add_agg("I:SPX", ms - 60_000, 5200.0, 5201.5, 5199.25, 5200.125 + i)
            if i == 6:  # a rate-limited moment and an outage in the middle of the run
                fake.rate_limit(r"/v1/last_quote/currencies/EUR/USD", retry_after="1")
                fake.script(r"/v2/last/nbbo/AAPL", 502, b"<html>bad gateway</html>")
            out.extend(p.poll())
            clock.advance(1)
        fake.data.aggs.clear()  # an empty aggregate window: the index goes missing, nothing is invented
        clock.advance(1)
        late = p.poll()
        assert "US500" not in {q.symbol for q in late} and p.last_step["US500"] == "missing"
        out.extend(late)
        yield p, out


def massive_stream() -> Iterator[tuple[QuoteProvider, list[Quote]]]:
    import threading

    ms0 = int(T0.timestamp() * 1000)
    with FakeMassiveStream("contract-key") as fake:
        p = MassiveStreamProvider(
            "contract-key", ["EURUSD", "XAUUSD", "BTCUSD", "AAPL", "US500"], ManualClock(T0), url=fake.url
        )
        out: list[Quote] = []
        done = threading.Event()

        def consume() -> None:
            for q in p.quotes():
                out.append(q)
            done.set()

        threading.Thread(target=consume, daemon=True).start()
        for market in ("forex", "crypto", "stocks", "indices"):
            fake.wait_subscribed(market)
        for i in range(8):
            ms = ms0 + i * 1000
            wiggle = math.sin(i) / 1000
            fake.push(
                "forex",
                [
                    fake.forex("EUR/USD", 1.0841234 + wiggle, 1.0842345 + wiggle, ms),
                    fake.forex("XAU/USD", 2350.123 + wiggle, 2350.456 + wiggle, ms),
                ],
            )
            fake.push("crypto", [fake.crypto("BTC-USD", 65000.987 + wiggle, 65001.5 + wiggle, ms)])
            fake.push("stocks", [fake.stock("AAPL", 189.995 + wiggle, 190.015 + wiggle, ms)])
            fake.push("indices", [fake.index("I:SPX", 5200.125 + i, ms)])
            if i == 4:  # a dropped connection in the middle of the run; the feed replays an old quote after it
                fake.on_subscribe["forex"] = [fake.forex("EUR/USD", 1.08, 1.0801, ms0)]
                fake.drop("forex")
                fake.wait_subscribed("forex", connections=2)
        deadline = time.monotonic() + 10
        while len(out) < 36 and time.monotonic() < deadline:
            time.sleep(0.02)
        p.stop()
        done.wait(10)
        yield p, list(out)


PROVIDERS: dict[str, Factory] = {
    "simulated": simulated,
    "replay": replay,
    "massive": massive,
    "massive_stream": massive_stream,
}


@pytest.fixture(scope="module", params=sorted(PROVIDERS))
def produced(request: pytest.FixtureRequest) -> Iterator[tuple[QuoteProvider, list[Quote]]]:
    yield from PROVIDERS[request.param]()


def test_yields_quotes(produced: tuple[QuoteProvider, list[Quote]]) -> None:
    _, quotes = produced
    assert len(quotes) >= 5
    assert all(isinstance(q, Quote) for q in quotes)


def test_timestamps_are_utc_aware(produced: tuple[QuoteProvider, list[Quote]]) -> None:
    for q in produced[1]:
        assert q.ts.tzinfo is not None and q.ts.utcoffset() == timedelta(0), q


def test_bid_at_or_below_ask_and_positive(produced: tuple[QuoteProvider, list[Quote]]) -> None:
    for q in produced[1]:
        assert Decimal(0) < q.bid <= q.ask, q


def test_symbols_from_the_catalogue_and_prices_at_its_precision(
    produced: tuple[QuoteProvider, list[Quote]], request: pytest.FixtureRequest
) -> None:
    for q in produced[1]:
        inst = DEFAULT_CATALOGUE.get(q.symbol)
        assert inst is not None, q
        step = Decimal(1).scaleb(-inst.price_precision)
        assert q.bid == q.bid.quantize(step) and q.ask == q.ask.quantize(step), (q, inst.price_precision)


def test_time_never_goes_backwards_per_symbol(produced: tuple[QuoteProvider, list[Quote]]) -> None:
    last: dict[str, datetime] = {}
    for q in produced[1]:
        if q.symbol in last:
            assert q.ts >= last[q.symbol], q
        last[q.symbol] = q.ts


def test_source_is_labelled_by_the_provider(produced: tuple[QuoteProvider, list[Quote]]) -> None:
    provider, quotes = produced
    for q in quotes:
        assert q.source.startswith(provider.name), (q.source, provider.name)
