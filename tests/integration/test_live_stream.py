"""The dashboard's live stream (SSE) over HTTP against a real uvicorn server on the test platform (ManualClock).

Quotes are published through the feed path (``marketdata.feed.publish``: store, execution core, tick stream),
exactly as a provider does; the SSE lines are read with httpx streaming in a reader thread.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.browser.conftest import LiveServer, live_platform_server

from propdesk.domain.quotes import Quote

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats every 0.3 s: the reader threads see their stop flag promptly, so closed clients go away fast."""
    from propdesk.web import live

    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.3)


@pytest.fixture
def server(db_url: str, clock: Any) -> Iterator[LiveServer]:
    with live_platform_server(db_url, clock) as s:
        yield s


def publish(server: LiveServer, symbol: str, bid: str, ask: str, advance: float = 1.0) -> None:
    from propdesk import logs
    from propdesk.marketdata.feed import publish as feed_publish

    server.clock.advance(advance)
    p = server.platform
    q = Quote(symbol, Decimal(bid), Decimal(ask), server.clock.now())
    assert feed_publish(p.quotes, p.execution, q, logs.get("test.feed")) is not None


def new_user(server: LiveServer, role: str = "trader") -> tuple[Any, dict[str, str]]:
    from propdesk.identity.users import UserRole

    identity = server.platform.identity
    user = identity.create_user(
        f"{role}-{uuid.uuid4().hex[:8]}@example.test", "correct horse battery staple 42", role=UserRole(role)
    )
    token = identity.start_session(user, ip="127.0.0.1", user_agent="pytest")
    return user, {identity.cookie_name: token}


def new_account(server: LiveServer, user: Any) -> uuid.UUID:
    """A classic-2step 10k challenge owned by ``user``, made by the execution core as checkout does."""
    from propdesk.domain.lifecycle import Mode
    from propdesk.domain.policy import ExecutionPolicy
    from propdesk.execution.service import CreateAccount

    sized = server.platform.plans.get("classic-2step").for_offer("10k")
    policy = ExecutionPolicy.from_json({"starting_balance": str(sized.starting_balance), "currency": sized.currency})
    account, _ = server.platform.execution.create_account(
        CreateAccount(
            owner_id=str(user.id),
            mode=Mode.CHALLENGE,
            phase=sized.phases[0].id,
            policy=policy,
            rulebook=sized.to_json(),
            rulebook_id=sized.id,
            rulebook_version=sized.version,
            offer_id="10k",
            start=True,
        )
    )
    return account["id"]  # type: ignore[no-any-return]


def buy(server: LiveServer, account_id: uuid.UUID, quantity: str = "0.04", **extra: Any) -> None:
    from propdesk.domain.orders import OrderRequest, OrderType, Side

    req = OrderRequest(
        "EURUSD",
        Side.BUY,
        Decimal(quantity),
        OrderType.MARKET,
        None,
        None,
        extra.get("stop_loss"),
        extra.get("take_profit"),
    )
    out = server.platform.execution.submit_order(account_id, req)
    assert out.rejection is None, out.rejection


class SSE:
    """Reads an SSE response in a thread; events (and heartbeat comments) land in a queue."""

    def __init__(self, url: str, cookies: dict[str, str]):
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.status: int | None = None
        self.ready = threading.Event()
        self._client = httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(30, read=30))
        self._stop = False
        self.body = b""
        self.thread: threading.Thread | None = None

    def open(self, path: str) -> SSE:
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "no response"
        return self

    def _run(self, path: str) -> None:
        try:
            with self._client.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
                self.status = r.status_code
                self.headers = r.headers
                if r.status_code != 200:
                    self.body = r.read()  # read before ``ready``: the test looks at the body as soon as it is set
                    return
                self.ready.set()
                event, data = "message", []
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.events.put(("comment", line[1:].strip()))
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "":
                        if data:
                            self.events.put((event, json.loads("\n".join(data))))
                        event, data = "message", []
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self.ready.set()

    def next(self, kind: str, timeout: float = 5.0, where: Any = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout}s")
            try:
                k, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if k == kind and (where is None or where(data)):
                return data

    def close(self) -> None:
        self._stop = True
        self._client.close()
        if self.thread is not None:
            self.thread.join(timeout=5)


