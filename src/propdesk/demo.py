"""``propdesk demo``: the whole platform in one process, with accounts whose history is real.

What runs: the database (embedded unless ``DATABASE_URL``), migrations, the API, the mark-to-market worker and
the DEMO PRICE DRIVER below (the calibrated simulated feed, in its clearly labelled weekend demo mode). Then
demo accounts are made through the execution core with real orders (nothing is written behind its back), on
the shipped plans: closed trades with profits and a loss, a gate rejection, flags, an open position with SL/TP,
resting limit and stop orders, a phase-1 pass, a failure, a day pause, an admin-paused account, and two AI-agent
audition accounts, one liquidated and one completed. Also a week of DEMO CALENDAR events (source ``demo``) around
now for the news rule and the admin panel's calendar. Setup is
idempotent: each account and its scripted history are created in one transaction keyed by an idempotency key,
so a second run reuses them. A service token and an admin token are created and printed with curl examples.

``--check`` (or ``PROPDESK_DEMO_CHECK=1``) exits after setup, once the API answered and every demo account
recomputes clean; the tests use it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from . import logs
from .domain.instruments import AssetClass, Instrument
from .domain.quotes import Quote

if TYPE_CHECKING:
    from .bootstrap import Platform
    from .marketdata.calendar import EconomicEvent, UpsertResult

# ---------------------------------------------------------------------------------------------------------
# DEMO PRICE DRIVER -- not market data. It primes a quote for every symbol, then lets the calibrated simulated
# feed (marketdata/providers/simulated.py, FX through the weekend in demo mode) move them; the demo scripts move
# prices on purpose with ``move``. It publishes exactly like a feed would:
# platform.quotes.put(quote) and then platform.execution.on_quote(quote), so SL/TP and resting orders fire.
# ---------------------------------------------------------------------------------------------------------

DEMO_START_PRICES: dict[str, str] = {
    "EURUSD": "1.08000",
    "GBPUSD": "1.27000",
    "USDJPY": "150.000",
    "AUDUSD": "0.66000",
    "USDCAD": "1.36000",
    "USDCHF": "0.88000",
    "NZDUSD": "0.61000",
    "EURGBP": "0.85000",
    "EURJPY": "162.000",
    "GBPJPY": "190.500",
    "XAUUSD": "2350.00",
    "XAGUSD": "28.000",
    "WTIUSD": "78.00",
    "US500": "5200.00",
    "US100": "18200.00",
    "US30": "39000.00",
    "AAPL": "190.00",
    "MSFT": "420.00",
    "NVDA": "880.00",
    "AMZN": "180.00",
    "TSLA": "175.00",
    "BTCUSD": "65000.00",
    "ETHUSD": "3400.00",
}
# The full spread of the first (priming) quotes, by asset class; the simulated feed takes over after them.
_SPREAD_BPS = {
    AssetClass.FOREX: 0.8,
    AssetClass.METAL: 1.5,
    AssetClass.ENERGY: 3.0,
    AssetClass.INDEX: 1.0,
    AssetClass.EQUITY: 2.0,
    AssetClass.CRYPTO: 3.0,
}
DEMO_SOURCE = "demo"
SIM_SOURCE = "simulated-demo"


class DemoPriceDriver:
    """DEMO PRICE DRIVER (not market data): the simulated feed over the catalogue, one quote per open symbol
    every ``interval_s``. Restarting continues from the last demo quotes stored in the database."""

    def __init__(self, platform: Platform, *, seed: int = 7, interval_s: float = 0.5, symbols: list[str] | None = None):
        self.platform = platform
        self.interval_s = interval_s
        self.symbols = [s for s in (symbols or list(DEMO_START_PRICES)) if platform.catalogue.get(s) is not None]
        self._seed = seed
        self._sim: Any = None
        self._mids: dict[str, float] = {}
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = logs.get("propdesk.demo.prices")
        self.published = 0

    def _inst(self, symbol: str) -> Instrument:
        inst = self.platform.catalogue.get(symbol)
        assert inst is not None
        return inst

    def quote_for(self, symbol: str, mid: float) -> Quote:
        """A quote around ``mid`` at the instrument's precision, with a class-typical spread (ask > bid)."""
        inst = self._inst(symbol)
        half = mid * _SPREAD_BPS[inst.asset_class] / 2 / 10_000
        q = Decimal(1).scaleb(-inst.price_precision)
        bid = Decimal(repr(mid - half)).quantize(q, rounding=ROUND_FLOOR)
        ask = Decimal(repr(mid + half)).quantize(q, rounding=ROUND_CEILING)
        if ask <= bid:
            ask = bid + inst.tick_size
        return Quote(symbol, bid, ask, self.platform.clock.now(), 0, DEMO_SOURCE)

    def _publish(self, symbol: str) -> Quote | None:
        return self._publish_quote(self.quote_for(symbol, self._mids[symbol]))

    def _publish_quote(self, quote: Quote) -> Quote | None:
        from .marketdata.feed import publish

        stored = publish(self.platform.quotes, self.platform.execution, quote, self._log)
        if stored is not None:
            self.published += 1
        return stored

    def prime(self) -> None:
        """Publish a first quote for every symbol (continuing from stored demo quotes if any)."""
        self.platform.quotes.refresh()
        stored = {q.symbol: q for q in self.platform.quotes.all()}
        with self._lock:
            for s in self.symbols:
                q = stored.get(s)
                self._mids[s] = (
                    float(q.mid)
                    if q is not None and q.source in (DEMO_SOURCE, SIM_SOURCE)
                    else float(DEMO_START_PRICES[s])
                )
                self._publish(s)
            # From here the calibrated simulated feed moves prices (FX runs through the weekend: demo mode).
            from .marketdata.providers.simulated import SimulatedProvider

            self._sim = SimulatedProvider(
                self.platform.catalogue,
                self.platform.clock,
                seed=self._seed,
                interval_s=self.interval_s,
                symbols=self.symbols,
                weekend_demo=True,
                always_open=self.platform.sessions.always_open,
                start_prices={s: Decimal(repr(m)) for s, m in self._mids.items()},
            )

    def step(self) -> None:
        with self._lock:
            if self._sim is None:
                return
            for q in self._sim.step(self.platform.clock.now()):
                self._mids[q.symbol] = float(q.mid)
                self._publish_quote(q)

    def move(self, symbol: str, pct: float) -> Quote:
        """Move ``symbol`` by ``pct`` percent at once (the demo script uses this to make P&L)."""
        with self._lock:
            self._mids[symbol] *= 1 + pct / 100
            if self._sim is not None:
                self._sim.shift(symbol, pct)
            stored = self._publish(symbol)
        if stored is None:
            raise RuntimeError(f"the quote store refused the demo quote for {symbol}")
        return stored

    def mid(self, symbol: str) -> Decimal:
        q = self.platform.quotes.latest(symbol)
        if q is None:
            raise RuntimeError(f"no quote for {symbol}")
        return q.mid

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.step()
            except Exception as exc:
                self._log.error("demo_price_step_failed", error=repr(exc))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="propdesk-demo-prices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(10)


