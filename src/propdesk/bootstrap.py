"""The composition root: the one place that wires settings, adapters and services together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import logs
from .bus.bridge import PriceBus
from .bus.wiring import open_bus
from .clock import SystemClock
from .db.database import Database, assert_security_posture
from .db.embedded import EmbeddedPostgres
from .db.migrate import HEAD, upgrade
from .domain.clock import Clock
from .domain.instruments import DEFAULT_CATALOGUE, Catalogue
from .domain.quotes import PriceSource
from .engine.live import RiskEngine
from .execution.decisions import DecisionService
from .execution.external import ExternalTrades
from .execution.service import ExecutionService
from .execution.trading_state import TradingState
from .identity.auth import TokenStore
from .identity.users import IdentityStore
from .marketdata.live import LivePrices
from .marketdata.recorder import CandleRecorder
from .marketdata.sessions import SessionCalendar, default_calendar
from .marketdata.store import QuoteStore
from .marketdata.stream import TickStream
from .metrics import Metrics
from .notify.mail import Mailer
from .rulebooks.store import PlanStore
from .settings import Settings
from .web.ratelimit import PgRateLimits, RateLimiter, RateLimits


def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The admin URL to use: ``DATABASE_URL`` when set, else an embedded PostgreSQL in the data directory."""
    if settings.database_url:
        return settings.database_url, None
    server = EmbeddedPostgres(settings.data_dir.resolve() / "postgres")
    url = server.start()
    return _ensure_database(url, "propdesk"), server


