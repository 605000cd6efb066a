"""The price bus on a real nats-server (the wheel's) and a real PostgreSQL: the embedded server, subjects per
instance, exact round trips, last-quote recovery, staleness while cut off, two platforms on one database, and the
registration that keeps processes on one database on one bus."""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.web_kit import open_test_platform, web_client

from propdesk.bus.bridge import PriceBus
from propdesk.bus.client import endpoint_from_url
from propdesk.bus.embedded import EmbeddedNats, server_info
from propdesk.bus.quotes import decode, encode
from propdesk.bus.registration import BusMismatchError, register
from propdesk.bus.subjects import Subjects
from propdesk.domain.gates import Code
from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount
from propdesk.marketdata.store import QuoteStore

pytestmark = pytest.mark.integration
D = Decimal


def wait_for(cond: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def endpoint(nats_url: str) -> Any:
    return endpoint_from_url(nats_url)


@pytest.fixture
def buses(endpoint: Any) -> Iterator[Callable[[str, QuoteStore], PriceBus]]:
    opened: list[PriceBus] = []

    def make(namespace: str, store: QuoteStore) -> PriceBus:
        bus = PriceBus(endpoint).connect()
        opened.append(bus)
        bus.attach(Subjects(namespace), store)
        return bus

    yield make
    for bus in opened:
        bus.close()


def ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def q(symbol: str, bid: str, ask: str, at: Any, source: str = "test") -> Quote:
    return Quote(symbol, D(bid), D(ask), at, 0, source)


# ------------------------------------------------------------------------------------------------ embedded server


def test_embedded_server_starts_with_private_credentials_is_shared_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "nats"
    first = EmbeddedNats(directory)
    ep = first.start()
    try:
        port = int(ep.url.rsplit(":", 1)[1])
        assert ep.url.startswith("nats://127.0.0.1:") and ep.user and ep.password
        for name in ("embedded.json", "nats.conf"):
            assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        info = server_info(port)
        assert info is not None and info["server_name"] == first.server_name and info["auth_required"]
        assert info.get("jetstream")
        # A second user of the same directory joins the running server; the first user leaving keeps it up.
        second = EmbeddedNats(directory)
        assert second.start().url == ep.url
        assert first.release() is False
        assert server_info(port) is not None
        # The last user out stops it; a restart reuses credentials, name and (when free) the port.
        assert second.release() is True
        assert server_info(port) is None
        again = first.start()
        assert (again.url, again.user, again.password) == (ep.url, ep.user, ep.password)
        assert (directory / "jetstream").is_dir()
    finally:
        first.destroy()
    assert not directory.exists()


# ------------------------------------------------------------------------------------------------ quotes


def test_wire_format_is_exact(clock: Any) -> None:
    quote = Quote("XAUUSD", D("2034.123456789"), D("2034.20"), clock.now() + timedelta(microseconds=7), 5, "feed")
    back, origin = decode(encode(quote, "me"))
    assert (back.symbol, back.bid, back.ask, back.ts, back.source, origin) == (
        "XAUUSD",
        D("2034.123456789"),
        D("2034.20"),
        quote.ts,
        "feed",
        "me",
    )
    assert str(back.ask) == "2034.20"  # the Decimal's exact form, trailing zero included


def test_publish_reaches_the_other_process_exactly_and_never_another_instance(buses: Any, clock: Any) -> None:
    space = ns()
    a, b, other = QuoteStore(), QuoteStore(), QuoteStore()
    buses(space, a)
    bus_b = buses(space, b)
    buses(ns(), other)
    now = clock.now()
    sent = [
        q("EURUSD", "1.10001", "1.10003", now),
        q("EURUSD", "1.10002", "1.10004", now + timedelta(seconds=1)),
        q("GBPUSD", "1.250000", "1.25010", now),
    ]
    for quote in sent:
        assert a.put(quote) is not None
    wait_for(lambda: bus_b.applied == 3)
    got = b.latest("EURUSD")
    assert got is not None and (got.bid, got.ask, got.ts) == (D("1.10002"), D("1.10004"), now + timedelta(seconds=1))
    gbp = b.latest("GBPUSD")
    assert gbp is not None and str(gbp.bid) == "1.250000" and str(gbp.ask) == "1.25010"
    time.sleep(0.2)
    assert other.all() == []  # another namespace on the same server sees nothing
    # An older quote from the bus never moves a symbol back in time.
    assert b.apply(q("EURUSD", "1.0", "1.1", now)) is None


def test_a_late_process_loads_every_symbols_last_quote_at_once(buses: Any, clock: Any) -> None:
    space = ns()
    a = QuoteStore()
    buses(space, a)
    now = clock.now()
    for i in range(5):
        a.put(q("EURUSD", f"1.1000{i}", f"1.1001{i}", now + timedelta(seconds=i)))
    a.put(q("USDJPY", "150.123", "150.125", now))
    # The last-quote stream is sourced from the quotes stream asynchronously: a process starting a moment later
    # may need another try to see the very last one.
    deadline = time.monotonic() + 5
    while True:
        late = QuoteStore()
        if buses(space, late).applied == 2 and late.latest("EURUSD").bid == D("1.10004"):  # type: ignore[union-attr]
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    eur, jpy = late.latest("EURUSD"), late.latest("USDJPY")
    assert eur is not None and (eur.bid, eur.ts) == (D("1.10004"), now + timedelta(seconds=4))
    assert jpy is not None and str(jpy.bid) == "150.123"


def test_two_processes_on_one_database_share_prices_a_quote_accepted_by_one_fills_in_the_other(
    db_url: str, clock: Any
) -> None:
    one = open_test_platform(db_url, clock)
    two = open_test_platform(db_url, clock)
    try:
        assert one.bus is not None and two.bus is not None
        assert one.bus.quotes.subjects == two.bus.quotes.subjects  # the namespace registered in the database
        acc, _ = two.execution.create_account(CreateAccount(owner_id="alice", policy=ExecutionPolicy(), start=True))
        one.quotes.put(q("EURUSD", "1.23450", "1.23470", clock.now()))
        wait_for(lambda: two.quotes.latest("EURUSD") is not None and two.quotes.latest("EURUSD").ask == D("1.23470"))  # type: ignore[union-attr]
        out = two.execution.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
        assert out.rejection is None and out.fill is not None
        # Filled at the price process one accepted (this policy fills at the mid), with that quote as evidence.
        assert out.fill["price"] == D("1.23460")
        assert (out.fill["quote"]["bid"], out.fill["quote"]["ask"]) == ("1.23450", "1.23470")
    finally:
        two.close()
        one.close()


def test_bus_identity_mismatch_is_refused(db_url: str, database: Any, clock: Any) -> None:
    first = open_test_platform(db_url, clock)
    try:
        registered = register(database, "server:" + first.bus.server_info["server_name"])  # type: ignore[union-attr]
        with pytest.raises(BusMismatchError, match="must share the bus"):
            register(database, "server:some-other-nats")
        with pytest.raises(BusMismatchError, match="namespace"):
            register(database, registered.server_identity, namespace="not-the-registered-one")
    finally:
        first.close()


def test_a_process_on_another_bus_refuses_to_start(db_url: str, clock: Any, tmp_path: Path) -> None:
    first = open_test_platform(db_url, clock)
    first.close()
    own = EmbeddedNats(tmp_path / "other" / "nats")
    ep = own.start()
    try:
        url = ep.url.replace("nats://", f"nats://{ep.user}:{ep.password}@", 1)
        with pytest.raises(BusMismatchError, match="must share the bus"):
            open_test_platform(db_url, clock, nats_url=url)
    finally:
        own.destroy()


# ------------------------------------------------------------------------------------------------ cut off


def test_cut_off_from_the_bus_every_price_is_stale_orders_refused_healthz_degraded_until_back(
    db_url: str, clock: Any, tmp_path: Path
) -> None:
    own = EmbeddedNats(tmp_path / "nats")
    ep = own.start()
    url = ep.url.replace("nats://", f"nats://{ep.user}:{ep.password}@", 1)
    platform = open_test_platform(db_url, clock, nats_url=url)
    try:
        bus = platform.bus
        assert bus is not None and bus.connected
        acc, _ = platform.execution.create_account(CreateAccount(owner_id="bob", policy=ExecutionPolicy(), start=True))
        platform.quotes.put(q("EURUSD", "1.10000", "1.10020", clock.now()))
        with web_client(platform) as http:
            assert http.get("/healthz").json()["checks"]["price_bus"]["ok"] is True

            own.stop()
            wait_for(lambda: not bus.connected)
            out = platform.execution.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
            assert out.rejection is not None and out.rejection.code is Code.STALE_PRICE
            assert out.rejection.details["reason"] == "price_bus_disconnected"
            health = http.get("/healthz").json()
            assert health["status"] == "degraded" and health["checks"]["price_bus"]["ok"] is False

            own.start()  # same port and credentials: the client reconnects by itself
            wait_for(lambda: bus.connected, 20)
            assert http.get("/healthz").json()["checks"]["price_bus"]["ok"] is True
            out = platform.execution.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, D("0.1")))
            assert out.rejection is None and out.fill is not None and out.fill["price"] == D("1.10010")
    finally:
        platform.close()
        own.destroy()