# ---------------------------------------------------------------------------------------------------------
# Demo accounts: scripted histories through the execution core.
# ---------------------------------------------------------------------------------------------------------


class DemoSetupError(RuntimeError):
    """A scripted demo step did not do what the script expects (so the account's transaction rolls back)."""


class Script:
    """Commands for one demo account, all joining the account's setup transaction ``conn``."""

    def __init__(self, platform: Platform, driver: DemoPriceDriver, account_id: uuid.UUID, conn: Any):
        self.p, self.driver, self.account_id, self.conn = platform, driver, account_id, conn
        self.n = 0

    def _level(self, symbol: str, pct: float) -> Decimal:
        inst = self.p.catalogue.get(symbol)
        assert inst is not None
        px = self.driver.mid(symbol) * (1 + Decimal(repr(pct)) / 100)
        return px.quantize(Decimal(1).scaleb(-inst.price_precision))

    def order(
        self,
        symbol: str,
        side: str,
        qty: str,
        *,
        kind: str = "market",
        at_pct: float | None = None,
        sl_pct: float | None = None,
        tp_pct: float | None = None,
        expect_reject: str | None = None,
    ) -> Any:
        from .domain.orders import OrderRequest, OrderType, Side

        self.n += 1
        otype = OrderType(kind)
        level = self._level(symbol, at_pct) if at_pct is not None else None
        req = OrderRequest(
            symbol,
            Side(side),
            Decimal(qty),
            otype,
            limit_price=level if otype is OrderType.LIMIT else None,
            stop_price=level if otype is OrderType.STOP else None,
            stop_loss=self._level(symbol, sl_pct) if sl_pct is not None else None,
            take_profit=self._level(symbol, tp_pct) if tp_pct is not None else None,
            client_order_id=f"demo-{self.n}",
        )
        out = self.p.execution.submit_order(self.account_id, req, conn=self.conn)
        got = out.rejection.code if out.rejection is not None else None
        if got != expect_reject:
            raise DemoSetupError(
                f"demo order {req} on {self.account_id}: expected "
                f"{expect_reject or 'acceptance'}, got {got or 'acceptance'}"
                f"{': ' + out.rejection.message if out.rejection else ''}"
            )
        return out

    def close(self, symbol: str, qty: str | None = None) -> Any:
        out = self.p.execution.close_position(self.account_id, symbol, Decimal(qty) if qty else None, conn=self.conn)
        if out.rejection is not None:
            raise DemoSetupError(f"demo close of {symbol} was rejected: {out.rejection.message}")
        return out

    def move(self, symbol: str, pct: float) -> None:
        self.driver.move(symbol, pct)

    def trigger(self, name: str, reason: str, actor: str) -> None:
        from .domain.lifecycle import Trigger

        self.p.execution.apply_trigger(self.account_id, Trigger(name), actor=actor, reason=reason, conn=self.conn)


