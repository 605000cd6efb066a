"""`propdesk serve` and `propdesk demo`."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    _load_create_app,
    _log,
    _out,
    _run,
    _settings,
    open_platform,
)


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
        sock = bind_socket(host or settings.host, settings.port if port is None else port)
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
        from ..demo import run_demo

        # DEMO MODE: the session calendar treats every market as open, so the demo trades at any hour.
        settings = _settings().model_copy(update={"demo_always_open": True})
        create_app = _load_create_app()
        with open_platform(settings) as platform:
            return run_demo(
                platform,
                create_app,
                host=host or settings.host,
                port=settings.port if port is None else port,
                check=check,
                seed=seed,
                out=_out,
            )

    _run(body)