def _ensure_database(server_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@dataclass
class Platform:
    """Everything a process needs, built once from settings."""

    settings: Settings
    admin_url: str
    db: Database
    clock: Clock
    catalogue: Catalogue
    quotes: QuoteStore
    metrics: Metrics
    execution: ExecutionService
    decisions: DecisionService
    tokens: TokenStore
    plans: PlanStore
    external: ExternalTrades
    identity: IdentityStore  # web users, sessions, password resets (identity/users.py)
    ratelimits: RateLimiter  # check(bucket, key) -> retry-after seconds or None (web/ratelimit.py)
    mailer: Mailer  # email outbox + SMTP/console delivery (notify/mail.py)
    embedded: EmbeddedPostgres | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # Trading sessions per symbol (market data issue 4); always-open under the demo setting.
    sessions: SessionCalendar = field(default_factory=default_calendar)
    # The candle recorder, when this process runs one (serve, demo, feeds): the market API reads its open bar.
    candles: CandleRecorder | None = None
    # The price bus this process is attached to (None with PROPDESK_BUS_ENABLED=false); /healthz reports it.
    bus: PriceBus | None = None

    @property
    def ticks(self) -> TickStream:
        """The in-process tick stream: every stored quote, after the execution core reacted to it."""
        return self.quotes.ticks

    def close(self) -> None:
        """Close what was attached to the platform (``extras["closers"]``, e.g. the API's pool), then the db."""
        for close in reversed(self.extras.get("closers", [])):
            close()
        self.db.close()


def open_platform(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate: bool = True,
    admin_url: str | None = None,
    configure_logs: bool = True,
) -> Platform:
    """Resolve (or start) the database, migrate it to head, and wire the services."""
    if configure_logs:
        logs.configure(settings.log_level, settings.log_json)
    embedded = None
    if admin_url is None:
        admin_url, embedded = resolve_database(settings)
    if migrate:
        upgrade(admin_url, settings.db_role_prefix)
    problems = assert_security_posture(admin_url, settings.db_role_prefix)
    if problems:
        # Refuse to run on a database where the app could write account truth or read across traders.
        raise RuntimeError("database security posture check failed: " + "; ".join(problems))
    db = Database(
        admin_url,
        settings.db_role_prefix,
        engine_url=settings.engine_database_url,
        app_url=settings.app_database_url,
        pool_size=settings.db_pool_size,
        open_app_pool=True,
    )  # the web layer reads as the app role, per user (reads/access.py)
    clock = clock or SystemClock()
    metrics = Metrics()
    quotes = QuoteStore(db)
    # --- price bus (bus/wiring.py): prices reach every process; the core's prices are stale while cut off ----
    bus, bus_server = None, None
    closers: list[Callable[[], object]] = []
    prices: PriceSource = quotes
    if settings.bus_enabled:
        try:
            bus, bus_server = open_bus(
                db,
                quotes,
                nats_url=settings.nats_url,
                data_dir=settings.data_dir,
                namespace=settings.bus_namespace,
                retain_s=settings.bus_retain_seconds,
            )
        except BaseException:
            db.close()
            raise
        closers = [bus_server.release] if bus_server is not None else []
        closers.append(bus.close)  # run in reverse by Platform.close: the connection first, then the server
        prices = LivePrices(quotes, bus.is_connected)
    # --- end price bus ---------------------------------------------------------------------------------------
    log = logs.get("propdesk.execution")
    # One session calendar for the gates and the market API; the demo setting treats every market as open.
    sessions = SessionCalendar(DEFAULT_CATALOGUE, always_open=True) if settings.demo_always_open else default_calendar()
    if settings.quote_band:
        # An absurd tick is held until confirmed (marketdata/band.py), before the bus carries it anywhere.
        from .marketdata.band import QuoteBand

        quotes.band = QuoteBand(DEFAULT_CATALOGUE, None if settings.demo_always_open else sessions)
    execution = ExecutionService(
        db,
        clock,
        DEFAULT_CATALOGUE,
        prices,
        metrics,
        log=lambda event, **kw: log.warning(event, **kw),
        sessions=sessions,
        trading_state=TradingState(db),
    )
    sync_instruments(db, DEFAULT_CATALOGUE)
    if settings.risk_engine == "inprocess":
        # The risk book of every live account in this process (engine/live.py): on_quote delegates to it. It
        # follows the outbox with its own cursor before judging each price, and judges at the process's prices.
        engine = RiskEngine.open(
            execution,
            db,
            DEFAULT_CATALOGUE,
            [q for q in (prices.latest(s) for s in DEFAULT_CATALOGUE.symbols()) if q is not None],
            # the pool shares the engine role's connections with the commands: leave them most of it
            workers=max(1, min(4, settings.db_pool_size // 3)),
            log=lambda event, **kw: log.warning(event, **kw),
            metrics=metrics,
            follow_outbox=True,
        )
        execution.risk_engine = engine
        closers.append(engine.close)  # closed first (closers run in reverse)
    plans = PlanStore(db, clock)
    plans.sync_presets()
    return Platform(
        settings,
        admin_url,
        db,
        clock,
        DEFAULT_CATALOGUE,
        quotes,
        metrics,
        execution,
        DecisionService(execution),
        TokenStore(
            db,
            clock,
            service_token=settings.service_token,
            admin_token=settings.admin_token,
            cron_secret=settings.cron_secret,
        ),
        plans,
        ExternalTrades(execution),
        IdentityStore(db, clock, settings),
        PgRateLimits.from_settings(db, clock, settings)
        if settings.rate_limit_store == "postgres"
        else RateLimits.from_settings(clock, settings),  # memory: one process only
        Mailer(db, clock, smtp_url=settings.smtp_url, sender=settings.smtp_from),
        embedded,
        extras={"closers": closers},
        sessions=sessions,
        bus=bus,
    )


def sync_instruments(db: Database, catalogue: Catalogue) -> None:
    """Upsert the shipped catalogue into the ``instruments`` table (read by the web layer and reports)."""
    with db.tx() as c:
        for i in catalogue:
            c.execute(
                "INSERT INTO instruments (symbol, asset_class, contract_size, tick_size, price_precision,"
                " quote_currency, base_currency, min_lot, lot_step, max_lot, enabled, description)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (symbol) DO UPDATE SET"
                " asset_class=EXCLUDED.asset_class, contract_size=EXCLUDED.contract_size,"
                " tick_size=EXCLUDED.tick_size, price_precision=EXCLUDED.price_precision,"
                " quote_currency=EXCLUDED.quote_currency, base_currency=EXCLUDED.base_currency,"
                " min_lot=EXCLUDED.min_lot, lot_step=EXCLUDED.lot_step, max_lot=EXCLUDED.max_lot,"
                " enabled=EXCLUDED.enabled, description=EXCLUDED.description",
                (
                    i.symbol,
                    i.asset_class.value,
                    i.contract_size,
                    i.tick_size,
                    i.price_precision,
                    i.quote_currency,
                    i.base_currency,
                    i.min_lot,
                    i.lot_step,
                    i.max_lot,
                    i.enabled,
                    i.description,
                ),
            )


__all__ = ["HEAD", "Platform", "open_platform", "resolve_database", "sync_instruments"]
