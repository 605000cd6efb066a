"""Benchmarks (`propdesk bench ...`).

A new in-process scenario is a module ``propdesk.bench.<name>`` with ``run(progress=..., **params)`` returning a
result with ``to_json()``, ``problems``, ``metrics``, ``limit``, ``ratio_to_limit`` and ``correct``, plus a few lines
here: a ``@bench_app.command`` whose body is ``_run_in_process_bench("<name>", as_json, **params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from .common import (
    CliError,
    JsonOpt,
    _log,
    _out,
    _run,
    _settings,
    emit_json,
)

bench_app = typer.Typer(
    help="Benchmarks (docs: PERFORMANCE.md). The last stdout line is JSON with --json.", no_args_is_help=True
)


# ------------------------------------------------------------------------------------------------ bench
def _bench_output(result: Any, as_json: bool) -> int:
    log = _log()
    for p in result.problems:
        log.error("bench_problem", scenario=result.scenario, problem=p)
    if as_json:
        emit_json(result.to_json())
    else:
        m, lim = result.metrics, result.limit
        _out(
            f"{result.scenario}: p50 {m.get('latency_us_p50')} us, p99 {m.get('latency_us_p99')} us, "
            f"{m.get('throughput_per_s')}/s; limit p50 {lim.get('latency_us_p50')} us, "
            f"{lim.get('throughput_per_s')}/s; ratio to limit {result.ratio_to_limit}; correct {result.correct}"
        )
        emit_json(result.to_json())
    return 0 if result.correct else 1


@contextmanager
def _bench_progress() -> Iterator[Callable[[str, float], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("bench", total=1.0)
        yield lambda desc, adv: progress.update(task, description=desc, advance=adv)


@bench_app.command("orders")
def bench_orders(
    accounts: Annotated[int | None, typer.Option(min=1, help="Accounts (default: one per client).")] = None,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent client threads.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed (symbol per account).")] = 42,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    orders: Annotated[int, typer.Option(min=1, help="Orders per client per trial.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Durable order intake (gates + fill + position + ledger, one transaction) vs one-row INSERT+COMMIT."""

    def body() -> int:
        from ..bench import orders as scenario

        settings = _settings()
        with _bench_progress() as progress:
            result = scenario.run(
                settings,
                accounts=accounts,
                clients=clients,
                seed=seed,
                trials=trials,
                orders_per_client=orders,
                progress=progress,
            )
        return _bench_output(result, as_json)

    _run(body)


