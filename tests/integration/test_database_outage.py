"""A PostgreSQL restart costs no request, and an outage is a prompt 503 with Retry-After, never a hang or a 500.

These tests run against a PostgreSQL of their own (restarting the session's shared server would disturb every
other test), built once for the module.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.conftest import _with_db
from tests.e2e.conftest import PREFIX, SERVICE, make_platform

from propdesk.db import migrate
from propdesk.db.embedded import EmbeddedPostgres

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("outage-pg")))
    url = server.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE outage")
    migrate.upgrade(_with_db(url, "outage"), "pdtest")
    yield server
    server.destroy()


@pytest.fixture
def served(own_server: EmbeddedPostgres, clock: Any) -> Iterator[tuple[Any, TestClient]]:
    url = _with_db(own_server.start(), "outage")
    platform = make_platform(url, clock, db_pool_size=4)
    from propdesk.web.app import create_app

    with TestClient(create_app(platform), headers=SERVICE) as client:
        yield platform, client
    platform.close()


def _an_account_path(client: TestClient) -> str:
    r = client.post(f"{PREFIX}/accounts", json={"owner_id": f"reader-{uuid.uuid4().hex[:8]}", "mode": "audition"})
    assert r.status_code == 201, r.text
    return f"{PREFIX}/accounts/{r.json()['id']}"


def _terminate_every_backend(admin_url: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_after_every_connection_is_killed_the_next_fifty_requests_all_succeed(
    served: tuple[Any, TestClient], own_server: EmbeddedPostgres
) -> None:
    platform, client = served
    read = _an_account_path(client)
    for _ in range(8):  # warm every pool: the connections the restart will kill
        assert client.get(read).status_code == 200
        assert client.get("/healthz").status_code in (200,)
    killed = _terminate_every_backend(own_server.url)
    assert killed >= 2

    statuses = []
    for i in range(50):
        if i % 2:
            r = client.get(read)
        else:
            r = client.post(
                f"{PREFIX}/accounts",
                json={"owner_id": f"t{i}", "mode": "audition"},
                headers={"Idempotency-Key": f"restart-{i}"},
            )
        statuses.append(r.status_code)

    assert [s for s in statuses if s >= 400] == []
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts WHERE owner_id ~ '^t[0-9]+$'").fetchone()["n"] == 25


def test_an_outage_is_a_503_with_retry_after_within_a_second_and_recovers_by_itself(
    served: tuple[Any, TestClient], own_server: EmbeddedPostgres
) -> None:
    _platform, client = served
    read = _an_account_path(client)
    assert client.get(read).status_code == 200
    own_server.stop()
    try:
        for path in (read, f"{PREFIX}/accounts/{uuid.uuid4()}/ledger"):
            started = time.monotonic()
            r = client.get(path)
            elapsed = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"].isdigit()
            assert r.json()["error"]["code"] == "database_unavailable"
            assert elapsed < 1.0, elapsed
        r = client.post(
            f"{PREFIX}/accounts",
            json={"owner_id": "down", "mode": "audition"},
            headers={"Idempotency-Key": "during-outage"},
        )
        assert r.status_code == 503
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["checks"]["database"]["up"] is False
    finally:
        own_server.start()

    deadline = time.monotonic() + 10
    while client.get(read).status_code != 200:
        assert time.monotonic() < deadline, "the platform did not recover after the database came back"
        time.sleep(0.2)
    assert client.get("/healthz").json()["checks"]["database"]["ok"] is True
    r = client.post(
        f"{PREFIX}/accounts",
        json={"owner_id": "down", "mode": "audition"},
        headers={"Idempotency-Key": "during-outage"},
    )
    assert r.status_code == 201, r.text


def test_a_saturated_pool_is_told_apart_from_an_outage(own_server: EmbeddedPostgres) -> None:
    from psycopg_pool import ConnectionPool

    from propdesk.db.health import DatabaseBusy, DatabaseHealth

    url = own_server.start()
    health = DatabaseHealth(url, first_wait_s=0.1, busy_wait_s=0.2)
    pool: ConnectionPool[Any] = ConnectionPool(url, min_size=1, max_size=1, open=True)
    try:
        with health.connection(pool), pytest.raises(DatabaseBusy), health.connection(pool):
            pass
        assert health.state()["up"] is True
    finally:
        pool.close()
