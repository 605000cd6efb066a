"""Web identity: users, argon2 passwords, server-side sessions, password resets, and the authentication audit log.

Sessions are server-side: the browser holds a 256-bit random token (``secrets.token_urlsafe(32)``); the
database holds only its SHA-256, so a leaked table does not hand out live sessions. A session ends when it is
revoked (logout, password reset), after ``session_idle_minutes`` without a request, or ``session_absolute_hours``
after login, whichever comes first. Every login makes a new token (rotation): a token the browser presented
before logging in is revoked, so a planted session id never becomes an authenticated one.

Second factor (TOTP, RFC 6238; ``identity.totp``): a user may enroll (a pending secret, enabled once a code proves
it). With TOTP enabled, ``authenticate`` wants a code after the right password (``TotpRequired`` when none came); a
wrong or replayed code is a plain failure, like a wrong password. A code is accepted within one 30-second step
either side of the clock, and only once: the newest accepted step is stored (``totp_last_step``) and that step and
every older one are refused from then on, atomically (two concurrent logins with one code: one wins).

Time comes from the injected clock only. Audit rows (``auth_events``) never carry a password, a token, a hash, a
TOTP secret or a code.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg.types.json import Jsonb

from .. import logs
from ..domain.clock import Clock
from ..domain.errors import Conflict, InvalidInput
from . import totp

if TYPE_CHECKING:
    from ..settings import Settings

SESSION_COOKIE = "pd_session"
SECURE_SESSION_COOKIE = "__Host-pd_session"
PASSWORD_MIN, PASSWORD_MAX = 10, 256
# last_seen_at is written at most this often: an idle timeout is exact to within this many seconds, and a busy
# page does not turn every request into a database write.
TOUCH_EVERY = timedelta(seconds=15)
# A TOTP enrollment not confirmed within this long must be started again (a new secret).
TOTP_PENDING_FOR = timedelta(minutes=15)

_log = logs.get("propdesk.identity")


class UserRole(StrEnum):
    TRADER = "trader"
    ADMIN = "admin"


@dataclass(frozen=True)
class WebUser:
    """A person who logs in through the browser."""

    id: uuid.UUID
    email: str
    role: UserRole
    display_name: str
    timezone: str
    totp_enabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN


class TotpRequired(Exception):
    """The password was right but the user has TOTP enabled and no code came with it (login answers
    ``totp_required``)."""

    def __init__(self, user: WebUser):
        super().__init__("a one-time code is required")
        self.user = user


@dataclass(frozen=True)
class TotpEnrollment:
    """A fresh secret (base32) and its ``otpauth://`` URI: shown once, to the user who enrolls."""

    secret: str
    uri: str
    expires_at: datetime | None = None


# ------------------------------------------------------------------------------------------------ validation
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def normalize_email(email: object) -> str:
    """The canonical (lower-cased, trimmed) form of an address, or ``InvalidInput`` ``invalid_email``.

    A deliberately plain check (no quoted local parts, no IP literals, ASCII only): an address that passes can be
    written into an SMTP envelope as is.
    """
    if not isinstance(email, str):
        raise InvalidInput("email must be a string", code="invalid_email")
    value = email.strip().lower()
    local, at, domain = value.rpartition("@")
    labels = domain.split(".")
    ok = (
        at == "@"
        and len(value) <= 254
        and bool(_LOCAL.match(local))
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )
    if not ok:
        raise InvalidInput("not a valid email address", code="invalid_email")
    return value


