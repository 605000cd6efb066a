"""Accounts of people: sign-up, login, logout, password reset, and ``GET /api/v1/me``.

No user enumeration (docs/DEPLOY.md, "Accounts and enumeration"):
* login answers the same 401 ``invalid_credentials`` for an unknown address and a wrong password, after the
  same argon2 work (a dummy hash is verified for unknown addresses);
* a password-reset request always answers 202, whether or not the address is known;
* sign-up logs a new user in at once (201 + session cookie). For an address that already has an account it
  answers 202 ``check_email`` instead, changes nothing, and mails the owner a notice with a reset link. That
  answer does differ from the 201 of a new address (auto-login cannot be faked), so sign-up is the one place
  that can tell a registered address from a new one; it is rate-limited per IP and bot-checked (Turnstile).

Second factor (TOTP, ``identity/totp.py``): for a user with TOTP enabled, login wants ``totp_code`` too. The right
password without a code is 401 ``totp_required`` (the login page then shows the code field); a wrong, expired or
replayed code is the same 401 ``invalid_credentials`` as a wrong password, and every attempt counts in the same
rate limits. Enrollment (session user): ``POST /api/v1/me/totp`` (a fresh secret and its ``otpauth://`` URI,
pending), ``POST /api/v1/me/totp/confirmation`` (a code proves it: enabled), ``POST /api/v1/me/totp/removal`` (off,
with a current code); ``GET /api/v1/me/totp`` the status. An admin turns a user's TOTP off with a reason:
``POST /api/v1/admin/users/{user_id}/totp/removal``. With ``PROPDESK_ADMIN_TOTP_REQUIRED`` an admin without TOTP
gets a session that opens only the enrollment routes and logout (``api/middleware.py``).

Session cookie: ``pd_session`` (``__Host-pd_session`` behind https), HttpOnly, SameSite=Lax, Secure on https,
Path=/, Max-Age = the absolute session lifetime. A new token at every login; the one sent before is revoked.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.responses import Response

from ...domain.errors import Conflict, InvalidInput, NotFound
from ...identity.turnstile import Turnstile
from ...identity.users import IdentityStore, TotpRequired, WebUser, normalize_email
from ..body import StrictJSONRoute
from ..context import Api, _err
from ..errors import ApiError
from ..idempotency import Outcome
from ..render import json_response
from ..responses import SessionsEndedOut
from ..schemas import AdminBody, Strict
from .admin import write_audit

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("Bad request (bot check failed, reset link invalid or expired)"),
    403: _err("Cross-site request refused (csrf_failed)"),
    413: _err("Body too large"),
    415: _err("Body is not application/json"),
    422: _err("Validation error (invalid_email, weak_password, invalid_timezone, ...)"),
    429: _err("Too many attempts; see Retry-After"),
}


class SignupBody(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    display_name: str = Field(default="", max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    turnstile_token: str | None = Field(default=None, max_length=4096)


class LoginBody(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    totp_code: str | None = Field(
        default=None, max_length=32, description="The 6-digit one-time code, for a user with TOTP enabled."
    )


class TotpCodeBody(Strict):
    code: str = Field(max_length=32, description="The current 6-digit code of the authenticator app.")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TotpStatusOut(_Out):
    enabled: bool
    enabled_at: datetime | None
    pending: bool = Field(description="An enrollment waiting for its confirming code.")
    pending_expires_at: datetime | None
    required: bool = Field(description="PROPDESK_ADMIN_TOTP_REQUIRED applies to this user (an admin).")


class TotpStatus(_Out):
    totp: TotpStatusOut


class TotpConfirmed(_Out):
    totp: TotpStatusOut
    redirect: str


class TotpEnrollmentOut(_Out):
    secret: str = Field(description="Base32 secret, shown once.")
    otpauth_uri: str = Field(description="otpauth://totp/PropDesk:<email>?secret=...&issuer=PropDesk")
    pending_expires_at: datetime | None
    digits: int
    period_seconds: int
    algorithm: str


class TotpRemovedByAdmin(_Out):
    user_id: uuid.UUID
    removed: bool


TOTP_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("The code is wrong (invalid_totp_code)"),
    401: _err("Not logged in"),
    403: _err("A bearer token (not a session), or cross-site (csrf_failed)"),
    409: _err("totp_already_enabled, totp_not_pending or totp_not_enabled"),
    413: _err("Body too large"),
    415: _err("Body is not application/json"),
    422: _err("Validation error"),
    429: _err("Too many attempts; see Retry-After"),
}


class ResetRequestBody(Strict):
    email: str = Field(max_length=320)


class ResetConfirmBody(Strict):
    token: str = Field(max_length=256)
    password: str = Field(max_length=1024)


SECURITY_PAGE = "/account/security"


def present_user(user: WebUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "role": user.role.value,
        "display_name": user.display_name,
        "timezone": user.timezone,
        "totp_enabled": user.totp_enabled,
    }


def totp_enrollment_required(user: WebUser, settings: Any) -> bool:
    """Is this user's session limited to TOTP enrollment (``PROPDESK_ADMIN_TOTP_REQUIRED``, an admin without)?"""
    return bool(settings.admin_totp_required) and user.is_admin and not user.totp_enabled


