"""Who is calling: bearer tokens for machine clients (service and admin roles) and, through the web layer's
session cookie, logged-in users (trader and admin, ``Principal.user`` set).

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored. Tokens configured
in the environment (``PROPDESK_SERVICE_TOKEN``, ``PROPDESK_ADMIN_TOKEN``) are accepted as well. With no token
configured at all, every guarded route refuses every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..domain.clock import Clock

if TYPE_CHECKING:
    from .users import WebUser

TOKEN_PREFIX = "pdk_"


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


class TokenStore:
    """Creates and verifies API tokens (database-backed) plus the static ones from settings."""

    def __init__(
        self,
        db: Any,
        clock: Clock,
        *,
        service_token: str | None = None,
        admin_token: str | None = None,
        cron_secret: str | None = None,
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
        self._cache: dict[str, tuple[Principal, datetime | None]] = {}

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

    def revoke(self, token_id: str) -> bool:
        with self.db.tx() as c:
            row = c.execute(
                "UPDATE api_tokens SET revoked_at=%s WHERE id=%s AND revoked_at IS NULL RETURNING id",
                (self.clock.now(), token_id),
            ).fetchone()
        self._cache.clear()
        return row is not None

    def verify(self, token: str) -> Principal | None:
        """The principal for ``token``, or None (unknown, revoked or expired)."""
        if not token or len(token) > 512:
            return None
        for static, role in self._static:
            if hmac.compare_digest(static.encode(), token.encode()):
                return Principal(f"env:{role.value}", role, f"{role.value} token from settings")
        h = hash_token(token)
        now = self.clock.now()
        hit = self._cache.get(h)
        if hit is not None and (hit[1] is None or hit[1] > now):
            return hit[0]
        with self.db.read() as c:
            row = c.execute(
                "SELECT id, name, role, expires_at, revoked_at FROM api_tokens WHERE token_hash=%s", (h,)
            ).fetchone()
        if row is None or row["revoked_at"] is not None or (row["expires_at"] is not None and row["expires_at"] <= now):
            return None
        principal = Principal(str(row["id"]), Role(row["role"]), row["name"])
        if len(self._cache) < 10000:
            self._cache[h] = (principal, row["expires_at"])
        return principal
