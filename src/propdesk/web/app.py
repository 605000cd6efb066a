"""The ASGI application: ``create_app(platform)`` builds the FastAPI app (the API's routers and the pages) over
a wired ``Platform``. It lives in ``web`` because it assembles both: ``web`` sits above ``api`` in the layers.

Request path, outermost first: ``Observability`` (request id, log line, metrics, last-resort 500) ->
``Authentication`` (bearer token, before any body is read) -> ``BodyLimit`` (413) -> FastAPI routing ->
``StrictJSONRoute`` (415, strict JSON decoding, request hash) -> pydantic validation (422) -> the route, which
reads through the platform's pool or runs its effect through ``Commands`` (one transaction, idempotent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, logs
from ..api.context import Api
from ..api.errors import (
    ApiError,
    handle_api_error,
    handle_database_unavailable,
    handle_domain_error,
    handle_http_exception,
    handle_validation_error,
)
from ..api.idempotency import Commands
from ..api.middleware import Authentication, BodyLimit, Observability
from ..api.routes import accounts, admin, admin_panel, market, ops, risk, rules, tokens, trader, trading
from ..api.routes import auth as auth_routes
from ..db.health import DatabaseUnavailable
from ..domain.errors import DomainError
from . import live, pages, pages_admin, pages_auth, trader_views
from .security import CsrfGuard, SecurityHeaders

if TYPE_CHECKING:
    from ..bootstrap import Platform  # handed in by the entry point (cli serve, tests), never imported at run time

DESCRIPTION = """PropDesk execution core over HTTP.

* Auth: `Authorization: Bearer <token>`; `/api/v1/prop/*` needs a service or admin token, `/api/v1/admin/*` an
  admin token. Checked before the body is read: 401 / 403, never 422.
* Every POST accepts an `Idempotency-Key` header (1..200 printable ASCII): the same key and body replay the
  original response (header `Idempotent-Replayed: true`); another body is 409 `idempotency_key_reused`; a
  concurrent duplicate waits for the first and replays it (or 409 `idempotency_key_in_flight`).
* Errors: `{"error": {"code", "message", "details"}}` with stable codes.
* Lists: `?limit=` (1..500, default 100) and `?cursor=`; answers `{"items": [...], "next_cursor": ...}`.
* Numbers: decimal strings or JSON numbers in, decimal strings out; timestamps ISO-8601 UTC with `Z`.
"""


def create_app(platform: Platform) -> FastAPI:
    """Build the API over ``platform`` (its clock, database, quote store, metrics, services and tokens)."""
    log = logs.get("propdesk.api")
    commands = Commands(
        platform.db.engine_url,
        platform.clock,
        pool_size=platform.settings.db_pool_size,
        health=platform.db.health,
        metrics=platform.metrics,
    )
    closers = platform.extras.setdefault("closers", [])
    closers.append(commands.close)
    api = Api(platform, commands, log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        commands.close()

    app = FastAPI(
        title="PropDesk",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.api = api

    app.add_exception_handler(DomainError, handle_domain_error)
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(DatabaseUnavailable, handle_database_unavailable)

    for module in (accounts, trading, admin, rules, ops, tokens, risk):
        app.include_router(module.build(api))
    # Market data reads (candles, quotes with sessions): any authenticated principal.
    app.include_router(market.build(api))
    # The trader API (session users): catalogue, checkout, own accounts, orders, journal, notifications.
    app.include_router(trader.build(api))
    # Sign-up, login, logout, password reset, /api/v1/me (identity/users.py); the auth pages (no schema).
    app.include_router(auth_routes.build(api))
    app.include_router(pages_auth.build(api), include_in_schema=False)
    # The admin panel: its JSON reads and live stream (/api/v1/admin/...) and its pages (/admin...).
    app.include_router(admin_panel.build(api))
    app.include_router(pages_admin.build(api), include_in_schema=False)

    # The browser front end: static files, the landing page and the trader app (pages stay out of the schema).
    pages.mount_static(app)
    app.include_router(pages.build(api), include_in_schema=False)
    app.include_router(trader_views.build(api), include_in_schema=False)
    app.include_router(live.build(api))  # SSE: in the schema, so the authorization matrix covers it

    # add_middleware prepends: the last added runs first.
    app.add_middleware(BodyLimit, max_bytes=platform.settings.max_body_bytes)
    # CSRF after authentication: an anonymous request is 401 first; a cookie-borne unsafe one needs our Origin.
    app.add_middleware(CsrfGuard, public_url=platform.settings.public_url, log=log)
    app.add_middleware(Authentication, tokens=platform.tokens, log=log, identity=platform.identity)
    app.add_middleware(Observability, metrics=platform.metrics, log=log)
    # Outermost: the security headers reach every response, the last-resort 500 included.
    app.add_middleware(SecurityHeaders, turnstile_sitekey=platform.settings.turnstile_sitekey)
    return app