@bench_app.command("api-orders")
def bench_api_orders(
    accounts: Annotated[int | None, typer.Option(min=1, help="Accounts per path (default: one per client).")] = None,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent client threads.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed (symbol per account, replayed keys).")] = 42,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    orders: Annotated[int, typer.Option(min=1, help="Orders per client per trial.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Orders over HTTP (service token, idempotency keys, a `propdesk serve` process) vs `bench orders`'s path
    in process, on the same database in the same run."""

    def body() -> int:
        from ..bench import api_orders as scenario

        settings = _settings()
        try:
            with _bench_progress() as progress:
                result = scenario.run(
                    settings,
                    accounts=accounts,
                    clients=clients,
                    seed=seed,
                    trials=trials,
                    orders_per_client=orders,
                    progress=progress,
                )
        except scenario.ServerError as exc:
            raise CliError(str(exc)) from exc
        return _bench_output(result, as_json)

    _run(body)


@bench_app.command("pretrade")
def bench_pretrade(
    seed: Annotated[int, typer.Option(help="Seed of the random verdict sample.")] = 42,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    calls: Annotated[int, typer.Option(min=100, help="Timed calls per trial.")] = 20000,
    sample: Annotated[
        int, typer.Option(min=1, help="Random orders whose verdicts are compared with the inline reference.")
    ] = 5000,
    accounts: Annotated[int | None, typer.Option(hidden=True)] = None,
    clients: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """The full pre-trade check of one order in process vs the same checks hand-coded inline.

    (--accounts/--clients are accepted for a uniform bench command line; this scenario is one account, one
    thread, in process.)"""

    _run_in_process_bench("pretrade", as_json, calls=calls, trials=trials, sample=sample, seed=seed)


def _run_in_process_bench(module: str, as_json: bool, *, with_settings: bool = False, **params: Any) -> None:
    """Run an in-process bench scenario (``propdesk.bench.<module>.run``) with a progress bar on stderr; with
    ``with_settings`` the scenario gets the settings first (it opens a database: ``DATABASE_URL`` or embedded)."""

    def body() -> int:
        import importlib

        scenario = importlib.import_module(f"propdesk.bench.{module}")
        settings = _settings()
        args = (settings,) if with_settings else ()
        with _bench_progress() as progress:
            result = scenario.run(*args, progress=progress, **params)
        return _bench_output(result, as_json)

    _run(body)


# ------------------------------------------------------------------------------------------------ bench quotes
@bench_app.command("quotes")
def bench_quotes(
    ticks: Annotated[int, typer.Option(min=1, help="Ticks replayed per run.")] = 9000,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    sample: Annotated[int, typer.Option(min=1, help="Minutes whose candles are checked.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the sampled minutes.")] = 42,
    accounts: Annotated[int | None, typer.Option(hidden=True)] = None,
    clients: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replayed ticks into the quote store and minute candles vs parsing the same file alone (in process)."""

    _run_in_process_bench("quotes", as_json, ticks=ticks, trials=trials, sample=sample, seed=seed)


# ------------------------------------------------------------------------------------------------ feed replay


# ------------------------------------------------------------------------------------------------ bench mtm
@bench_app.command("mtm")
def bench_mtm(
    accounts: Annotated[int, typer.Option(min=1, help="Accounts with open positions.")] = 20_000,
    positions_per_account: Annotated[int, typer.Option(min=1, max=50, help="Positions per account (at most).")] = 5,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the portfolios and prices.")] = 42,
    clients: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """A durable mark of every account from PostgreSQL (the bulk mark) vs a bulk read of the same rows plus one bulk
    UPDATE; a sample is checked against the exact per-account valuation and the ledger."""
    _run_in_process_bench(
        "mtm",
        as_json,
        with_settings=True,
        accounts=accounts,
        positions_per_account=positions_per_account,
        trials=trials,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------ bench tick
@bench_app.command("tick")
def bench_tick(
    accounts: Annotated[int, typer.Option(min=1, help="Accounts in the risk book.")] = 100_000,
    positions_per_account: Annotated[int, typer.Option(min=1, max=7, help="Positions per account.")] = 5,
    ticks: Annotated[int, typer.Option(min=1, help="Prices replayed per trial.")] = 2000,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    sample: Annotated[int, typer.Option(min=1, help="Accounts checked against the exact reference.")] = 40,
    liquidations: Annotated[
        int, typer.Option(min=0, help="Breaching accounts whose price-to-committed liquidation is measured (0: skip).")
    ] = 200,
    workers: Annotated[int, typer.Option(min=1, help="The risk engine's pool executing a burst.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the portfolios and prices.")] = 42,
    as_json: JsonOpt = False,
) -> None:
    """Prices into a risk book of A accounts x P positions (the class the risk engine runs) vs a bare numpy reprice
    + per-account sum + compare; plus price to committed liquidation for a burst of breaches in PostgreSQL."""
    _run_in_process_bench(
        "tick",
        as_json,
        with_settings=True,
        accounts=accounts,
        positions_per_account=positions_per_account,
        ticks=ticks,
        trials=trials,
        sample=sample,
        liquidations=liquidations,
        workers=workers,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------ bench memory
@bench_app.command("memory")
def bench_memory(
    accounts: Annotated[int, typer.Option(min=1, help="Accounts in the risk book.")] = 100_000,
    positions_per_account: Annotated[int, typer.Option(min=1, max=7, help="Positions per account.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the portfolios.")] = 42,
    as_json: JsonOpt = False,
) -> None:
    """Resident memory of the risk book per account beyond its numpy arrays (target: at most 1 KB)."""
    _run_in_process_bench("memory", as_json, accounts=accounts, positions_per_account=positions_per_account, seed=seed)


# ------------------------------------------------------------------------------------------------ bench bus
@bench_app.command("bus")
def bench_bus(
    quotes: Annotated[int, typer.Option(min=1, help="Quotes published per trial.")] = 20_000,
    rate: Annotated[float, typer.Option(min=1, help="Published quotes per second.")] = 5_000.0,
    trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the quotes.")] = 42,
    accounts: Annotated[int | None, typer.Option(hidden=True)] = None,
    clients: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """A quote accepted in process A until applied in process B's price store, at the published rate, vs a bare
    nats-py publish -> subscribe between the same two processes."""
    _run_in_process_bench("bus", as_json, quotes=quotes, rate=rate, trials=trials, seed=seed)