def check_password(password: object) -> str:
    """The password if it meets the policy, else ``InvalidInput`` ``weak_password`` with the reason.

    Policy: 10..256 characters and at least two character classes (lower case, upper case, digits, others).
    Length does most of the work; the class rule only refuses the weakest shapes (``aaaaaaaaaa``, ``1234567890``).
    """
    if not isinstance(password, str):
        raise InvalidInput("password must be a string", code="weak_password")
    if len(password) < PASSWORD_MIN or len(password) > PASSWORD_MAX:
        raise InvalidInput(
            f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters",
            code="weak_password",
            details={"min_length": PASSWORD_MIN, "max_length": PASSWORD_MAX},
        )
    classes = {
        ("lower" if ch.islower() else "upper" if ch.isupper() else "digit" if ch.isdigit() else "other")
        for ch in password
    }
    if len(classes) < 2 or len(set(password)) < 4:
        raise InvalidInput(
            "a password mixes at least two kinds of characters (letters, digits, symbols)",
            code="weak_password",
            details={"min_length": PASSWORD_MIN},
        )
    return password


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: object) -> str:
    """An IANA time zone name known to this system (``UTC`` included), else ``InvalidInput`` ``invalid_timezone``."""
    if isinstance(name, str) and (name == "UTC" or name in _zones()):
        return name
    raise InvalidInput("unknown time zone (use an IANA name such as Europe/London)", code="invalid_timezone")


def check_display_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput("display_name must be a string", code="invalid_display_name")
    value = " ".join(name.split())
    if len(value) > 100 or any(not ch.isprintable() for ch in value):
        raise InvalidInput("display_name has at most 100 printable characters", code="invalid_display_name")
    return value


