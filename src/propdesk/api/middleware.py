"""Pure ASGI middleware, outermost first:

``Observability``  request id, one JSON log line per request, Prometheus request metrics, and the last-resort
                   500 ``internal_error`` (logged with its traceback, never sent to the client);
``Authentication`` bearer token or session cookie -> principal and the path policy (``access_rule``), checked
                   BEFORE anything reads or validates the body: 401 (with ``WWW-Authenticate``) or 403, never
                   422; pages answer 303 to the login page or a 403 page;
``BodyLimit``      413 ``body_too_large`` on a declared ``Content-Length`` over the limit, and by counting the
                   bytes actually received (chunked bodies have no ``Content-Length``); 422 ``invalid_query``
                   for a query string carrying a control character (a NUL would otherwise reach PostgreSQL,
                   which refuses it in text, as a 500).
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db.health import DatabaseUnavailable
from ..identity.auth import CRON_PATHS, Principal, Role
from ..metrics import Metrics
from .errors import BodyTooLarge, database_unavailable_response, error_response

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]


class Observability:
    def __init__(self, app: ASGIApp, metrics: Metrics, log: Any):
        self.app = app
        self.metrics = metrics
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = (
            given[0]
            if given and 0 < len(given[0]) <= 64 and given[0].isascii() and given[0].isprintable()
            else uuid.uuid4().hex
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            status = 499
        except DatabaseUnavailable as exc:  # raised outside a route (authentication, pages): still a 503
            self.log.warning(
                "database_unavailable",
                method=scope.get("method"),
                path=scope.get("path"),
                request_id=request_id,
                error=str(exc)[:300],
            )
            if not response_started:
                await database_unavailable_response(exc)(scope, receive, send_wrapper)
        except Exception as exc:
            self.log.error(
                "unhandled_exception",
                method=scope.get("method"),
                path=scope.get("path"),
                request_id=request_id,
                error=f"{type(exc).__name__}: {exc}"[:500],
                exc_info=exc,
            )
            if not response_started:
                response = error_response(
                    500, "internal_error", "internal error; the request id identifies it", {"request_id": request_id}
                )
                await response(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - started_at
            route = scope.get("route")
            label = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "GET") if scope.get("method") in _METHODS else "OTHER"
            self.metrics.requests.labels(method=method, route=label, status=str(status)).inc()
            self.metrics.request_seconds.labels(route=label).observe(duration)
            principal = state.get("principal")
            self.log.info(
                "request",
                method=method,
                route=label,
                path=scope.get("path", "")[:300],
                status=status,
                duration_ms=round(duration * 1000, 3),
                request_id=request_id,
                principal=principal.id if isinstance(principal, Principal) else None,
            )


class Access(StrEnum):
    """What a path asks of the caller (the path policy of the web contract, docs/SECURITY in docs/DEPLOY.md)."""

    PUBLIC = "public"  # anyone; a session cookie is still resolved (pages show who is logged in)
    PAGE = "page"  # /app, /account: a session (trader or admin), else 303 to /login?next=
    ADMIN_PAGE = "admin_page"  # /admin: an admin session; anonymous 303 to login, a trader 403
    SERVICE = "service"  # /api/v1/prop, /api/v1/risk: a service or admin bearer token
    ADMIN = "admin"  # /api/v1/admin: an admin bearer token or an admin session
    ANY = "any"  # /api/v1/market: any authenticated principal (session or token)
    SESSION = "session"  # every other /api route (the trader API): a session; a bearer token is 403


_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

# What a session limited to TOTP enrollment may open (PROPDESK_ADMIN_TOTP_REQUIRED, an admin without TOTP), besides
# the public paths (the auth API, /logout, the landing page, static files): its own user, the enrollment routes,
# "log out everywhere" and the security page. Anything else: 403 totp_enrollment_required (pages: 303 there).
TOTP_ENROLLMENT_PATHS = frozenset(
    {
        "/api/v1/me",
        "/api/v1/me/totp",
        "/api/v1/me/totp/confirmation",
        "/api/v1/me/sessions/revocation",
        "/account/security",
    }
)
TOTP_ENROLLMENT_PAGE = "/account/security"


def _segments_odd(segments: list[str]) -> bool:
    return any(s in ("", ".", "..") for s in segments[:-1]) or (bool(segments) and segments[-1] in (".", ".."))


def access_rule(path: str, method: str = "GET") -> Access:
    """The path policy. Paths with empty, ``.`` or ``..`` segments under /api, /app or /admin are held to the
    strictest rule of their area (they match no route anyway, but never select a weaker rule than the route they
    might resemble)."""
    segments = path.split("/")[1:]
    head = segments[0] if segments else ""
    if head in ("app", "account"):
        return Access.ADMIN_PAGE if _segments_odd(segments) else Access.PAGE
    if head == "admin":
        return Access.ADMIN_PAGE
    if head != "api":
        return Access.PUBLIC
    if _segments_odd(segments):
        return Access.ADMIN
    area = segments[1:3]
    if area == ["v1", "auth"]:
        return Access.PUBLIC
    if area == ["v1", "plans"] and method.upper() in _SAFE:
        return Access.PUBLIC  # the public plan catalogue
    if area in (["v1", "prop"], ["v1", "risk"]):
        return Access.SERVICE
    if area == ["v1", "admin"]:
        return Access.ADMIN
    if area == ["v1", "market"]:
        return Access.ANY
    return Access.SESSION


def _bearer(scope: Scope) -> tuple[bool, str | None]:
    """(an Authorization header was sent, the well-formed bearer credentials or None)."""
    values = _header(scope, b"authorization")
    if not values:
        return False, None
    if len(values) == 1:
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip() and " " not in credentials.strip():
            return True, credentials.strip()
    return True, None


def cookie_value(scope: Scope, name: str) -> str | None:
    """One cookie's value from the request headers (the first occurrence), or None."""
    for raw in _header(scope, b"cookie"):
        for part in raw.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"') or None
    return None


