"""Schema migrations (Alembic, raw SQL) and the cluster-wide roles they rely on.

Roles are created if missing, so several databases (and test runs) on one server share them safely:
``<prefix>_owner`` owns every object, ``<prefix>_engine`` alone writes account truth, ``<prefix>_app`` reads.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HEAD = "0007"


def role_names(prefix: str) -> tuple[str, str, str]:
    """(owner, engine, app) role names for ``prefix``."""
    return f"{prefix}_owner", f"{prefix}_engine", f"{prefix}_app"


def ensure_roles(admin_url: str, prefix: str) -> None:
    """Create the three roles if missing and let the admin login act as the owner."""
    owner, engine, app = role_names(prefix)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        me = conn.execute("SELECT current_user").fetchone()
        assert me is not None
        for name, login in ((owner, False), (engine, True), (app, True)):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            if exists:
                continue
            try:
                conn.execute(
                    sql.SQL("CREATE ROLE {} {} NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE").format(
                        sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN")
                    )
                )
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass  # created concurrently by another process: fine
        is_member = conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (owner,)).fetchone()
        if not (is_member and is_member[0]):
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(me[0])))


def _prepare_database(admin_url: str, prefix: str) -> None:
    owner, engine, app = role_names(prefix)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(
                sql.Identifier(db[0]), sql.Identifier(engine), sql.Identifier(app)
            )
        )
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(sql.Identifier(engine), sql.Identifier(app))
        )


def _alembic_config(prefix: str) -> Any:
    from alembic.config import Config

    location = Path(str(resources.files("propdesk.db") / "migrations"))
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["role_prefix"] = prefix
    return cfg


def upgrade(admin_url: str, prefix: str, revision: str = "head") -> None:
    """Create roles, grant what migrations need, and run Alembic as the owner role."""
    from alembic import command
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    ensure_roles(admin_url, prefix)
    _prepare_database(admin_url, prefix)
    owner = role_names(prefix)[0]
    # A creator keeps any libpq form of the URL (URI or key=value) working unchanged.
    engine = create_engine("postgresql+psycopg://", poolclass=NullPool, creator=lambda: psycopg.connect(admin_url))
    try:
        with engine.connect() as connection:
            connection.execute(text(f'SET ROLE "{owner}"'))
            connection.commit()
            cfg = _alembic_config(prefix)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
            connection.commit()
    finally:
        engine.dispose()


def current_revision(conn: psycopg.Connection[Any]) -> str | None:
    """The applied revision, or None when the schema has never been migrated."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return None
    return row[0] if row else None
