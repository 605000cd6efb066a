"""The platform kill switch (issue 9, "the risk desk"): per symbol and for the platform, active / reduce-only /
halted, audited, stored in PostgreSQL and enforced by every process within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.web_kit import ADMIN_TOKEN, open_test_platform

from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount
from propdesk.execution.trading_state import set_mode
from propdesk.web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
D = Decimal
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PATH = "/api/v1/admin/risk/trading-state"


@pytest.fixture
def second(db_url: str, clock: Any) -> Iterator[Any]:
    """A second platform over the same database (another process's view)."""
    p = open_test_platform(db_url, clock)
    yield p
    p.close()


def _account(platform: Any, *, long: str | None = None) -> uuid.UUID:
    for sym, bid, ask in (("EURUSD", "1.10000", "1.10010"), ("GBPUSD", "1.27000", "1.27010")):
        platform.quotes.put(Quote(sym, D(bid), D(ask), platform.clock.now()))
    row, _ = platform.execution.create_account(CreateAccount(owner_id=f"ks-{uuid.uuid4().hex[:6]}", start=True))
    if long is not None:
        assert platform.execution.submit_order(row["id"], OrderRequest("EURUSD", Side.BUY, D(long))).accepted
    return row["id"]  # type: ignore[no-any-return]


def _switch(platform: Any, mode: str, symbol: str | None = None, reason: str = "test") -> dict[str, Any]:
    with platform.db.tx() as c:
        out = set_mode(
            c,
            scope=symbol or "*",
            mode=mode,
            reason=reason,
            actor="test",
            at=platform.clock.now(),
            known_symbol=lambda s: platform.catalogue.get(s) is not None,
        )
    platform.execution.trading_state.invalidate()
    return out


def _code(outcome: Any) -> str | None:
    return outcome.rejection.code if outcome.rejection is not None else None


def test_halted_refuses_every_trader_order_and_resume_lifts_it(platform: Any) -> None:
    acc = _account(platform, long="0.10")
    _switch(platform, "halted")
    ex = platform.execution
    assert _code(ex.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10")))) == "trading_halted"
    assert _code(ex.submit_order(acc, OrderRequest("EURUSD", Side.SELL, D("0.05")))) == "trading_halted"
    _switch(platform, "active")
    assert ex.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10"))).accepted


def test_reduce_only_accepts_only_orders_that_reduce_an_open_position(platform: Any) -> None:
    acc = _account(platform, long="0.20")
    _switch(platform, "reduce_only")
    ex = platform.execution
    assert _code(ex.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10")))) == "trading_reduce_only"
    assert _code(ex.submit_order(acc, OrderRequest("GBPUSD", Side.SELL, D("0.10")))) == "trading_reduce_only"
    assert _code(ex.submit_order(acc, OrderRequest("EURUSD", Side.SELL, D("0.30")))) == "trading_reduce_only"  # flips
    assert ex.submit_order(acc, OrderRequest("EURUSD", Side.SELL, D("0.10"))).accepted


def test_a_symbol_switch_touches_only_that_symbol_and_the_stricter_mode_wins(platform: Any) -> None:
    acc = _account(platform)
    _switch(platform, "halted", "GBPUSD")
    ex = platform.execution
    assert _code(ex.submit_order(acc, OrderRequest("GBPUSD", Side.BUY, D("0.10")))) == "trading_halted"
    assert ex.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10"))).accepted
    _switch(platform, "reduce_only")  # the platform reduce-only, GBPUSD still halted
    out = ex.submit_order(acc, OrderRequest("GBPUSD", Side.BUY, D("0.10")))
    assert _code(out) == "trading_halted" and out.rejection.details["scope"] == "GBPUSD"
    out = ex.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.10")))
    assert _code(out) == "trading_reduce_only" and out.rejection.details["scope"] == "platform"


def test_every_change_is_audited(platform: Any) -> None:
    _switch(platform, "halted", reason="feed broken")
    _switch(platform, "active", reason="feed fixed")
    with platform.db.read() as c:
        rows = c.execute(
            "SELECT actor, reason, before, after FROM admin_audit WHERE action='trading_state' ORDER BY id"
        ).fetchall()
    assert [(r["reason"], r["before"]["mode"], r["after"]["mode"]) for r in rows] == [
        ("feed broken", "active", "halted"),
        ("feed fixed", "halted", "active"),
    ]


def test_a_switch_thrown_in_one_process_is_enforced_by_another_within_a_second(platform: Any, second: Any) -> None:
    acc = _account(platform)
    assert second.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01"))).accepted  # cache warm
    _switch(platform, "halted")
    deadline = time.monotonic() + 1.0
    while True:
        out = second.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01")))
        if _code(out) == "trading_halted":
            break
        assert time.monotonic() < deadline, "the second process still trades a second after the halt"
        time.sleep(0.05)


def test_the_admin_api_reads_and_sets_the_switch_with_a_reason(platform: Any, second: Any) -> None:
    acc = _account(platform)
    with TestClient(create_app(platform)) as client:
        assert client.get(PATH, headers=ADMIN).json()["platform"]["mode"] == "active"
        r = client.post(PATH, headers=ADMIN, json={"mode": "halted", "symbol": "EURUSD", "reason": "bad prints"})
        assert r.status_code == 200, r.text
        assert r.json()["before"] == "active" and r.json()["mode"] == "halted" and r.json()["scope"] == "EURUSD"
        doc = client.get(PATH, headers=ADMIN).json()
        assert (
            doc["symbols"] == [{**doc["symbols"][0], "scope": "EURUSD", "mode": "halted", "reason": "bad prints"}]
            and doc["platform"]["mode"] == "active"
        )
        assert client.post(PATH, headers=ADMIN, json={"mode": "halted"}).status_code == 422  # no reason
        assert client.post(PATH, headers=ADMIN, json={"mode": "x", "reason": "r"}).status_code == 422
        assert client.post(PATH, json={"mode": "halted", "reason": "r"}).status_code == 401
    time.sleep(second.execution.trading_state.ttl_s)
    assert _code(second.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01")))) == "trading_halted"


def test_the_cli_halts_and_resumes(platform: Any, db_url: str, tmp_path: Any) -> None:
    acc = _account(platform)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(tmp_path)})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "propdesk", "risk", *args], env=env, capture_output=True, text=True, timeout=120
        )

    r = cli("halt", "--symbol", "EURUSD", "--reason", "desk says so")
    assert r.returncode == 0, r.stderr
    assert "EURUSD: active -> halted" in r.stdout
    time.sleep(platform.execution.trading_state.ttl_s)
    assert _code(platform.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01")))) == "trading_halted"
    assert cli("halt", "--reason", "").returncode == 2
    r = cli("resume", "--symbol", "EURUSD", "--reason", "ok again")
    assert r.returncode == 0, r.stderr
    time.sleep(platform.execution.trading_state.ttl_s)
    assert platform.execution.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.01"))).accepted
