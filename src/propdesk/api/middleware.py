"""Pure ASGI middleware, outermost first:

``Observability``  request id, one JSON log line per request, Prometheus request metrics, and the last-resort
                   500 ``internal_error`` (logged with its traceback, never sent to the client);
``Authentication`` bearer token -> principal, checked BEFORE anything reads or validates the body:
                   401 (with ``WWW-Authenticate: Bearer``) or 403, never 422;
``BodyLimit``      413 ``body_too_large`` on a declared ``Content-Length`` over the limit, and by counting the
                   bytes actually received (chunked bodies have no ``Content-Length``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import CRON_PATHS, Principal, Role
from ..metrics import Metrics
from .errors import BodyTooLarge, error_response

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
        request_id = given[0] if given and 0 < len(given[0]) <= 64 and given[0].isascii() and \
            given[0].isprintable() else uuid.uuid4().hex
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
        except Exception as exc:
            self.log.error("unhandled_exception", method=scope.get("method"), path=scope.get("path"),
                           request_id=request_id, error=f"{type(exc).__name__}: {exc}"[:500], exc_info=exc)
            if not response_started:
                response = error_response(500, "internal_error", "internal error; the request id identifies it",
                                          {"request_id": request_id})
                await response(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - started_at
            route = scope.get("route")
            label = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "GET") if scope.get("method") in _METHODS else "OTHER"
            self.metrics.requests.labels(method=method, route=label, status=str(status)).inc()
            self.metrics.request_seconds.labels(route=label).observe(duration)
            principal = state.get("principal")
            self.log.info("request", method=method, route=label, path=scope.get("path", "")[:300], status=status,
                          duration_ms=round(duration * 1000, 3), request_id=request_id,
                          principal=principal.id if isinstance(principal, Principal) else None)


def required_role(path: str) -> Role | None:
    """The least role a path needs: admin under /api/v1/admin, service elsewhere under /api, else none.

    Paths with empty, ``.`` or ``..`` segments under /api are held to the strictest rule (they match no route
    anyway, but are never allowed to select a weaker rule than the route they might resemble).
    """
    if path != "/api" and not path.startswith("/api/"):
        return None
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        return Role.ADMIN
    if segments[:3] == ["api", "v1", "admin"]:
        return Role.ADMIN
    return Role.SERVICE


class Authentication:
    def __init__(self, app: ASGIApp, tokens: Any, log: Any):
        self.app = app
        self.tokens = tokens
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = required_role(scope["path"])
        if need is None:
            await self.app(scope, receive, send)
            return
        values = _header(scope, b"authorization")
        token = None
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip() and " " not in credentials.strip():
                token = credentials.strip()
        principal: Principal | None = None
        if token is not None:
            principal = await run_in_threadpool(self.tokens.verify, token)
        if principal is None:
            self.log.warning("auth_refused", path=scope["path"][:300], reason="no token" if token is None
                             else "invalid token", request_id=scope.get("state", {}).get("request_id"))
            challenge = 'Bearer realm="propdesk"' if token is None else \
                'Bearer realm="propdesk", error="invalid_token"'
            response = error_response(401, "unauthorized", "a valid bearer token is required",
                                      headers={"WWW-Authenticate": challenge})
            await response(scope, receive, send)
            return
        if principal.role is Role.CRON and scope["path"] in CRON_PATHS:
            pass  # the scheduler's secret opens exactly the routes it exists for
        elif principal.role is Role.CRON or (need is Role.ADMIN and not principal.is_admin):
            self.log.warning("auth_forbidden", path=scope["path"][:300], principal=principal.id,
                             role=principal.role.value, request_id=scope.get("state", {}).get("request_id"))
            response = error_response(403, "forbidden", "this route needs an admin token",
                                      {"role": principal.role.value, "required": need.value})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
        response = error_response(413, "body_too_large", f"request body exceeds {self.max_bytes} bytes",
                                  {"limit_bytes": self.max_bytes}, headers={"Connection": "close"})
        await response(scope, receive, send)