def hash_secret(token: str) -> str:
    """SHA-256 hex of a session or reset token (the only form the database holds)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _ip(ip: str | None) -> str | None:
    return ip[:64] if ip else None


def _user(row: dict[str, Any]) -> WebUser:
    return WebUser(
        row["id"],
        row["email"],
        UserRole(row["role"]),
        row["display_name"],
        row["timezone"],
        bool(row.get("totp_enabled")),
    )


_USER_COLUMNS = "u.id, u.email, u.role, u.display_name, u.timezone, (u.totp_enabled_at IS NOT NULL) AS totp_enabled"


# ------------------------------------------------------------------------------------------------ the store
class IdentityStore:
    """Users, sessions and password resets over the engine pool; the clock decides every expiry."""

    def __init__(self, db: Any, clock: Clock, settings: Settings, *, hasher: PasswordHasher | None = None):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.hasher = hasher or PasswordHasher()
        self.idle = timedelta(minutes=settings.session_idle_minutes)
        self.absolute = timedelta(hours=settings.session_absolute_hours)
        self.reset_ttl = timedelta(minutes=settings.password_reset_minutes)
        self._dummy: str | None = None

    @property
    def cookie_name(self) -> str:
        """``__Host-pd_session`` behind https (Secure, Path=/, no Domain), ``pd_session`` on plain http."""
        return SECURE_SESSION_COOKIE if self.settings.public_url.lower().startswith("https://") else SESSION_COOKIE

    # -- users
    def create_user(
        self,
        email: str,
        password: str,
        *,
        role: UserRole = UserRole.TRADER,
        display_name: str = "",
        timezone: str = "UTC",
        ip: str | None = None,
        audit_kind: str = "user_created",
    ) -> WebUser:
        """A new user; ``InvalidInput`` for a bad field, ``Conflict`` ``email_taken`` when the address exists."""
        email = normalize_email(email)
        check_password(password)
        display_name = check_display_name(display_name)
        timezone = check_timezone(timezone)
        role = UserRole(role)
        password_hash = self.hasher.hash(password)
        now = self.clock.now()
        uid = uuid.uuid4()
        with self.db.tx() as c:
            row = c.execute(
                "INSERT INTO users (id, email, password_hash, role, display_name, timezone, created_at, updated_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (email) DO NOTHING RETURNING id",
                (uid, email, password_hash, role.value, display_name, timezone, now, now),
            ).fetchone()
            if row is None:
                raise Conflict("a user with this email exists", code="email_taken")
            self._audit(c, audit_kind, uid, ip, {"role": role.value})
        return WebUser(uid, email, role, display_name, timezone)

    def get_user(self, user_id: uuid.UUID) -> WebUser | None:
        with self.db.read() as c:
            row = c.execute(
                f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id=%s AND u.disabled_at IS NULL", (user_id,)
            ).fetchone()
        return _user(row) if row else None

    def find_user(self, email: str) -> WebUser | None:
        try:
            email = normalize_email(email)
        except InvalidInput:
            return None
        with self.db.read() as c:
            row = c.execute(
                f"SELECT {_USER_COLUMNS} FROM users u WHERE u.email=%s AND u.disabled_at IS NULL", (email,)
            ).fetchone()
        return _user(row) if row else None

    def authenticate(
        self, email: str, password: str, *, ip: str | None = None, totp_code: str | None = None
    ) -> WebUser | None:
        """The user if the password (and, with TOTP enabled, the one-time code) is right, else None; unknown
        addresses cost the same argon2 verification. ``TotpRequired`` when the password is right, the user has TOTP
        enabled and ``totp_code`` is None. A wrong, expired or replayed code is None, as a wrong password is."""
        try:
            email = normalize_email(email)
        except InvalidInput:
            email = ""
        row = None
        if email:
            with self.db.read() as c:
                row = c.execute(
                    f"SELECT {_USER_COLUMNS}, u.password_hash, u.disabled_at, u.totp_secret, u.totp_last_step"
                    " FROM users u WHERE u.email=%s",
                    (email,),
                ).fetchone()
        if row is None or row["disabled_at"] is not None or not isinstance(password, str):
            self._verify(self._dummy_hash(), password if isinstance(password, str) else "")
            self.audit(
                "login_failed",
                row["id"] if row else None,
                ip,
                {"reason": "disabled" if row else "unknown_email", "email": email[:254]},
            )
            return None
        if not self._verify(row["password_hash"], password):
            self.audit("login_failed", row["id"], ip, {"reason": "wrong_password"})
            return None
        user = _user(row)
        if row["totp_secret"] is not None:
            if totp_code is None:
                self.audit("login_failed", user.id, ip, {"reason": "totp_missing"})
                raise TotpRequired(user)
            step = self._accept_code(user.id, row["totp_secret"], row["totp_last_step"], totp_code)
            if step is None:
                self.audit("login_failed", user.id, ip, {"reason": "wrong_totp"})
                return None
        if self.hasher.check_needs_rehash(row["password_hash"]):
            # Parameters changed since this hash was made: upgrade it now that we know the password.
            with self.db.tx() as c:
                c.execute(
                    "UPDATE users SET password_hash=%s, updated_at=%s WHERE id=%s",
                    (self.hasher.hash(password), self.clock.now(), user.id),
                )
        self.audit("login_ok", user.id, ip, {"totp": user.totp_enabled} if user.totp_enabled else {})
        return user

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    # -- TOTP (second factor)
    def _accept_code(self, user_id: uuid.UUID, secret: str, last_step: int | None, code: object) -> int | None:
        """The step ``code`` matched (now spent), or None: wrong, outside the window, already used, or beaten to
        that step by a concurrent request (the conditional UPDATE is what makes a code single-use)."""
        step = totp.verify(secret, code, self.clock.now().timestamp(), after=last_step)
        if step is None:
            return None
        with self.db.tx() as c:
            won = c.execute(
                "UPDATE users SET totp_last_step=%s WHERE id=%s AND totp_secret=%s"
                " AND (totp_last_step IS NULL OR totp_last_step < %s) RETURNING id",
                (step, user_id, secret, step),
            ).fetchone()
        return step if won is not None else None

    def _totp_row(self, c: Any, user_id: uuid.UUID) -> dict[str, Any] | None:
        row: dict[str, Any] | None = c.execute(
            "SELECT id, email, totp_secret, totp_enabled_at, totp_pending_secret, totp_pending_at, totp_last_step"
            " FROM users WHERE id=%s AND disabled_at IS NULL FOR UPDATE",
            (user_id,),
        ).fetchone()
        return row

    def totp_status(self, user_id: uuid.UUID) -> dict[str, Any]:
        """``{"enabled", "enabled_at", "pending", "pending_expires_at"}`` (never the secret)."""
        with self.db.read() as c:
            row = c.execute("SELECT totp_enabled_at, totp_pending_at FROM users WHERE id=%s", (user_id,)).fetchone()
        now = self.clock.now()
        pending_at = row["totp_pending_at"] if row else None
        live = pending_at is not None and now < pending_at + TOTP_PENDING_FOR
        return {
            "enabled": bool(row and row["totp_enabled_at"] is not None),
            "enabled_at": row["totp_enabled_at"] if row else None,
            "pending": live,
            "pending_expires_at": pending_at + TOTP_PENDING_FOR if live and pending_at else None,
        }

    def start_totp_enrollment(self, user_id: uuid.UUID, *, ip: str | None = None) -> TotpEnrollment:
        """A new pending secret for a user without TOTP (it replaces an earlier pending one). ``Conflict``
        ``totp_already_enabled`` when TOTP is on (remove it first, with a code)."""
        secret = totp.new_secret()
        now = self.clock.now()
        with self.db.tx() as c:
            row = self._totp_row(c, user_id)
            if row is None:
                raise InvalidInput("no such user", code="user_not_found")
            if row["totp_secret"] is not None:
                raise Conflict("TOTP is already enabled; remove it first (with a code)", code="totp_already_enabled")
            c.execute(
                "UPDATE users SET totp_pending_secret=%s, totp_pending_at=%s, updated_at=%s WHERE id=%s",
                (secret, now, now, user_id),
            )
            self._audit(c, "totp_enrollment_started", user_id, ip, {})
        return TotpEnrollment(secret, totp.provisioning_uri(secret, row["email"]), now + TOTP_PENDING_FOR)

    def confirm_totp(self, user_id: uuid.UUID, code: object, *, ip: str | None = None) -> bool:
        """Enable the pending secret when ``code`` is right for it (True); a wrong code is False (audited).
        ``Conflict`` ``totp_not_pending`` when there is no live enrollment to confirm."""
        now = self.clock.now()
        with self.db.tx() as c:
            row = self._totp_row(c, user_id)
            pending = row["totp_pending_secret"] if row else None
            if row is None or pending is None or now >= row["totp_pending_at"] + TOTP_PENDING_FOR:
                raise Conflict("no TOTP enrollment to confirm; start one first", code="totp_not_pending")
            step = totp.verify(pending, code, now.timestamp())
            if step is None:
                self._audit(c, "totp_code_refused", user_id, ip, {"at": "confirmation"})
                return False
            c.execute(
                "UPDATE users SET totp_secret=%s, totp_enabled_at=%s, totp_last_step=%s, totp_pending_secret=NULL,"
                " totp_pending_at=NULL, updated_at=%s WHERE id=%s",
                (pending, now, step, now, user_id),
            )
            self._audit(c, "totp_enabled", user_id, ip, {"by": "self"})
        return True

    def remove_totp(self, user_id: uuid.UUID, code: object, *, ip: str | None = None) -> bool:
        """Turn TOTP off with a current code (True); a wrong or spent code is False (audited). ``Conflict``
        ``totp_not_enabled`` when it is off."""
        now = self.clock.now()
        with self.db.tx() as c:
            row = self._totp_row(c, user_id)
            if row is None or row["totp_secret"] is None:
                raise Conflict("TOTP is not enabled", code="totp_not_enabled")
            if totp.verify(row["totp_secret"], code, now.timestamp(), after=row["totp_last_step"]) is None:
                self._audit(c, "totp_code_refused", user_id, ip, {"at": "removal"})
                return False
            self._clear_totp(c, user_id, now)
            self._audit(c, "totp_disabled", user_id, ip, {"by": "self"})
        return True

    def admin_remove_totp(self, user_id: uuid.UUID, *, actor: str, conn: Any) -> bool:
        """An admin turns a user's TOTP off (lost device), in the caller's transaction (which writes the
        ``admin_audit`` row with the reason); False when it was not on. Audited in ``auth_events`` too."""
        row = self._totp_row(conn, user_id)
        if row is None or (row["totp_secret"] is None and row["totp_pending_secret"] is None):
            return False
        self._clear_totp(conn, user_id, self.clock.now())
        self._audit(conn, "totp_disabled", user_id, None, {"by": actor})
        return True

    def enroll_totp_directly(self, user_id: uuid.UUID, *, actor: str = "cli") -> TotpEnrollment:
        """(Re)enroll at once, without a confirming code: a new secret, enabled now (``propdesk admin totp``, run
        by an operator with shell access, e.g. for the first admin, who has no session yet)."""
        secret = totp.new_secret()
        now = self.clock.now()
        with self.db.tx() as c:
            row = self._totp_row(c, user_id)
            if row is None:
                raise InvalidInput("no such user", code="user_not_found")
            c.execute(
                "UPDATE users SET totp_secret=%s, totp_enabled_at=%s, totp_last_step=NULL, totp_pending_secret=NULL,"
                " totp_pending_at=NULL, updated_at=%s WHERE id=%s",
                (secret, now, now, user_id),
            )
            self._audit(c, "totp_enabled", user_id, None, {"by": actor, "replaced": row["totp_secret"] is not None})
        return TotpEnrollment(secret, totp.provisioning_uri(secret, row["email"]))

    def _clear_totp(self, c: Any, user_id: uuid.UUID, now: datetime) -> None:
        c.execute(
            "UPDATE users SET totp_secret=NULL, totp_enabled_at=NULL, totp_last_step=NULL, totp_pending_secret=NULL,"
            " totp_pending_at=NULL, updated_at=%s WHERE id=%s",
            (now, user_id),
        )

    # -- sessions
    def start_session(
        self, user: WebUser, *, ip: str | None = None, user_agent: str | None = None, replaces: str | None = None
    ) -> str:
        """A new session token for ``user`` (shown once, to the cookie); ``replaces`` (a pre-login token) is revoked."""
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.db.tx() as c:
            if replaces:
                c.execute(
                    "UPDATE web_sessions SET revoked_at=%s WHERE token_hash=%s AND revoked_at IS NULL",
                    (now, hash_secret(replaces)),
                )
            c.execute(
                "INSERT INTO web_sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at, ip,"
                " user_agent) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                (
                    uuid.uuid4(),
                    hash_secret(token),
                    user.id,
                    now,
                    now,
                    now + self.absolute,
                    _ip(ip),
                    (user_agent or "")[:300] or None,
                ),
            )
        return token

    def resolve(self, token: str | None) -> WebUser | None:
        """The user of a live session, or None (unknown, revoked, idle too long, past its absolute expiry)."""
        if not token or len(token) > 128:
            return None
        now = self.clock.now()
        with self.db.read() as c:
            row = c.execute(
                f"SELECT s.id AS session_id, s.last_seen_at, s.expires_at, s.revoked_at, {_USER_COLUMNS},"
                " u.disabled_at FROM web_sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash=%s",
                (hash_secret(token),),
            ).fetchone()
        if row is None or row["revoked_at"] is not None or row["disabled_at"] is not None:
            return None
        if now >= row["expires_at"] or now >= row["last_seen_at"] + self.idle:
            return None
        if now - row["last_seen_at"] >= TOUCH_EVERY:
            with self.db.tx() as c:
                c.execute(
                    "UPDATE web_sessions SET last_seen_at=greatest(last_seen_at, %s) WHERE id=%s",
                    (now, row["session_id"]),
                )
        return _user(row)

    def end_session(self, token: str | None, *, ip: str | None = None) -> bool:
        """Revoke a session (logout); True when a live session ended."""
        if not token or len(token) > 128:
            return False
        with self.db.tx() as c:
            row = c.execute(
                "UPDATE web_sessions SET revoked_at=%s WHERE token_hash=%s AND revoked_at IS NULL RETURNING user_id",
                (self.clock.now(), hash_secret(token)),
            ).fetchone()
            if row is not None:
                self._audit(c, "logout", row["user_id"], ip, {})
        return row is not None

    def end_all_sessions(
        self,
        user_id: uuid.UUID,
        *,
        ip: str | None = None,
        kind: str = "logout_everywhere",
        detail: dict[str, Any] | None = None,
        conn: Any | None = None,
    ) -> int:
        """Revoke every live session of the user ("log out everywhere"); the number ended. Audited as ``kind``.
        Open live streams notice within their session check (``web.live.SESSION_CHECK_SECONDS``)."""

        def run(c: Any) -> int:
            rows = c.execute(
                "UPDATE web_sessions SET revoked_at=%s WHERE user_id=%s AND revoked_at IS NULL RETURNING id",
                (self.clock.now(), user_id),
            ).fetchall()
            self._audit(c, kind, user_id, ip, {**(detail or {}), "sessions_ended": len(rows)})
            return len(rows)

        if conn is not None:
            return run(conn)
        with self.db.tx() as c:
            return run(c)

    # -- password reset
    def request_password_reset(self, email: str, *, ip: str | None = None) -> tuple[WebUser, str] | None:
        """(user, one-time token) for a known, enabled address, else None. The caller mails the link."""
        user = self.find_user(email)
        if user is None:
            self.audit("reset_requested", None, ip, {"known": False})
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES (%s,%s,%s,%s)",
                (hash_secret(token), user.id, now, now + self.reset_ttl),
            )
            self._audit(c, "reset_requested", user.id, ip, {"known": True})
        return user, token

    def reset_password(self, token: str, password: str, *, ip: str | None = None) -> WebUser | None:
        """Set a new password with a reset token: once, before it expires; every session of the user ends.

        The password policy is checked first (``InvalidInput``), so a weak password does not burn the link.
        """
        check_password(password)
        if not isinstance(token, str) or not token or len(token) > 128:
            return None
        now = self.clock.now()
        password_hash = self.hasher.hash(password)
        with self.db.tx() as c:
            row = c.execute(
                f"SELECT r.user_id, r.expires_at, r.used_at, {_USER_COLUMNS}, u.disabled_at"
                " FROM password_resets r JOIN users u ON u.id = r.user_id WHERE r.token_hash=%s"
                " FOR UPDATE OF r",
                (hash_secret(token),),
            ).fetchone()
            if row is None or row["used_at"] is not None or now >= row["expires_at"] or row["disabled_at"]:
                return None
            c.execute("UPDATE password_resets SET used_at=%s WHERE token_hash=%s", (now, hash_secret(token)))
            # Every other outstanding link of the user dies too: the newest password wins.
            c.execute(
                "UPDATE password_resets SET used_at=%s WHERE user_id=%s AND used_at IS NULL", (now, row["user_id"])
            )
            c.execute(
                "UPDATE users SET password_hash=%s, updated_at=%s WHERE id=%s", (password_hash, now, row["user_id"])
            )
            c.execute(
                "UPDATE web_sessions SET revoked_at=%s WHERE user_id=%s AND revoked_at IS NULL", (now, row["user_id"])
            )
            self._audit(c, "reset_done", row["user_id"], ip, {})
        return _user(row)

    # -- audit
    def audit(self, kind: str, user_id: uuid.UUID | None, ip: str | None, detail: dict[str, Any]) -> None:
        """Append an ``auth_events`` row (UTC, no secrets). Failures are logged, never raised: audit must not
        turn a refusal into a 500."""
        try:
            with self.db.tx() as c:
                self._audit(c, kind, user_id, ip, detail)
        except Exception as exc:  # pragma: no cover - database down: the log line is the record
            _log.error("auth_event_not_recorded", kind=kind, error=f"{type(exc).__name__}: {exc}"[:300])

    def _audit(self, c: Any, kind: str, user_id: uuid.UUID | None, ip: str | None, detail: dict[str, Any]) -> None:
        c.execute(
            "INSERT INTO auth_events (ts, kind, user_id, ip, detail) VALUES (%s,%s,%s,%s,%s)",
            (self.clock.now(), kind, user_id, _ip(ip), Jsonb(detail)),
        )