@dataclass(frozen=True)
class DemoAccount:
    key: str
    owner_id: str
    mode: str
    phase: str
    clone_id: str | None
    story: str
    script: Callable[[Script], None]
    plan: str | None = None  # "plan_id@offer_id": a challenge account governed by that plan's rulebook
    user: str | None = None  # the demo web user owning it (``<user>@demo.propdesk.test``); None: a machine owner


def _alice(s: Script) -> None:
    s.order("EURUSD", "buy", "0.30")
    s.move("EURUSD", 0.5)
    s.close("EURUSD")  # a winning trade
    s.order("XAUUSD", "sell", "0.15")
    s.move("XAUUSD", -0.8)
    s.close("XAUUSD")  # a winning short
    s.order("AAPL", "buy", "60")
    s.move("AAPL", -1.2)
    s.close("AAPL")  # a losing trade, held seconds: a tick-scalping flag
    s.order("BTCUSD", "buy", "20.000", expect_reject="notional_exceeded")  # a gate says no, with numbers
    s.order("GBPUSD", "buy", "0.20", sl_pct=-1.5, tp_pct=2.0)  # open, protected
    s.order("XAUUSD", "buy", "0.10", kind="limit", at_pct=-3.0, sl_pct=-5.0, tp_pct=1.0)  # resting limit


def _bob(s: Script) -> None:
    s.order("BTCUSD", "buy", "0.300")
    s.move("BTCUSD", 1.5)
    s.close("BTCUSD", "0.100")  # partial close, profit realized
    s.order("USDJPY", "buy", "0.25", sl_pct=-1.0, tp_pct=1.5)  # P&L in JPY, converted to USD
    s.order("US500", "sell", "2.0", kind="stop", at_pct=-2.5)  # resting stop
    s.trigger("pause", "demo: held for a risk-desk review", "admin:demo")


def _carol(s: Script) -> None:
    s.order("XAUUSD", "buy", "1.00", sl_pct=-2.0)
    s.move("XAUUSD", 1.0)
    s.close("XAUUSD")  # +1% on gold: the 3% target, phase 1 passed


