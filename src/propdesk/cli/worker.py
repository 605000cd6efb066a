"""Background workers (`propdesk worker ...`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .common import (
    CliError,
    JsonOpt,
    _log,
    _run,
    _settings,
    emit_json,
    open_platform,
)

worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------ worker
def _run_worker(
    make: Callable[[Any, Any], Any],
    once: bool,
    as_json: bool,
    summary: Callable[[Any], str],
    settings: Any = None,
) -> int:
    """Run a worker in the foreground: one cycle with ``--once`` (exit 1 if it failed), else cycles until
    SIGTERM/SIGINT. ``make(platform, stop)`` builds it; ``summary(result)`` is the one-line text of a cycle."""
    import signal
    import threading

    log = _log()
    with open_platform(settings or _settings()) as platform:
        stop = threading.Event()
        worker = make(platform, stop)
        if once:
            result = worker.run_once()
            if as_json:
                emit_json(result.details())
            else:
                sys.stderr.write(f"{summary(result)}{'; error: ' + result.error if result.error else ''}\n")
            return 1 if result.error else 0

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("worker_signal", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run()
        if as_json:
            emit_json({"cycles": worker.cycles, "last": worker.last.details() if worker.last else None})
    return 0


@worker_app.command("mark-to-market")
def worker_mark_to_market(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    interval: Annotated[
        float | None, typer.Option(min=0.01, help="Seconds between cycles (PROPDESK_MTM_INTERVAL_SECONDS).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reprice every open position on a cadence and write a heartbeat; SIGTERM/SIGINT stop it cleanly."""

    def body() -> int:
        from ..workers.mark_to_market import MarkToMarketWorker

        return _run_worker(
            lambda platform, stop: MarkToMarketWorker(platform, interval_s=interval, stop=stop),
            once,
            as_json,
            lambda r: (
                f"mark-to-market: {r.marked}/{r.accounts} accounts marked, {len(r.failed)} "
                f"failed, {r.duration_s * 1000:.1f} ms"
            ),
        )

    _run(body)


