"""Live updates over server-sent events: ``GET /api/v1/stream/accounts/{id}[?symbol=EURUSD]``.

One stream per open dashboard (session required; the account's owner only: 404 for anyone else, admins
included, decided by ``reads.access.owned_conn`` before the stream starts). Events:

- ``account``: on connect, then whenever the dashboard's data changed: ``{"html": {fragment: html}, "data":
  {...}, "t": unix seconds}`` (``web.trader_views.live_payload``: the same partial templates the page rendered).
- ``quote``: ``{"symbol", "bid", "ask", "mid", "ts"}`` for the account's held / working symbols and the chart
  symbol.
- ``news``: ``{"html": panel, "data": {...}}`` on connect (a reconnecting page may have missed a change) and
  then whenever the upcoming economic events of the account's news panel changed (re-read every
  ``NEWS_SECONDS``; ``web.trader_views.news_payload``).
- a ``: heartbeat`` comment every ``HEARTBEAT_SECONDS`` so proxies keep the connection open.

How quotes reach the stream: ``platform.ticks`` (a ``TickStream``) calls our callback on the publisher's thread;
the callback stores the quote in a per-symbol slot (coalescing: a slow client gets the newest quote of each
symbol, never a backlog) and wakes the connection's task with ``loop.call_soon_threadsafe``. The account is
re-read after a quote of a symbol it holds and at least once a second (changes made by other processes: a worker,
an admin), and sent only when its digest changed. The subscription is dropped when the client goes away.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from .. import logs
from ..api.context import READ_ERRORS
from ..api.errors import ApiError
from ..api.sse import HEARTBEAT_SECONDS, sse
from ..domain.errors import NotFound
from ..domain.quotes import Quote
from .pages import current_user
from .trader_views import account_state, live_payload, news_payload

REFRESH_SECONDS = 1.0
# How often an open stream re-reads the news panel (events are scheduled hours or days ahead: an admin's new
# entry or a calendar sync reaches an open dashboard within this).
NEWS_SECONDS = 30.0
# How often an open stream re-checks its session: a logout, revocation or timeout ends the stream within this.
# (An open dashboard counts as activity for the idle timeout: each check is a session use.)
SESSION_CHECK_SECONDS = 5.0
# After a quote of a held symbol the account is re-read, but not more often than this (a burst of ticks costs one
# read, not one per tick).
MIN_REFRESH_GAP = 0.2

log = logs.get("propdesk.web.live")


def quote_json(q: Quote) -> dict[str, Any]:
    return {"symbol": q.symbol, "bid": str(q.bid), "ask": str(q.ask), "mid": str(q.mid), "ts": q.ts}


class _Feed:
    """Quotes from the publisher thread into one connection's asyncio task, coalesced per symbol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ticks: Any):
        self.loop = loop
        self.ticks = ticks
        self.wake = asyncio.Event()
        self._lock = threading.Lock()  # the publisher thread writes slots while the loop swaps them out
        self.latest: dict[str, Quote] = {}
        self.symbols: frozenset[str] = frozenset()
        self._unsubscribe: Any = None

    def _on_tick(self, quote: Quote) -> None:  # publisher thread
        with self._lock:
            self.latest[quote.symbol.upper()] = quote  # one slot per symbol: the newest wins
        try:
            self.loop.call_soon_threadsafe(self.wake.set)
        except RuntimeError:
            pass  # the loop is closed: the connection is gone, the unsubscribe is on its way

    def follow(self, symbols: set[str]) -> None:
        """(Re)subscribe to ``symbols`` when the set changed."""
        wanted = frozenset(s.upper() for s in symbols if s)
        if wanted == self.symbols and self._unsubscribe is not None:
            return
        self.close()
        self.symbols = wanted
        if wanted:
            self._unsubscribe = self.ticks.subscribe(self._on_tick, wanted)

    def take(self) -> dict[str, Quote]:
        self.wake.clear()  # before the swap: a quote stored after it sets the event again
        with self._lock:
            got, self.latest = self.latest, {}
        return {s: q for s, q in got.items() if s in self.symbols}

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


def _symbols_of(data: dict[str, Any], chart_symbol: str | None) -> set[str]:
    held = {p["symbol"] for p in data.get("positions", [])} | {o["symbol"] for o in data.get("orders", [])}
    if chart_symbol:
        held.add(chart_symbol)
    return held