def _dave(s: Script) -> None:
    s.order("XAUUSD", "buy", "0.50")
    s.move("XAUUSD", -2.5)
    s.close("XAUUSD")  # a loss beyond the 5% daily limit: failed


def _erin(s: Script) -> None:
    s.order("US500", "buy", "5.0")
    s.move("US500", -4.5)
    s.close("US500")  # beyond the soft daily loss: paused for the day


def _alpha(s: Script) -> None:
    s.order("ETHUSD", "buy", "5.00")
    s.move("ETHUSD", 1.0)
    s.close("ETHUSD", "2.00")
    s.order("US500", "buy", "3.0")
    s.trigger("liquidate", "demo: audition stopped by the operator", "service:demo")


def _beta(s: Script) -> None:
    s.order("NVDA", "sell", "20")
    s.move("NVDA", -2.0)
    s.close("NVDA")
    s.trigger("complete", "demo: audition finished", "service:demo")


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(
        "trader-alice",
        "trader-alice",
        "challenge",
        "phase_1",
        None,
        "classic 2-step: 3 closed trades (2 wins, 1 loss, a scalping flag), 1 rejection, open GBPUSD with "
        "SL/TP, resting limit",
        _alice,
        "classic-2step@100k",
        user="alice",
    ),
    DemoAccount(
        "trader-bob",
        "trader-bob",
        "challenge",
        "phase_1",
        None,
        "1-step: paused by the risk desk; open BTCUSD and USDJPY, resting stop on US500",
        _bob,
        "one-step-eod@100k",
        user="bob",
    ),
    DemoAccount(
        "trader-carol",
        "trader-carol",
        "challenge",
        "phase_1",
        None,
        "express 2-step: phase 1 passed on a gold trade; her phase 2 account is active",
        _carol,
        "express-2step@50k",
        user="carol",
    ),
    DemoAccount(
        "trader-dave",
        "trader-dave",
        "challenge",
        "phase_1",
        None,
        "classic 2-step: failed, a gold loss beyond the 5% daily limit",
        _dave,
        "classic-2step@25k",
        user="dave",
    ),
    DemoAccount(
        "trader-erin",
        "trader-erin",
        "challenge",
        "phase_1",
        None,
        "futures combine: paused for the day by the soft daily loss",
        _erin,
        "futures-trailing@50k",
        user="erin",
    ),
    DemoAccount(
        "agent-alpha",
        "agent:demo-alpha",
        "audition",
        "audition",
        "demo-clone-1",
        "AI audition, liquidated: ETHUSD and US500 closed by the liquidation",
        _alpha,
    ),
    DemoAccount(
        "agent-beta",
        "agent:demo-beta",
        "audition",
        "audition",
        "demo-clone-1",
        "AI audition, completed: one winning NVDA short",
        _beta,
    ),
)


def _plan_account(platform: Platform, spec: DemoAccount) -> dict[str, Any]:
    """The rulebook, policy and phase of a plan-based demo account (the firm's demo execution envelope)."""
    from .domain.policy import ExecutionPolicy

    assert spec.plan is not None
    plan_id, offer_id = spec.plan.split("@")
    base = platform.plans.get(plan_id)
    book = base.for_offer(offer_id)
    size = book.starting_balance
    policy = ExecutionPolicy(
        starting_balance=size,
        currency=book.currency,
        max_notional=size * 10,
        max_leverage=Decimal(30),
        max_position_equity_pct=Decimal(1000),
    )
    return {
        "rulebook": book.to_json(),
        "rulebook_id": base.id,
        "rulebook_version": base.version,
        "offer_id": offer_id,
        "phase": book.phases[0].id,
        "policy": policy,
    }


