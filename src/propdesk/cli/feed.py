"""Price feeds (`propdesk feed ...`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import (
    CliError,
    JsonOpt,
    _log,
    _out,
    _run,
    _settings,
    emit_json,
    open_platform,
)

feed_app = typer.Typer(help="Price feeds into the quote store and the execution core.", no_args_is_help=True)


@feed_app.command("replay")
def feed_replay(
    files: Annotated[
        list[str], typer.Argument(help="Tick or bar files (formats: docs of propdesk.marketdata.providers.replay).")
    ],
    symbol: Annotated[str | None, typer.Option(help="Symbol (default: from each file name).")] = None,
    speed: Annotated[float, typer.Option(min=0, help="Market seconds per second; 0 = as fast as possible.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Replay ticks/bars into the platform's quote store and execution triggers (needs a database)."""

    def body() -> int:
        from ..marketdata.feed import pump
        from ..marketdata.providers.replay import ReplayFormatError, ReplayProvider

        settings = _settings()
        try:
            provider = ReplayProvider(files, symbol=symbol, speed=speed)
        except ReplayFormatError as exc:
            raise CliError(str(exc)) from exc
        log = _log()
        with open_platform(settings) as platform:
            try:
                stats = pump(platform.quotes, platform.execution, provider.quotes(), log)
            except ReplayFormatError as exc:
                raise CliError(str(exc)) from exc
        counts = vars(stats).copy()
        log.info("feed_replay_done", **counts)
        if as_json:
            emit_json({"files": files, "speed": speed, **counts})
        else:
            _out(f"replayed {counts['received']} quotes: {counts['accepted']} accepted, {counts['dropped']} dropped")
        return 0

    _run(body)


@feed_app.command("simulate")
def feed_simulate(
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Comma-separated symbols (default: every enabled instrument).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulation (same seed, same paths).")] = 7,
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between ticks.")] = 1.0,
    weekend_demo: Annotated[
        bool,
        typer.Option(
            "--weekend-demo",
            help="DEMO MODE: forex, metals and energy quote through the weekend; quotes say source=simulated-demo.",
        ),
    ] = False,
) -> None:
    """Simulated quotes (calibrated, session-aware; docs: MARKET_DATA.md) into the platform until Ctrl-C."""

    def body() -> int:
        import signal

        from ..marketdata.feed import publish
        from ..marketdata.providers.base import FeedStats
        from ..marketdata.providers.simulated import SimulatedProvider

        settings = _settings()
        log = _log()
        with open_platform(settings) as platform:
            chosen = None
            if symbols:
                chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
                unknown = [s for s in chosen if platform.catalogue.get(s) is None]
                if unknown:
                    raise CliError(f"unknown symbol(s): {', '.join(unknown)}")
            platform.quotes.refresh()
            start = {q.symbol: q.mid for q in platform.quotes.all()}  # continue from the last stored prices
            provider = SimulatedProvider(
                platform.catalogue,
                platform.clock,
                seed=seed,
                interval_s=interval,
                symbols=chosen,
                weekend_demo=weekend_demo,
                start_prices=start,
            )
            now = platform.clock.now()
            open_now = [s for s in provider.symbols if provider.is_open(s, now)]
            sys.stderr.write(
                f"feed simulate ({provider.name}): {len(provider.symbols)} symbols, "
                f"{len(open_now)} in session now; Ctrl-C to stop\n"
            )
            signal.signal(signal.SIGTERM, lambda *_: provider.stop())
            from ..marketdata.recorder import CandleRecorder

            recorder = CandleRecorder(platform.db, platform.clock, platform.ticks, log=log).start()
            stats = FeedStats()
            try:
                for q in provider.quotes():
                    publish(platform.quotes, platform.execution, q, log, stats)
            except KeyboardInterrupt:
                provider.stop()
            finally:
                recorder.stop()
            log.info("feed_simulate_done", published=stats.accepted, dropped=stats.dropped)
            sys.stderr.write(f"feed simulate: {stats.accepted} quotes published, {stats.dropped} dropped\n")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ feed massive


