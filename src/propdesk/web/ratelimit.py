"""In-memory sliding-window rate limits per (bucket, key), on the injected clock.

Buckets and their limits come from settings (``PROPDESK_RATE_*`` as ``count/seconds``):

    login_ip      login attempts per client IP
    login_email   login attempts per email address (slows a distributed guess at one account)
    signup_ip     sign-ups per client IP
    reset_ip      password-reset requests per client IP
    orders_user   order submissions per web user (the trader order route calls ``check``)

``check(bucket, key)`` counts the attempt and answers None (allowed) or the seconds until the oldest attempt in
the window leaves it (the ``Retry-After`` of a 429). Refused attempts are not counted, so a client that waits
for ``Retry-After`` always gets through. The state is per process: with several API processes each enforces the
limit on its own (documented in docs/DEPLOY.md).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..domain.clock import Clock

if TYPE_CHECKING:
    from ..settings import Settings

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


class RateLimits:
    """Sliding windows keyed by (bucket, key); thread-safe."""

    def __init__(self, clock: Clock, limits: dict[str, Limit]):
        self.clock = clock
        self.limits = dict(limits)
        self._hits: dict[str, dict[str, deque[float]]] = {b: {} for b in self.limits}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, clock: Clock, settings: Settings) -> RateLimits:
        return cls(clock, {
            "login_ip": Limit.parse(settings.rate_login_ip),
            "login_email": Limit.parse(settings.rate_login_email),
            "signup_ip": Limit.parse(settings.rate_signup_ip),
            "reset_ip": Limit.parse(settings.rate_reset_ip),
            "orders_user": Limit.parse(settings.rate_orders_user),
        })

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
