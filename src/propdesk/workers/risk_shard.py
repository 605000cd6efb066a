"""A risk shard (``propdesk worker risk --shard I --shards N``): the live risk engine for the accounts it owns.

Shard ``I`` of ``N`` owns the accounts with ``shard_of(account, N) == I`` (``domain/events.py``). One process at a
time holds a shard, through a PostgreSQL advisory lock held by a dedicated session connection (:class:`ShardLease`,
``pg_try_advisory_lock(<namespace key>, I)``): a second process for the same shard waits (or exits), and a lease
whose connection drops is lost at once: the shard stops processing and exits, for its supervisor to restart it.

With the lease held the shard binds its JetStream durable consumers (named per namespace and ``I-of-N``), then
builds its :class:`~propdesk.engine.live.RiskEngine` from PostgreSQL (owned accounts only), then cycles:

1. its partitions' events (``pd.<ns>.events.<p>`` for ``p`` in ``partitions_of_shard(I, N)``): each applied with
   ``engine.on_event`` (an ``account.changed`` re-reads that account), then acked;
2. every quote (the quotes stream, kept an hour): a batch goes to ``engine.on_quotes`` (worst bid/ask per symbol
   in the batch), then is acked. A consumer resumes where its last ack was, so a shard restarted after
   ``kill -9`` replays the window it missed and judges it at its worst prices; the execution core re-judges
   every candidate under the account lock, so a replayed quote never executes anything twice;
3. every ``resync_s``, ``engine.resync()`` (a full re-read from PostgreSQL bounds drift).

Cadence faults: transient database errors are retried with exponential backoff (``tenacity``); consecutive
failures open a circuit breaker (``pybreaker``) that pauses execution (the batch is redelivered later, nothing is
acked) and is reported in the heartbeat and ``/metrics``; the execution core of the shard runs every command
with ``lock_timeout`` and ``statement_timeout`` (:class:`DeadlineDatabase`), so one stuck account lock cannot
stall the shard. The heartbeat ``risk-shard-I-of-N`` carries lag, quotes/s, candidates, executions, failures and
the breaker's state; ``/healthz`` reads it (``api/routes/ops.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pybreaker
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .. import logs
from ..bus.events import DEFAULT_EVENTS_RETAIN_S, decode_event, ensure_events_stream, event_subject, events_stream
from ..bus.quotes import QuoteBus, decode
from ..bus.subjects import Subjects
from ..db.health import DatabaseUnavailable
from ..domain.events import partitions_of_shard, shard_of
from .bus_loop import BusWorkerLoop
from .outbox_relay import registered_subjects

if TYPE_CHECKING:
    from ..bootstrap import Platform

LAG_ALERT_S = 5.0  # a shard further behind than this is degraded in /healthz and logs an alert
DEFAULT_RESYNC_S = 60.0
LOCK_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 5000
ACK_WAIT_S = 10.0


def heartbeat_name(shard: int, shards: int) -> str:
    return f"risk-shard-{shard}-of-{shards}"


def lease_key(namespace: str) -> int:
    """The first key of the shard leases of one namespace (a signed 32-bit int; the second key is the shard)."""
    return int.from_bytes(hashlib.sha256(f"propdesk.risk-shard:{namespace}".encode()).digest()[:4], "big", signed=True)


def consumer_names(namespace: str, shard: int, shards: int) -> tuple[str, str]:
    """The durable consumers of shard ``shard`` of ``shards``: (quotes, events)."""
    base = f"risk-{namespace}-{shard}-of-{shards}"
    return f"{base}-quotes", f"{base}-events"


# ---------------------------------------------------------------------------------------------------- lease
class LeaseHeld(RuntimeError):
    """Another process holds this shard."""


class ShardLease:
    """Shard ``shard`` held through ``pg_try_advisory_lock(key, shard)`` on a dedicated session connection.

    ``held`` turns false as soon as a check finds the connection gone (the server released the lock with it);
    ``watch()`` checks every ``check_s`` on a thread and calls ``on_lost`` once."""

    def __init__(self, url: str, namespace: str, shard: int, *, check_s: float = 0.5) -> None:
        self.url = url
        self.key = lease_key(namespace)
        self.shard = shard
        self.check_s = check_s
        self._conn: psycopg.Connection[Any] | None = None
        self._held = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._held.is_set()

    def holder(self) -> int | None:
        """The pid (on the database server) of the session holding this shard, if any."""
        with psycopg.connect(self.url, autocommit=True) as c:
            row = c.execute(
                "SELECT pid FROM pg_locks WHERE locktype='advisory' AND granted AND classid=%s::oid AND objid=%s::oid"
                " AND objsubid=2",
                (self.key & 0xFFFFFFFF, self.shard),
            ).fetchone()
        return int(row[0]) if row else None

    def try_acquire(self) -> bool:
        """Take the lease if free; True when held."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=2,
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.key, self.shard)).fetchone()
            if row is not None and row[0]:
                self._held.set()
                return True
            return False

    def acquire(self, *, wait_s: float = 0.0, poll_s: float = 0.5, stop: threading.Event | None = None) -> None:
        """Take the lease, waiting up to ``wait_s`` seconds for its holder to let go; LeaseHeld if it does not."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise LeaseHeld(
                    f"risk shard {self.shard} is held by another process (database session pid "
                    f"{self.holder()}); it runs once: stop that process or wait for its lease to lapse"
                )
            time.sleep(poll_s)

    def check(self) -> bool:
        """Is the lease still held? (One round trip on the lease's connection.)"""
        with self._lock:
            conn = self._conn
            if conn is None or not self._held.is_set():
                return False
            try:
                conn.execute("SELECT 1")
                return True
            except Exception:
                self._held.clear()
                with contextlib.suppress(Exception):
                    conn.close()
                return False

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Check the lease every ``check_s`` on a daemon thread; ``on_lost()`` once when it is gone."""

        def run() -> None:
            while not self._stop.wait(self.check_s):
                if not self.check():
                    if not self._stop.is_set():
                        on_lost()
                    return

        self._watcher = threading.Thread(target=run, name=f"risk-shard-{self.shard}-lease", daemon=True)
        self._watcher.start()

    def release(self) -> None:
        """Let the lease go (closing the session releases the lock)."""
        self._stop.set()
        with self._lock:
            self._held.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


# ---------------------------------------------------------------------------------------------- deadlines
class DeadlineDatabase:
    """The platform's database for the shard's execution core: every transaction runs under ``lock_timeout``
    and ``statement_timeout`` (a deadline per account command); everything else is the wrapped database."""

    def __init__(
        self, db: Any, *, lock_timeout_ms: int = LOCK_TIMEOUT_MS, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
    ):
        self._db = db
        self.lock_timeout_ms = int(lock_timeout_ms)
        self.statement_timeout_ms = int(statement_timeout_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _deadline(self, conn: Any) -> None:
        conn.execute(f"SET LOCAL lock_timeout = {self.lock_timeout_ms}")
        conn.execute(f"SET LOCAL statement_timeout = {self.statement_timeout_ms}")

    @contextmanager
    def tx(self) -> Iterator[Any]:
        with self._db.tx() as conn:
            self._deadline(conn)
            yield conn

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self._db.read() as conn, conn.transaction():
            self._deadline(conn)
            yield conn


class WindowFailed(RuntimeError):
    """Some candidates of a window could not be executed (the engine logged why); retried like a database
    error."""


def transient(exc: BaseException) -> bool:
    """A database error worth retrying: the connection or server went away, a lock or statement deadline, a
    serialization failure or deadlock."""
    return isinstance(
        exc,
        WindowFailed
        | DatabaseUnavailable
        | psycopg.OperationalError
        | psycopg.errors.LockNotAvailable
        | psycopg.errors.QueryCanceled
        | psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected,
    )


# -------------------------------------------------------------------------------------------------- metrics
class ShardMetrics:
    """The shard's Prometheus metrics (its own registry; ``--metrics-port`` serves it)."""

    def __init__(self, shard: int, shards: int) -> None:
        self.registry = r = CollectorRegistry()
        labels = {"shard": str(shard), "shards": str(shards)}
        self._labels = labels
        self.quotes = Counter("propdesk_risk_quotes_total", "Quotes applied", list(labels), registry=r)
        self.events = Counter("propdesk_risk_events_total", "Account events applied", list(labels), registry=r)
        self.candidates = Counter("propdesk_risk_candidates_total", "Candidates found", list(labels), registry=r)
        self.executions = Counter("propdesk_risk_executions_total", "Candidates executed", list(labels), registry=r)
        self.failures = Counter("propdesk_risk_failures_total", "Failed batches", list(labels), registry=r)
        self.retries = Counter("propdesk_risk_retries_total", "Retried database calls", list(labels), registry=r)
        self.lag = Gauge(
            "propdesk_risk_lag_seconds", "Age of the oldest quote not yet applied", list(labels), registry=r
        )
        self.pending = Gauge("propdesk_risk_pending_quotes", "Quotes not yet delivered", list(labels), registry=r)
        self.accounts = Gauge("propdesk_risk_accounts", "Accounts in the shard's book", list(labels), registry=r)
        self.breaker = Gauge(
            "propdesk_risk_breaker_open", "1 while the circuit breaker pauses execution", list(labels), registry=r
        )

    def __call__(self, metric: Any) -> Any:
        return metric.labels(**self._labels)


# ----------------------------------------------------------------------------------------------------- cycle
@dataclass
class ShardCycle:
    """One shard cycle: what was applied, the lag, the breaker's state, the error if the cycle failed."""

    cycle: int
    shard: int
    shards: int
    duration_s: float = 0.0
    quotes: int = 0
    events: int = 0
    candidates: int = 0
    executions: int = 0
    failures: int = 0
    pending: int = 0
    lag_s: float = 0.0
    quotes_per_s: float = 0.0
    accounts: int = 0
    breaker: str = "closed"
    retries: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def details(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "shard": self.shard,
            "shards": self.shards,
            "duration_ms": round(self.duration_s * 1000, 3),
            "quotes": self.quotes,
            "events": self.events,
            "candidates": self.candidates,
            "executions": self.executions,
            "failures": self.failures,
            "pending": self.pending,
            "lag_s": round(self.lag_s, 3),
            "lag_alert_s": LAG_ALERT_S,
            "quotes_per_s": round(self.quotes_per_s, 1),
            "accounts": self.accounts,
            "breaker": self.breaker,
            "retries": self.retries,
            "totals": self.totals,
            "error": self.error,
            "ok": self.ok,
        }


def _count(result: Any, *keys: str) -> int:
    if not isinstance(result, dict):
        return 0
    for k in keys:
        v = result.get(k)
        if isinstance(v, int | float):
            return int(v)
        if isinstance(v, list | tuple | dict):
            return len(v)
    return 0


class RiskShardWorker(BusWorkerLoop):
    """Shard ``shard`` of ``shards``: lease, consumers, engine, cycles (see the module docstring).

    ``engine_factory(execution, db, catalogue, quotes, owns)`` builds the engine (default: ``RiskEngine.open``)."""

    def __init__(
        self,
        platform: Platform,
        *,
        shard: int,
        shards: int,
        interval_s: float = 0.05,
        stop: threading.Event | None = None,
        batch: int = 5000,
        resync_s: float = DEFAULT_RESYNC_S,
        lease_wait_s: float = 0.0,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 10.0,
        retry_attempts: int = 4,
        engine_factory: Callable[..., Any] | None = None,
    ) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"--shard must be between 0 and {shards - 1}")
        super().__init__(
            platform,
            name=heartbeat_name(shard, shards),
            stop=stop,
            log=logs.get("propdesk.workers.risk_shard"),
            interval_s=interval_s,
            identity={"shard": shard, "shards": shards},
        )
        if platform.bus is None:
            raise RuntimeError("a risk shard needs the bus (PROPDESK_BUS_ENABLED=true)")
        self.shard, self.shards = shard, shards
        self.subjects: Subjects = registered_subjects(platform.db)
        self.batch = batch
        self.resync_s = resync_s
        self.retry_attempts = retry_attempts
        self.partitions = partitions_of_shard(shard, shards)
        self.metrics = ShardMetrics(shard, shards)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=breaker_fail_max, reset_timeout=breaker_reset_s, name=self.name
        )
        self.lease = ShardLease(platform.db.engine_url, self.subjects.namespace, shard)
        self.lease_wait_s = lease_wait_s
        self.lost = threading.Event()
        self._engine_factory = engine_factory
        self.engine: Any = None
        self.execution: Any = None
        self._start_bus_loop("propdesk-risk-loop")
        self._qsub: Any = None
        self._esub: Any = None
        self._last_beat = 0.0
        self._last_resync = time.monotonic()
        self._rate_window: list[tuple[float, int]] = []
        self._lag_alerted = False
        self.totals = {"quotes": 0, "events": 0, "candidates": 0, "executions": 0, "failures": 0, "retries": 0}
        self.last: ShardCycle | None = None

    def owns(self, account_id: Any) -> bool:
        return shard_of(account_id, self.shards) == self.shard

    # -- start -----------------------------------------------------------------------------------------------

    async def _bind(self) -> None:
        from ..bus.client import BusClient

        assert self.platform.bus is not None
        self._client = BusClient(self.platform.bus.endpoint, name=f"propdesk-{self.name}")
        nc = await self._client.connect()
        js = nc.jetstream()
        await QuoteBus(js, self.subjects, retain_s=self.platform.settings.bus_retain_seconds).ensure_streams()
        await ensure_events_stream(js, self.subjects, retain_s=DEFAULT_EVENTS_RETAIN_S)
        qname, ename = consumer_names(self.subjects.namespace, self.shard, self.shards)
        qcfg = ConsumerConfig(
            durable_name=qname,
            deliver_policy=DeliverPolicy.NEW,  # the first start is current from the book; later ones resume
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,
            max_ack_pending=-1,
            filter_subject=self.subjects.all_quotes,
        )
        ecfg = ConsumerConfig(
            durable_name=ename,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,
            max_ack_pending=-1,
            filter_subjects=[event_subject(self.subjects, p) for p in self.partitions],
        )
        for stream, cfg in ((self.subjects.quotes_stream, qcfg), (events_stream(self.subjects), ecfg)):
            try:
                await js.consumer_info(stream, cfg.durable_name or "")
            except NotFoundError:
                with contextlib.suppress(Exception):  # created concurrently: the bind below decides
                    await js.add_consumer(stream, cfg)
        self._qsub = await js.pull_subscribe_bind(qname, self.subjects.quotes_stream)
        self._esub = await js.pull_subscribe_bind(ename, events_stream(self.subjects))

    def start_shard(self) -> None:
        """Take the lease, bind the consumers, build the engine (the order matters: a consumer bound before the
        book is read from PostgreSQL cannot miss anything that committed in between)."""
        self.lease.acquire(wait_s=self.lease_wait_s, stop=self.stop_event)
        self.lease.watch(self._on_lease_lost)
        self._log.info("risk_shard_lease_taken", shard=self.shard, shards=self.shards, key=self.lease.key)
        self._call(self._bind())
        from ..execution.service import ExecutionService

        p = self.platform
        core = p.execution
        self.execution = ExecutionService(
            DeadlineDatabase(p.db),
            p.clock,
            p.catalogue,
            core.prices,
            p.metrics,
            log=core._log,
            sessions=core.sessions,
            trading_state=core.trading_state,
        )
        factory = self._engine_factory or _open_engine
        self.engine = self._retrying(factory, self.execution, p.db, p.catalogue, p.quotes, self.owns)
        self._log.info("risk_shard_started", shard=self.shard, shards=self.shards, partitions=len(self.partitions))

    def _on_lease_lost(self) -> None:
        self.lost.set()
        self._log.error("risk_shard_lease_lost", shard=self.shard, shards=self.shards)
        self.stop_event.set()

    # -- faults ----------------------------------------------------------------------------------------------
    def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any:
        def before_sleep(state: Any) -> None:
            self.totals["retries"] += 1
            self.metrics(self.metrics.retries).inc()
            self._log.warning("risk_shard_retry", attempt=state.attempt_number, error=repr(state.outcome.exception()))

        retrying = Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_attempt(self.retry_attempts),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn, *args)

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with retries, through the breaker (CircuitBreakerError while it is open)."""
        return self.breaker.call(self._retrying, fn, *args)

    # -- cycle -----------------------------------------------------------------------------------------------
    async def _fetch(self, sub: Any, n: int, timeout_s: float) -> list[Any]:
        try:
            return list(await sub.fetch(n, timeout=timeout_s))
        except (TimeoutError, NatsTimeout):
            return []

    @staticmethod
    async def _ack(msgs: list[Any]) -> None:
        for m in msgs:
            await m.ack()

    @staticmethod
    async def _nak(msgs: list[Any], delay_s: float) -> None:
        for m in msgs:
            with contextlib.suppress(Exception):
                await m.nak(delay=delay_s)

    def _apply_events(self, result: ShardCycle) -> None:
        msgs = self._call(self._fetch(self._esub, self.batch, 0.05))
        if not msgs:
            return
        events = []
        for m in msgs:
            try:
                events.append(decode_event(m.data))
            except ValueError:
                self._log.warning("risk_shard_bad_event", subject=m.subject)

        def apply() -> None:
            for e in events:
                self.engine.on_event(e)

        try:
            self._guarded(apply)
        except Exception:
            self._call(self._nak(msgs, 1.0))
            raise
        self._call(self._ack(msgs))
        result.events += len(events)

    def _apply_quotes(self, result: ShardCycle) -> None:
        msgs = self._call(self._fetch(self._qsub, self.batch, 0.05))
        if not msgs:
            result.pending = 0
            return
        quotes = []
        for m in msgs:
            try:
                quotes.append(decode(m.data)[0])
            except Exception:
                self._log.warning("risk_shard_bad_quote", subject=m.subject)
        meta = msgs[-1].metadata
        result.pending = int(getattr(meta, "num_pending", 0) or 0)
        oldest = min((q.ts for q in quotes), default=None)
        if oldest is not None and (result.pending or len(msgs) >= self.batch):
            result.lag_s = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        if self.lost.is_set():
            return  # the lease is gone: stop at once, ack nothing
        try:
            out = self._guarded(self._judge, quotes)
        except Exception:
            self._call(self._nak(msgs, 1.0))
            raise
        self._call(self._ack(msgs))
        result.quotes += len(quotes)
        result.candidates += _count(out, "candidates")
        result.executions += _count(out, "executed", "executions", "liquidations")
        result.failures += _count(out, "failed", "failures")

    def _judge(self, quotes: list[Any]) -> Any:
        """The engine's judgement of a window; any account whose execution failed fails the window (it is
        retried, then redelivered: the core executes each candidate once, so the accounts that succeeded are
        only re-judged)."""
        out = self.engine.on_quotes(quotes)
        failed = _count(out, "failed")
        if failed:
            raise WindowFailed(f"{failed} of {_count(out, 'accounts')} accounts failed to execute")
        return out

    def run_once(self) -> ShardCycle:
        self.cycles += 1
        result = ShardCycle(self.cycles, self.shard, self.shards)
        started = time.perf_counter()
        try:
            if self.engine is None:
                self.start_shard()
            if not self.lost.is_set():
                self._apply_events(result)
            if not self.lost.is_set():
                self._apply_quotes(result)
            if not self.lost.is_set() and time.monotonic() - self._last_resync >= self.resync_s:
                self._guarded(self.engine.resync)
                self._last_resync = time.monotonic()
        except LeaseHeld:
            raise
        except pybreaker.CircuitBreakerError as exc:
            result.error = f"circuit breaker open: {exc}"[:1000]
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:1000]
            result.failures += 1
            self._log.error("risk_shard_cycle_failed", cycle=result.cycle, error=result.error)
        if self.lost.is_set():
            result.error = "lease lost: processing stopped"
        result.duration_s = time.perf_counter() - started
        self._account(result)
        if result.error or result.quotes or result.events or time.monotonic() - self._last_beat >= 1.0:
            self._beat(result)
            self._last_beat = time.monotonic()
        self.last = result
        return result

    def _account(self, result: ShardCycle) -> None:
        m = self.metrics
        for k in ("quotes", "events", "candidates", "executions", "failures"):
            self.totals[k] += getattr(result, k)
        m(m.quotes).inc(result.quotes)
        m(m.events).inc(result.events)
        m(m.candidates).inc(result.candidates)
        m(m.executions).inc(result.executions)
        m(m.failures).inc(result.failures)
        m(m.lag).set(result.lag_s)
        m(m.pending).set(result.pending)
        now = time.monotonic()
        self._rate_window = [(t, n) for t, n in self._rate_window if now - t <= 10.0] + [(now, result.quotes)]
        span = max(1.0, now - self._rate_window[0][0])
        result.quotes_per_s = sum(n for _, n in self._rate_window) / span
        result.breaker = str(self.breaker.current_state)
        m(m.breaker).set(1 if result.breaker == "open" else 0)
        result.retries = self.totals["retries"]
        result.totals = dict(self.totals)
        if self.engine is not None:
            with contextlib.suppress(Exception):
                result.accounts = len(self.engine.book)
                m(m.accounts).set(result.accounts)
        if result.lag_s > LAG_ALERT_S and not self._lag_alerted:
            self._log.error("risk_shard_lag_alert", shard=self.shard, shards=self.shards, lag_s=round(result.lag_s, 3))
            self._lag_alerted = True
        elif result.lag_s <= LAG_ALERT_S:
            self._lag_alerted = False

    def _release(self) -> None:
        self.lease.release()  # the shard number goes back only once the connection and loop are closed


def _open_engine(execution: Any, db: Any, catalogue: Any, quotes: Any, owns: Callable[[Any], bool]) -> Any:
    """The shard's engine: the book of the owned accounts, priced at the latest quote of every symbol."""
    from ..engine.live import RiskEngine

    log = logs.get("propdesk.engine")
    latest = [q for q in (quotes.latest(s) for s in catalogue.symbols()) if q is not None]
    return RiskEngine.open(
        execution, db, catalogue, latest, owns=owns, log=lambda event, **kw: log.warning(event, **kw)
    )


def serve_metrics(port: int, registry: CollectorRegistry) -> Any:
    """Serve ``/metrics`` of ``registry`` on ``port`` (all interfaces: Prometheus scrapes it); returns the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, registry=registry)
    return server