def home_of(user: WebUser, settings: Any = None) -> str:
    if settings is not None and totp_enrollment_required(user, settings):
        return SECURITY_PAGE
    return "/admin" if user.is_admin else "/app"


def client_ip(request: Request) -> str | None:
    return request.client.host[:64] if request.client else None


def set_session_cookie(response: Response, identity: IdentityStore, token: str) -> None:
    secure = identity.cookie_name.startswith("__Host-")
    response.headers["Cache-Control"] = "no-store"  # a response that sets a session is never cached
    response.set_cookie(
        identity.cookie_name,
        token,
        max_age=int(identity.absolute.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, identity: IdentityStore) -> None:
    secure = identity.cookie_name.startswith("__Host-")
    response.delete_cookie(identity.cookie_name, path="/", secure=secure, httponly=True, samesite="lax")


def rate_limit(platform: Any, bucket: str, key: str) -> None:
    """429 ``rate_limited`` with ``Retry-After`` when ``key`` used up ``bucket``."""
    wait = platform.ratelimits.check(bucket, key)
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            "too many attempts; try again later",
            {"retry_after_seconds": wait},
            headers={"Retry-After": str(wait)},
        )


def _email_key(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidInput:
        return email.strip().lower()[:320]


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["auth"])
    platform = api.platform
    identity: IdentityStore = platform.identity
    settings = platform.settings
    turnstile = Turnstile(settings.turnstile_secret, settings.turnstile_verify_url)
    public_url = settings.public_url.rstrip("/")

    def mail_in_background(to: str, subject: str, body: str, kind: str) -> BackgroundTask:
        outbox_id = platform.mailer.queue(to, subject, body, kind)
        return BackgroundTask(platform.mailer.deliver, outbox_id)

    @router.post(
        "/api/v1/auth/signup",
        status_code=201,
        responses={
            202: {"description": "The address already has an account: nothing changed, its owner was emailed"},
            **AUTH_ERRORS,
        },
    )
    def signup(request: Request, body: SignupBody) -> Response:
        """Create a trader account and log it in (201 + session cookie).

        An address that already has an account: 202 ``check_email`` (nothing changes; its owner gets an email).
        With Turnstile on, a missing or refused ``turnstile_token`` is 400 ``bot_check_failed``."""
        ip = client_ip(request)
        rate_limit(platform, "signup_ip", ip or "unknown")
        if not turnstile.verify(body.turnstile_token, ip):
            raise ApiError(400, "bot_check_failed", "the bot check failed; reload the page and try again")
        try:
            user = identity.create_user(
                body.email,
                body.password,
                display_name=body.display_name,
                timezone=body.timezone,
                ip=ip,
                audit_kind="signup",
            )
        except Conflict:
            email = normalize_email(body.email)
            identity.audit("signup_existing", None, ip, {})
            task = mail_in_background(
                email,
                "Someone tried to sign up with your address",
                "Someone (perhaps you) tried to open a new PropDesk account with this email address, which "
                "already has one. Nothing was changed.\n\n"
                f"Log in: {public_url}/login\nForgot your password? {public_url}/reset\n\n"
                "If this was not you, you can ignore this message.\n",
                "signup_existing",
            )
            response = json_response(_check_email(), 202)
            response.background = task
            return response
        token = identity.start_session(
            user,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
            replaces=request.cookies.get(identity.cookie_name),
        )
        response = json_response({"user": present_user(user), "redirect": home_of(user)}, 201)
        set_session_cookie(response, identity, token)
        return response

    @router.post(
        "/api/v1/auth/login",
        responses={
            401: _err(
                "Email, password or one-time code is wrong (invalid_credentials), or a code is needed (totp_required)"
            ),
            **AUTH_ERRORS,
        },
    )
    def login(request: Request, body: LoginBody) -> Response:
        """Log in: 200 + a new session cookie. A wrong password and an unknown address get the same 401.

        With TOTP enabled: the right password without ``totp_code`` is 401 ``totp_required``; a wrong, expired or
        replayed code is the same 401 ``invalid_credentials`` as a wrong password. With
        ``PROPDESK_ADMIN_TOTP_REQUIRED`` an admin without TOTP gets a session for enrollment only
        (``totp_enrollment_required`` true, ``redirect`` to the security page)."""
        ip = client_ip(request)
        rate_limit(platform, "login_ip", ip or "unknown")
        rate_limit(platform, "login_email", _email_key(body.email))
        try:
            user = identity.authenticate(body.email, body.password, ip=ip, totp_code=body.totp_code)
        except TotpRequired:
            raise ApiError(
                401, "totp_required", "enter the 6-digit code from your authenticator app", {"field": "totp_code"}
            ) from None
        if user is None:
            raise ApiError(401, "invalid_credentials", "the email or password is wrong")
        token = identity.start_session(
            user,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
            replaces=request.cookies.get(identity.cookie_name),
        )
        payload: dict[str, Any] = {"user": present_user(user), "redirect": home_of(user, settings)}
        if totp_enrollment_required(user, settings):
            payload["totp_enrollment_required"] = True
        response = json_response(payload)
        set_session_cookie(response, identity, token)
        return response

    @router.post("/api/v1/auth/logout", responses=AUTH_ERRORS)
    def logout(request: Request) -> Response:
        """End the current session (if any) and clear the cookie; always 200."""
        identity.end_session(request.cookies.get(identity.cookie_name), ip=client_ip(request))
        response = json_response({"status": "logged_out"})
        clear_session_cookie(response, identity)
        return response

    @router.post("/api/v1/auth/password-reset", status_code=202, responses=AUTH_ERRORS)
    def password_reset(request: Request, body: ResetRequestBody) -> Response:
        """Ask for a reset link: always 202, known address or not. The link works once, for
        ``PROPDESK_PASSWORD_RESET_MINUTES``."""
        ip = client_ip(request)
        rate_limit(platform, "reset_ip", ip or "unknown")
        found = identity.request_password_reset(body.email, ip=ip)
        response = json_response(_check_email(), 202)
        if found is not None:
            user, token = found
            minutes = settings.password_reset_minutes
            response.background = mail_in_background(
                user.email,
                "Reset your PropDesk password",
                f"Open this link to choose a new password (it works once, for {minutes} minutes):\n\n"
                f"{public_url}/reset?token={token}\n\n"
                "If you did not ask for this, ignore this message: your password stays as it is.\n",
                "password_reset",
            )
        return response

    @router.post("/api/v1/auth/password-reset/confirm", responses=AUTH_ERRORS)
    def password_reset_confirm(request: Request, body: ResetConfirmBody) -> Response:
        """Set a new password with the emailed token; every session of the user ends. 400
        ``invalid_reset_token`` when the link is unknown, used or expired."""
        user = identity.reset_password(body.token, body.password, ip=client_ip(request))
        if user is None:
            raise ApiError(400, "invalid_reset_token", "this reset link is invalid, used or expired; ask for a new one")
        response = json_response({"status": "password_changed", "redirect": "/login"})
        clear_session_cookie(response, identity)
        return response

    @router.post(
        "/api/v1/me/sessions/revocation",
        response_model=SessionsEndedOut,
        responses={401: _err("Not logged in"), 403: _err("A bearer token (not a session)"), **AUTH_ERRORS},
    )
    def logout_everywhere(request: Request) -> Response:
        """Log out everywhere: end every session of the logged-in user (this one included) and clear the cookie.
        Open pages and live streams of the other sessions are refused from their next request on."""
        user = request.state.principal.user
        ended = identity.end_all_sessions(user.id, ip=client_ip(request))
        response = json_response({"sessions_ended": ended}, headers={"Cache-Control": "no-store"})
        clear_session_cookie(response, identity)
        return response

    @router.get("/api/v1/me", responses={401: _err("Not logged in"), 403: _err("A bearer token (not a session)")})
    def me(request: Request) -> Response:
        """The logged-in user."""
        principal = request.state.principal
        body: dict[str, Any] = {"user": present_user(principal.user), "home": home_of(principal.user, settings)}
        if totp_enrollment_required(principal.user, settings):
            body["totp_enrollment_required"] = True
        return json_response(body, headers={"Cache-Control": "no-store"})

    # -- TOTP enrollment (the session's own user)
    def _totp_status(user: WebUser) -> dict[str, Any]:
        status = identity.totp_status(user.id)
        return {
            "enabled": status["enabled"],
            "enabled_at": status["enabled_at"],
            "pending": status["pending"],
            "pending_expires_at": status["pending_expires_at"],
            "required": bool(settings.admin_totp_required) and user.is_admin,
        }

    def _code_attempt(request: Request, user: WebUser) -> str | None:
        """Rate-limit a code guess like a login (per IP and per address): 429 past the limit."""
        ip = client_ip(request)
        rate_limit(platform, "login_ip", ip or "unknown")
        rate_limit(platform, "login_email", user.email)
        return ip

    @router.get("/api/v1/me/totp", responses=TOTP_ERRORS, response_model=TotpStatus)
    def totp_status(request: Request) -> Response:
        """TOTP status of the logged-in user: enabled, pending (an enrollment waiting for its code), required."""
        user = request.state.principal.user
        return json_response({"totp": _totp_status(user)}, headers={"Cache-Control": "no-store"})

    @router.post("/api/v1/me/totp", status_code=201, responses=TOTP_ERRORS, response_model=TotpEnrollmentOut)
    def totp_enroll(request: Request) -> Response:
        """Start enrolling: a fresh secret (base32) and its ``otpauth://totp/PropDesk:<email>?secret=...`` URI,
        shown once. It stays pending (15 minutes) until ``/api/v1/me/totp/confirmation`` proves it with a code.
        409 ``totp_already_enabled`` while TOTP is on."""
        user = request.state.principal.user
        enrollment = identity.start_totp_enrollment(user.id, ip=client_ip(request))
        return json_response(
            {
                "secret": enrollment.secret,
                "otpauth_uri": enrollment.uri,
                "pending_expires_at": enrollment.expires_at,
                "digits": 6,
                "period_seconds": 30,
                "algorithm": "SHA1",
            },
            201,
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/api/v1/me/totp/confirmation", responses=TOTP_ERRORS, response_model=TotpConfirmed)
    def totp_confirm(request: Request, body: TotpCodeBody) -> Response:
        """Confirm the pending enrollment with a current code: TOTP is enabled from now on (audited). 400
        ``invalid_totp_code`` for a wrong code; 409 ``totp_not_pending`` with no live enrollment."""
        user = request.state.principal.user
        ip = _code_attempt(request, user)
        if not identity.confirm_totp(user.id, body.code, ip=ip):
            raise ApiError(400, "invalid_totp_code", "the code is wrong; check the device's clock and try again")
        return json_response(
            {"totp": _totp_status(user), "redirect": "/admin" if user.is_admin else "/app"},
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/api/v1/me/totp/removal", responses=TOTP_ERRORS, response_model=TotpStatus)
    def totp_remove(request: Request, body: TotpCodeBody) -> Response:
        """Turn TOTP off with a current (unused) code (audited). 400 ``invalid_totp_code``; 409
        ``totp_not_enabled``."""
        user = request.state.principal.user
        ip = _code_attempt(request, user)
        if not identity.remove_totp(user.id, body.code, ip=ip):
            raise ApiError(400, "invalid_totp_code", "the code is wrong or already used; wait for the next one")
        return json_response({"totp": _totp_status(user)}, headers={"Cache-Control": "no-store"})

    @router.post(
        "/api/v1/admin/users/{user_id}/totp/removal",
        responses={404: _err("No such user (user_not_found)"), **TOTP_ERRORS},
        response_model=TotpRemovedByAdmin,
    )
    def totp_remove_by_admin(
        request: Request, user_id: Annotated[uuid.UUID, Path(description="User id (UUID).")], body: AdminBody
    ) -> Response:
        """An admin turns a user's TOTP off (a lost device), with a reason: audited in the admin audit log and in
        ``auth_events``. ``removed`` is false when it was not on."""
        principal = request.state.principal

        def effect(conn: Any) -> Outcome:
            if conn.execute("SELECT 1 FROM users WHERE id=%s", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            removed = identity.admin_remove_totp(user_id, actor=principal.id, conn=conn)
            write_audit(
                conn,
                actor=principal.id,
                action="totp_remove",
                account_id=None,
                reason=body.reason,
                before=None,
                after={"removed": removed},
                details={"user_id": str(user_id)},
                at=platform.clock.now(),
            )
            return Outcome(200, {"user_id": str(user_id), "removed": removed})

        return api.commands.run(request, effect)

    return router


def _check_email() -> dict[str, Any]:
    return {
        "status": "check_email",
        "message": "If this address can be used, we have sent an email with the next step.",
    }