def client_ip(scope: Scope) -> str | None:
    """The client address as uvicorn saw it (with --proxy-headers from a trusted proxy: the forwarded one)."""
    client = scope.get("client")
    return str(client[0])[:64] if client else None


class Authentication:
    """Resolves the caller (bearer token or session cookie) and applies the path policy before any body is read.

    Answers: 401 (``WWW-Authenticate``) for no or bad credentials on an API route, 403 for the wrong kind or role,
    303 to the login page for an anonymous page request, and a small 403 page for a trader on /admin.
    """

    def __init__(self, app: ASGIApp, tokens: Any, log: Any, identity: Any = None):
        self.app = app
        self.tokens = tokens
        self.log = log
        self.identity = identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        rule = access_rule(path, scope.get("method", "GET"))
        state = scope.setdefault("state", {})
        sent_auth, token = _bearer(scope)
        is_api = path == "/api" or path.startswith("/api/")

        principal: Principal | None = None
        bearer_failed = False
        if is_api and sent_auth and rule is not Access.PUBLIC:
            principal = await run_in_threadpool(self.tokens.verify, token) if token is not None else None
            bearer_failed = principal is None
        elif self.identity is not None and not path.startswith("/static/") and path not in ("/healthz", "/metrics"):
            session_token = cookie_value(scope, self.identity.cookie_name)
            if session_token is not None:
                user = await run_in_threadpool(self.identity.resolve, session_token)
                if user is not None:
                    principal = Principal.of_user(user)
        if principal is not None:
            state["principal"] = principal

        if rule is Access.PUBLIC:
            await self.app(scope, receive, send)
            return
        if principal is not None and self._enrollment_only(principal) and path not in TOTP_ENROLLMENT_PATHS:
            await self._enroll_first(scope, receive, send, principal, page=rule in (Access.PAGE, Access.ADMIN_PAGE))
            return
        if rule in (Access.PAGE, Access.ADMIN_PAGE):
            if principal is None or principal.user is None:
                target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
                location = "/login?" + urlencode({"next": target})
                await RedirectResponse(location, status_code=303)(scope, receive, send)
                return
            if rule is Access.ADMIN_PAGE and not principal.user.is_admin:
                await self._forbidden(scope, receive, send, principal, "an admin account is needed", page=True)
                return
            await self.app(scope, receive, send)
            return

        if principal is None:
            reason = "invalid token" if bearer_failed else "no credentials"
            self.log.warning("auth_refused", path=path[:300], reason=reason, request_id=state.get("request_id"))
            if rule is Access.SESSION:
                challenge, message = 'Session realm="propdesk"', "log in first (a web session is required)"
            else:
                challenge = 'Bearer realm="propdesk"' + (', error="invalid_token"' if bearer_failed else "")
                message = (
                    "a valid bearer token is required"
                    if rule is Access.SERVICE
                    else "a valid bearer token or session is required"
                )
            await error_response(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})(
                scope, receive, send
            )
            return

        refusal = self._refusal(rule, principal, path)
        if refusal is not None:
            await self._forbidden(scope, receive, send, principal, refusal)
            return
        await self.app(scope, receive, send)

    def _enrollment_only(self, principal: Principal) -> bool:
        """Is this a session of an admin without TOTP while ``PROPDESK_ADMIN_TOTP_REQUIRED`` is on? Decided on every
        request from the user row, so confirming an enrollment lifts the limit of the same session at once."""
        user = principal.user
        settings = getattr(self.identity, "settings", None)
        return (
            user is not None
            and user.is_admin
            and not user.totp_enabled
            and bool(getattr(settings, "admin_totp_required", False))
        )

    async def _enroll_first(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, *, page: bool
    ) -> None:
        """An enrollment-only session outside the enrollment paths: pages go to the security page, the API is
        refused with 403 ``totp_enrollment_required``."""
        if page:
            await RedirectResponse(TOTP_ENROLLMENT_PAGE, status_code=303)(scope, receive, send)
            return
        self.log.warning(
            "auth_forbidden",
            path=scope["path"][:300],
            principal=principal.id,
            role=principal.role.value,
            reason="totp_enrollment_required",
            request_id=scope.get("state", {}).get("request_id"),
        )
        await error_response(
            403,
            "totp_enrollment_required",
            "admins must set up a second factor (TOTP) first: POST /api/v1/me/totp, then confirm it with a code",
            {"enroll": "/api/v1/me/totp", "page": TOTP_ENROLLMENT_PAGE},
        )(scope, receive, send)

    @staticmethod
    def _refusal(rule: Access, principal: Principal, path: str) -> str | None:
        """Why ``principal`` may not use a route of ``rule`` (None: allowed)."""
        if principal.role is Role.CRON:
            return None if path in CRON_PATHS else "the scheduler's secret opens only the day-roll route"
        if rule is Access.SERVICE:
            if principal.user is not None:
                return "this route needs a service or admin bearer token"
            return None
        if rule is Access.ADMIN:
            return None if principal.is_admin else "this route needs an admin token"
        if rule is Access.ANY:
            return None
        if rule is Access.SESSION:
            return None if principal.user is not None else "this route is for logged-in users, not bearer tokens"
        return "forbidden"

    async def _forbidden(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, message: str, *, page: bool = False
    ) -> None:
        path = scope["path"]
        self.log.warning(
            "auth_forbidden",
            path=path[:300],
            principal=principal.id,
            role=principal.role.value,
            request_id=scope.get("state", {}).get("request_id"),
        )
        if self.identity is not None:
            await run_in_threadpool(
                self.identity.audit,
                "authz_failed",
                principal.user.id if principal.user else None,
                client_ip(scope),
                {
                    "path": path[:300],
                    "method": scope.get("method", ""),
                    "principal": principal.id,
                    "role": principal.role.value,
                },
            )
        if page:
            await HTMLResponse(_FORBIDDEN_PAGE, status_code=403)(scope, receive, send)
            return
        await error_response(403, "forbidden", message, {"role": principal.role.value})(scope, receive, send)


_FORBIDDEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Forbidden</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><main class="container"><h1>Forbidden</h1>
<p>This page is for the firm's staff. You are logged in with a trader account.</p>
<p><a href="/app">Back to my accounts</a></p></main></body></html>
"""


def _has_control_character(query: bytes) -> bool:
    """Does the query string, once percent-decoded, hold a C0 control character or DEL?"""
    raw = unquote_to_bytes(query)
    return any(b < 0x20 or b == 0x7F for b in raw)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_control_character(scope.get("query_string") or b""):
            await error_response(
                422,
                "invalid_query",
                "the query string contains a control character (such as NUL); send printable text only",
            )(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _header(scope, b"content-length")
        if declared:
            if len(declared) > 1 or not declared[0].strip().isdigit() or len(declared[0].strip()) > 18:
                await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                return
            if int(declared[0]) > limit:
                await self._too_large(scope, receive, send)
                return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, send_wrapper)
        except BodyTooLarge:
            if response_started:
                raise
            await self._too_large(scope, receive, send_wrapper)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"request body exceeds {self.max_bytes} bytes",
            {"limit_bytes": self.max_bytes},
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
