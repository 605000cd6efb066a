"""Database reachability: stale pooled connections replaced, outages answered at once, saturation told apart.

Every pool that serves requests hands out connections through :meth:`DatabaseHealth.connection`:

- A pooled connection is checked before use (``ConnectionPool.check_connection``, one empty round trip), so the
  connections a PostgreSQL restart killed are replaced instead of failing the first request on each.
- The wait for a connection is short at first (``first_wait_s``). When it runs out, a direct probe tells an
  outage (the server refuses or drops connections: the database is marked *down*) from a saturated pool (the
  server answers: we wait up to ``busy_wait_s`` more, then :class:`DatabaseBusy`).
- While the database is down every request gets :class:`DatabaseUnavailable` at once (HTTP 503 with
  ``Retry-After``), never a hang; at most one probe per ``probe_interval_s`` checks whether it is back, and the
  first probe that connects clears the state.
- A connection that breaks while in use (the server restarted mid-request) raises
  :class:`DatabaseConnectionLost`: its transaction was rolled back by the server, so an idempotent read or an
  idempotency-keyed command may be run again once (the API's route class does that).

Errors that are not about reaching the server (a lock timeout, a cancelled statement, a constraint) pass
through untouched: they are the command's own outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

__all__ = ["DatabaseBusy", "DatabaseConnectionLost", "DatabaseHealth", "DatabaseUnavailable"]

RETRY_AFTER_SECONDS = 2


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; answer 503 with ``Retry-After``."""

    code = "database_unavailable"
    retry_after_s = RETRY_AFTER_SECONDS

    def __init__(self, message: str = "the database is unavailable; retry shortly") -> None:
        super().__init__(message)


class DatabaseConnectionLost(DatabaseUnavailable):
    """The connection broke while a request used it; its transaction did not commit (safe to run again once)."""

    code = "database_unavailable"


class DatabaseBusy(DatabaseUnavailable):
    """Every pooled connection stayed busy for the whole wait: the server is up but the pool is saturated."""

    code = "database_busy"
    retry_after_s = 1

    def __init__(self, message: str = "the database is busy; retry shortly") -> None:
        super().__init__(message)


class DatabaseHealth:
    """Shared by every pool of one process that reaches one PostgreSQL server.

    Args:
        probe_url: a URL that a successful ``connect`` to proves the server is up (any of our roles).
        probe_interval_s: at most one probe this often while down (and when a wait runs out).
        first_wait_s: how long a request waits for a pooled connection before the probe decides.
        busy_wait_s: how much longer it waits when the probe says the server is up (the pool is saturated).
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        probe_url: str,
        *,
        probe_interval_s: float = 1.0,
        first_wait_s: float = 0.5,
        busy_wait_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe_url = probe_url
        self.probe_interval_s = probe_interval_s
        self.first_wait_s = first_wait_s
        self.busy_wait_s = busy_wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_probe: float | None = None
        self._last_error: str | None = None
        self.outages = 0

    # ------------------------------------------------------------------ state
    @property
    def down(self) -> bool:
        return self._down_since is not None

    def state(self) -> dict[str, Any]:
        """For ``/healthz`` and metrics: up or down, since when (seconds), the last connection error."""
        since = self._down_since
        return {
            "up": since is None,
            "down_for_seconds": None if since is None else round(self._clock() - since, 3),
            "last_error": self._last_error,
            "outages": self.outages,
        }

    def mark_down(self, error: BaseException | str) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = self._clock()
                self.outages += 1
            self._last_error = (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:300]

    def _mark_up(self) -> None:
        with self._lock:
            self._down_since = None

    def probe(self, *, force: bool = False) -> bool:
        """Is the server reachable? Connects at most once per ``probe_interval_s`` (else answers the last state)."""
        now = self._clock()
        with self._lock:
            recent = self._last_probe is not None and now - self._last_probe < self.probe_interval_s
            if recent and not force:
                return self._down_since is None
            self._last_probe = now
        try:
            # libpq's smallest connect timeout is 2 s; on loopback a stopped server refuses at once anyway.
            with psycopg.connect(self.probe_url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self.mark_down(exc)
            return False
        self._mark_up()
        return True

    # ------------------------------------------------------------------ connections
    @contextmanager
    def connection(self, pool: ConnectionPool[Any], *, busy_wait_s: float | None = None) -> Iterator[Any]:
        """A pooled connection, or :class:`DatabaseUnavailable` / :class:`DatabaseBusy` without hanging."""
        if self.down and not self.probe():
            raise DatabaseUnavailable()
        conn = self._acquire(pool, self.busy_wait_s if busy_wait_s is None else busy_wait_s)
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                if not self.probe(force=True):
                    self.mark_down(exc)
                raise DatabaseConnectionLost("the database connection was lost; retry shortly") from exc
            raise
        finally:
            pool.putconn(conn)

    def _acquire(self, pool: ConnectionPool[Any], busy_wait_s: float) -> Any:
        try:
            return pool.getconn(timeout=self.first_wait_s)
        except PoolTimeout:
            pass
        except psycopg.OperationalError as exc:  # pragma: no cover - the pool reconnects in its own workers
            self.mark_down(exc)
            raise DatabaseUnavailable() from exc
        if not self.probe(force=True):
            raise DatabaseUnavailable()
        try:
            return pool.getconn(timeout=busy_wait_s)
        except PoolTimeout:
            if not self.probe(force=True):
                raise DatabaseUnavailable() from None
            raise DatabaseBusy() from None


def checked_pool(conninfo: str, *, min_size: int, max_size: int, name: str, **kwargs: Any) -> ConnectionPool[Any]:
    """A connection pool that checks each connection before handing it out and never blocks its constructor."""
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=True,
        name=name,
        check=ConnectionPool.check_connection,
        **kwargs,
    )
