"""The account pages: ``/login``, ``/signup``, ``/reset`` (request a link; with ``?token=`` choose a password),
``/account/security`` (the signed-in user sets up, confirms or turns off the one-time code, TOTP) and ``POST
/logout`` (the layout's log-out button).

The forms post JSON to the auth API with ``static/auth.js`` (fetch, same origin); errors show inline. After
login the browser goes to ``?next=`` when it is a same-site path (never another site: no open redirect), else
to ``/app`` (``/admin`` for admins).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from .pages import current_user, redirect, render


def safe_next(value: str | None, default: str) -> str:
    """``value`` when it is a path on this site (``/app/...``), else ``default``.

    Refused: absolute URLs, scheme-relative ``//host``, backslash tricks (``/\\host``), control characters, and
    anything that does not start with a single ``/``.
    """
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def build(api: Any) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    platform = api.platform
    settings = platform.settings

    @router.get("/login")
    def login_page(request: Request, next: str | None = None) -> Response:
        user = current_user(request)
        target = safe_next(next, "")
        if user is not None:
            return redirect(target or ("/admin" if user.is_admin else "/app"))
        return render(request, "auth/login.html", next_path=target, nav_active="login")

    @router.get("/signup")
    def signup_page(request: Request) -> Response:
        user = current_user(request)
        if user is not None:
            return redirect("/admin" if user.is_admin else "/app")
        return render(
            request, "auth/signup.html", turnstile_sitekey=settings.turnstile_sitekey or "", nav_active="signup"
        )

    @router.get("/reset")
    def reset_page(request: Request, token: str | None = None) -> Response:
        # The token stays out of the Referer of anything this page loads (Referrer-Policy and no third parties).
        return render(
            request,
            "auth/reset.html",
            token=(token or "")[:256],
            nav_active="login",
            headers={"Referrer-Policy": "no-referrer"},
        )

    @router.get("/account/security")
    def security_page(request: Request) -> Response:
        from ..api.routes.auth import totp_enrollment_required

        user = current_user(request)
        if user is None:  # a bearer token (the middleware already sent anonymous visitors to /login)
            return redirect("/login?next=/account/security")
        return render(
            request,
            "auth/security.html",
            totp=platform.identity.totp_status(user.id),
            enrollment_required=totp_enrollment_required(user, settings),
            home="/admin" if user.is_admin else "/app",
            nav_active="security",
            headers={"Referrer-Policy": "no-referrer"},
        )

    @router.post("/logout")
    def logout_page(request: Request) -> Response:
        from ..api.routes.auth import clear_session_cookie

        identity = platform.identity
        ip = request.client.host if request.client else None
        identity.end_session(request.cookies.get(identity.cookie_name), ip=ip)
        response = redirect("/")
        clear_session_cookie(response, identity)
        return response

    return router