@pytest.fixture
def sse_clients() -> Iterator[list[SSE]]:
    made: list[SSE] = []
    yield made
    for s in made:
        s.close()


def stream(server: LiveServer, made: list[SSE], cookies: dict[str, str], path: str) -> SSE:
    s = SSE(server.url, cookies)
    made.append(s)
    return s.open(path)


def test_on_connect_the_stream_sends_the_whole_account_then_the_chart_symbols_quote(
    server: LiveServer, sse_clients: list[SSE]
) -> None:
    publish(server, "EURUSD", "1.10000", "1.10010")
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}?symbol=EURUSD")
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    first = s.next("account")
    assert set(first["html"]) == {"summary", "alerts", "rules", "positions", "orders", "history"}
    assert first["data"]["status"] == "active" and first["data"]["can_trade"] is True
    assert Decimal(first["data"]["balance"]["equity"]) == Decimal("10000")
    assert 'id="stat-equity"' in first["html"]["summary"]
    q = s.next("quote")
    assert q["symbol"] == "EURUSD" and q["bid"] == "1.10000"


def test_quotes_are_pushed_and_the_account_is_resent_when_a_held_symbols_price_moves_its_pnl(
    server: LiveServer, sse_clients: list[SSE]
) -> None:
    publish(server, "EURUSD", "1.10000", "1.10010")
    publish(server, "XAUUSD", "2000.00", "2000.50")
    user, cookies = new_user(server)
    account = new_account(server, user)
    buy(server, account, "0.04")
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}?symbol=XAUUSD")
    first = s.next("account")
    assert [p["symbol"] for p in first["data"]["positions"]] == ["EURUSD"]
    pos = first["data"]["positions"][0]
    # Longs are marked at the bid: the open P&L at bid 1.10210 is (1.10210 - entry) x 0.04 x 100,000.
    expected = ((Decimal("1.10210") - Decimal(pos["avg_price"])) * 4000).quantize(Decimal("0.01"))
    assert expected > 0
    publish(server, "EURUSD", "1.10210", "1.10220")
    q = s.next("quote", where=lambda d: d["symbol"] == "EURUSD" and d["bid"] == "1.10210")
    assert q["ask"] == "1.10220"
    started = time.monotonic()
    moved = s.next(
        "account", timeout=3, where=lambda d: Decimal(d["data"]["positions"][0]["unrealized_pnl"]) == expected
    )
    assert time.monotonic() - started < 1.5
    assert f"+{expected}" in moved["html"]["summary"]
    publish(server, "XAUUSD", "2001.00", "2001.50")  # the chart symbol streams too, though not held
    s.next("quote", where=lambda d: d["symbol"] == "XAUUSD" and d["bid"] == "2001.00")
    publish(server, "AAPL", "200.00", "200.02")  # neither held nor charted: not sent
    publish(server, "EURUSD", "1.10220", "1.10230")
    s.next("quote", where=lambda d: d["symbol"] == "EURUSD" and d["bid"] == "1.10220")
    seen = []
    while not s.events.empty():
        seen.append(s.events.get_nowait())
    assert not any(k == "quote" and d["symbol"] == "AAPL" for k, d in seen)


def test_changes_made_elsewhere_reach_the_stream_within_a_second_or_so(
    server: LiveServer, sse_clients: list[SSE]
) -> None:
    publish(server, "EURUSD", "1.10000", "1.10010")
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}")
    s.next("account")
    buy(server, account, "0.02")  # another door (here: the core directly), no quote involved
    got = s.next("account", timeout=3, where=lambda d: len(d["data"]["positions"]) == 1)
    assert 'data-symbol="EURUSD"' in got["html"]["positions"]


def test_an_unchanged_account_is_not_resent(server: LiveServer, sse_clients: list[SSE]) -> None:
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}")
    s.next("account")
    with pytest.raises(AssertionError):
        s.next("account", timeout=2.5)