# Demo web users: one per demo trader (owning that trader's accounts), plus an admin. Their time zones differ so
# the rule panel's "next reset in your zone" shows something other than the firm's.
DEMO_EMAIL_DOMAIN = "demo.propdesk.test"
DEMO_TIMEZONES = {
    "alice": "Europe/London",
    "bob": "America/New_York",
    "carol": "Europe/Prague",
    "dave": "Asia/Singapore",
    "erin": "America/Chicago",
    "admin": "UTC",
}


@dataclass(frozen=True)
class DemoLogin:
    name: str
    email: str
    password: str
    role: str
    user_id: uuid.UUID


def demo_email(name: str) -> str:
    return f"{name}@{DEMO_EMAIL_DOMAIN}"


def setup_demo_users(platform: Platform) -> dict[str, DemoLogin]:
    """Create (or find) the demo users through the identity store. Every run gives each a fresh random password
    (printed on the console): demo users exist only in demo databases, and a rerun must print logins that work."""
    import secrets

    from .identity.users import UserRole

    out: dict[str, DemoLogin] = {}
    names = [spec.user for spec in DEMO_ACCOUNTS if spec.user] + ["admin"]
    for name in dict.fromkeys(names):
        assert name is not None
        role = UserRole.ADMIN if name == "admin" else UserRole.TRADER
        password = f"Demo-{secrets.token_urlsafe(12)}"
        user = platform.identity.find_user(demo_email(name))
        if user is None:
            user = platform.identity.create_user(
                demo_email(name), password, role=role, display_name=name.capitalize(), timezone=DEMO_TIMEZONES[name]
            )
        else:
            with platform.db.tx() as c:
                c.execute(
                    "UPDATE users SET password_hash=%s, updated_at=%s WHERE id=%s",
                    (platform.identity.hasher.hash(password), platform.clock.now(), user.id),
                )
        out[name] = DemoLogin(name, user.email, password, role.value, user.id)
    return out