def build(api: Any) -> APIRouter:
    router = APIRouter(tags=["trader"])
    platform = api.platform

    @router.get(
        "/api/v1/stream/accounts/{account_id}",
        responses={
            **READ_ERRORS,
            200: {
                "description": "A text/event-stream of `account` and `quote` events",
                "content": {"text/event-stream": {}},
            },
        },
    )
    async def stream_account(
        request: Request,
        account_id: Annotated[uuid.UUID, Path(description="Account id (UUID).")],
        symbol: Annotated[
            str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$", description="Chart symbol whose quotes to stream too.")
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events for one account's dashboard: `account` (on connect and on every change: the
        dashboard's fragments and data), `quote` (held, working and chart symbols) and heartbeat comments."""
        user = current_user(request)
        if user is None:
            raise ApiError(403, "forbidden", "this stream needs a signed-in user session")
        chart_symbol = symbol.upper() if symbol else None
        if chart_symbol and platform.catalogue.get(chart_symbol) is None:
            raise ApiError(422, "unknown_symbol", f"unknown symbol {symbol!r}", {"symbol": symbol})
        # Decided before the response starts, so an account the user may not see is a plain 404.
        first = live_payload(await run_in_threadpool(account_state, platform, user, account_id))
        first_news = await run_in_threadpool(news_payload, platform, user, account_id)

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            feed = _Feed(loop, platform.ticks)
            payload, news_digest = first, first_news["digest"]
            try:
                feed.follow(_symbols_of(payload["data"], chart_symbol))
                yield sse("account", _event(payload))
                yield sse("news", {"html": first_news["html"], "data": first_news["data"]})
                for sym in sorted(feed.symbols):
                    q = platform.quotes.latest(sym)
                    if q is not None:
                        yield sse("quote", quote_json(q))
                last_read = last_beat = last_check = last_news = time.monotonic()
                dirty = False
                token = request.cookies.get(platform.identity.cookie_name)
                while True:
                    now = time.monotonic()
                    wait = min(
                        REFRESH_SECONDS - (now - last_read),
                        HEARTBEAT_SECONDS - (now - last_beat),
                        NEWS_SECONDS - (now - last_news),
                    )
                    if dirty:
                        wait = min(wait, MIN_REFRESH_GAP - (now - last_read))
                    try:
                        await asyncio.wait_for(feed.wake.wait(), timeout=max(0.0, wait))
                    except TimeoutError:
                        pass
                    if await request.is_disconnected():
                        return
                    if time.monotonic() - last_check >= SESSION_CHECK_SECONDS:
                        last_check = time.monotonic()
                        still = await run_in_threadpool(platform.identity.resolve, token)
                        if still is None or still.id != user.id:
                            yield sse("session_ended", {"reason": "the session ended; log in again"})
                            return
                    held = {p["symbol"] for p in payload["data"].get("positions", [])} | {
                        o["symbol"] for o in payload["data"].get("orders", [])
                    }
                    for sym, q in sorted(feed.take().items()):
                        yield sse("quote", quote_json(q))
                        if sym in held:
                            dirty = True
                    now = time.monotonic()
                    if now - last_read >= REFRESH_SECONDS or (dirty and now - last_read >= MIN_REFRESH_GAP):
                        last_read, dirty = now, False
                        try:
                            fresh = live_payload(await run_in_threadpool(account_state, platform, user, account_id))
                        except NotFound:
                            return  # no longer visible to this user (e.g. the session's rights changed)
                        if fresh["digest"] != payload["digest"]:
                            payload = fresh
                            feed.follow(_symbols_of(payload["data"], chart_symbol))
                            yield sse("account", _event(payload))
                    if time.monotonic() - last_news >= NEWS_SECONDS:
                        last_news = time.monotonic()
                        try:
                            news = await run_in_threadpool(news_payload, platform, user, account_id)
                        except NotFound:
                            return
                        if news["digest"] != news_digest:
                            news_digest = news["digest"]
                            yield sse("news", {"html": news["html"], "data": news["data"]})
                    if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                        last_beat = time.monotonic()
                        yield b": heartbeat\n\n"
            finally:
                feed.close()

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _event(payload: dict[str, Any]) -> dict[str, Any]:
        return {"html": payload["html"], "data": payload["data"], "t": int(platform.clock.now().timestamp())}

    return router


__all__ = ["NEWS_SECONDS", "SESSION_CHECK_SECONDS", "build", "quote_json"]
