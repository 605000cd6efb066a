"""Who is calling: bearer tokens for machine clients (service and admin roles) and, through the web layer's
session cookie, logged-in users (trader and admin, ``Principal.user`` set).

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored. Tokens configured
in the environment (``PROPDESK_SERVICE_TOKEN``, ``PROPDESK_ADMIN_TOKEN``, ``PROPDESK_CRON_SECRET``) are accepted as
well; they are NOT revocable through the store (they are not in it): rotate them by changing the variable and
restarting every process. With no token configured at all, every guarded route refuses every call.

Database tokens may expire (``expires_at``, checked on the injected clock at every use) and be revoked
(``revoked_at``, ``revoked_by``, ``revoke_reason``; ``propdesk tokens revoke``, ``POST
/api/v1/admin/tokens/{id}/revocation``). A verified token is cached per process for at most ``CACHE_TTL_SECONDS``
(5 s, on the monotonic clock), so a revocation made by any process is refused by every running process within
that time; an expiry is exact (the cache keeps the expiry and checks it). ``last_used_at`` is written at most once
a minute per token (``TOUCH_EVERY``), not on every request. The TTL cache is a small dict with a monotonic clock
(``cachetools`` is not among the project's locked dependencies).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..domain.clock import Clock

if TYPE_CHECKING:
    from .users import WebUser

TOKEN_PREFIX = "pdk_"
# How long a verified token is trusted without asking the database again: the bound on how late a revocation
# made by another process takes effect here.
CACHE_TTL_SECONDS = 5.0
CACHE_MAX_ENTRIES = 10_000
# last_used_at is written at most this often per token.
TOUCH_EVERY = timedelta(seconds=60)
_TOKEN_COLUMNS = "id, name, role, created_at, expires_at, revoked_at, revoked_by, revoke_reason, last_used_at"


class Role(StrEnum):
    SERVICE = "service"
    ADMIN = "admin"
    CRON = "cron"  # the scheduler's secret: only the routes in CRON_PATHS
    TRADER = "trader"  # a logged-in web user without admin rights (never a bearer token)


CRON_PATHS = frozenset({"/api/v1/admin/eod"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id (or ``env:<role>``) and role, or a web user (``user:<uuid>``, ``user`` set).

    ``user`` is None for bearer tokens; a session principal's role is ``TRADER`` or ``ADMIN`` after its user.
    """

    id: str
    role: Role
    name: str = ""
    user: WebUser | None = None

    @classmethod
    def of_user(cls, user: WebUser) -> Principal:
        """The principal of a logged-in web user."""
        return cls(f"user:{user.id}", Role.ADMIN if user.is_admin else Role.TRADER, user.email, user)

    @property
    def is_session(self) -> bool:
        return self.user is not None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenNotRevocable(Exception):
    """An environment token (``env:<role>``): it is not stored, so it cannot be revoked; rotate the variable."""


def token_status(row: dict[str, Any], now: datetime) -> str:
    """``revoked`` | ``expired`` | ``active`` for an ``api_tokens`` row at ``now``."""
    if row.get("revoked_at") is not None:
        return "revoked"
    if row.get("expires_at") is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


