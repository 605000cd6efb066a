"""A fake Massive (Polygon.io) REST server on an ephemeral loopback port, for contract tests of the official client.

It serves the documented JSON payloads of the endpoints PropDesk uses:

- ``GET /v1/last_quote/currencies/{from}/{to}`` -> ``{"last": {"ask", "bid", "exchange", "timestamp"(ms)}, ...}``
- ``GET /v2/last/nbbo/{ticker}`` -> ``{"results": {"T", "P", "S", "p", "s", "t"(ns), "y", "q", ...}, ...}``
- ``GET /v2/last/trade/{ticker}`` -> ``{"results": {"T", "p", "s", "t"(ns), "y", "q", "x", ...}, ...}``
- ``GET /v1/last/crypto/{from}/{to}`` -> ``{"last": {"price", "size", "exchange", "conditions", "timestamp"(ms)}}``
- ``GET /v2/aggs/ticker/{ticker}/range/{mult}/{span}/{from}/{to}`` -> ``{"results": [{"o","h","l","c","v","vw",
  "t"(ms),"n"}], "resultsCount", ...}``; no bars in range -> the same envelope without ``results`` (count 0).

Unknown data answers 404 ``{"status": "NOT_FOUND", ...}``. Auth: the key must come as ``Authorization: Bearer KEY``
(what the client sends) or ``?apiKey=KEY``; otherwise 401 ``{"status": "ERROR", "error": "Unknown API Key"}``.
Tests script failures with ``script(path_regex, status, body, headers, times)``: e.g. a 429 with ``Retry-After``,
a 503, or an empty body; scripted answers are used first, in order, then the data answers.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

RATE_LIMIT_BODY = {
    "status": "ERROR",
    "error": "You've exceeded the maximum requests per minute, please wait or "
    "upgrade your subscription to continue. https://polygon.io/pricing",
}


@dataclass
class Scripted:
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    auth: str | None  # "bearer", "query" or None


@dataclass
class MassiveData:
    forex_quotes: dict[str, dict[str, Any]] = field(default_factory=dict)  # "EUR/USD" -> last
    stock_quotes: dict[str, dict[str, Any]] = field(default_factory=dict)  # "AAPL" -> results (NBBO)
    stock_trades: dict[str, dict[str, Any]] = field(default_factory=dict)  # "AAPL" -> results
    crypto_trades: dict[str, dict[str, Any]] = field(default_factory=dict)  # "BTC/USD" -> last
    aggs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "I:SPX" -> bars


class FakeMassive:
    """Start with ``with FakeMassive("KEY") as fake:``; ``fake.base_url`` goes to the client's ``base``."""

    def __init__(self, api_key: str = "test-key"):
        self.api_key = api_key
        self.data = MassiveData()
        self.requests: list[Request] = []
        self._scripts: list[Scripted] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-massive", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeMassive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --------------------------------------------------------------------------------------------- scripting
    def script(
        self, path_regex: str, status: int, body: Any = None, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        with self._lock:
            self._scripts.append(Scripted(re.compile(path_regex), status, body, dict(headers or {}), times))

    def rate_limit(self, path_regex: str, retry_after: str | None = "1", times: int = 1) -> None:
        self.script(path_regex, 429, RATE_LIMIT_BODY, {"Retry-After": retry_after} if retry_after else None, times)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def set_forex_quote(self, pair: str, bid: float, ask: float, ts_ms: int) -> None:
        self.data.forex_quotes[pair] = {"ask": ask, "bid": bid, "exchange": 48, "timestamp": ts_ms}

    def set_stock_quote(self, ticker: str, bid: float, ask: float, ts_ns: int) -> None:
        self.data.stock_quotes[ticker] = {
            "T": ticker,
            "P": ask,
            "S": 1,
            "X": 11,
            "p": bid,
            "s": 2,
            "x": 19,
            "c": [1],
            "i": [604],
            "q": 15065,
            "t": ts_ns,
            "y": ts_ns - 1000,
            "z": 3,
        }

    def set_stock_trade(self, ticker: str, price: float, ts_ns: int) -> None:
        self.data.stock_trades[ticker] = {
            "T": ticker,
            "c": [37],
            "f": ts_ns,
            "i": "118749",
            "p": price,
            "q": 3135876,
            "r": 202,
            "s": 25,
            "t": ts_ns,
            "x": 4,
            "y": ts_ns,
            "z": 3,
        }

    def set_crypto_trade(self, pair: str, price: float, ts_ms: int) -> None:
        self.data.crypto_trades[pair] = {
            "conditions": [1],
            "exchange": 4,
            "price": price,
            "size": 0.0069,
            "timestamp": ts_ms,
        }

    def add_agg(self, ticker: str, t_ms: int, o: float, h: float, low: float, c: float) -> None:
        self.data.aggs.setdefault(ticker, []).append(
            {"v": 1000, "vw": (h + low) / 2, "o": o, "c": c, "h": h, "l": low, "t": t_ms, "n": 10}
        )

    # --------------------------------------------------------------------------------------------- serving
    def _answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            for s in self._scripts:
                if s.times > 0 and s.pattern.search(path):
                    s.times -= 1
                    return s.status, s.body, s.headers
        rid = uuid.uuid4().hex
        not_found = (404, {"status": "NOT_FOUND", "request_id": rid, "message": "Data not found."}, {})
        if m := re.fullmatch(r"/v1/last_quote/currencies/([^/]+)/([^/]+)", path):
            sym = f"{m[1]}/{m[2]}"
            last = self.data.forex_quotes.get(sym)
            if last is None:
                return not_found
            return 200, {"last": last, "request_id": rid, "status": "success", "symbol": sym}, {}
        if m := re.fullmatch(r"/v2/last/nbbo/([^/]+)", path):
            res = self.data.stock_quotes.get(m[1])
            return (200, {"request_id": rid, "results": res, "status": "OK"}, {}) if res else not_found
        if m := re.fullmatch(r"/v2/last/trade/([^/]+)", path):
            res = self.data.stock_trades.get(m[1])
            return (200, {"request_id": rid, "results": res, "status": "OK"}, {}) if res else not_found
        if m := re.fullmatch(r"/v1/last/crypto/([^/]+)/([^/]+)", path):
            sym = f"{m[1]}-{m[2]}"
            last = self.data.crypto_trades.get(f"{m[1]}/{m[2]}")
            if last is None:
                return not_found
            return 200, {"last": last, "request_id": rid, "status": "success", "symbol": sym}, {}
        if m := re.fullmatch(r"/v2/aggs/ticker/([^/]+)/range/(\d+)/(\w+)/(\d+)/(\d+)", path):
            ticker, lo, hi = m[1], int(m[4]), int(m[5])
            bars = sorted(
                (b for b in self.data.aggs.get(ticker, []) if lo <= b["t"] <= hi),
                key=lambda b: b["t"],
                reverse=query.get("sort", ["asc"])[0] == "desc",
            )
            env: dict[str, Any] = {
                "ticker": ticker,
                "queryCount": len(bars),
                "resultsCount": len(bars),
                "adjusted": True,
                "status": "OK",
                "request_id": rid,
                "count": len(bars),
            }
            if bars:
                env["results"] = bars
            return 200, env, {}
        return not_found

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                header = self.headers.get("Authorization", "")
                auth = None
                if header == f"Bearer {fake.api_key}":
                    auth = "bearer"
                elif query.get("apiKey", [None])[0] == fake.api_key:
                    auth = "query"
                with fake._lock:
                    fake.requests.append(Request(url.path, query, auth))
                if auth is None:
                    status, body, headers = (
                        401,
                        {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": "Unknown API Key"},
                        {},
                    )
                else:
                    status, body, headers = fake._answer(url.path, query)
                raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        return Handler


# ================================================================================================= WebSocket
class FakeMassiveStream:
    """A fake Massive WebSocket server on loopback speaking the documented protocol, one path per market
    (``/forex``, ``/crypto``, ``/stocks``, ``/indices``); point the client's ``feed`` at ``host:port``.

    On connect it sends ``[{"ev":"status","status":"connected","message":"Connected Successfully"}]``; an
    ``{"action":"auth","params":KEY}`` gets ``auth_success`` (or ``auth_failed`` and a close); an
    ``{"action":"subscribe","params":"C.EUR/USD,..."}`` gets one ``success`` status per channel. Tests then
    ``push(market, events)`` (sent as one JSON array to every connection subscribed to each event's channel),
    ``drop(market)`` (an abnormal close: the TCP connection is cut), and set ``on_subscribe[market]`` to events sent
    right after a (re)subscription (a replay of old quotes, as a real feed may do after a reconnect).
    """

    def __init__(self, api_key: str = "test-key"):
        import asyncio

        self.api_key = api_key
        self.connections: dict[str, int] = {}
        self.auths: list[tuple[str, bool]] = []
        self.subscriptions: list[tuple[str, list[str]]] = []
        self.on_subscribe: dict[str, list[dict[str, Any]]] = {}
        self._live: dict[str, list[tuple[Any, set[str]]]] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-massive-ws", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    def __enter__(self) -> FakeMassiveStream:
        import asyncio

        from websockets.asyncio.server import serve

        self._thread.start()

        async def start() -> Any:
            return await serve(self._handle, "127.0.0.1", 0)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # --------------------------------------------------------------------------------------------- protocol
    async def _handle(self, ws: Any) -> None:
        market = ws.request.path.strip("/")
        with self._cond:
            self.connections[market] = self.connections.get(market, 0) + 1
        await ws.send(json.dumps([{"ev": "status", "status": "connected", "message": "Connected Successfully"}]))
        channels: set[str] = set()
        entry = (ws, channels)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                action, params = msg.get("action"), str(msg.get("params", ""))
                if action == "auth":
                    ok = params == self.api_key
                    with self._cond:
                        self.auths.append((market, ok))
                    if not ok:
                        await ws.send(
                            json.dumps([{"ev": "status", "status": "auth_failed", "message": "authentication failed"}])
                        )
                        await ws.close()
                        return
                    await ws.send(json.dumps([{"ev": "status", "status": "auth_success", "message": "authenticated"}]))
                elif action == "subscribe":
                    subs = [p.strip() for p in params.split(",") if p.strip()]
                    await ws.send(
                        json.dumps(
                            [{"ev": "status", "status": "success", "message": f"subscribed to: {s}"} for s in subs]
                        )
                    )
                    with self._cond:
                        channels.update(subs)
                        self.subscriptions.append((market, subs))
                        lst = self._live.setdefault(market, [])
                        if entry not in lst:
                            lst.append(entry)
                        replay = list(self.on_subscribe.get(market, []))
                        self._cond.notify_all()
                    if replay:
                        await ws.send(json.dumps(replay))
                elif action == "unsubscribe":
                    with self._cond:
                        channels.difference_update(p.strip() for p in params.split(","))
        except Exception:  # a dropped connection ends the handler
            pass
        finally:
            with self._cond:
                lst = self._live.get(market, [])
                if entry in lst:
                    lst.remove(entry)

    @staticmethod
    def channel(event: dict[str, Any]) -> str:
        ev = event["ev"]
        key = {"C": "p", "XQ": "pair", "Q": "sym", "V": "T"}[ev]
        return f"{ev}.{event[key]}"

    # --------------------------------------------------------------------------------------------- test API
    def wait_subscribed(self, market: str, connections: int = 1, timeout: float = 10.0) -> None:
        """Block until ``market`` has had ``connections`` subscribed connections in total and one is live."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    sum(1 for m, _ in self.subscriptions if m == market) >= connections and bool(self._live.get(market))
                ),
                timeout,
            )
        if not ok:
            raise TimeoutError(f"no subscribed {market} connection (wanted {connections})")

    def push(self, market: str, events: list[dict[str, Any]]) -> int:
        """Send ``events`` to the subscribed connections of ``market``; returns how many connections got any."""
        import asyncio

        async def send() -> int:
            with self._lock:
                targets = list(self._live.get(market, []))
            n = 0
            for ws, channels in targets:
                mine = [e for e in events if self.channel(e) in channels]
                if mine:
                    try:
                        await ws.send(json.dumps(mine))
                        n += 1
                    except Exception:  # a connection that just dropped
                        pass
            return n

        return asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)

    def drop(self, market: str) -> int:
        """Cut every live connection of ``market`` without a close frame (the client must reconnect)."""
        import asyncio

        async def cut() -> int:
            with self._lock:
                targets = list(self._live.get(market, []))
                self._live[market] = []
            for ws, _ in targets:
                ws.transport.abort()
            return len(targets)

        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    # payloads as the real feeds send them
    @staticmethod
    def forex(pair: str, bid: float, ask: float, t_ms: int) -> dict[str, Any]:
        return {"ev": "C", "p": pair, "x": 48, "a": ask, "b": bid, "t": t_ms}

    @staticmethod
    def crypto(pair: str, bid: float, ask: float, t_ms: int) -> dict[str, Any]:
        return {"ev": "XQ", "pair": pair, "bp": bid, "bs": 0.25, "ap": ask, "as": 0.5, "t": t_ms, "x": 1, "r": t_ms + 3}

    @staticmethod
    def stock(sym: str, bid: float, ask: float, t_ms: int) -> dict[str, Any]:
        return {
            "ev": "Q",
            "sym": sym,
            "bx": 4,
            "bp": bid,
            "bs": 2,
            "ax": 7,
            "ap": ask,
            "as": 3,
            "c": 0,
            "i": [604],
            "t": t_ms,
            "q": 50385480,
            "z": 3,
        }

    @staticmethod
    def index(ticker: str, value: float, t_ms: int) -> dict[str, Any]:
        return {"ev": "V", "val": value, "T": ticker, "t": t_ms}