@worker_app.command("outbox-relay")
def worker_outbox_relay(
    once: Annotated[bool, typer.Option("--once", help="Relay what is pending and exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.001, help="Seconds between polls of the outbox.")] = 0.05,
    as_json: JsonOpt = False,
) -> None:
    """Carry committed events from the outbox onto the bus (in commit order, each event id once); heartbeat
    ``outbox-relay``; SIGTERM/SIGINT stop it."""

    def body() -> int:
        from ..workers.outbox_relay import OutboxRelayWorker

        return _run_worker(
            lambda platform, stop: OutboxRelayWorker(platform, interval_s=interval, stop=stop),
            once,
            as_json,
            lambda r: f"outbox-relay: {r.published} events published, {r.duration_s * 1000:.1f} ms",
        )

    _run(body)


@worker_app.command("risk")
def worker_risk(
    shard: Annotated[int, typer.Option("--shard", min=0, help="This shard's number, 0..N-1.")],
    shards: Annotated[int, typer.Option("--shards", min=1, help="How many shards the deployment runs (N).")],
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics on this port.")
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="Seconds to wait for a shard held by another process (0: exit).")
    ] = 0.0,
    resync: Annotated[float, typer.Option("--resync", min=1, help="Seconds between full re-reads of the book.")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="Start, run one cycle and exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run risk shard I of N: the accounts with shard_of(account, N) == I, every price and their events from
    JetStream durable consumers; holds the shard through a PostgreSQL advisory lock (a second process for the
    same shard exits, or waits with --wait); heartbeat ``risk-shard-I-of-N``; SIGTERM/SIGINT stop it."""

    def body() -> int:
        from ..workers.risk_shard import LeaseHeld, RiskShardWorker, serve_metrics

        if shard >= shards:
            raise CliError(f"--shard must be between 0 and {shards - 1}")
        holder: dict[str, Any] = {}

        def make(platform: Any, stop: Any) -> Any:
            worker = RiskShardWorker(
                platform, shard=shard, shards=shards, stop=stop, lease_wait_s=wait, resync_s=resync
            )
            holder["worker"] = worker
            if metrics_port is not None:
                serve_metrics(metrics_port, worker.metrics.registry)
            try:
                worker.start_shard()
            except LeaseHeld as exc:
                worker.close()
                raise CliError(str(exc)) from None
            return worker

        code = _run_worker(
            make,
            once,
            as_json,
            lambda r: (
                f"risk shard {r.shard}/{r.shards}: {r.quotes} quotes, {r.events} events, {r.candidates} candidates,"
                f" {r.executions} executed, lag {r.lag_s:.3f} s, breaker {r.breaker}"
            ),
            # The shard's engine is the only one in this process: no in-process engine over every account.
            settings=_settings().model_copy(update={"risk_engine": "off"}),
        )
        worker = holder.get("worker")
        if worker is not None and worker.lost.is_set():
            raise CliError(f"risk shard {shard} of {shards} lost its lease (database connection dropped): stopped")
        return code

    _run(body)


@worker_app.command("calendar-sync")
def worker_calendar_sync(
    once: Annotated[bool, typer.Option("--once", help="Sync once and exit (1 if the sync failed).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Keep the economic calendar current from Finnhub (yesterday .. two weeks ahead, every
    PROPDESK_CALENDAR_SYNC_HOURS; needs PROPDESK_FINNHUB_API_KEY) and write a heartbeat; SIGTERM/SIGINT stop it."""

    def body() -> int:
        from ..workers.calendar_sync import CalendarSyncWorker

        if not _settings().finnhub_api_key:
            raise CliError("worker calendar-sync needs a Finnhub API key: set PROPDESK_FINNHUB_API_KEY")
        return _run_worker(
            lambda platform, stop: CalendarSyncWorker(platform, stop=stop),
            once,
            as_json,
            lambda r: (
                f"calendar-sync {r.range_from}..{r.range_to}: {r.inserted} new, "
                f"{r.updated} updated, {r.unchanged} unchanged"
            ),
        )

    _run(body)


# ------------------------------------------------------------------------------------------------ day roll
@worker_app.command("eod")
def worker_eod(
    once: Annotated[bool, typer.Option("--once", help="Roll once and exit.")] = False,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between checks.")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Roll every challenge account's trading day at its rulebook's day start (idempotent; DST-correct)."""

    def body() -> int:
        import signal
        import threading

        log = _log()
        with open_platform(_settings()) as platform:
            stop = threading.Event()

            def beat(result: dict[str, Any]) -> None:
                from psycopg.types.json import Jsonb

                with platform.db.tx() as c:
                    c.execute(
                        "INSERT INTO worker_heartbeats (name, beat_at, details) VALUES ('eod', %s, %s)"
                        " ON CONFLICT (name) DO UPDATE SET beat_at=EXCLUDED.beat_at, details=EXCLUDED.details",
                        (platform.clock.now(), Jsonb({"rolled": result["rolled"], "failed": len(result["failed"])})),
                    )

            if once:
                result = platform.execution.roll_all()
                beat(result)
                if as_json:
                    emit_json(result)
                else:
                    sys.stderr.write(
                        f"eod: {result['rolled']}/{result['accounts']} accounts rolled, "
                        f"{len(result['failed'])} failed\n"
                    )
                return 1 if result["failed"] else 0

            def on_signal(signum: int, _frame: Any) -> None:
                log.info("worker_signal", signal=signal.Signals(signum).name)
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            while not stop.is_set():
                try:
                    result = platform.execution.roll_all()
                    beat(result)
                    log.info("eod_cycle", rolled=result["rolled"], failed=len(result["failed"]))
                except Exception as exc:  # a failed cycle is logged; the next one tries again
                    log.error("eod_cycle_failed", error=repr(exc))
                stop.wait(interval)
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ feed simulate
