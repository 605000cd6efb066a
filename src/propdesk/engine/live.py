"""The live risk engine: a ``RiskBook`` fed with every price, its candidates executed by the execution core.

The book only finds candidates (``engine/book.py``); the engine hands each to the execution core as (account,
trigger kind, triggering quote): ``ExecutionService.process_triggers(account_id, at_quote=quotes)`` locks the
account, re-judges it at the triggering quote and then at the latest, and commits what is due, exactly once (two
engines handing over the same candidate race for the account lock; the second finds nothing left to do).

- ``on_quote(quote)`` / ``on_quotes(quotes)``: reprice, collect candidates, execute the burst through a bounded
  thread pool, largest exposure first; one account's failure is logged and audited, the others go on.
- ``on_event(event)``: an ``account.changed`` event (from the outbox, over the bus) re-reads that account and
  replaces its rows in the book; the candidates the change brings are executed. Idempotent: an event applied twice
  re-reads the same rows.
- ``poll_outbox()``: the in-process engine follows the outbox itself, with its own cursor kept in memory, before
  every price it judges (so a command committed before a price is in the book when the price is judged).
- ``resync()``: rebuild the book from PostgreSQL (bounds float drift and any missed event), on a cadence.

The same class runs in-process (bootstrap, ``PROPDESK_RISK_ENGINE=inprocess``) and in a shard worker (``owns``
selects the shard's accounts).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..db.outbox import Cursor, read_batch
from ..domain.events import EventType
from ..domain.instruments import Catalogue
from ..domain.quotes import Quote
from .book import KIND_NAMES, Candidates, Kind, RiskBook
from .load import read_specs
from .spec import AccountSpec

__all__ = ["EngineStats", "RiskEngine", "Work"]

COUNT_KEYS = ("orders", "protective", "liquidations")


def _everything(account_id: Any) -> bool:
    return True


@dataclass
class Work:
    """One account's candidates of one judgement: the kinds found and the quotes that triggered them."""

    account_id: Any
    kinds: list[str] = field(default_factory=list)
    quotes: dict[str, Quote] = field(default_factory=dict)
    exposure: float = 0.0


@dataclass
class EngineStats:
    """Counters since start, and recent latency samples (seconds) for benchmarks and ``/metrics``."""

    quotes: int = 0
    candidates: int = 0
    executed: int = 0
    failed: int = 0
    events: int = 0
    applied: int = 0
    resyncs: int = 0
    price_to_candidate: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    price_to_committed: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


