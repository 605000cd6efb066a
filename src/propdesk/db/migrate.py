"""Schema migrations (Alembic, raw SQL) and the cluster-wide roles they rely on.

Roles are created if missing, so several databases (and test runs) on one server share them safely:
``<prefix>_owner`` owns every object, ``<prefix>_engine`` alone writes account truth, ``<prefix>_app`` reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

HEAD = "0014"


def role_names(prefix: str) -> tuple[str, str, str]:
    """(owner, engine, app) role names for ``prefix``."""
    return f"{prefix}_owner", f"{prefix}_engine", f"{prefix}_app"


def role_password(admin_url: str, role: str) -> str | None:
    """The login password of a PropDesk role on a server whose admin URL carries a password, else None.

    Derived (HMAC-SHA256 keyed by the admin password) rather than stored: every process that holds the admin
    URL, and only such a process, can log in as the engine or app role, and nothing else needs keeping. On a
    server reached without a password (a ``trust`` or ``.pgpass`` setup) the roles keep whatever the operator set.
    """
    admin_password = conninfo_to_dict(admin_url).get("password")
    if not admin_password:
        return None
    digest = hmac.new(str(admin_password).encode(), f"propdesk-role:{role}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def ensure_roles(admin_url: str, prefix: str) -> None:
    """Create the three roles if missing, give the login roles their derived passwords (when the admin URL has
    one), and let the admin login act as the owner."""
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
        for name in (engine, app):
            password = role_password(admin_url, name)
            if password is not None:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
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
