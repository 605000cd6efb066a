"""The ``propdesk`` command line.

    propdesk db upgrade                      create roles, migrate the database to head
    propdesk serve [--host H] [--port P]     the API (and the mark-to-market worker) in one process
    propdesk demo [--port P] [--check]       everything, with demo accounts, tokens and moving prices
    propdesk worker mark-to-market [--once]  reprice open positions on a cadence, heartbeat
    propdesk worker calendar-sync [--once]   keep the economic calendar current from Finnhub, heartbeat
    propdesk verify [ACCOUNT]                recompute balances from the ledger; non-zero exit on mismatch
    propdesk tokens create --role R          a service or admin API token, printed once
    propdesk admin create --email E          a web user with admin rights (password prompted or --password-stdin)
    propdesk bench orders|api-orders|pretrade|quotes   the benchmarks of PERFORMANCE.md

Conventions: logs are JSON lines on stderr; stdout carries results, and with ``--json`` exactly one compact JSON
line. The database is ``DATABASE_URL`` or, when unset, an embedded PostgreSQL in ``PROPDESK_DATA_DIR``; a
command that started the embedded server stops it when it ends (a server another process runs is reused and left
alone). Exit codes: 0 success, 1 the command ran and found a problem (mismatch, incorrect benchmark), 2 it could
not run (configuration, database unreachable, bad arguments).

Heavy modules (the platform, psycopg, FastAPI, numpy) are imported inside the commands, so ``propdesk --help``
stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import admin, bench, calendar, cluster, db, feed, plans, risk, server, tokens, worker
from .common import _out

app = typer.Typer(
    name="propdesk",
    help="PropDesk: a prop-trading challenge platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.db_app, name="db")
app.add_typer(worker.worker_app, name="worker")
app.add_typer(tokens.tokens_app, name="tokens")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(feed.feed_app, name="feed")
app.add_typer(calendar.calendar_app, name="calendar")
app.command()(server.serve)
app.command()(server.demo)
app.command()(db.verify)
app.add_typer(admin.admin_app, name="admin")
app.command()(plans.evaluate)
app.add_typer(plans.plans_app, name="plans")
app.add_typer(risk.risk_app, name="risk")
app.add_typer(cluster.cluster_app, name="cluster")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        _out(f"propdesk {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """PropDesk: a prop-trading challenge platform."""


def main() -> None:
    """Console entry point (``propdesk``)."""
    app(prog_name="propdesk")


__all__ = ["app", "main"]
