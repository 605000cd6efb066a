"""Connections: one pool per role. The engine pool is the only path that writes account truth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .migrate import role_names

Conn = psycopg.Connection[dict[str, Any]]


def role_url(admin_url: str, role: str) -> str:
    """The admin URL with its user replaced by ``role`` (the same host, port, database and TLS settings)."""
    params = conninfo_to_dict(admin_url)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo(**params)  # type: ignore[arg-type]


class Database:
    """Engine and app connection pools for one PropDesk database."""

    def __init__(
        self,
        admin_url: str,
        prefix: str,
        *,
        engine_url: str | None = None,
        app_url: str | None = None,
        pool_size: int = 10,
        open_app_pool: bool = False,
    ):
        self.admin_url = admin_url
        self.prefix = prefix
        self.owner_role, self.engine_role, self.app_role = role_names(prefix)
        self.engine_url = engine_url or role_url(admin_url, self.engine_role)
        self.app_url = app_url or role_url(admin_url, self.app_role)
        self.engine_pool: ConnectionPool[Conn] = ConnectionPool(
            self.engine_url,
            min_size=min(2, pool_size),
            max_size=pool_size,
            open=True,
            kwargs={"row_factory": dict_row, "autocommit": False},
            name="engine",
        )
        self.app_pool: ConnectionPool[Conn] | None = None
        if open_app_pool:
            self.app_pool = ConnectionPool(
                self.app_url,
                min_size=1,
                max_size=max(2, pool_size // 2),
                open=True,
                kwargs={"row_factory": dict_row, "autocommit": False},
                name="app",
            )

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        """One engine transaction: committed when the block ends, rolled back on any exception."""
        with self.engine_pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Conn]:
        """A read-only engine connection (a transaction that is rolled back at the end)."""
        with self.engine_pool.connection() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    def close(self) -> None:
        self.engine_pool.close()
        if self.app_pool is not None:
            self.app_pool.close()


def assert_security_posture(admin_url: str, prefix: str) -> list[str]:
    """Start-up checks of the database security baseline; returns the list of problems (empty is good).

    The app and engine roles must not be superuser or BYPASSRLS nor own any table, and every table in the
    public schema must have row-level security enabled and forced.
    """
    _owner, engine, app = role_names(prefix)
    problems: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in (engine, app):
            row = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if row is None:
                problems.append(f"role {role} is missing")
                continue
            if row[0]:
                problems.append(f"role {role} is a superuser")
            if row[1]:
                problems.append(f"role {role} has BYPASSRLS")
            owned = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s", (role,)
            ).fetchone()
            if owned and owned[0]:
                problems.append(f"role {role} owns {owned[0]} tables")
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
            "AND c.relname <> 'alembic_version'"
        ).fetchall()
        for name, rls, force in rows:
            if not (rls and force):
                problems.append(f"table {name} lacks ENABLE/FORCE ROW LEVEL SECURITY")
    return problems
