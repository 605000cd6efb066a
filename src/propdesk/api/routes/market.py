"""Market data reads: candles for charts and the latest quote per symbol with its session.

``/api/v1/market/*`` is open to any authenticated principal (a web session or a bearer token): market data is
not per-trader. Reads go through the app role's pool when the platform has one (the ``candles``, ``quotes`` and
``instruments`` tables are readable by it for everyone), else through a rolled-back engine read.

Prices are mid prices ((bid + ask) / 2) as decimal strings. A bar with ``synthetic: true`` had no tick of its own:
the market was open but nothing traded, so the last close is carried forward (charts draw it flat, the evaluation
does not count it as a price).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from ...domain.quotes import Quote
from ...marketdata.recorder import TIMEFRAMES, load_candles
from ...marketdata.sessions import SessionCalendar, SessionStatus, default_calendar
from ..body import StrictJSONRoute
from ..context import READ_ERRORS, Api
from ..errors import ApiError
from ..render import json_response

PREFIX = "/api/v1/market"
MAX_BARS = 1000


class SessionOut(BaseModel):
    """The market's session at the time of the answer."""

    open: bool
    reason: str = Field(examples=["open: FX 24/5 session", "closed: weekend"])
    next_open: datetime | None = Field(
        description="While open: the start of the session after this one; while "
        "closed: the next opening. Null for a market that never closes."
    )
    next_close: datetime | None = Field(
        description="While open: the end of this session; while closed: the end "
        "of the next session. Null for a market that never closes."
    )


class CandleOut(BaseModel):
    start: datetime = Field(description="Start of the bar (UTC).")
    open: str
    high: str
    low: str
    close: str
    tick_count: int
    synthetic: bool = Field(
        description="No tick of its own: the last close carried forward while the market "
        "was open (or a provider's empty minute rebuilt from recorded ticks)."
    )


class CandlesOut(BaseModel):
    symbol: str
    timeframe: Literal["1m", "5m", "15m", "1h"]
    price: Literal["mid"] = "mid"
    bars: list[CandleOut]
    session: SessionOut


class MarketQuoteOut(BaseModel):
    symbol: str
    asset_class: str
    bid: str | None
    ask: str | None
    mid: str | None
    ts: datetime | None
    seq: int | None
    source: str | None
    age_seconds: float | None
    stale: bool = Field(
        description="True when the quote is older than its asset class's threshold while the "
        "market is open (orders on it are refused with stale_price), or missing while open."
    )
    stale_after_seconds: float
    session: SessionOut


class MarketQuotesOut(BaseModel):
    items: list[MarketQuoteOut]
    time: datetime


def session_json(st: SessionStatus) -> dict[str, Any]:
    return {"open": st.open, "reason": st.reason, "next_open": st.next_open, "next_close": st.next_close}


def calendar_of(platform: Any) -> SessionCalendar:
    cal = getattr(platform, "sessions", None)
    return cal if isinstance(cal, SessionCalendar) else default_calendar()


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["market"])
    platform = api.platform

    @contextmanager
    def read() -> Iterator[Any]:
        pool = getattr(platform.db, "app_pool", None)
        if pool is None:
            with api.read() as c:
                yield c
            return
        with pool.connection() as c:
            try:
                yield c
            finally:
                c.rollback()

    def known(symbol: str) -> str:
        sym = symbol.strip().upper()
        inst = platform.catalogue.get(sym)
        if inst is None or not inst.enabled:
            raise ApiError(404, "unknown_symbol", f"unknown or disabled symbol {symbol!r}", {"symbol": symbol})
        return sym

    @router.get(f"{PREFIX}/candles", response_model=CandlesOut, responses=READ_ERRORS)
    def candles(
        symbol: Annotated[str, Query(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")],
        timeframe: Annotated[Literal["1m", "5m", "15m", "1h"], Query()] = "1m",
        limit: Annotated[int, Query(ge=1, le=MAX_BARS)] = 300,
    ) -> Response:
        """The newest ``limit`` bars of ``symbol`` (oldest first): persisted minute bars, the live open bar, and
        the minutes the market was open without a tick as synthetic carried-forward bars; 5m/15m/1h are
        resampled from the minute bars (aligned on UTC)."""
        sym = known(symbol)
        now = platform.clock.now()
        cal = calendar_of(platform)
        recorder = getattr(platform, "candles", None)
        open_bar = recorder.open_bar(sym) if recorder is not None else None
        with read() as c:
            bars = load_candles(c, sym, timeframe, limit, now=now, calendar=cal, open_bar=open_bar)
        assert timeframe in TIMEFRAMES
        return json_response(
            {
                "symbol": sym,
                "timeframe": timeframe,
                "price": "mid",
                "bars": [
                    {
                        "start": b.minute,
                        "open": b.open,
                        "high": b.high,
                        "low": b.low,
                        "close": b.close,
                        "tick_count": b.ticks,
                        "synthetic": b.synthetic,
                    }
                    for b in bars
                ],
                "session": session_json(cal.status(sym, now)),
            }
        )

    @router.get(f"{PREFIX}/quotes", response_model=MarketQuotesOut, responses=READ_ERRORS)
    def quotes(
        symbols: Annotated[
            str | None,
            Query(
                max_length=2000,
                pattern=r"^[A-Za-z0-9,]*$",
                description="Comma-separated symbols (default: every enabled instrument).",
            ),
        ] = None,
    ) -> Response:
        """The latest quote of each symbol with its market session and a stale flag (a missing quote while the
        market is open is stale too)."""
        if symbols:
            chosen = [known(s) for s in symbols.split(",") if s.strip()]
        else:
            chosen = [i.symbol for i in platform.catalogue if i.enabled]
        now = platform.clock.now()
        cal = calendar_of(platform)
        with read() as c:
            rows = c.execute(
                "SELECT symbol, bid, ask, ts, seq, source FROM quotes WHERE symbol = ANY(%s)", (chosen,)
            ).fetchall()
        stored = {r["symbol"]: Quote(r["symbol"], r["bid"], r["ask"], r["ts"], r["seq"], r["source"]) for r in rows}
        held = {q.symbol: q for q in platform.quotes.all()}  # this process's store may be ahead of the table
        items = []
        for sym in chosen:
            q = held.get(sym)
            if q is None or (sym in stored and stored[sym].ts > q.ts):
                q = stored.get(sym)
            st = cal.status(sym, now)
            limit = cal.stale_after(sym)
            age = q.age_seconds(now) if q is not None else None
            inst = platform.catalogue.get(sym)
            assert inst is not None
            items.append(
                {
                    "symbol": sym,
                    "asset_class": inst.asset_class.value,
                    "bid": q.bid if q else None,
                    "ask": q.ask if q else None,
                    "mid": q.mid if q else None,
                    "ts": q.ts if q else None,
                    "seq": q.seq if q else None,
                    "source": q.source if q else None,
                    "age_seconds": round(age, 3) if age is not None else None,
                    "stale": st.open and (age is None or age > limit),
                    "stale_after_seconds": limit,
                    "session": session_json(st),
                }
            )
        return json_response({"items": items, "time": now})

    return router
