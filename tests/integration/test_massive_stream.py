"""The Massive WebSocket streams through the official client against a fake Massive WebSocket server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.massive_server import FakeMassiveStream

from propdesk.clock import ManualClock
from propdesk.domain.quotes import Quote
from propdesk.marketdata.providers.massive import MassiveAuthError
from propdesk.marketdata.providers.massive_stream import MassiveStreamProvider, channel_of, parse_ws_url
from propdesk.marketdata.store import QuoteStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 New York: every market open
MS = int(T0.timestamp() * 1000)
KEY = "stream-key"
ROLE_PREFIX = "pdtest"


@pytest.fixture
def fake() -> Iterator[FakeMassiveStream]:
    with FakeMassiveStream(KEY) as f:
        yield f


class Collector:
    """Runs ``provider.quotes()`` in a thread and keeps what arrives."""

    def __init__(self, provider: MassiveStreamProvider):
        self.provider = provider
        self.got: list[Quote] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for q in self.provider.quotes():
                with self._cond:
                    self.got.append(q)
                    self._cond.notify_all()
        except BaseException as exc:
            self.error = exc
        with self._cond:
            self._cond.notify_all()

    def wait(self, pred: Callable[[list[Quote]], bool], timeout: float = 10.0) -> list[Quote]:
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.got) or self.error is not None, timeout)
        assert ok, f"timed out; got {self.got}"
        return list(self.got)

    def close(self) -> None:
        self.provider.stop()
        self._thread.join(10)
        assert not self._thread.is_alive()


def stream(fake: FakeMassiveStream, symbols: list[str], key: str = KEY, **kw: object) -> MassiveStreamProvider:
    return MassiveStreamProvider(key, symbols, ManualClock(T0), url=fake.url, **kw)  # type: ignore[arg-type]


def test_channels_follow_the_asset_class_routes() -> None:
    p = MassiveStreamProvider("k", ["EURUSD", "XAUUSD", "BTCUSD", "AAPL", "US500", "WTIUSD"], ManualClock(T0))
    assert {s: channel_of(r) for s, r in p.routes.items()} == {
        "EURUSD": "C.EUR/USD",
        "XAUUSD": "C.XAU/USD",
        "BTCUSD": "XQ.BTC-USD",
        "AAPL": "Q.AAPL",
        "US500": "V.I:SPX",
    }
    assert p.unroutable == ["WTIUSD"]  # no proxy unless asked for
    assert parse_ws_url("ws://127.0.0.1:9000") == ("127.0.0.1:9000", False)
    assert parse_ws_url("wss://socket.massive.com") == ("socket.massive.com", True)


def test_streams_every_asset_class_as_exact_decimals_on_instrument_precision(fake: FakeMassiveStream) -> None:
    p = stream(fake, ["EURUSD", "BTCUSD", "AAPL", "US500"])
    c = Collector(p)
    try:
        for market in ("forex", "crypto", "stocks", "indices"):
            fake.wait_subscribed(market)
        assert sorted(s for _, subs in fake.subscriptions for s in subs) == [
            "C.EUR/USD",
            "Q.AAPL",
            "V.I:SPX",
            "XQ.BTC-USD",
        ]
        assert all(ok for _, ok in fake.auths)
        fake.push(
            "forex", [fake.forex("EUR/USD", 1.084123, 1.084251, MS), fake.forex("GBP/USD", 1.26, 1.27, MS)]
        )  # not subscribed: never sent
        fake.push("crypto", [fake.crypto("BTC-USD", 65000.987, 65001.5, MS)])
        fake.push("stocks", [fake.stock("AAPL", 189.995, 190.015, MS)])
        fake.push("indices", [fake.index("I:SPX", 5200.125, MS)])
        got = {q.symbol: q for q in c.wait(lambda g: len(g) >= 4)}
    finally:
        c.close()
    assert (got["EURUSD"].bid, got["EURUSD"].ask) == (Decimal("1.08412"), Decimal("1.08425"))
    assert (got["BTCUSD"].bid, got["BTCUSD"].ask) == (Decimal("65000.99"), Decimal("65001.50"))
    assert (got["AAPL"].bid, got["AAPL"].ask) == (Decimal("190.00"), Decimal("190.02"))  # half-even
    assert got["US500"].bid == got["US500"].ask == Decimal("5200.12")  # exact 5200.125, half-even
    assert all(q.ts == T0 and q.source == "massive-ws" for q in got.values())


def test_a_refused_key_is_a_clear_auth_error(fake: FakeMassiveStream) -> None:
    p = stream(fake, ["EURUSD"], key="wrong-key")
    with pytest.raises(MassiveAuthError, match="refused the API key"):
        for _ in p.quotes():
            pass
    assert fake.auths == [("forex", False)]


def test_a_dropped_connection_reconnects_reauthenticates_resubscribes_and_nothing_old_reaches_the_store(
    fake: FakeMassiveStream,
) -> None:
    p = stream(fake, ["EURUSD"])
    store = QuoteStore()
    c = Collector(p)
    try:
        fake.wait_subscribed("forex")
        fake.push("forex", [fake.forex("EUR/USD", 1.1, 1.1001, MS + i * 1000) for i in range(3)])
        c.wait(lambda g: len(g) >= 3)
        # After the reconnect the feed replays its last two quotes (one older, one identical), then goes on.
        fake.on_subscribe["forex"] = [
            fake.forex("EUR/USD", 1.1, 1.1001, MS + 1000),
            fake.forex("EUR/USD", 1.1, 1.1001, MS + 2000),
        ]
        assert fake.drop("forex") == 1
        fake.wait_subscribed("forex", connections=2)
        fake.push("forex", [fake.forex("EUR/USD", 1.1002, 1.1003, MS + 3000)])
        got = c.wait(lambda g: g[-1].ts == datetime.fromtimestamp((MS + 3000) / 1000, UTC))
    finally:
        c.close()
    assert fake.connections["forex"] == 2
    assert fake.auths == [("forex", True), ("forex", True)]
    assert [s for _, s in fake.subscriptions] == [["C.EUR/USD"], ["C.EUR/USD"]]
    assert p.stats.out_of_order == 1  # the older replayed quote stopped at the provider
    accepted = [s for s in (store.put(q) for q in got) if s is not None]
    assert store.stats.dropped_duplicate == 1  # the identical replayed quote stopped at the store
    assert [q.ts for q in accepted] == sorted({q.ts for q in accepted})
    assert len(accepted) == 4


def test_a_silent_stream_while_the_market_is_open_is_detected_and_reconnected(fake: FakeMassiveStream) -> None:
    p = stream(fake, ["EURUSD"], stale_after_s=0.4)
    c = Collector(p)
    try:
        fake.wait_subscribed("forex")
        fake.push("forex", [fake.forex("EUR/USD", 1.1, 1.1001, MS)])
        c.wait(lambda g: len(g) >= 1)
        deadline = time.monotonic() + 10
        while p.stats.stale == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.stats.stale >= 1
        fake.wait_subscribed("forex", connections=2)  # the silent connection was replaced by a fresh one
        fake.push("forex", [fake.forex("EUR/USD", 1.1002, 1.1003, MS + 5000)])
        got = c.wait(lambda g: len(g) >= 2)
    finally:
        c.close()
    assert got[-1].bid == Decimal("1.10020")


def test_a_silent_stream_on_a_closed_market_is_not_stale(fake: FakeMassiveStream) -> None:
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    p = MassiveStreamProvider(KEY, ["EURUSD"], ManualClock(saturday), url=fake.url, stale_after_s=0.2)
    c = Collector(p)
    try:
        fake.wait_subscribed("forex")
        time.sleep(1.0)
    finally:
        c.close()
    assert p.stats.stale == 0 and fake.connections["forex"] == 1


def test_cli_feed_massive_streams_by_default_into_the_store_and_the_candles(
    fake: FakeMassiveStream, db_url: str, database: Any, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "PROPDESK_DB_ROLE_PREFIX": ROLE_PREFIX,
            "PROPDESK_DATA_DIR": str(tmp_path),
            "PROPDESK_MASSIVE_API_KEY": KEY,
            "PROPDESK_MASSIVE_WS_URL": fake.url,
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "propdesk",
            "feed",
            "massive",
            "--symbols",
            "EURUSD",
            "--max-quotes",
            "3",
            "--seconds",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fake.wait_subscribed("forex", timeout=90)
        now_ms = int(time.time() * 1000)
        fake.push("forex", [fake.forex("EUR/USD", 1.1 + i / 10000, 1.1001 + i / 10000, now_ms + i) for i in range(3)])
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "WebSocket streams" in err and "3 quotes published" in err
    with database.read() as c:
        quote = c.execute("SELECT bid, source FROM quotes WHERE symbol='EURUSD'").fetchone()
        bars = c.execute("SELECT close, tick_count FROM candles WHERE symbol='EURUSD'").fetchall()
    assert quote["source"] == "massive-ws" and quote["bid"] == Decimal("1.10020")
    assert bars and sum(b["tick_count"] for b in bars) == 3
