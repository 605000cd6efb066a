"""Sliding-window rate limits per (bucket, key), on the injected clock.

Buckets and their limits come from settings (``PROPDESK_RATE_*`` as ``count/seconds``):

    login_ip      login attempts per client IP
    login_email   login attempts per email address (slows a distributed guess at one account)
    signup_ip     sign-ups per client IP
    reset_ip      password-reset requests per client IP
    orders_user   order submissions per web user (the trader order route calls ``check``)

``check(bucket, key)`` counts the attempt and answers None (allowed) or the seconds until the oldest attempt in
the window leaves it (the ``Retry-After`` of a 429). Refused attempts are not counted, so a client that waits
for ``Retry-After`` always gets through.

Two stores with the same interface and semantics (``PROPDESK_RATE_LIMIT_STORE``, picked by bootstrap):

    PgRateLimits  (``postgres``, the default) the windows live in the database (``rate_limit_hits``, migration
                  0007), so every API process behind a load balancer counts into the same window
    RateLimits    (``memory``) the windows live in this process: no database round trip, but with N processes
                  each enforces the limit on its own (N times the configured limit)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import psycopg

from .. import logs
from ..api.errors import ApiError
from ..domain.clock import Clock

if TYPE_CHECKING:
    from ..db.database import Database
    from ..settings import Settings

_log = logs.get("propdesk.ratelimit")

MAX_KEYS = 100_000  # per bucket; beyond it the stalest keys are dropped (memory stays bounded under a flood)


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"10/60"``: ten per sixty seconds. ``0/...`` turns a bucket off (no limit)."""
        count, _, seconds = text.partition("/")
        limit = cls(int(count), float(seconds))
        if limit.count < 0 or limit.seconds <= 0:
            raise ValueError(f"bad rate limit {text!r}: use count/seconds with seconds > 0")
        return limit


def limits_from_settings(settings: Settings) -> dict[str, Limit]:
    """The buckets and their limits from ``PROPDESK_RATE_*``."""
    return {
        "login_ip": Limit.parse(settings.rate_login_ip),
        "login_email": Limit.parse(settings.rate_login_email),
        "signup_ip": Limit.parse(settings.rate_signup_ip),
        "reset_ip": Limit.parse(settings.rate_reset_ip),
        "orders_user": Limit.parse(settings.rate_orders_user),
    }


class RateLimiter(Protocol):
    """What the routes use (``platform.ratelimits``); both stores implement it."""

    limits: dict[str, Limit]

    def check(self, bucket: str, key: str) -> int | None: ...

    def reset(self, bucket: str | None = None) -> None: ...


