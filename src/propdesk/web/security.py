"""Browser security at the edge: response headers on every response, and the CSRF origin check.

``SecurityHeaders`` is the outermost middleware, so every response carries the headers: API answers, pages,
static files, 404s, 401/403/429 refusals and the last-resort 500. The Content-Security-Policy allows scripts,
styles, images, fonts and connections from the site itself only; nothing inline. The one exception: when a
Turnstile site key is configured, the sign-up page may load Cloudflare's widget (script and frame).

``CsrfGuard`` runs after authentication: an unsafe method (POST, PUT, PATCH, DELETE) that does not carry an
``Authorization`` header must come from the trusted origin (``PROPDESK_PUBLIC_URL``): its ``Origin`` header must
equal that origin, or, when a browser sent no ``Origin``, ``Sec-Fetch-Site`` must be ``same-origin``. A page
on another site cannot add an ``Authorization`` header without a CORS preflight (which this server never
grants), so requests that carry one are machine clients and are not subject to the check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..api.errors import error_response

TURNSTILE_ORIGIN = "https://challenges.cloudflare.com"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
CSP_WITH_TURNSTILE = (
    f"default-src 'self'; script-src 'self' {TURNSTILE_ORIGIN}; style-src 'self'; "
    f"img-src 'self' data:; connect-src 'self' {TURNSTILE_ORIGIN}; font-src 'self'; "
    f"frame-src {TURNSTILE_ORIGIN}; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

HEADERS: tuple[tuple[str, str], ...] = (
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), magnetometer=(), "
        "gyroscope=(), accelerometer=(), interest-cohort=()",
    ),
)
TURNSTILE_PAGES = frozenset({"/signup"})


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped (how browsers write ``Origin``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "invalid:"
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class SecurityHeaders:
    """Adds the security headers to every HTTP response (a header a route set itself is kept)."""

    def __init__(self, app: ASGIApp, *, turnstile_sitekey: str | None = None):
        self.app = app
        self.turnstile = bool(turnstile_sitekey)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = CSP_WITH_TURNSTILE if self.turnstile and scope["path"] in TURNSTILE_PAGES else CSP

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers.append("Content-Security-Policy", csp)
                for name, value in HEADERS:
                    if name.lower() not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_wrapper)


class CsrfGuard:
    """403 ``csrf_failed`` for an unsafe, cookie-borne request from anywhere but the trusted origin."""

    def __init__(self, app: ASGIApp, *, public_url: str, log: object = None):
        self.app = app
        self.trusted = origin_of(public_url)
        self.log = log

    def allowed(self, scope: Scope) -> bool:
        headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if "authorization" in headers:
            return True
        origin = headers.get("origin")
        if origin is not None:
            return origin.strip().lower() != "null" and origin_of(origin) == self.trusted
        return headers.get("sec-fetch-site", "").strip().lower() == "same-origin"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET").upper() not in UNSAFE_METHODS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if self.log is not None:
            self.log.warning(  # type: ignore[attr-defined]
                "csrf_refused", path=scope["path"][:300], request_id=scope.get("state", {}).get("request_id")
            )
        response = error_response(
            403,
            "csrf_failed",
            "cross-site request refused: the Origin is not this site",
            {"trusted_origin": self.trusted},
        )
        await response(scope, receive, send)
