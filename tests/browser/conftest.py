"""Browser-test fixtures: a live PropDesk server on the test database and Debian Chromium driven by Playwright.

Fixtures (generic, for the trader journey and the admin tests alike):

- ``live_server``: a ``LiveServer`` — the platform (test database, ``ManualClock`` at T0) served by uvicorn on
  127.0.0.1 and a free port in a thread. ``.url``, ``.platform``, ``.clock``, ``.quote(symbol, bid, ask)`` (through
  ``POST /api/v1/prop/quotes`` with the service token, so the execution core and the live stream react exactly as
  to a feed), ``.service`` / ``.admin`` (httpx clients with the service / admin bearer token).
- ``browser``: one headless Chromium per session (``/usr/bin/chromium``; skipped with a message when it is missing,
  FAILED when ``CI=true``).
- ``page``: a fresh browser context + page (viewport 1440x900, base URL = the live server); JavaScript errors and
  CSP violations on it are collected in ``page.errors`` (a list) so a test can assert there were none.
- ``make_web_user(role="trader", email=None, password=...)``: creates a user through the platform's identity store.
- ``login_as(page, user)``: puts a session cookie for ``user`` into the page's context (no login form).

``serve(app)`` is the context manager behind ``live_server``; integration tests import it to run a real server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
SERVICE_TOKEN = "svc_browser_token_0123456789abcdef"
ADMIN_TOKEN = "adm_browser_token_0123456789abcdef"
PASSWORD = "correct horse battery staple 42"
# The README's screenshots are refreshed on purpose only: `PROPDESK_REFRESH_SCREENSHOTS=1 ./test tests/browser`.
# Every other run writes them to a temporary directory, so a test run never rewrites a tracked file.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
_SHOTS_TMP: list[Path] = []


def _screenshot_dir() -> Path:
    if os.environ.get("PROPDESK_REFRESH_SCREENSHOTS") == "1":
        return DOCS_SCREENSHOTS
    if not _SHOTS_TMP:
        import atexit
        import shutil
        import tempfile

        _SHOTS_TMP.append(Path(tempfile.mkdtemp(prefix="propdesk-screenshots-")))
        atexit.register(shutil.rmtree, _SHOTS_TMP[0], True)
    return _SHOTS_TMP[0]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on ``sock`` (a fresh loopback socket when None); yields the base URL.
    The server is stopped (and its thread joined) on exit."""
    import uvicorn

    sock = sock or _free_socket()
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=2, ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class LiveServer:
    url: str
    platform: Any
    clock: Any
    app: Any
    service: httpx.Client
    admin: httpx.Client
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def quote(self, symbol: str, bid: str, ask: str, *, advance: float = 1.0) -> dict[str, Any]:
        """Advance the clock by ``advance`` seconds, then publish a quote the way a feed does (service API)."""
        if advance:
            self.clock.advance(advance)
        r = self.service.post(
            "/api/v1/prop/quotes", json={"symbol": symbol, "bid": bid, "ask": ask, "ts": self.clock.now().isoformat()}
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def make_platform(db_url: str, clock: Any, public_url: str, **overrides: Any) -> Any:
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    values: dict[str, Any] = {
        "database_url": db_url,
        "db_role_prefix": "pdtest",
        "service_token": SERVICE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "db_pool_size": 8,
        "public_url": public_url,
        # The journeys jump prices far (an FX stop loss 12% away, hit in one quote) to keep the pages readable;
        # the sanity band that would hold such a quote has its own tests (tests/unit/test_quote_band.py).
        "quote_band": False,
    }
    values.update(overrides)
    return open_platform(Settings(**values), clock=clock, migrate=False, admin_url=db_url, configure_logs=False)


@contextlib.contextmanager
def live_platform_server(db_url: str, clock: Any, **overrides: Any) -> Iterator[LiveServer]:
    """A platform over ``db_url`` whose public URL is the server's own origin (so CSRF origin checks pass)."""
    from propdesk.web.app import create_app

    sock = _free_socket()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    platform = make_platform(db_url, clock, url, **overrides)
    try:
        app = create_app(platform)
        with (
            serve(app, sock) as base,
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=20) as svc,
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=20) as adm,
        ):
            yield LiveServer(base, platform, clock, app, svc, adm)
    finally:
        platform.close()


@pytest.fixture
def live_server(db_url: str, clock: Any) -> Iterator[LiveServer]:
    with live_platform_server(db_url, clock) as server:
        yield server


# ----------------------------------------------------------------------------------------------- the browser
def _chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    message = f"browser tests need Debian Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


def _assets_or_fail() -> None:
    from propdesk.web import assets

    gone = assets.missing()
    if gone:
        message = f"web assets missing ({', '.join(gone)}): run python -m propdesk.web.assets build"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium for the browser tests, stopped when they are done: Playwright's sync API keeps an event loop
    marked as running on the main thread while it lives, and later tests run their own loops there."""
    executable = _chromium_or_skip()
    _assets_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(
        viewport=VIEWPORT, base_url=live_server.url, locale="en-US", timezone_id="UTC", device_scale_factor=1
    )
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    p.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    p.errors = errors  # type: ignore[attr-defined]
    p.set_default_timeout(10_000)
    try:
        yield p
    finally:
        context.close()


@pytest.fixture
def make_web_user(live_server: LiveServer) -> Callable[..., Any]:
    """``make_web_user(role="trader"|"admin", email=None, password=PASSWORD, display_name="")`` -> WebUser."""
    from propdesk.identity.users import UserRole

    def make(
        role: str = "trader",
        email: str | None = None,
        password: str = PASSWORD,
        display_name: str = "",
        timezone: str = "UTC",
    ) -> Any:
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.test"
        return live_server.platform.identity.create_user(
            email, password, role=UserRole(role), display_name=display_name, timezone=timezone
        )

    return make


@pytest.fixture
def login_as(live_server: LiveServer) -> Callable[[Any, Any], None]:
    """``login_as(page, user)``: a server-side session for ``user`` and its cookie in the page's context."""

    def login(page: Any, user: Any) -> None:
        identity = live_server.platform.identity
        token = identity.start_session(user, ip="127.0.0.1", user_agent="playwright")
        page.context.add_cookies(
            [
                {
                    "name": identity.cookie_name,
                    "value": token,
                    "url": live_server.url,
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )

    return login


def screenshot(page: Any, name: str) -> Path:
    """Save a full-viewport screenshot as <name>.png: to docs/screenshots/ when PROPDESK_REFRESH_SCREENSHOTS=1,
    else to a temporary directory removed at exit."""
    folder = _screenshot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
