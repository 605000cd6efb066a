"""End-to-end fixtures: a Platform over the per-test database, the API over it, and HTTP clients.

``client`` carries the service token, ``admin`` the admin token, ``anon`` nothing. ``desk`` wraps the calls most
tests repeat (create an account, post a quote, count ledger rows) so the tests read like requirements.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its test client; httpx works and is what the project ships.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SERVICE_TOKEN = "svc_e2e_token_0123456789abcdef"
ADMIN_TOKEN = "adm_e2e_token_0123456789abcdef"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PREFIX = "/api/v1/prop"

# Default quotes: EURUSD 1.10000/1.10010, XAUUSD 2000.00/2000.50, AAPL 200.00/200.02.
DEFAULT_QUOTES = {"EURUSD": ("1.10000", "1.10010"), "XAUUSD": ("2000.00", "2000.50"), "AAPL": ("200.00", "200.02")}


def make_platform(db_url: str, clock: Any, **overrides: Any) -> Any:
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    values: dict[str, Any] = {
        "database_url": db_url,
        "db_role_prefix": "pdtest",
        "service_token": SERVICE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "db_pool_size": 12,
    }
    values.update(overrides)
    settings = Settings(**values)
    return open_platform(settings, clock=clock, migrate=False, admin_url=db_url, configure_logs=False)


@pytest.fixture
def platform_factory(db_url: str, clock: Any) -> Iterator[Any]:
    """Build extra platforms over the test database (closed at teardown)."""
    made: list[Any] = []

    def factory(**overrides: Any) -> Any:
        made.append(make_platform(db_url, clock, **overrides))
        return made[-1]

    yield factory
    for p in made:
        p.close()


@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    p = make_platform(db_url, clock)
    yield p
    p.close()


@pytest.fixture
def app(platform: Any) -> Any:
    from propdesk.web.app import create_app

    return create_app(platform)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers=SERVICE) as c:
        yield c


@pytest.fixture
def admin(app: Any, client: TestClient) -> TestClient:
    # Not entered: the app's lifespan belongs to ``client``.
    return TestClient(app, headers=ADMIN)


@pytest.fixture
def anon(app: Any, client: TestClient) -> TestClient:
    return TestClient(app)


class Desk:
    """Helpers over the HTTP API (and a few direct reads to prove what changed)."""

    def __init__(self, client: TestClient, platform: Any, clock: Any):
        self.client = client
        self.platform = platform
        self.clock = clock

    def create_account(self, *, start: bool = True, **body: Any) -> dict[str, Any]:
        payload = {
            "owner_id": body.pop("owner_id", "trader-1"),
            "mode": body.pop("mode", "audition"),
            "start": start,
            **body,
        }
        r = self.client.post(f"{PREFIX}/accounts", json=payload)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def quote(self, symbol: str, bid: str, ask: str, *, ts: Any = None, **extra: Any) -> dict[str, Any]:
        when = ts or self.clock.now()
        r = self.client.post(
            f"{PREFIX}/quotes", json={"symbol": symbol, "bid": bid, "ask": ask, "ts": when.isoformat(), **extra}
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def default_quotes(self) -> None:
        r = self.client.post(
            f"{PREFIX}/quotes",
            json=[
                {"symbol": s, "bid": b, "ask": a, "ts": self.clock.now().isoformat()}
                for s, (b, a) in DEFAULT_QUOTES.items()
            ],
        )
        assert r.status_code == 200, r.text

    def tick(self, seconds: float = 1) -> None:
        self.clock.advance(seconds)

    def order(self, account_id: str, **body: Any) -> Any:
        payload = {"symbol": "EURUSD", "side": "buy", "quantity": "0.10", **body}
        return self.client.post(f"{PREFIX}/accounts/{account_id}/orders", json=payload)

    def count(self, table: str, account_id: str) -> int:
        with self.platform.db.read() as c:
            row = c.execute(
                f"SELECT count(*) AS n FROM {table} WHERE account_id=%s", (uuid.UUID(account_id),)
            ).fetchone()
        return int(row["n"])

    def ledger_count(self, account_id: str) -> int:
        return self.count("ledger", account_id)

    def balance(self, account_id: str) -> dict[str, Any]:
        r = self.client.get(f"{PREFIX}/accounts/{account_id}")
        assert r.status_code == 200, r.text
        return r.json()["balance"]  # type: ignore[no-any-return]

    def state(self, account_id: str) -> tuple[Any, ...]:
        """Everything an order could change: ledger, orders, fills, positions, balances."""
        with self.platform.db.read() as c:
            aid = uuid.UUID(account_id)
            bal = c.execute("SELECT cash, equity, ledger_seq FROM balances WHERE account_id=%s", (aid,)).fetchone()
            counts = [
                c.execute(f"SELECT count(*) AS n FROM {t} WHERE account_id=%s", (aid,)).fetchone()["n"]
                for t in ("ledger", "orders", "fills", "positions", "decision_actions")
            ]
            status = c.execute("SELECT status FROM accounts WHERE id=%s", (aid,)).fetchone()["status"]
        return (status, bal["cash"], bal["equity"], bal["ledger_seq"], *counts)

    def heartbeat(self, age: timedelta) -> None:
        with self.platform.db.tx() as c:
            c.execute(
                "INSERT INTO worker_heartbeats (name, beat_at, details) VALUES ('mark-to-market', %s, '{}')"
                " ON CONFLICT (name) DO UPDATE SET beat_at = EXCLUDED.beat_at",
                (self.clock.now() - age,),
            )


@pytest.fixture
def desk(client: TestClient, platform: Any, clock: Any) -> Desk:
    return Desk(client, platform, clock)


@pytest.fixture
def account(desk: Desk) -> dict[str, Any]:
    """An active audition account with default quotes set."""
    desk.default_quotes()
    return desk.create_account()