class RateLimits:
    """Sliding windows keyed by (bucket, key) in this process's memory; thread-safe."""

    def __init__(self, clock: Clock, limits: dict[str, Limit]):
        self.clock = clock
        self.limits = dict(limits)
        self._hits: dict[str, dict[str, deque[float]]] = {b: {} for b in self.limits}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, clock: Clock, settings: Settings) -> RateLimits:
        return cls(clock, limits_from_settings(settings))

    def check(self, bucket: str, key: str) -> int | None:
        """Count one attempt; None when allowed, else the whole seconds to wait (>= 1)."""
        limit = self.limits[bucket]
        if limit.count == 0:
            return None
        now = self.clock.now().timestamp()
        with self._lock:
            keys = self._hits[bucket]
            hits = keys.get(key)
            if hits is None:
                if len(keys) >= MAX_KEYS:
                    self._evict(keys, now - limit.seconds)
                hits = keys[key] = deque()
            while hits and hits[0] <= now - limit.seconds:
                hits.popleft()
            if len(hits) >= limit.count:
                return max(1, math.ceil(hits[0] + limit.seconds - now))
            hits.append(now)
            return None

    def reset(self, bucket: str | None = None) -> None:
        """Forget the counted attempts (one bucket or all)."""
        with self._lock:
            for b in [bucket] if bucket else list(self._hits):
                self._hits[b] = {}

    @staticmethod
    def _evict(keys: dict[str, deque[float]], horizon: float) -> None:
        stale = [k for k, hits in keys.items() if not hits or hits[-1] <= horizon]
        for k in stale:
            del keys[k]
        if len(keys) >= MAX_KEYS:  # all keys are live: drop the oldest half rather than grow without bound
            for k in sorted(keys, key=lambda k: keys[k][-1])[: len(keys) // 2]:
                del keys[k]


SWEEP_EVERY = 200  # checks per process between two sweeps of other keys' expired rows
SWEEP_BATCH = 1000  # rows a sweep deletes at most, so it never holds the table for long
UNAVAILABLE_RETRY_SECONDS = 5


class PgRateLimits:
    """The same sliding windows, kept in PostgreSQL (``rate_limit_hits``) so every process shares them.

    One engine transaction per check: an advisory transaction lock on (bucket, key) serializes the processes
    checking the same key (two of them cannot both see "one left" and both insert), then that key's expired hits
    are deleted, the rest counted, and the attempt inserted when allowed. Keys are stored as their SHA-256.
    Times are the injected clock's, so the window slides on the same clock as in memory. About one check in
    ``SWEEP_EVERY`` also deletes up to ``SWEEP_BATCH`` rows of other keys that are older than the longest window
    (keys that are never tried again would otherwise stay forever).

    When the database cannot be reached the check fails closed: ``503 unavailable`` with ``Retry-After``, never
    a 500 and never an unlimited attempt. Every route behind a limit (login, sign-up, reset, trader orders)
    needs the same database for its own work the next moment, so failing open would only let a burst of
    attempts through while the database flaps, and the 503 says what the health check says: try again shortly.
    """

    def __init__(self, db: Database, clock: Clock, limits: dict[str, Limit], *, sweep_every: int = SWEEP_EVERY):
        self.db = db
        self.clock = clock
        self.limits = dict(limits)
        self.sweep_every = sweep_every
        # A random start, so processes started together do not all sweep on the same request.
        self._checks = itertools.count(random.randrange(max(1, sweep_every)))
        self._count_lock = threading.Lock()

    @classmethod
    def from_settings(cls, db: Database, clock: Clock, settings: Settings) -> PgRateLimits:
        return cls(db, clock, limits_from_settings(settings))

    @staticmethod
    def key_hash(key: str) -> bytes:
        """What is stored for ``key`` (an address or an IP is never written in clear)."""
        # surrogatepass: a JSON body may carry a lone surrogate in the email, which plain UTF-8 refuses.
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()

    def check(self, bucket: str, key: str) -> int | None:
        """Count one attempt; None when allowed, else the whole seconds to wait (>= 1)."""
        limit = self.limits[bucket]
        if limit.count == 0:
            return None
        wait = self._check_retrying(bucket, key, limit)
        if self._due_for_sweep():
            self._sweep_quietly()
        return wait

    def _check_retrying(self, bucket: str, key: str, limit: Limit) -> int | None:
        for attempt in range(3):
            try:
                return self._check(bucket, key, limit)
            except psycopg.OperationalError as exc:  # connection refused or lost, the pool's timeout, a deadlock
                # A sweep may lock this key's old rows in another order than this check's delete; the server then
                # aborts one of the two. Nothing was counted, so the check simply runs again.
                if isinstance(exc, psycopg.errors.DeadlockDetected) and attempt < 2:
                    continue
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")

    def _check(self, bucket: str, key: str, limit: Limit) -> int | None:
        now = self.clock.now()
        key_hash = self.key_hash(key)
        with self.db.tx() as c:
            # Held until commit: the next check of this key (any process) sees this one's insert.
            c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 13))", (f"{bucket}:{key_hash.hex()}",))
            c.execute(
                "DELETE FROM rate_limit_hits WHERE bucket = %s AND key_hash = %s AND at <= %s",
                (bucket, key_hash, now - timedelta(seconds=limit.seconds)),
            )
            row = c.execute(
                "SELECT count(*) AS n, min(at) AS oldest FROM rate_limit_hits WHERE bucket = %s AND key_hash = %s",
                (bucket, key_hash),
            ).fetchone()
            assert row is not None
            if row["n"] >= limit.count:
                oldest: datetime = row["oldest"]
                return max(1, math.ceil((oldest - now).total_seconds() + limit.seconds))
            c.execute("INSERT INTO rate_limit_hits (bucket, key_hash, at) VALUES (%s, %s, %s)", (bucket, key_hash, now))
        return None

    def reset(self, bucket: str | None = None) -> None:
        """Forget the counted attempts (one bucket or all), for every process sharing the database."""
        with self.db.tx() as c:
            if bucket:
                c.execute("DELETE FROM rate_limit_hits WHERE bucket = %s", (bucket,))
            else:
                c.execute("DELETE FROM rate_limit_hits")

    def sweep(self) -> int:
        """Delete up to ``SWEEP_BATCH`` hits older than the longest window, whatever their key; returns how many.

        One sweep at a time across processes (a try-lock: a process that finds another one sweeping skips its
        turn). A row that a check is deleting at the same moment is waited for, which lasts one short
        transaction; ``FOR UPDATE SKIP LOCKED`` would avoid that but needs UPDATE on the table, which the engine
        role has no other use for."""
        longest = max((lim.seconds for lim in self.limits.values()), default=0.0)
        with self.db.tx() as c:
            turn = c.execute(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('rate_limit_hits:sweep', 13)) AS ok"
            ).fetchone()
            if not (turn and turn["ok"]):
                return 0
            # ``ctid = ANY(ARRAY(...))`` is a TID scan of just the chosen rows (``IN`` may scan the whole table).
            cur = c.execute(
                "DELETE FROM rate_limit_hits WHERE ctid = ANY(ARRAY(SELECT ctid FROM rate_limit_hits WHERE at <= %s"
                " LIMIT %s))",
                (self.clock.now() - timedelta(seconds=longest), SWEEP_BATCH),
            )
            return cur.rowcount

    def _due_for_sweep(self) -> bool:
        with self._count_lock:
            return next(self._checks) % max(1, self.sweep_every) == 0

    def _sweep_quietly(self) -> None:
        # Housekeeping: a failed sweep must not turn an answered check into an error; the next one retries.
        try:
            self.sweep()
        except psycopg.Error as exc:
            _log.warning("ratelimit_sweep_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    @staticmethod
    def _unavailable(exc: Exception) -> ApiError:
        _log.warning("ratelimit_store_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
        return ApiError(
            503,
            "unavailable",
            "the service is temporarily unavailable; try again shortly",
            {"retry_after_seconds": UNAVAILABLE_RETRY_SECONDS},
            headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)},
        )
