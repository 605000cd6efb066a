"""`propdesk serve` and `propdesk demo`.

The public URL (``PROPDESK_PUBLIC_URL``: the trusted origin of the CSRF check, the links in mails, the cookie's
name) defaults to the address the server is bound to: with ``--port 0`` it is read after binding, so a login
form served on any port is accepted. On a wildcard address (``--host 0.0.0.0`` or ``::``) no URL can be derived
(which of the machine's names do users type?): the command exits 2 asking for ``PROPDESK_PUBLIC_URL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    CliError,
    _load_create_app,
    _log,
    _out,
    _run,
    _settings,
    open_platform,
)

if TYPE_CHECKING:
    from ..settings import Settings

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104  (recognised, never bound here)


def public_url_is_set(settings: Settings) -> bool:
    """Was ``PROPDESK_PUBLIC_URL`` given (not blank)? Otherwise the bound address is the public URL."""
    return "public_url" in settings.model_fields_set and bool(settings.public_url.strip())


def check_public_host(settings: Settings, host: str) -> None:
    """Exit 2 (``CliError``) before anything starts when the public URL cannot be derived from ``host``."""
    if not public_url_is_set(settings) and host.strip() in WILDCARD_HOSTS:
        raise CliError(
            f"listening on every interface ({host.strip() or 'every address'}) needs PROPDESK_PUBLIC_URL: set it"
            " to the URL users reach this server at (e.g. PROPDESK_PUBLIC_URL=https://desk.example.com, or"
            " http://<this machine's address>:<port>); the login form's origin is checked against it"
        )


def with_public_url(settings: Settings, sock: Any) -> Settings:
    """``settings`` with the public URL of the bound socket when ``PROPDESK_PUBLIC_URL`` is unset."""
    from ..demo import url_of

    if public_url_is_set(settings):
        return settings
    return settings.model_copy(update={"public_url": url_of(sock)})


# ------------------------------------------------------------------------------------------------ serve
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (PROPDESK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PROPDESK_PORT); 0 picks a free one.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not run the mark-to-market worker in this process.")
    ] = False,
) -> None:
    """Run the API (and the mark-to-market worker, in a thread) in one process until SIGTERM/Ctrl-C."""

    def body() -> int:
        import signal

        import uvicorn

        from ..demo import bind_socket, url_of
        from ..workers.calendar_sync import start_if_configured as start_calendar_sync
        from ..workers.mark_to_market import MarkToMarketWorker

        settings = _settings()
        create_app = _load_create_app()
        check_public_host(settings, host or settings.host)
        sock = bind_socket(host or settings.host, settings.port if port is None else port)
        settings = with_public_url(settings, sock)
        try:
            with open_platform(settings) as platform:
                api = create_app(platform)
                worker = None if no_worker else MarkToMarketWorker(platform)
                if worker is not None:
                    worker.start()
                # The economic calendar keeps itself current when a Finnhub key is configured (logs which).
                calendar_worker = start_calendar_sync(platform)
                # Minute candles for the charts from this process's tick stream (quotes posted to the API).
                from ..marketdata.recorder import CandleRecorder

                platform.candles = CandleRecorder(platform.db, platform.clock, platform.ticks, log=_log()).start()
                try:
                    # uvicorn handles SIGTERM/SIGINT while it runs, then restores the previous handlers and
                    # re-raises the signal: with the default handlers that would kill the process before the
                    # worker, the pools and an embedded PostgreSQL are stopped. These record it and let us finish.
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(
                            sig,
                            lambda signum, _frame: _log().info("serve_stopping", signal=signal.Signals(signum).name),
                        )
                    _log().info(
                        "serving",
                        url=url_of(sock),
                        public_url=settings.public_url,
                        worker=worker is not None,
                        calendar_sync=calendar_worker is not None,
                    )
                    # access_log off: the API logs every request itself, as JSON.
                    # Live streams (SSE) never end by themselves: give them 5 s at shutdown, then cancel them.
                    # Behind a TLS-terminating proxy: the client address and scheme come from X-Forwarded-For
                    # / -Proto, trusted only from PROPDESK_FORWARDED_ALLOW_IPS (docs/DEPLOY.md).
                    config = uvicorn.Config(
                        api,
                        log_config=None,
                        lifespan="on",
                        access_log=False,
                        timeout_graceful_shutdown=5,
                        proxy_headers=True,
                        forwarded_allow_ips=settings.forwarded_allow_ips,
                    )
                    uvicorn.Server(config).run(sockets=[sock])
                finally:
                    platform.candles.stop()
                    if calendar_worker is not None:
                        calendar_worker.stop()
                    if worker is not None:
                        worker.stop()
        finally:
            sock.close()
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ demo
def demo(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (PROPDESK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PROPDESK_PORT); 0 picks a free one.")] = None,
    check: Annotated[
        bool,
        typer.Option("--check", envvar="PROPDESK_DEMO_CHECK", help="Set up, check the API and the ledger, then exit."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the demo price driver.")] = 7,
) -> None:
    """Database, migrations, API, mark-to-market worker, moving demo prices and demo accounts; until Ctrl-C."""

    def body() -> int:
        from ..demo import bind_socket, run_demo

        # DEMO MODE: the session calendar treats every market as open, so the demo trades at any hour.
        settings = _settings().model_copy(update={"demo_always_open": True})
        create_app = _load_create_app()
        check_public_host(settings, host or settings.host)
        # Bound before the platform opens: the public URL (the CSRF check's trusted origin) is the real address.
        sock = bind_socket(host or settings.host, settings.port if port is None else port)
        settings = with_public_url(settings, sock)
        try:
            with open_platform(settings) as platform:
                return run_demo(
                    platform,
                    create_app,
                    host=host or settings.host,
                    port=settings.port if port is None else port,
                    check=check,
                    seed=seed,
                    out=_out,
                    sock=sock,
                )
        finally:
            sock.close()

    _run(body)