class RiskEngine:
    """The live risk engine over a ``RiskBook``. Thread-safe: the book is guarded by one lock, executions run
    outside it (through the pool).

    Args:
        execution: the execution core (``ExecutionService``): ``process_triggers(account_id, at_quote=...)``.
        book: the book (only owned accounts).
        owns: which accounts this engine is responsible for (a shard's partitions).
        workers: the bounded pool executing a burst of candidates.
        log: ``log(event, **fields)`` for failures.
        metrics: the platform's ``Metrics`` (the risk histograms), optional.
        db: where accounts are re-read (default: ``execution.db``).
        follow_outbox: poll the outbox before each price (the in-process engine; a shard takes events instead).
    """

    def __init__(
        self,
        execution: Any,
        book: RiskBook,
        *,
        owns: Callable[[Any], bool] = _everything,
        workers: int = 4,
        log: Callable[..., None] | None = None,
        metrics: Any = None,
        db: Any = None,
        follow_outbox: bool = False,
    ) -> None:
        self.execution = execution
        self.book = book
        self.owns = owns
        self.workers = max(1, workers)
        self._log = log or (lambda *a, **k: None)
        self.metrics = metrics
        self.db = db if db is not None else execution.db
        self.follow_outbox = follow_outbox
        self.stats = EngineStats()
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._cursor: Cursor | None = None
        # the account's rows as this engine re-read them right after executing it: a change event that brings the
        # same rows is this engine's own commit, already judged at these prices (no second execution)
        self._after: dict[Any, AccountSpec] = {}
        self._seen_events: deque[str] = deque(maxlen=4096)
        self._seen_set: set[str] = set()

    # ------------------------------------------------------------------ building
    @classmethod
    def open(
        cls,
        execution: Any,
        db: Any,
        catalogue: Catalogue,
        quotes: Iterable[Quote] = (),
        *,
        owns: Callable[[Any], bool] = _everything,
        workers: int = 4,
        log: Callable[..., None] | None = None,
        metrics: Any = None,
        follow_outbox: bool = False,
    ) -> RiskEngine:
        """Load the book of the owned accounts from PostgreSQL (set-based reads), priced at ``quotes`` (the latest
        of each symbol). With ``follow_outbox`` the outbox cursor is taken before the read, so no change committed
        meanwhile is missed (one seen twice is re-read, harmlessly)."""
        cursor = _outbox_head(db) if follow_outbox else None
        book = _build_book(db, catalogue, quotes, owns)
        engine = cls(
            execution, book, owns=owns, workers=workers, log=log, metrics=metrics, db=db, follow_outbox=follow_outbox
        )
        engine._cursor = cursor
        return engine

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # ------------------------------------------------------------------ prices
    def on_quote(self, quote: Quote) -> dict[str, int]:
        """One price: see ``on_quotes``."""
        return self.on_quotes([quote])

    def on_quotes(self, quotes: Sequence[Quote]) -> dict[str, int]:
        """A window of prices (arrival order): the book judges it at the worst bid/ask of each symbol inside it,
        and every candidate is executed at its triggering quote. Returns the counts: ``candidates``,
        ``accounts`` (handed over), ``executed``, ``failed``, and what the core did (``orders``, ``protective``,
        ``liquidations``)."""
        received = time.perf_counter()
        mine = [q for q in quotes if q.symbol in self.book.sym_index]
        with self._lock:
            work: dict[Any, Work] = {}
            if self.follow_outbox:
                self._poll_locked(work)
            self.stats.quotes += len(mine)
            found = (
                self.book.on_prices([(q.symbol, float(q.bid), float(q.ask), q.ts.timestamp()) for q in mine])
                if mine
                else None
            )
            n = self._collect(found, mine, work) if found is not None else 0
            for w in work.values():
                w.exposure = self.book.exposure(w.account_id)
        if work:
            self._observe(self.stats.price_to_candidate, "risk_price_to_candidate", time.perf_counter() - received)
        out = self._execute(work, received)
        out["candidates"] = n
        return out

    def _collect(self, found: Candidates, quotes: Sequence[Quote], work: dict[Any, Work]) -> int:
        n = len(found)
        self.stats.candidates += n
        for i in range(n):
            aid = self.book.account_id(int(found.account[i]))
            if not self.owns(aid):
                continue
            w = work.get(aid)
            if w is None:
                w = work[aid] = Work(aid)
            w.kinds.append(KIND_NAMES[Kind(int(found.kind[i]))])
            qi = int(found.quote[i])
            if 0 <= qi < len(quotes):
                q = quotes[qi]
                w.quotes[q.symbol] = q
        return n

    # ------------------------------------------------------------------ execution
    def _execute(self, work: Mapping[Any, Work], received: float) -> dict[str, int]:
        out = {"accounts": len(work), "executed": 0, "failed": 0, **{k: 0 for k in COUNT_KEYS}}
        if not work:
            return out
        order = sorted(work.values(), key=lambda w: -w.exposure)  # largest exposure first
        if len(order) == 1 or self.workers == 1:
            results = [self._run_one(w, received) for w in order]
        else:
            results = list(self._executor().map(lambda w: self._run_one(w, received), order))
        for res in results:
            if res is None:
                out["failed"] += 1
                continue
            out["executed"] += 1
            for k in COUNT_KEYS:
                out[k] += res.get(k, 0)
        self.stats.executed += out["executed"]
        self.stats.failed += out["failed"]
        if self.metrics is not None:
            self.metrics.risk_candidates.labels(outcome="executed").inc(out["executed"])
            self.metrics.risk_candidates.labels(outcome="failed").inc(out["failed"])
        self._refresh([w.account_id for w in order])
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="risk-engine")
            return self._pool

    def _run_one(self, w: Work, received: float) -> dict[str, int] | None:
        """Hand one account's candidates to the execution core; a failure is logged and audited, never raised."""
        try:
            at = list(w.quotes.values()) or None
            res: dict[str, int] = self.execution.process_triggers(w.account_id, at_quote=at)
        except Exception as exc:
            self._log("risk_trigger_failed", account_id=str(w.account_id), kinds=w.kinds, error=repr(exc))
            record = getattr(self.execution, "_record_failure", None)
            if record is not None:
                record(w.account_id, "risk_trigger", exc)
            return None
        self._observe(self.stats.price_to_committed, "risk_price_to_committed", time.perf_counter() - received)
        return res

    def _observe(self, samples: deque[float], metric: str, seconds: float) -> None:
        samples.append(seconds)
        if self.metrics is not None:
            getattr(self.metrics, metric).observe(seconds)

    def _refresh(self, ids: Sequence[Any]) -> None:
        """Re-read accounts this engine just executed and replace their rows (the core judged them fully at these
        prices: the candidates the new rows bring are not executed again)."""
        try:
            specs = self._read(ids)
        except Exception as exc:  # the next event or resync brings them
            self._log("risk_refresh_failed", accounts=len(ids), error=repr(exc))
            return
        with self._lock:
            for aid in ids:
                spec = specs.get(aid)
                self._apply_locked(aid, spec)
                if spec is not None:
                    self._after[aid] = spec
                else:
                    self._after.pop(aid, None)

    def _read(self, ids: Sequence[Any]) -> dict[Any, AccountSpec]:
        with self.db.read() as c:
            return {s.account_id: s for s in read_specs(c, list(ids))}

    def _apply_locked(self, aid: Any, spec: AccountSpec | None) -> Candidates | None:
        self.stats.applied += 1
        if spec is None:
            if self.book.slot(aid) is not None:
                self.book.remove_account(aid)
            return None
        return self.book.apply_account(spec)

    # ------------------------------------------------------------------ changes
    def on_event(self, event: Mapping[str, Any]) -> dict[str, int]:
        """An outbox event (``bus/events.decode_event``'s JSON, or ``domain.events.Event.to_json()``): an
        ``account.changed`` of an owned account re-reads it and applies it; its candidates are executed.
        Anything else is ignored. Redelivery is harmless."""
        if event.get("type") != EventType.ACCOUNT_CHANGED.value:
            return self._execute({}, time.perf_counter())
        raw = event.get("account_id") or (event.get("payload") or {}).get("account_id")
        if raw is None:
            return self._execute({}, time.perf_counter())
        aid = raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
        if not self.owns(aid):
            return self._execute({}, time.perf_counter())
        self.stats.events += 1
        return self.apply_accounts([aid])

    def apply_accounts(self, ids: Iterable[Any]) -> dict[str, int]:
        """Re-read these accounts from PostgreSQL, replace their rows, execute what the change brings."""
        received = time.perf_counter()
        wanted = [a for a in dict.fromkeys(ids) if self.owns(a)]
        if not wanted:
            return self._execute({}, received)
        specs = self._read(wanted)
        work: dict[Any, Work] = {}
        with self._lock:
            self._apply_specs_locked(wanted, specs, work)
        return self._execute(work, received)

    def _apply_specs_locked(self, ids: Sequence[Any], specs: Mapping[Any, AccountSpec], work: dict[Any, Work]) -> None:
        for aid in ids:
            spec = specs.get(aid)
            found = self._apply_locked(aid, spec)
            if spec is None or found is None or not len(found):
                self._after.pop(aid, None)
                continue
            if self._after.get(aid) == spec:
                continue  # this engine's own commit, judged by the core at these prices already
            self._after.pop(aid, None)
            self._collect(found, (), work)
        for w in work.values():
            w.exposure = self.book.exposure(w.account_id)

    def poll_outbox(self) -> dict[str, int]:
        """Apply every committed ``account.changed`` since the engine's cursor (the in-process engine; a shard
        takes the same events from the bus through ``on_event``). Returns the execution counts."""
        received = time.perf_counter()
        work: dict[Any, Work] = {}
        with self._lock:
            self._poll_locked(work)
        return self._execute(work, received)

    def _poll_locked(self, work: dict[Any, Work]) -> None:
        if self._cursor is None:
            self._cursor = _outbox_head(self.db)
            return
        ids: list[Any] = []
        with self.db.read() as c:
            while True:
                events = read_batch(c, self._cursor, 1000)
                if not events:
                    break
                for e in events:
                    if (
                        e.type == EventType.ACCOUNT_CHANGED.value
                        and e.account_id is not None
                        and self.owns(e.account_id)
                    ):
                        ids.append(e.account_id)
                self._cursor = Cursor(events[-1].txid, events[-1].id)
                if len(events) < 1000:
                    break
            if not ids:
                return
            ids = list(dict.fromkeys(ids))
            self.stats.events += len(ids)
            specs = {s.account_id: s for s in read_specs(c, ids)}
        self._apply_specs_locked(ids, specs, work)

    # ------------------------------------------------------------------ drift
    def resync(self) -> int:
        """Rebuild the book from PostgreSQL at the current prices (bounds drift and anything missed). Returns the
        number of accounts."""
        cursor = _outbox_head(self.db) if self.follow_outbox else None
        with self._lock:
            old = self.book
            quotes = [
                (s, float(old.bid[i]), float(old.ask[i])) for i, s in enumerate(old.symbols) if old.bid[i] == old.bid[i]
            ]
        with self.db.read() as c:
            specs = [s for s in read_specs(c) if self.owns(s.account_id)]
        book = RiskBook(old.catalogue, capacity=max(1024, len(specs)))
        for s, b, a in quotes:
            book.on_price(s, b, a)
        book.add_accounts(specs)
        with self._lock:
            book.ts[:] = old.ts
            self.book = book
            self._after.clear()
            if cursor is not None:
                self._cursor = cursor
            self.stats.resyncs += 1
        return len(book)


def _outbox_head(db: Any) -> Cursor:
    """The position of the newest event ``read_batch`` could return now (the start of a follower's cursor)."""
    with db.read() as c:
        row = c.execute(
            "SELECT txid::text AS txid, id FROM outbox WHERE txid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY txid DESC, id DESC LIMIT 1"
        ).fetchone()
    return Cursor(int(row["txid"]), int(row["id"])) if row is not None else Cursor()


def _build_book(db: Any, catalogue: Catalogue, quotes: Iterable[Quote], owns: Callable[[Any], bool]) -> RiskBook:
    with db.read() as c:
        specs = [s for s in read_specs(c) if owns(s.account_id)]
    book = RiskBook(catalogue, capacity=max(1024, len(specs)))
    for q in quotes:
        if q.symbol in book.sym_index:
            book.on_price(q.symbol, float(q.bid), float(q.ask))
    book.add_accounts(specs)
    return book
