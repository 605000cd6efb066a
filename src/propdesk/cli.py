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

import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from .bootstrap import Platform
    from .settings import Settings

app = typer.Typer(name="propdesk", help="PropDesk: a prop-trading challenge platform.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema and roles.", no_args_is_help=True)
worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for services and admins.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (docs: PERFORMANCE.md). The last stdout line is JSON with --json.",
                        no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(worker_app, name="worker")
app.add_typer(tokens_app, name="tokens")
app.add_typer(bench_app, name="bench")
feed_app = typer.Typer(help="Price feeds into the quote store and the execution core.", no_args_is_help=True)
app.add_typer(feed_app, name="feed")
calendar_app = typer.Typer(help="The economic calendar (the news rule reads it).", no_args_is_help=True)
app.add_typer(calendar_app, name="calendar")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one compact JSON line on stdout.")]


class RoleChoice(StrEnum):
    service = "service"
    admin = "admin"


# ------------------------------------------------------------------------------------------------ helpers
class CliError(Exception):
    """A command cannot run; the message is shown and the exit code is 2."""


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return format(o, "f")
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, uuid.UUID):
        return str(o)
    if isinstance(o, Enum):
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def emit_json(obj: Any) -> None:
    """One compact JSON line on stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n")
    sys.stdout.flush()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _log() -> Any:
    from . import logs

    return logs.get("propdesk.cli")


_SETTINGS: list[Settings] = []


def _settings() -> Settings:
    """The settings, read once per process; configures JSON logs on stderr the first time."""
    if _SETTINGS:
        return _SETTINGS[0]
    from pydantic import ValidationError

    from . import logs
    from .settings import load_settings

    try:
        settings = load_settings()
    except ValidationError as exc:
        raise CliError(f"invalid configuration: {exc}") from exc
    logs.configure(settings.log_level, settings.log_json)
    # Alembic narrates every plugin it loads at INFO; the commands report what migrations did themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _SETTINGS.append(settings)
    return settings


def redact(url: str) -> str:
    """The URL without its password (for logs and output)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<unparseable database url>"
    if params.get("password"):
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def open_platform(settings: Settings, *, migrate: bool = True) -> Iterator[Platform]:
    """Resolve the database (starting the embedded server if needed), open the platform, and on exit close it
    and stop the embedded server if this process started it."""
    from .bootstrap import open_platform as _open
    from .bootstrap import resolve_database

    admin_url, embedded = resolve_database(settings)
    try:
        platform = _open(settings, admin_url=admin_url, migrate=migrate, configure_logs=False)
        platform.embedded = embedded
        try:
            yield platform
        finally:
            platform.close()
    finally:
        if embedded is not None:
            embedded.__exit__(None, None, None)  # stops the server only if this handle started it


def _run(fn: Callable[[], int | None]) -> None:
    """Run a command body: map expected failures to a message on stderr and exit code 2."""
    try:
        code = fn()
    except typer.Exit:
        raise
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        import psycopg

        from .db.embedded import EmbeddedPostgresError
        from .domain.errors import DomainError

        if isinstance(exc, EmbeddedPostgresError | psycopg.OperationalError | DomainError | ValueError | OSError):
            _fail(f"{type(exc).__name__}: {exc}")
        raise
    raise typer.Exit(code or 0)


def _fail(message: str) -> NoReturn:
    if _SETTINGS:  # logs are configured (JSON on stderr)
        _log().error("command_failed", error=message)
    sys.stderr.write(f"propdesk: {message}\n")
    raise typer.Exit(2)


def _load_create_app() -> Callable[[Any], Any]:
    try:
        from .web.app import create_app
    except ImportError as exc:
        raise CliError(f"the API is not available in this build (propdesk.web.app.create_app): {exc}") from exc
    return create_app