@feed_app.command("massive")
def feed_massive(
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols", help="Comma-separated symbols (default: every enabled instrument Massive can route)."
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls (with --rest-poll).")
    ] = 1.0,
    wti_proxy: Annotated[
        bool,
        typer.Option("--wti-proxy", help="Quote WTIUSD from the USO ETF (a proxy: its moves, not a barrel price)."),
    ] = False,
    rest_poll: Annotated[
        bool, typer.Option("--rest-poll", help="Poll the REST snapshots instead of streaming over WebSocket.")
    ] = False,
    max_quotes: Annotated[
        int | None, typer.Option("--max-quotes", min=1, help="Stop after this many quotes (tests, smoke checks).")
    ] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", min=0.1, help="Stop after this many seconds.")] = None,
) -> None:
    """Massive (Polygon.io) quotes into the platform until Ctrl-C (needs PROPDESK_MASSIVE_API_KEY): the
    WebSocket streams by default (PROPDESK_MASSIVE_WS_URL overrides the host), REST polling with --rest-poll
    (PROPDESK_MASSIVE_BASE_URL overrides the API URL)."""

    def body() -> int:
        import os
        import signal
        import threading

        from ..marketdata.feed import publish
        from ..marketdata.providers.base import FeedStats
        from ..marketdata.providers.massive import ENV_API_KEY, MassiveAuthError, MassiveProvider
        from ..marketdata.providers.massive_stream import ENV_WS_URL, MassiveStreamProvider
        from ..marketdata.recorder import CandleRecorder

        key = os.environ.get(ENV_API_KEY, "").strip()
        if not key:
            raise CliError(
                f"{ENV_API_KEY} is not set: the Massive feed needs an API key "
                "(or use `propdesk feed simulate`, which needs none)"
            )
        settings = _settings()
        log = _log()
        with open_platform(settings) as platform:
            if symbols:
                chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
                unknown = [s for s in chosen if platform.catalogue.get(s) is None]
                if unknown:
                    raise CliError(f"unknown symbol(s): {', '.join(unknown)}")
            else:
                chosen = [i.symbol for i in platform.catalogue if i.enabled]
            provider: MassiveProvider | MassiveStreamProvider
            try:
                if rest_poll:
                    provider = MassiveProvider(
                        key,
                        chosen,
                        platform.clock,
                        interval_s=interval,
                        base_url=os.environ.get("PROPDESK_MASSIVE_BASE_URL") or None,
                        catalogue=platform.catalogue,
                        proxies=wti_proxy,
                    )
                else:
                    provider = MassiveStreamProvider(
                        key,
                        chosen,
                        platform.clock,
                        url=os.environ.get(ENV_WS_URL, "").strip() or None,
                        catalogue=platform.catalogue,
                        proxies=wti_proxy,
                        calendar=platform.sessions,
                    )
            except (MassiveAuthError, ValueError) as exc:
                raise CliError(str(exc)) from exc
            sys.stderr.write(
                f"feed massive ({'REST polling' if rest_poll else 'WebSocket streams'}): "
                f"{len(provider.routes)} symbols routed"
                + (f", not routable: {', '.join(provider.unroutable)}" if provider.unroutable else "")
                + "; Ctrl-C to stop\n"
            )
            signal.signal(signal.SIGTERM, lambda *_: provider.stop())
            if seconds is not None:
                timer = threading.Timer(seconds, provider.stop)
                timer.daemon = True
                timer.start()
            recorder = CandleRecorder(platform.db, platform.clock, platform.ticks, log=log).start()
            stats = FeedStats()
            try:
                for q in provider.quotes():
                    publish(platform.quotes, platform.execution, q, log, stats)
                    if max_quotes is not None and stats.received >= max_quotes:
                        provider.stop()
                        break
            except MassiveAuthError as exc:
                raise CliError(str(exc)) from exc
            except KeyboardInterrupt:
                provider.stop()
            finally:
                recorder.stop()
            log.info("feed_massive_done", published=stats.accepted, dropped=stats.dropped)
            sys.stderr.write(f"feed massive: {stats.accepted} quotes published, {stats.dropped} dropped\n")
        return 0

    _run(body)


@feed_app.command("calibrate")
def feed_calibrate(
    data: Annotated[
        str | None, typer.Option("--data", help="The market data directory (default: ../shared/data/market).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute marketdata/calibration.json (volatility and spreads) from the real data files."""

    def body() -> int:
        from pathlib import Path

        from ..marketdata.calibration import DEFAULT_DATA_DIR, calibrate, markdown_table, write_calibration

        doc = calibrate(Path(data) if data else DEFAULT_DATA_DIR)
        path = write_calibration(doc)
        if as_json:
            emit_json({"path": str(path), "instruments": len(doc["instruments"])})
        else:
            _out(markdown_table(doc))
            _out(f"wrote {path}")
        return 0

    _run(body)
