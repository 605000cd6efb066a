"""The quote store: latest bid/ask per symbol, in memory and persisted, with out-of-order ticks dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..domain.quotes import Quote
from .band import BandVerdict, QuoteBand
from .stream import TickStream


@dataclass
class StoreStats:
    accepted: int = 0
    dropped_out_of_order: int = 0
    dropped_duplicate: int = 0
    held_out_of_band: int = 0


class QuoteStore:
    """Latest quote per symbol. ``put`` refuses a quote older than (or identical to) the one held.

    With a database attached, accepted quotes are upserted (guarded by timestamp so a slow writer can never
    move a symbol back in time) and ``latest`` falls back to the table for symbols this process has not seen.
    """

    def __init__(self, db: Any | None = None):
        self._db = db
        self._quotes: dict[str, Quote] = {}
        self._lock = threading.Lock()
        self.stats = StoreStats()
        # Subscribers (the UI's live stream, workers) hear of a quote through ``announce`` once the execution
        # core has reacted to it, so what they read back already reflects that quote.
        self.ticks = TickStream()
        # The price bus (bus/bridge.py): ``publisher`` gets every quote this process accepts through ``put``, so
        # every other process holds it too; quotes from other processes come in through ``apply``.
        self.publisher: Callable[[Quote], None] | None = None
        # The sanity band (marketdata/band.py, set by bootstrap): an absurd quote is held instead of accepted.
        self.band: QuoteBand | None = None
        self._held: dict[str, tuple[Quote, BandVerdict]] = {}

    def announce(self, quote: Quote) -> None:
        """Tell the tick stream's subscribers about a stored quote (call after the execution core reacted)."""
        self.ticks.publish(quote)

    def latest(self, symbol: str) -> Quote | None:
        q = self._quotes.get(symbol)
        if q is None and self._db is not None:
            self.refresh([symbol])
            q = self._quotes.get(symbol)
        return q

    def mid(self, symbol: str) -> Decimal | None:
        q = self.latest(symbol)
        return q.mid if q is not None else None

    def all(self) -> list[Quote]:
        return sorted(self._quotes.values(), key=lambda q: q.symbol)

    def put(
        self, quote: Quote, *, received_at: datetime | None = None, conn: Any | None = None, force: bool = False
    ) -> Quote | None:
        """Accept ``quote`` if it is newer than the held one; returns the stored quote (with its seq) or None.

        With a sanity band, a quote too far from the last accepted one is held instead (None; counted in
        ``stats.held_out_of_band``) until confirmed; ``force`` skips the band (an admin's audited acceptance). An
        accepted quote is persisted (with a database) and handed to ``publisher`` (the price bus)."""
        if self.band is not None and not force and self._hold_if_out_of_band(quote, conn):
            return None
        stored = self.apply(quote)
        if stored is None:
            return None
        if self._held.pop(stored.symbol, None) is not None and self._db is not None:
            self._unhold(stored.symbol, conn)
        if self._db is not None:
            self._persist(stored, received_at or stored.ts, conn)
        if self.publisher is not None:
            self.publisher(stored)
        return stored

    def _hold_if_out_of_band(self, quote: Quote, conn: Any | None) -> bool:
        assert self.band is not None
        with self._lock:
            last = self._quotes.get(quote.symbol)
            if last is not None and quote.ts <= last.ts:
                return False  # an old or duplicate tick: ``apply`` drops it as such
            held = self._held.get(quote.symbol)
            verdict = self.band.judge(quote, last, held[0] if held else None)
            if verdict.accept:
                return False
            self._held[quote.symbol] = (quote, verdict)
            self.stats.held_out_of_band += 1
        if self._db is not None:
            stmt = (
                "INSERT INTO held_quotes (symbol, bid, ask, ts, source, last_mid, deviation_pct, band_pct, held_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,now()) ON CONFLICT (symbol) DO UPDATE SET bid=EXCLUDED.bid,"
                " ask=EXCLUDED.ask, ts=EXCLUDED.ts, source=EXCLUDED.source, last_mid=EXCLUDED.last_mid,"
                " deviation_pct=EXCLUDED.deviation_pct, band_pct=EXCLUDED.band_pct, held_at=EXCLUDED.held_at"
            )
            args = (
                quote.symbol,
                quote.bid,
                quote.ask,
                quote.ts,
                quote.source,
                last.mid if last else None,
                verdict.deviation_pct,
                verdict.band_pct,
            )
            self._write(stmt, args, conn)
        return True

    def _unhold(self, symbol: str, conn: Any | None) -> None:
        self._write("DELETE FROM held_quotes WHERE symbol = %s", (symbol,), conn)

    def _write(self, stmt: str, args: tuple[Any, ...], conn: Any | None) -> None:
        if conn is not None:
            conn.execute(stmt, args)
        elif self._db is not None:
            with self._db.tx() as c:
                c.execute(stmt, args)

    def held(self) -> list[dict[str, Any]]:
        """The quotes held by the band (from the database when there is one: every process's)."""
        if self._db is None:
            return [
                {"symbol": q.symbol, "bid": q.bid, "ask": q.ask, "ts": q.ts, "source": q.source, **v.to_json()}
                for q, v in sorted(self._held.values(), key=lambda h: h[0].symbol)
            ]
        with self._db.read() as c:
            return c.execute("SELECT * FROM held_quotes ORDER BY symbol").fetchall()  # type: ignore[no-any-return]

    def accept_held(self, symbol: str, *, conn: Any | None = None) -> Quote | None:
        """Accept the quote held for ``symbol`` (an admin's decision; the caller audits it): stored, persisted,
        published like any quote. None when nothing is held or it is older than the quote now held."""
        held: Quote | None = None
        if self._db is not None:
            sql = "SELECT symbol, bid, ask, ts, source FROM held_quotes WHERE symbol = %s"
            if conn is not None:
                row = conn.execute(sql, (symbol,)).fetchone()
            else:
                with self._db.read() as c:
                    row = c.execute(sql, (symbol,)).fetchone()
            if row is not None:
                held = Quote(row["symbol"], row["bid"], row["ask"], row["ts"], 0, row["source"])
        elif symbol in self._held:
            held = self._held[symbol][0]
        if held is None:
            return None
        stored = self.put(held, conn=conn, force=True)
        self._held.pop(symbol, None)
        if self._db is not None:
            self._unhold(symbol, conn)
        return stored

    def apply(self, quote: Quote) -> Quote | None:
        """Hold ``quote`` in memory if it is newer than the held one (no persistence, no publishing): how quotes
        accepted by another process arrive from the bus. Returns the stored quote or None when dropped."""
        with self._lock:
            return self._apply_locked(quote)

    def apply_many(self, quotes: Iterable[Quote]) -> list[Quote]:
        """``apply`` for a batch in order (the price bus), under one acquisition of the lock; returns the quotes
        stored (the dropped ones left out)."""
        out: list[Quote] = []
        with self._lock:
            for quote in quotes:
                stored = self._apply_locked(quote)
                if stored is not None:
                    out.append(stored)
        return out

    def _apply_locked(self, quote: Quote) -> Quote | None:
        cur = self._quotes.get(quote.symbol)
        if cur is not None:
            if quote.ts < cur.ts or (quote.seq and quote.seq <= cur.seq):
                self.stats.dropped_out_of_order += 1
                return None
            if quote.ts == cur.ts and quote.bid == cur.bid and quote.ask == cur.ask:
                self.stats.dropped_duplicate += 1
                return None
        seq = quote.seq if quote.seq else (cur.seq + 1 if cur is not None else 1)
        # ``replace`` without its per-call field introspection (this runs for every quote of every process).
        stored = Quote(quote.symbol, quote.bid, quote.ask, quote.ts, seq, quote.source, quote.stale)
        self._quotes[quote.symbol] = stored
        self.stats.accepted += 1
        return stored

    def _persist(self, q: Quote, received_at: datetime, conn: Any | None) -> None:
        stmt = (
            "INSERT INTO quotes (symbol, bid, ask, ts, seq, source, received_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (symbol) DO UPDATE SET bid = EXCLUDED.bid, "
            "ask = EXCLUDED.ask, ts = EXCLUDED.ts, seq = EXCLUDED.seq, source = EXCLUDED.source, "
            "received_at = EXCLUDED.received_at WHERE quotes.ts <= EXCLUDED.ts"
        )
        args = (q.symbol, q.bid, q.ask, q.ts, q.seq, q.source, received_at)
        if conn is not None:
            conn.execute(stmt, args)
        elif self._db is not None:
            with self._db.tx() as c:
                c.execute(stmt, args)

    def refresh(self, symbols: list[str] | None = None) -> None:
        """Load newer quotes from the database (other processes may have written them)."""
        if self._db is None:
            return
        with self._db.read() as conn:
            if symbols is None:
                rows = conn.execute("SELECT symbol, bid, ask, ts, seq, source FROM quotes").fetchall()
            else:
                rows = conn.execute(
                    "SELECT symbol, bid, ask, ts, seq, source FROM quotes WHERE symbol = ANY(%s)", (symbols,)
                ).fetchall()
        with self._lock:
            for r in rows:
                cur = self._quotes.get(r["symbol"])
                if cur is None or r["ts"] > cur.ts or (r["ts"] == cur.ts and r["seq"] > cur.seq):
                    self._quotes[r["symbol"]] = Quote(r["symbol"], r["bid"], r["ask"], r["ts"], r["seq"], r["source"])