class TokenStore:
    """Creates, verifies, lists and revokes API tokens (database-backed) plus the static ones from settings.

    ``cache_ttl`` and ``monotonic`` are injectable (tests); the TTL is capped at ``CACHE_TTL_SECONDS``.
    """

    def __init__(
        self,
        db: Any,
        clock: Clock,
        *,
        service_token: str | None = None,
        admin_token: str | None = None,
        cron_secret: str | None = None,
        cache_ttl: float = CACHE_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.clock = clock
        self._static: list[tuple[str, Role]] = []
        if service_token:
            self._static.append((service_token, Role.SERVICE))
        if admin_token:
            self._static.append((admin_token, Role.ADMIN))
        if cron_secret:
            self._static.append((cron_secret, Role.CRON))
        self.cache_ttl = max(0.0, min(float(cache_ttl), CACHE_TTL_SECONDS))
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # token hash -> (principal, expires_at, cached at (monotonic)); insertion order = age (oldest first).
        self._cache: dict[str, tuple[Principal, datetime | None, float]] = {}
        # token id -> the last last_used_at this process wrote (or saw): at most one write per TOUCH_EVERY.
        self._touched: dict[str, datetime] = {}

    @property
    def static_roles(self) -> list[Role]:
        """The roles of the environment tokens configured in this process (never their values)."""
        return [role for _, role in self._static]

    def create(self, role: Role, name: str = "", ttl: timedelta | None = None) -> tuple[str, Principal]:
        """Make a new token; returns the plaintext (shown once) and its principal."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        tid = uuid.uuid4()
        now = self.clock.now()
        expires = now + ttl if ttl is not None else None
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO api_tokens (id, name, role, token_hash, created_at, expires_at)"
                " VALUES (%s,%s,%s,%s,%s,%s)",
                (tid, name or f"{role.value} token", role.value, hash_token(token), now, expires),
            )
        return token, Principal(str(tid), role, name)

    def list(self, *, conn: Any | None = None) -> list[dict[str, Any]]:
        """Every stored token (newest first, never a hash) with its ``status``; environment tokens are not here."""
        now = self.clock.now()
        if conn is None:
            with self.db.read() as c:
                rows = c.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id").fetchall()
        else:
            rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id").fetchall()
        return [{**r, "status": token_status(r, now)} for r in rows]

    def revoke(
        self, token_id: str, *, actor: str = "", reason: str = "", conn: Any | None = None
    ) -> dict[str, Any] | None:
        """Revoke a stored token: the row after revocation, or None when no such token exists. Revoking a revoked
        token keeps the first revocation (idempotent). ``TokenNotRevocable`` for an environment token."""
        if token_id.startswith("env:"):
            raise TokenNotRevocable(token_id)
        try:
            tid = uuid.UUID(token_id)
        except ValueError:
            return None

        def run(c: Any) -> dict[str, Any] | None:
            c.execute(
                "UPDATE api_tokens SET revoked_at=%s, revoked_by=%s, revoke_reason=%s"
                " WHERE id=%s AND revoked_at IS NULL",
                (self.clock.now(), actor or None, reason or None, tid),
            )
            row = c.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id=%s", (tid,)).fetchone()
            return {**row, "status": token_status(row, self.clock.now())} if row else None

        if conn is not None:
            row = run(conn)
        else:
            with self.db.tx() as c:
                row = run(c)
        with self._lock:
            # This process stops at once; the others within their cache TTL.
            for h, hit in list(self._cache.items()):
                if hit[0].id == str(tid):
                    del self._cache[h]
        return row

    def verify(self, token: str) -> Principal | None:
        """The principal for ``token``, or None (unknown, revoked or expired)."""
        if not token or len(token) > 512:
            return None
        for static, role in self._static:
            if hmac.compare_digest(static.encode(), token.encode()):
                return Principal(f"env:{role.value}", role, f"{role.value} token from settings")
        h = hash_token(token)
        now = self.clock.now()
        tick = self.monotonic()
        with self._lock:
            hit = self._cache.get(h)
            if hit is not None and tick - hit[2] >= self.cache_ttl:
                del self._cache[h]
                hit = None
        if hit is not None:
            if hit[1] is not None and hit[1] <= now:
                return None
            self._touch(hit[0].id, now, None)
            return hit[0]
        with self.db.read() as c:
            row = c.execute(
                "SELECT id, name, role, expires_at, revoked_at, last_used_at FROM api_tokens WHERE token_hash=%s", (h,)
            ).fetchone()
        if row is None or token_status(row, now) != "active":
            return None
        principal = Principal(str(row["id"]), Role(row["role"]), row["name"])
        if self.cache_ttl > 0:
            with self._lock:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._cache.pop(next(iter(self._cache)))  # the oldest entry
                self._cache[h] = (principal, row["expires_at"], tick)
        self._touch(principal.id, now, row["last_used_at"])
        return principal

    def _touch(self, token_id: str, now: datetime, stored: datetime | None) -> None:
        """Record the use in ``last_used_at``, at most once per ``TOUCH_EVERY`` per token (in this process, and
        across processes by the UPDATE's condition). A failure is never the caller's problem."""
        with self._lock:
            last = self._touched.get(token_id) or stored
            if last is not None and now - last < TOUCH_EVERY:
                if token_id not in self._touched:
                    self._touched[token_id] = last
                return
            if len(self._touched) >= CACHE_MAX_ENTRIES:
                self._touched.clear()
            self._touched[token_id] = now
        try:
            with self.db.tx() as c:
                c.execute(
                    "UPDATE api_tokens SET last_used_at=%s"
                    " WHERE id=%s AND (last_used_at IS NULL OR last_used_at <= %s)",
                    (now, token_id, now - TOUCH_EVERY),
                )
        except Exception:  # a usage timestamp must never turn an authenticated call into a 500
            with self._lock:
                self._touched.pop(token_id, None)