def _version(value: bool) -> None:
    if value:
        from . import __version__

        _out(f"propdesk {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                  help="Show the version and exit.")] = False) -> None:
    """PropDesk: a prop-trading challenge platform."""


# ------------------------------------------------------------------------------------------------ db
@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create the roles if missing and migrate the database to head (idempotent)."""

    def body() -> int:
        import psycopg

        from .bootstrap import resolve_database
        from .db.migrate import HEAD, current_revision, upgrade

        settings = _settings()
        log = _log()
        admin_url, embedded = resolve_database(settings)
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                before = current_revision(conn)
            upgrade(admin_url, settings.db_role_prefix)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                after = current_revision(conn)
        finally:
            if embedded is not None:
                embedded.__exit__(None, None, None)
        result = {"database": redact(admin_url), "embedded": embedded is not None,
                  "data_dir": str(settings.data_dir.resolve()) if embedded is not None else None,
                  "role_prefix": settings.db_role_prefix, "revision_before": before, "revision": after,
                  "head": HEAD, "changed": before != after}
        log.info("db_upgraded", **result)
        if as_json:
            emit_json(result)
        else:
            what = f"migrated {before or 'an empty database'} -> {after}" if before != after else f"already at {after}"
            sys.stderr.write(f"propdesk db upgrade: {what} ({redact(admin_url)}, roles {settings.db_role_prefix}_*)\n")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ serve
@app.command()
def serve(host: Annotated[str | None, typer.Option(help="Interface to listen on (PROPDESK_HOST).")] = None,
          port: Annotated[int | None, typer.Option(help="Port (PROPDESK_PORT); 0 picks a free one.")] = None,
          no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run the mark-to-market worker in "
                                                                       "this process.")] = False) -> None:
    """Run the API (and the mark-to-market worker, in a thread) in one process until SIGTERM/Ctrl-C."""

    def body() -> int:
        import signal

        import uvicorn

        from .demo import bind_socket, url_of
        from .workers.calendar_sync import start_if_configured as start_calendar_sync
        from .workers.mark_to_market import MarkToMarketWorker

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
                from .marketdata.recorder import CandleRecorder
                platform.candles = CandleRecorder(platform.db, platform.clock, platform.ticks, log=_log()).start()
                try:
                    # uvicorn handles SIGTERM/SIGINT while it runs, then restores the previous handlers and
                    # re-raises the signal: with the default handlers that would kill the process before the
                    # worker, the pools and an embedded PostgreSQL are stopped. These record it and let us finish.
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(sig, lambda signum, _frame: _log().info(
                            "serve_stopping", signal=signal.Signals(signum).name))
                    _log().info("serving", url=url_of(sock), worker=worker is not None,
                                calendar_sync=calendar_worker is not None)
                    # access_log off: the API logs every request itself, as JSON.
                    # Live streams (SSE) never end by themselves: give them 5 s at shutdown, then cancel them.
                    # Behind a TLS-terminating proxy: the client address and scheme come from X-Forwarded-For
                    # / -Proto, trusted only from PROPDESK_FORWARDED_ALLOW_IPS (docs/DEPLOY.md).
                    config = uvicorn.Config(api, log_config=None, lifespan="on", access_log=False,
                                            timeout_graceful_shutdown=5, proxy_headers=True,
                                            forwarded_allow_ips=settings.forwarded_allow_ips)
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
@app.command()
def demo(host: Annotated[str | None, typer.Option(help="Interface to listen on (PROPDESK_HOST).")] = None,
         port: Annotated[int | None, typer.Option(help="Port (PROPDESK_PORT); 0 picks a free one.")] = None,
         check: Annotated[bool, typer.Option("--check", envvar="PROPDESK_DEMO_CHECK",
                                             help="Set up, check the API and the ledger, then exit.")] = False,
         seed: Annotated[int, typer.Option(help="Seed of the demo price driver.")] = 7) -> None:
    """Database, migrations, API, mark-to-market worker, moving demo prices and demo accounts; until Ctrl-C."""

    def body() -> int:
        from .demo import run_demo

        # DEMO MODE: the session calendar treats every market as open, so the demo trades at any hour.
        settings = _settings().model_copy(update={"demo_always_open": True})
        create_app = _load_create_app()
        with open_platform(settings) as platform:
            return run_demo(platform, create_app, host=host or settings.host,
                            port=settings.port if port is None else port, check=check, seed=seed, out=_out)

    _run(body)


# ------------------------------------------------------------------------------------------------ worker
def _run_worker(make: Callable[[Any, Any], Any], once: bool, as_json: bool, summary: Callable[[Any], str]) -> int:
    """Run a worker in the foreground: one cycle with ``--once`` (exit 1 if it failed), else cycles until
    SIGTERM/SIGINT. ``make(platform, stop)`` builds it; ``summary(result)`` is the one-line text of a cycle."""
    import signal
    import threading

    log = _log()
    with open_platform(_settings()) as platform:
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
        interval: Annotated[float | None, typer.Option(min=0.01, help="Seconds between cycles "
                                                                       "(PROPDESK_MTM_INTERVAL_SECONDS).")] = None,
        as_json: JsonOpt = False) -> None:
    """Reprice every open position on a cadence and write a heartbeat; SIGTERM/SIGINT stop it cleanly."""

    def body() -> int:
        from .workers.mark_to_market import MarkToMarketWorker

        return _run_worker(lambda platform, stop: MarkToMarketWorker(platform, interval_s=interval, stop=stop),
                           once, as_json,
                           lambda r: f"mark-to-market: {r.marked}/{r.accounts} accounts marked, {len(r.failed)} "
                                     f"failed, {r.duration_s * 1000:.1f} ms")

    _run(body)


@worker_app.command("calendar-sync")
def worker_calendar_sync(
        once: Annotated[bool, typer.Option("--once", help="Sync once and exit (1 if the sync failed).")] = False,
        as_json: JsonOpt = False) -> None:
    """Keep the economic calendar current from Finnhub (yesterday .. two weeks ahead, every
    PROPDESK_CALENDAR_SYNC_HOURS; needs PROPDESK_FINNHUB_API_KEY) and write a heartbeat; SIGTERM/SIGINT stop it."""

    def body() -> int:
        from .workers.calendar_sync import CalendarSyncWorker

        if not _settings().finnhub_api_key:
            raise CliError("worker calendar-sync needs a Finnhub API key: set PROPDESK_FINNHUB_API_KEY")
        return _run_worker(lambda platform, stop: CalendarSyncWorker(platform, stop=stop), once, as_json,
                           lambda r: f"calendar-sync {r.range_from}..{r.range_to}: {r.inserted} new, "
                                     f"{r.updated} updated, {r.unchanged} unchanged")

    _run(body)


# ------------------------------------------------------------------------------------------------ verify
@app.command()
def verify(account: Annotated[str | None, typer.Argument(help="One account id (default: every account).")] = None,
           as_json: JsonOpt = False) -> None:
    """Recompute balances and positions from the ledger and compare with the stored ones (exit 1 on mismatch)."""

    def body() -> int:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .workers.reconcile import account_ids
        from .workers.reconcile import verify as verify_accounts

        settings = _settings()
        only: list[uuid.UUID] | None = None
        if account is not None:
            try:
                only = [uuid.UUID(account)]
            except ValueError:
                raise CliError(f"{account!r} is not an account id (a UUID)") from None
        with open_platform(settings) as platform:
            ids = account_ids(platform.db, only)
            if only is not None and not ids:
                raise CliError(f"account {account} not found")
            console = Console(stderr=True)
            with Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True, disable=not console.is_terminal) as progress:
                task = progress.add_task("verify", total=len(ids))
                report = verify_accounts(platform.execution, ids,
                                         on_account=lambda _a, _r: progress.advance(task))
        _log().info("verify_done", accounts=report.checked, ok=report.ok, mismatched=len(report.mismatched),
                    errors=len(report.errors))
        if as_json:
            emit_json(report.to_json())
        else:
            _out(f"verified {report.checked} accounts: {report.ok} ok, {len(report.mismatched)} mismatched, "
                 f"{len(report.errors)} could not be checked")
            for m in report.mismatched:
                for f in m["mismatches"]:
                    _out(f"  MISMATCH {m['account_id']} {f['field']}: ledger {f['ledger']} != stored {f['stored']}")
            for e in report.errors:
                _out(f"  ERROR    {e['account_id']}: {e['error']}")
        return 0 if report.clean else 1

    _run(body)


# ------------------------------------------------------------------------------------------------ admin users
admin_app = typer.Typer(help="Web users with admin rights (the admin panel).", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("create")
def admin_create(email: Annotated[str, typer.Option(help="The admin's email address (the login).")],
                 password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the "
                                                              "first line of stdin instead of prompting.")] = False,
                 display_name: Annotated[str, typer.Option(help="The name shown in the panel.")] = "",
                 as_json: JsonOpt = False) -> None:
    """Create a web user with the admin role (the first admin of a new install). The password must have 10..256
    characters mixing letters with digits or symbols; an address that already has an account is refused."""

    def body() -> int:
        from .domain.errors import Conflict, InvalidInput
        from .identity.users import UserRole, check_password, normalize_email

        try:
            address = normalize_email(email)
        except InvalidInput as exc:
            raise CliError(f"invalid --email: {exc.message}") from None
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        try:
            check_password(password)
        except InvalidInput as exc:
            raise CliError(f"weak password: {exc.message}") from None
        settings = _settings()
        with open_platform(settings) as platform:
            try:
                user = platform.identity.create_user(address, password, role=UserRole.ADMIN,
                                                     display_name=display_name, audit_kind="user_created")
            except Conflict:
                raise CliError(f"a user with the email {address} already exists") from None
            except InvalidInput as exc:
                raise CliError(exc.message) from None
        _log().info("admin_created", user_id=str(user.id), email=user.email)
        result = {"id": str(user.id), "email": user.email, "role": user.role.value,
                  "display_name": user.display_name, "login_url": settings.public_url.rstrip("/") + "/login"}
        if as_json:
            emit_json(result)
        else:
            _out(f"created admin {user.email} ({user.id}); log in at {result['login_url']}")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ tokens
@tokens_app.command("create")
def tokens_create(role: Annotated[RoleChoice, typer.Option(help="service: the API's machine clients; "
                                                                "admin: also the admin routes.")],
                  name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "",
                  ttl_days: Annotated[float | None, typer.Option(min=0.0001, help="Expire after this many days "
                                                                                  "(default: never).")] = None,
                  as_json: JsonOpt = False) -> None:
    """Create an API token. It is printed once; only its hash is stored."""

    def body() -> int:
        from datetime import timedelta

        from .identity.auth import Role

        settings = _settings()
        with open_platform(settings) as platform:
            ttl = timedelta(days=ttl_days) if ttl_days is not None else None
            token, principal = platform.tokens.create(Role(role.value), name, ttl)
            with platform.db.read() as c:
                row = c.execute("SELECT name, created_at, expires_at FROM api_tokens WHERE id = %s",
                                (principal.id,)).fetchone()
        _log().info("token_created", token_id=principal.id, role=role.value, name=row["name"] if row else name)
        result = {"token": token, "id": principal.id, "role": role.value, "name": row["name"] if row else name,
                  "created_at": row["created_at"] if row else None, "expires_at": row["expires_at"] if row else None}
        if as_json:
            emit_json(result)
        else:
            _out(token)
            sys.stderr.write(f"created {role.value} token {principal.id} ({result['name']}); "
                             f"expires {result['expires_at'] or 'never'}. It is shown only once.\n")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ bench
def _bench_output(result: Any, as_json: bool) -> int:
    log = _log()
    for p in result.problems:
        log.error("bench_problem", scenario=result.scenario, problem=p)
    if as_json:
        emit_json(result.to_json())
    else:
        m, lim = result.metrics, result.limit
        _out(f"{result.scenario}: p50 {m.get('latency_us_p50')} us, p99 {m.get('latency_us_p99')} us, "
             f"{m.get('throughput_per_s')}/s; limit p50 {lim.get('latency_us_p50')} us, "
             f"{lim.get('throughput_per_s')}/s; ratio to limit {result.ratio_to_limit}; correct {result.correct}")
        emit_json(result.to_json())
    return 0 if result.correct else 1


@contextmanager
def _bench_progress() -> Iterator[Callable[[str, float], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("bench", total=1.0)
        yield lambda desc, adv: progress.update(task, description=desc, advance=adv)


@bench_app.command("orders")
def bench_orders(accounts: Annotated[int | None, typer.Option(min=1, help="Accounts (default: one per client).")]
                 = None,
                 clients: Annotated[int, typer.Option(min=1, help="Concurrent client threads.")] = 8,
                 seed: Annotated[int, typer.Option(help="Seed (symbol per account).")] = 42,
                 trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
                 orders: Annotated[int, typer.Option(min=1, help="Orders per client per trial.")] = 100,
                 as_json: JsonOpt = False) -> None:
    """Durable order intake (gates + fill + position + ledger, one transaction) vs one-row INSERT+COMMIT."""

    def body() -> int:
        from .bench import orders as scenario

        settings = _settings()
        with _bench_progress() as progress:
            result = scenario.run(settings, accounts=accounts, clients=clients, seed=seed, trials=trials,
                                  orders_per_client=orders, progress=progress)
        return _bench_output(result, as_json)

    _run(body)


@bench_app.command("api-orders")
def bench_api_orders(accounts: Annotated[int | None, typer.Option(min=1, help="Accounts per path (default: one "
                                                                              "per client).")] = None,
                     clients: Annotated[int, typer.Option(min=1, help="Concurrent client threads.")] = 8,
                     seed: Annotated[int, typer.Option(help="Seed (symbol per account, replayed keys).")] = 42,
                     trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")]
                     = 5,
                     orders: Annotated[int, typer.Option(min=1, help="Orders per client per trial.")] = 100,
                     as_json: JsonOpt = False) -> None:
    """Orders over HTTP (service token, idempotency keys, a `propdesk serve` process) vs `bench orders`'s path
    in process, on the same database in the same run."""

    def body() -> int:
        from .bench import api_orders as scenario

        settings = _settings()
        try:
            with _bench_progress() as progress:
                result = scenario.run(settings, accounts=accounts, clients=clients, seed=seed, trials=trials,
                                      orders_per_client=orders, progress=progress)
        except scenario.ServerError as exc:
            raise CliError(str(exc)) from exc
        return _bench_output(result, as_json)

    _run(body)


@bench_app.command("pretrade")
def bench_pretrade(seed: Annotated[int, typer.Option(help="Seed of the random verdict sample.")] = 42,
                   trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
                   calls: Annotated[int, typer.Option(min=100, help="Timed calls per trial.")] = 20000,
                   sample: Annotated[int, typer.Option(min=1, help="Random orders whose verdicts are compared "
                                                                   "with the inline reference.")] = 5000,
                   accounts: Annotated[int | None, typer.Option(hidden=True)] = None,
                   clients: Annotated[int | None, typer.Option(hidden=True)] = None,
                   as_json: JsonOpt = False) -> None:
    """The full pre-trade check of one order in process vs the same checks hand-coded inline.

    (--accounts/--clients are accepted for a uniform bench command line; this scenario is one account, one
    thread, in process.)"""

    _run_in_process_bench("pretrade", as_json, calls=calls, trials=trials, sample=sample, seed=seed)


def _run_in_process_bench(module: str, as_json: bool, **params: Any) -> None:
    """Run an in-process bench scenario (``propdesk.bench.<module>.run``) with a progress bar on stderr."""

    def body() -> int:
        import importlib

        scenario = importlib.import_module(f"propdesk.bench.{module}")
        _settings()
        with _bench_progress() as progress:
            result = scenario.run(progress=progress, **params)
        return _bench_output(result, as_json)

    _run(body)


# ------------------------------------------------------------------------------------------------ bench quotes
@bench_app.command("quotes")
def bench_quotes(ticks: Annotated[int, typer.Option(min=1, help="Ticks replayed per run.")] = 9000,
                 trials: Annotated[int, typer.Option(min=1, help="Interleaved trials (medians are taken).")] = 5,
                 sample: Annotated[int, typer.Option(min=1, help="Minutes whose candles are checked.")] = 200,
                 seed: Annotated[int, typer.Option(help="Seed of the sampled minutes.")] = 42,
                 accounts: Annotated[int | None, typer.Option(hidden=True)] = None,
                 clients: Annotated[int | None, typer.Option(hidden=True)] = None,
                 as_json: JsonOpt = False) -> None:
    """Replayed ticks into the quote store and minute candles vs parsing the same file alone (in process)."""

    _run_in_process_bench("quotes", as_json, ticks=ticks, trials=trials, sample=sample, seed=seed)


# ------------------------------------------------------------------------------------------------ feed replay


@feed_app.command("replay")
def feed_replay(files: Annotated[list[str], typer.Argument(help="Tick or bar files (formats: docs of "
                                                                "propdesk.marketdata.providers.replay).")],
                symbol: Annotated[str | None, typer.Option(help="Symbol (default: from each file name).")] = None,
                speed: Annotated[float, typer.Option(min=0, help="Market seconds per second; 0 = as fast as "
                                                                 "possible.")] = 1.0,
                as_json: JsonOpt = False) -> None:
    """Replay ticks/bars into the platform's quote store and execution triggers (needs a database)."""

    def body() -> int:
        from .marketdata.feed import pump
        from .marketdata.providers.replay import ReplayFormatError, ReplayProvider

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


# ------------------------------------------------------------------------------------------------ evaluate
@app.command()
def evaluate(
        rulebook: Annotated[str, typer.Option("--rulebook", help="A plan file (YAML/JSON) or a preset id "
                                                                  "(PRESET or PRESET@OFFER).")],
        trades: Annotated[str, typer.Option("--trades", help="Trade log CSV (RULES.md format).")],
        phase: Annotated[str | None, typer.Option("--phase", help="Phase to evaluate (default: the first).")] = None,
        prices: Annotated[str | None, typer.Option("--prices", help="Bars or ticks CSV for floating P&L.")] = None,
        calendar: Annotated[str | None, typer.Option("--calendar", help="Economic calendar CSV "
                                                                         "(time,currency,impact,title).")] = None,
        as_json: JsonOpt = False) -> None:
    """Evaluate a trade log against a rulebook, offline (no database). Exit 0 whatever the verdict; 2 with a
    one-line message naming the row and column for bad input."""
    from pathlib import Path

    from .domain.rules.schema import RulebookError
    from .evaluation import InputError, render_report
    from .evaluation import evaluate as run_evaluation
    from .rulebooks import load_rulebook

    try:
        book = load_rulebook(rulebook)
        result = run_evaluation(book, Path(trades), phase=phase, prices_path=Path(prices) if prices else None,
                                calendar_path=Path(calendar) if calendar else None)
    except (InputError, RulebookError) as exc:
        sys.stderr.write(f"propdesk evaluate: {exc}\n")
        raise typer.Exit(2) from None
    if as_json:
        emit_json(result)
    else:
        _out(render_report(result, book))


# ------------------------------------------------------------------------------------------------ plans
plans_app = typer.Typer(help="Challenge plans (rulebook + offers).", no_args_is_help=True)
app.add_typer(plans_app, name="plans")


@plans_app.command("validate")
def plans_validate(files: Annotated[list[str], typer.Argument(help="Plan files (YAML or JSON).")],
                   as_json: JsonOpt = False) -> None:
    """Validate plan files without a database; exit 2 on the first error (file, key, reason)."""
    from pathlib import Path

    from .domain.rules.schema import RulebookError
    from .rulebooks import load_file

    ok: list[dict[str, Any]] = []
    for f in files:
        try:
            book = load_file(Path(f))
        except RulebookError as exc:
            sys.stderr.write(f"propdesk plans validate: {exc}\n")
            raise typer.Exit(2) from None
        ok.append({"file": f, "id": book.id, "version": book.version, "phases": [p.id for p in book.phases],
                   "offers": [o.id for o in book.offers]})
    if as_json:
        emit_json({"valid": ok})
    else:
        for item in ok:
            _out(f"{item['file']}: ok ({item['id']}, phases {', '.join(item['phases'])}, "
                 f"offers {', '.join(item['offers']) or '-'})")


@plans_app.command("list")
def plans_list(as_json: JsonOpt = False) -> None:
    """The plan catalogue in the database (the latest active version of each plan)."""

    def body() -> int:
        with open_platform(_settings()) as platform:
            items = platform.plans.catalogue()
        if as_json:
            emit_json({"items": items})
        else:
            for p in items:
                offers = ", ".join(f"{o['id']} ({o['price']} {o['currency']})" for o in p["offers"])
                _out(f"{p['id']} v{p['version']}: {p['name']} — phases {', '.join(x['id'] for x in p['phases'])};"
                     f" offers {offers or '-'}")
        return 0

    _run(body)


@plans_app.command("import")
def plans_import(file: Annotated[str, typer.Argument(help="A plan file (YAML or JSON).")],
                 as_json: JsonOpt = False) -> None:
    """Store a plan file as the next version of its id (running accounts keep their frozen version)."""

    def body() -> int:
        from pathlib import Path

        from .domain.errors import DomainError

        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{file}: cannot read: {exc}") from exc
        with open_platform(_settings()) as platform:
            try:
                book = platform.plans.create_version(text, actor="cli", where=file)
            except DomainError as exc:
                raise CliError(exc.message) from exc
        if as_json:
            emit_json({"id": book.id, "version": book.version})
        else:
            _out(f"stored {book.id} version {book.version}")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ day roll
@worker_app.command("eod")
def worker_eod(once: Annotated[bool, typer.Option("--once", help="Roll once and exit.")] = False,
               interval: Annotated[float, typer.Option(min=1, help="Seconds between checks.")] = 60.0,
               as_json: JsonOpt = False) -> None:
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
                    c.execute("INSERT INTO worker_heartbeats (name, beat_at, details) VALUES ('eod', %s, %s)"
                              " ON CONFLICT (name) DO UPDATE SET beat_at=EXCLUDED.beat_at, details=EXCLUDED.details",
                              (platform.clock.now(), Jsonb({"rolled": result["rolled"],
                                                            "failed": len(result["failed"])})))

            if once:
                result = platform.execution.roll_all()
                beat(result)
                if as_json:
                    emit_json(result)
                else:
                    sys.stderr.write(f"eod: {result['rolled']}/{result['accounts']} accounts rolled, "
                                     f"{len(result['failed'])} failed\n")
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


@feed_app.command("simulate")
def feed_simulate(
        symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated symbols "
                                                    "(default: every enabled instrument).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the simulation (same seed, same paths).")] = 7,
        interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between ticks.")] = 1.0,
        weekend_demo: Annotated[bool, typer.Option("--weekend-demo", help="DEMO MODE: forex, metals and energy "
                                                   "quote through the weekend; quotes say "
                                                   "source=simulated-demo.")] = False) -> None:
    """Simulated quotes (calibrated, session-aware; docs: MARKET_DATA.md) into the platform until Ctrl-C."""

    def body() -> int:
        import signal

        from .marketdata.feed import publish
        from .marketdata.providers.base import FeedStats
        from .marketdata.providers.simulated import SimulatedProvider

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
            provider = SimulatedProvider(platform.catalogue, platform.clock, seed=seed, interval_s=interval,
                                         symbols=chosen, weekend_demo=weekend_demo, start_prices=start)
            now = platform.clock.now()
            open_now = [s for s in provider.symbols if provider.is_open(s, now)]
            sys.stderr.write(f"feed simulate ({provider.name}): {len(provider.symbols)} symbols, "
                             f"{len(open_now)} in session now; Ctrl-C to stop\n")
            signal.signal(signal.SIGTERM, lambda *_: provider.stop())
            from .marketdata.recorder import CandleRecorder
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
        symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated symbols "
                                                    "(default: every enabled instrument Massive can route).")] = None,
        interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls "
                                                "(with --rest-poll).")] = 1.0,
        wti_proxy: Annotated[bool, typer.Option("--wti-proxy", help="Quote WTIUSD from the USO ETF (a proxy: "
                                                "its moves, not a barrel price).")] = False,
        rest_poll: Annotated[bool, typer.Option("--rest-poll", help="Poll the REST snapshots instead of "
                                                "streaming over WebSocket.")] = False,
        max_quotes: Annotated[int | None, typer.Option("--max-quotes", min=1, help="Stop after this many "
                                                       "quotes (tests, smoke checks).")] = None,
        seconds: Annotated[float | None, typer.Option("--seconds", min=0.1, help="Stop after this many "
                                                      "seconds.")] = None) -> None:
    """Massive (Polygon.io) quotes into the platform until Ctrl-C (needs PROPDESK_MASSIVE_API_KEY): the
    WebSocket streams by default (PROPDESK_MASSIVE_WS_URL overrides the host), REST polling with --rest-poll
    (PROPDESK_MASSIVE_BASE_URL overrides the API URL)."""

    def body() -> int:
        import os
        import signal
        import threading

        from .marketdata.feed import publish
        from .marketdata.providers.base import FeedStats
        from .marketdata.providers.massive import ENV_API_KEY, MassiveAuthError, MassiveProvider
        from .marketdata.providers.massive_stream import ENV_WS_URL, MassiveStreamProvider
        from .marketdata.recorder import CandleRecorder

        key = os.environ.get(ENV_API_KEY, "").strip()
        if not key:
            raise CliError(f"{ENV_API_KEY} is not set: the Massive feed needs an API key "
                           "(or use `propdesk feed simulate`, which needs none)")
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
                    provider = MassiveProvider(key, chosen, platform.clock, interval_s=interval,
                                               base_url=os.environ.get("PROPDESK_MASSIVE_BASE_URL") or None,
                                               catalogue=platform.catalogue, proxies=wti_proxy)
                else:
                    provider = MassiveStreamProvider(key, chosen, platform.clock,
                                                     url=os.environ.get(ENV_WS_URL, "").strip() or None,
                                                     catalogue=platform.catalogue, proxies=wti_proxy,
                                                     calendar=platform.sessions)
            except (MassiveAuthError, ValueError) as exc:
                raise CliError(str(exc)) from exc
            sys.stderr.write(f"feed massive ({'REST polling' if rest_poll else 'WebSocket streams'}): "
                             f"{len(provider.routes)} symbols routed"
                             + (f", not routable: {', '.join(provider.unroutable)}" if provider.unroutable else "")
                             + "; Ctrl-C to stop\n")
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
def feed_calibrate(data: Annotated[str | None, typer.Option("--data", help="The market data directory "
                                                            "(default: ../shared/data/market).")] = None,
                   as_json: JsonOpt = False) -> None:
    """Recompute marketdata/calibration.json (volatility and spreads) from the real data files."""

    def body() -> int:
        from pathlib import Path

        from .marketdata.calibration import DEFAULT_DATA_DIR, calibrate, markdown_table, write_calibration

        doc = calibrate(Path(data) if data else DEFAULT_DATA_DIR)
        path = write_calibration(doc)
        if as_json:
            emit_json({"path": str(path), "instruments": len(doc["instruments"])})
        else:
            _out(markdown_table(doc))
            _out(f"wrote {path}")
        return 0

    _run(body)