def test_another_traders_account_is_404_for_traders_and_admins_alike(
    server: LiveServer, sse_clients: list[SSE]
) -> None:
    owner, _ = new_user(server)
    account = new_account(server, owner)
    _, other = new_user(server)
    s = stream(server, sse_clients, other, f"/api/v1/stream/accounts/{account}")
    assert s.status == 404 and json.loads(s.body)["error"]["code"] == "account_not_found"
    s = stream(server, sse_clients, other, f"/api/v1/stream/accounts/{uuid.uuid4()}")
    assert s.status == 404
    _, admin = new_user(server, "admin")
    s = stream(server, sse_clients, admin, f"/api/v1/stream/accounts/{account}")
    # The owner rule holds for admins too (issue 13, defect 4): they use the audited /admin/.../as-trader view.
    assert s.status == 404 and json.loads(s.body)["error"]["code"] == "account_not_found"


def test_anonymous_and_bearer_callers_get_no_stream(server: LiveServer) -> None:
    owner, _ = new_user(server)
    account = new_account(server, owner)
    with httpx.Client(base_url=server.url) as anon:
        assert anon.get(f"/api/v1/stream/accounts/{account}").status_code in (401, 403)
    assert server.service.get(f"/api/v1/stream/accounts/{account}").status_code == 403


def test_bad_parameters_are_clear_4xx(server: LiveServer, sse_clients: list[SSE]) -> None:
    owner, cookies = new_user(server)
    account = new_account(server, owner)
    s = stream(server, sse_clients, cookies, "/api/v1/stream/accounts/not-a-uuid")
    assert s.status == 422
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}?symbol=NOPE1")
    assert s.status == 422 and json.loads(s.body)["error"]["code"] == "unknown_symbol"


def test_the_tick_subscription_ends_when_the_client_goes_away(server: LiveServer, sse_clients: list[SSE]) -> None:
    publish(server, "EURUSD", "1.10000", "1.10010")
    user, cookies = new_user(server)
    account = new_account(server, user)
    before = len(server.platform.ticks)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}?symbol=EURUSD")
    s.next("account")
    assert len(server.platform.ticks) == before + 1
    s.close()
    deadline = time.monotonic() + 5
    while len(server.platform.ticks) != before and time.monotonic() < deadline:
        publish(server, "EURUSD", "1.10000", "1.10010" if int(time.monotonic() * 10) % 2 else "1.10020")
        time.sleep(0.1)
    assert len(server.platform.ticks) == before


def test_heartbeats_keep_an_idle_stream_open(server: LiveServer, sse_clients: list[SSE]) -> None:
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}")
    s.next("account")
    assert s.next("comment", timeout=3) == "heartbeat"


def test_a_stream_ends_when_its_session_is_logged_out(
    server: LiveServer, sse_clients: list[SSE], monkeypatch: pytest.MonkeyPatch
) -> None:
    from propdesk.web import live

    monkeypatch.setattr(live, "SESSION_CHECK_SECONDS", 0.2)
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}")
    s.next("account")
    token = next(iter(cookies.values()))
    assert server.platform.identity.end_session(token)
    ended = s.next("session_ended", timeout=5)
    assert "log in again" in ended["reason"]


def test_the_news_panel_is_sent_on_connect_and_again_only_when_its_events_change(
    server: LiveServer, sse_clients: list[SSE], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from propdesk.marketdata.calendar import EconomicCalendar, EconomicEvent
    from propdesk.web import live

    monkeypatch.setattr(live, "NEWS_SECONDS", 0.3)
    user, cookies = new_user(server)
    account = new_account(server, user)
    s = stream(server, sse_clients, cookies, f"/api/v1/stream/accounts/{account}")
    s.next("account")
    assert s.next("news")["data"]["events"] == []  # on connect: a reconnecting page may have missed a change
    with pytest.raises(AssertionError):  # unchanged events are not sent again
        s.next("news", timeout=1.0)
    at = server.clock.now() + timedelta(hours=2)
    EconomicCalendar(server.platform.db, server.clock).upsert(
        [EconomicEvent(at, "USD", "high", "Live-added CPI", "US", "test", "live-1")]
    )
    got = s.next("news", timeout=3)
    assert "Live-added CPI" in got["html"] and "data-news-event=" in got["html"]
    assert [e["title"] for e in got["data"]["events"]] == ["Live-added CPI"]
    assert "EURUSD" in got["data"]["events"][0]["symbols"]
    with pytest.raises(AssertionError):  # sent once, not on every re-read
        s.next("news", timeout=1.0)