def setup_demo_accounts(
    platform: Platform, driver: DemoPriceDriver, users: dict[str, DemoLogin] | None = None
) -> list[dict[str, Any]]:
    """Create (or find) every demo account; each is created with its whole scripted history in one transaction.
    A trader's accounts are owned by that trader's demo user (``owner_id`` = the user's id)."""
    from .domain.lifecycle import Mode
    from .execution.service import CreateAccount

    users = users if users is not None else setup_demo_users(platform)
    out = []
    for spec in DEMO_ACCOUNTS:
        extra: dict[str, Any] = _plan_account(platform, spec) if spec.plan else {"phase": spec.phase}
        owner = str(users[spec.user].user_id) if spec.user else spec.owner_id
        with platform.db.tx() as c:
            row, created = platform.execution.create_account(
                CreateAccount(
                    owner_id=owner,
                    mode=Mode(spec.mode),
                    clone_id=spec.clone_id,
                    idempotency_key=f"demo:{spec.key}:v3",
                    start=True,
                    **extra,
                ),
                conn=c,
            )
            if created:
                spec.script(Script(platform, driver, row["id"], c))
        snap = platform.execution.snapshot(row["id"])
        out.append(
            {
                "key": spec.key,
                "id": row["id"],
                "owner_id": owner,
                "mode": spec.mode,
                "user": spec.user,
                "plan": spec.plan,
                "status": snap["status"],
                "created": created,
                "story": spec.story,
                "equity": snap["balance"]["equity"],
                "realized_pnl": snap["balance"]["realized_pnl"],
                "positions": len(snap["positions"]),
                "open_orders": len(snap["open_orders"]),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# DEMO CALENDAR -- not market data: a realistic week of economic events around the demo's now, so the news rule
# and the admin panel's calendar have something to show. Times are offsets from the demo's now floored to the
# hour, so a restart within the hour changes nothing, and a later restart moves the same rows (stable external
# ids, ``EconomicCalendar.upsert``) instead of adding new ones. "us-ism-services" lands 30-90 minutes after now:
# a high-impact USD event whose blackout is about to start on every USD symbol.
# ---------------------------------------------------------------------------------------------------------

# (external id, hours from the floored now, currency, country, impact, title)
DEMO_CALENDAR: tuple[tuple[str, float, str, str, str, str], ...] = (
    ("au-employment", -20, "AUD", "AU", "high", "Employment Change"),
    ("jp-tankan", -14.5, "JPY", "JP", "medium", "Tankan Large Manufacturers Index"),
    ("de-ifo", -6, "EUR", "DE", "medium", "Ifo Business Climate"),
    ("us-jobless-claims", -2.5, "USD", "US", "low", "Initial Jobless Claims"),
    ("us-ism-services", 1.5, "USD", "US", "high", "ISM Services PMI"),
    ("ca-cpi", 5, "CAD", "CA", "medium", "CPI m/m"),
    ("nz-gdt", 9, "NZD", "NZ", "low", "GDT Price Index"),
    ("us-cpi", 22.5, "USD", "US", "high", "CPI m/m"),
    ("gb-boe", 27, "GBP", "GB", "high", "BoE Official Bank Rate"),
    ("eu-ecb", 46, "EUR", "EU", "high", "ECB Main Refinancing Rate"),
    ("eu-ecb-press", 46.75, "EUR", "EU", "high", "ECB Press Conference"),
    ("ch-snb", 50, "CHF", "CH", "medium", "SNB Policy Rate"),
    ("us-fomc", 72, "USD", "US", "high", "FOMC Statement and Federal Funds Rate"),
    ("us-fomc-press", 72.5, "USD", "US", "high", "FOMC Press Conference"),
    ("jp-boj", 92, "JPY", "JP", "high", "BoJ Policy Rate"),
    ("au-rba-minutes", 100, "AUD", "AU", "low", "RBA Meeting Minutes"),
    ("us-nfp", 118.5, "USD", "US", "high", "Non-Farm Employment Change"),
    ("us-unemployment", 118.5, "USD", "US", "high", "Unemployment Rate"),
    ("ca-employment", 118.5, "CAD", "CA", "high", "Employment Change"),
    ("gb-gdp", 140, "GBP", "GB", "medium", "GDP m/m"),
    ("us-retail-sales", 166.5, "USD", "US", "medium", "Retail Sales m/m"),
)


def demo_calendar_events(now: datetime) -> list[EconomicEvent]:
    """The demo week as calendar events (source ``demo``, external ids ``demo:<name>``) around ``now``."""
    from .marketdata.calendar import EconomicEvent

    base = now.replace(minute=0, second=0, microsecond=0)
    return [
        EconomicEvent(base + timedelta(hours=hours), currency, impact, title, country, DEMO_SOURCE, f"demo:{name}")
        for name, hours, currency, country, impact, title in DEMO_CALENDAR
    ]


def seed_demo_calendar(platform: Platform) -> UpsertResult:
    """Upsert the demo week into ``economic_events`` (idempotent); returns the ``UpsertResult``."""
    from .marketdata.calendar import EconomicCalendar

    calendar = EconomicCalendar(platform.db, platform.clock, platform.catalogue)
    return calendar.upsert(demo_calendar_events(platform.clock.now()))


# ---------------------------------------------------------------------------------------------------------
# The API in a thread
# ---------------------------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one), bound before uvicorn starts so a taken port
    fails at once with a clear error and the real port is known. It listens at once: a client that connects after
    the ``serving`` log line waits in the backlog until uvicorn accepts, instead of being refused."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    return sock


def url_of(sock: Any) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ApiServer:
    """uvicorn in a background thread on a socket bound here (so a taken port fails at once, and port 0 works)."""

    def __init__(self, app: Any, host: str, port: int, *, sock: Any = None):
        import uvicorn

        self.sock = sock if sock is not None else bind_socket(host, port)
        self.url = url_of(self.sock)
        # timeout_graceful_shutdown: live streams (SSE) never end by themselves; cancel them 5 s into shutdown.
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, lifespan="on", access_log=False, timeout_graceful_shutdown=5)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="propdesk-api", daemon=True
        )

    def start(self, timeout_s: float = 30.0) -> None:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the API server on {self.url} failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API server on {self.url} did not start within {timeout_s:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------
# The demo itself
# ---------------------------------------------------------------------------------------------------------


def _banner(
    url: str,
    accounts: list[dict[str, Any]],
    service_token: str,
    admin_token: str,
    users: dict[str, DemoLogin] | None = None,
) -> str:
    by_key = {a["key"]: a for a in accounts}
    alice, bob = by_key["trader-alice"]["id"], by_key["trader-bob"]["id"]
    lines = [
        "",
        "PropDesk demo is running",
        f"  web        {url}/          (log in at {url}/login)",
        f"  API        {url}   (OpenAPI: {url}/openapi.json)",
        f"  health     {url}/healthz      metrics: {url}/metrics",
        "  prices     DEMO PRICE DRIVER: the calibrated simulated feed, FX through the weekend (demo mode);"
        " not market data",
        "",
    ]
    if users:
        admin, trader = users["admin"], users["alice"]
        lines += [
            "Logins (demo users; fresh passwords on every run):",
            f"  admin      {admin.email:<30} {admin.password}   -> {url}/admin",
            f"  trader     {trader.email:<30} {trader.password}   -> {url}/app",
        ]
        lines += [
            f"  {'trader':<10} {u.email:<30} {u.password}" for n, u in users.items() if n not in ("admin", "alice")
        ]
        lines.append("")
    lines += [
        "Tokens (shown once; they are stored hashed):",
        f"  service    {service_token}",
        f"  admin      {admin_token}",
        "",
        "Demo accounts:",
    ]
    for a in accounts:
        lines.append(
            f"  {a['key']:<13} {a['id']}  {a['status']:<10} equity {a['equity']}  "
            f"positions {a['positions']}  open orders {a['open_orders']}"
        )
        lines.append(f"  {'':<13} {a['story']}")
    lines += [
        "",
        "Try:",
        f"  export PD={url} SVC={service_token} ADM={admin_token}",
        "  curl -s $PD/healthz",
        f'  curl -s -H "Authorization: Bearer $SVC" $PD/api/v1/prop/accounts/{alice}/snapshot',
        f'  curl -s -H "Authorization: Bearer $SVC" $PD/api/v1/prop/accounts/{alice}/ledger',
        f"  curl -s -X POST -H \"Authorization: Bearer $SVC\" -H 'Content-Type: application/json'"
        f' -H "Idempotency-Key: $(uuidgen 2>/dev/null || date +%s%N)"'
        f" $PD/api/v1/prop/accounts/{alice}/decision-actions"
        ' -d \'{"decision_run_id": "run-1", "actions": [{"decision_action_id": "a1", "action": "open",'
        ' "symbol": "EURUSD", "side": "buy", "quantity": "0.10"}]}\'',
        f"  curl -s -X POST -H \"Authorization: Bearer $ADM\" -H 'Content-Type: application/json'"
        f' $PD/api/v1/admin/prop/accounts/{bob}/resume -d \'{{"reason": "review done"}}\'',
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run_demo(
    platform: Platform,
    create_app: Callable[[Any], Any],
    *,
    host: str,
    port: int,
    check: bool = False,
    seed: int = 7,
    out: Callable[[str], None] = print,
    sock: Any = None,
) -> int:
    """Run the demo on an open platform until ``stop`` (Ctrl-C), or just set up and check with ``check``.

    ``sock``: a socket already bound (``propdesk demo`` binds first, so the public URL is the real address).

    Returns the process exit code.
    """
    import signal

    from .identity.auth import Role
    from .workers.calendar_sync import start_if_configured as start_calendar_sync
    from .workers.mark_to_market import MarkToMarketWorker
    from .workers.reconcile import verify

    log = logs.get("propdesk.demo")
    stop = threading.Event()
    driver = DemoPriceDriver(platform, seed=seed)
    worker = MarkToMarketWorker(platform)
    api = ApiServer(create_app(platform), host, port, sock=sock)
    started: list[Callable[[], None]] = []
    try:
        api.start()
        started.append(api.stop)
        # Minute candles for the charts, recorded from the tick stream (market data issue 4).
        from .marketdata.recorder import CandleRecorder

        platform.candles = CandleRecorder(platform.db, platform.clock, platform.ticks, log=log).start()
        started.append(platform.candles.stop)
        driver.prime()
        driver.start()
        started.append(driver.stop)
        worker.start()
        started.append(worker.stop)
        # With a Finnhub key the real calendar is synced too (next to the demo's own events); logs which.
        calendar_worker = start_calendar_sync(platform)
        if calendar_worker is not None:
            started.append(calendar_worker.stop)
        users = setup_demo_users(platform)
        accounts = setup_demo_accounts(platform, driver, users)
        # After the accounts: their scripted history predates the demo week's news blackouts.
        calendar = seed_demo_calendar(platform)
        service_token, _ = platform.tokens.create(Role.SERVICE, "demo service token")
        admin_token, _ = platform.tokens.create(Role.ADMIN, "demo admin token")
        log.info(
            "demo_ready",
            url=api.url,
            accounts=[str(a["id"]) for a in accounts],
            created=sum(1 for a in accounts if a["created"]),
        )
        out(_banner(platform.settings.public_url.rstrip("/"), accounts, service_token, admin_token, users))
        out(
            f"  calendar   DEMO CALENDAR: {len(DEMO_CALENDAR)} economic events this week (source 'demo'; "
            f"{calendar.inserted} new, {calendar.updated} moved); a high-impact USD event within 90 minutes"
            f" -> {api.url}/admin/calendar"
        )
        if platform.sessions.always_open:
            out(
                "  sessions   DEMO MODE (PROPDESK_DEMO_ALWAYS_OPEN): every market is treated as open at any hour;"
                " real accounts never run like this"
            )
        if check:
            import httpx

            alice = accounts[0]["id"]
            health = httpx.get(f"{api.url}/healthz", timeout=10)
            snap = httpx.get(
                f"{api.url}/api/v1/prop/accounts/{alice}/snapshot",
                timeout=10,
                headers={"Authorization": f"Bearer {service_token}"},
            )
            # A demo trader's session sees exactly that trader's accounts (the app role, row-level security).
            alice_user = users["alice"]
            web_user = platform.identity.get_user(alice_user.user_id)
            assert web_user is not None
            session = platform.identity.start_session(web_user, ip="127.0.0.1", user_agent="propdesk demo --check")
            mine = httpx.get(f"{api.url}/api/v1/accounts", timeout=10, cookies={platform.identity.cookie_name: session})
            platform.identity.end_session(session)
            # The login form as a browser on the printed URL sends it: JSON with that page's Origin.
            login = httpx.post(
                f"{api.url}/api/v1/auth/login",
                json={"email": alice_user.email, "password": alice_user.password},
                headers={"Origin": platform.settings.public_url.rstrip("/")},
                timeout=10,
            )
            expected = sorted(str(a["id"]) for a in accounts if a["owner_id"] == str(alice_user.user_id))
            seen = sorted(a["id"] for a in mine.json().get("items", [])) if mine.status_code == 200 else []
            report = verify(platform.execution, [a["id"] for a in accounts])
            out(
                f"\ndemo check: GET /healthz -> {health.status_code}; GET snapshot with the service token -> "
                f"{snap.status_code}; GET /api/v1/accounts as {alice_user.email} -> {mine.status_code} "
                f"({len(seen)} accounts); login form POST from {platform.settings.public_url} -> {login.status_code};"
                f" {report.checked} accounts recomputed, {len(report.mismatched)} mismatched, "
                f"{len(report.errors)} errors"
            )
            if not report.clean or snap.status_code != 200 or seen != expected or login.status_code != 200:
                out(f"demo check FAILED: {report.to_json()}")
                return 1
            return 0
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        out("\nstopping the demo ...")
        return 0
    finally:
        for fn in reversed(started):
            try:
                fn()
            except Exception as exc:
                log.error("demo_stop_failed", error=repr(exc))
