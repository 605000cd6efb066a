"""Accounts of people: sign-up, login, logout, password reset, and ``GET /api/v1/me``.

No user enumeration (docs/DEPLOY.md, "Accounts and enumeration"):
* login answers the same 401 ``invalid_credentials`` for an unknown address and a wrong password, after the
  same argon2 work (a dummy hash is verified for unknown addresses);
* a password-reset request always answers 202, whether or not the address is known;
* sign-up logs a new user in at once (201 + session cookie). For an address that already has an account it
  answers 202 ``check_email`` instead, changes nothing, and mails the owner a notice with a reset link. That
  answer does differ from the 201 of a new address (auto-login cannot be faked), so sign-up is the one place
  that can tell a registered address from a new one; it is rate-limited per IP and bot-checked (Turnstile).

Session cookie: ``pd_session`` (``__Host-pd_session`` behind https), HttpOnly, SameSite=Lax, Secure on https,
Path=/, Max-Age = the absolute session lifetime. A new token at every login; the one sent before is revoked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.background import BackgroundTask
from starlette.responses import Response

from ...domain.errors import Conflict, InvalidInput
from ...identity.turnstile import Turnstile
from ...identity.users import IdentityStore, WebUser, normalize_email
from ..body import StrictJSONRoute
from ..context import Api, _err
from ..errors import ApiError
from ..render import json_response
from ..responses import SessionsEndedOut
from ..schemas import Strict

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


class ResetRequestBody(Strict):
    email: str = Field(max_length=320)


class ResetConfirmBody(Strict):
    token: str = Field(max_length=256)
    password: str = Field(max_length=1024)


def present_user(user: WebUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "role": user.role.value,
        "display_name": user.display_name,
        "timezone": user.timezone,
    }


def home_of(user: WebUser) -> str:
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

    @router.post("/api/v1/auth/login", responses={401: _err("Email or password is wrong"), **AUTH_ERRORS})
    def login(request: Request, body: LoginBody) -> Response:
        """Log in: 200 + a new session cookie. A wrong password and an unknown address get the same 401."""
        ip = client_ip(request)
        rate_limit(platform, "login_ip", ip or "unknown")
        rate_limit(platform, "login_email", _email_key(body.email))
        user = identity.authenticate(body.email, body.password, ip=ip)
        if user is None:
            raise ApiError(401, "invalid_credentials", "the email or password is wrong")
        token = identity.start_session(
            user,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
            replaces=request.cookies.get(identity.cookie_name),
        )
        response = json_response({"user": present_user(user), "redirect": home_of(user)})
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
        return json_response(
            {"user": present_user(principal.user), "home": home_of(principal.user)},
            headers={"Cache-Control": "no-store"},
        )

    return router


def _check_email() -> dict[str, Any]:
    return {
        "status": "check_email",
        "message": "If this address can be used, we have sent an email with the next step.",
    }