def main() -> None:
    """Console entry point (``propdesk``)."""
    app(prog_name="propdesk")


if __name__ == "__main__":  # pragma: no cover
    main()


# ------------------------------------------------------------------------------------------------ calendar
@calendar_app.command("import")
def calendar_import(file: Annotated[str, typer.Argument(help="A .csv (time,currency,impact,title[,country]) or "
                                                        ".ics file (docs: propdesk.marketdata.calendar).")],
                    as_json: JsonOpt = False) -> None:
    """Import economic calendar events from a CSV or ICS file (idempotent: re-importing updates in place)."""

    def body() -> int:
        from .marketdata.calendar import CalendarError, EconomicCalendar

        with open_platform(_settings()) as platform:
            try:
                result = EconomicCalendar(platform.db, platform.clock, platform.catalogue).import_file(file)
            except CalendarError as exc:
                raise CliError(str(exc)) from exc
        if as_json:
            emit_json({"file": file, **result.to_json()})
        else:
            _out(f"{file}: {result.inserted} new, {result.updated} updated, {result.unchanged} unchanged")
        return 0

    _run(body)


@calendar_app.command("sync")
def calendar_sync(days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days ahead from today (UTC).")]
                  = 7,
                  as_json: JsonOpt = False) -> None:
    """Fetch the Finnhub economic calendar for today .. today + DAYS (needs PROPDESK_FINNHUB_API_KEY;
    PROPDESK_FINNHUB_BASE_URL overrides the API URL)."""

    def body() -> int:
        from datetime import timedelta

        from .marketdata.calendar import CalendarError, EconomicCalendar

        settings = _settings()
        key = settings.finnhub_api_key
        if not key:
            raise CliError("calendar sync needs a Finnhub API key: set PROPDESK_FINNHUB_API_KEY")
        base_url = settings.finnhub_base_url
        with open_platform(settings) as platform:
            start = platform.clock.now().date()
            end = start + timedelta(days=days)
            try:
                result = EconomicCalendar(platform.db, platform.clock, platform.catalogue).sync_finnhub(
                    key, start, end, base_url=base_url)
            except CalendarError as exc:
                raise CliError(str(exc)) from exc
        if as_json:
            emit_json({"from": start, "to": end, **result.to_json()})
        else:
            _out(f"finnhub {start}..{end}: {result.inserted} new, {result.updated} updated, "
                 f"{result.unchanged} unchanged")
        return 0

    _run(body)
