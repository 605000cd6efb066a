"""Backups and tested restores of a PropDesk database (``propdesk db backup`` / ``propdesk db restore``).

A backup is one ``pg_dump --format=custom`` archive of the whole database (schema, data, triggers, row-level
security, the hash chains and their anchors) plus a manifest beside it (``<file>.json``: the migration revision,
when, the archive's SHA-256 and size, the row counts of the truth tables). The roles are cluster-wide and not in
the archive: a restore creates them first (``migrate.ensure_roles``), so ownership and grants come back as they
were.

A restore goes into a NEW database (never over a live one): the archive's checksum is checked against the
manifest, ``pg_restore`` runs as the admin login, and the restored row counts must equal the manifest's. Triggers
are created after the data is loaded (pg_dump's post-data section), so the engine-only guards never see the load.
The operator then points ``DATABASE_URL`` at it and runs ``propdesk verify`` (balances, positions and every hash
chain against its anchors) before opening it to traffic; docs/OPERATIONS.md has the runbook.

The client programs come from the same PostgreSQL build the embedded server uses (the ``pgserver`` wheel), which
can dump any server up to its own major version.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .embedded import find_binaries
from .migrate import current_revision, ensure_roles

__all__ = ["BackupError", "Manifest", "backup", "restore"]

#: Tables whose row counts a restore must reproduce (account truth, the audit log, the anchors).
COUNTED = ("accounts", "balances", "ledger", "orders", "fills", "positions", "admin_audit", "chain_anchors")


class BackupError(RuntimeError):
    """A backup or restore could not be made or did not check out; the message says why."""


@dataclass(frozen=True)
class Manifest:
    revision: str | None
    created_at: str
    sha256: str
    size_bytes: int
    counts: dict[str, int]
    database: str

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "created_at": self.created_at,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "counts": self.counts,
            "database": self.database,
        }


def _libpq_env(url: str) -> tuple[dict[str, str], str]:
    """The environment and connection string for a client program: the password goes in ``PGPASSWORD`` (never on
    a command line, where ``ps`` shows it)."""
    params = conninfo_to_dict(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return env, make_conninfo(**params)  # type: ignore[arg-type]


def _count_in(conn: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in COUNTED:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()
        if exists and exists[0]:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            out[table] = int(row[0]) if row else 0
    return out


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return _count_in(conn)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=6 * 3600)  # noqa: S603 - our own argv
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{Path(argv[0]).name} could not run: {exc}") from exc
    if result.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


def backup(admin_url: str, target: Path, now: datetime) -> Manifest:
    """Dump the database of ``admin_url`` to ``target`` (custom format) and write ``<target>.json``."""
    target = target.resolve()
    if target.exists():
        raise BackupError(f"{target} exists: a backup never overwrites a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    env, conninfo = _libpq_env(admin_url)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    # The counts and the dump see one snapshot: this transaction exports it and pg_dump uses it, so the manifest
    # counts exactly what the archive holds even while the platform keeps trading.
    with psycopg.connect(admin_url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snap = conn.execute("SELECT pg_export_snapshot()").fetchone()
        revision = current_revision(conn)
        row = conn.execute("SELECT current_database()").fetchone()
        counts = _count_in(conn)
        _run(
            [
                str(find_binaries() / "pg_dump"),
                "--format=custom",
                f"--snapshot={snap[0] if snap else ''}",
                "--file",
                str(partial),
                conninfo,
            ],
            env,
        )
        conn.rollback()
    database = str(row[0]) if row else ""
    os.replace(partial, target)
    target.chmod(0o600)  # it holds everything, password hashes of the web users included
    manifest = Manifest(revision, now.isoformat(), _sha256(target), target.stat().st_size, counts, database)
    side = Path(str(target) + ".json")
    side.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    side.chmod(0o600)
    return manifest


def restore(server_admin_url: str, source: Path, database: str, prefix: str) -> dict[str, Any]:
    """Restore ``source`` into the new database ``database`` on the server of ``server_admin_url``.

    Returns ``{"database", "url", "revision", "counts"}``; raises BackupError when the archive does not match its
    manifest, the database exists, or the restored row counts differ from the archive's.
    """
    source = source.resolve()
    side = Path(str(source) + ".json")
    if not source.is_file() or not side.is_file():
        raise BackupError(f"{source} and its manifest {side.name} must both exist")
    manifest = json.loads(side.read_text())
    if _sha256(source) != manifest.get("sha256"):
        raise BackupError(f"{source} does not match its manifest's SHA-256: the archive is damaged or not this one")
    ensure_roles(server_admin_url, prefix)
    with psycopg.connect(server_admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            raise BackupError(f"database {database!r} exists: a restore goes into a new database only")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    params = conninfo_to_dict(server_admin_url)
    params["dbname"] = database
    url = make_conninfo(**params)  # type: ignore[arg-type]
    env, conninfo = _libpq_env(url)
    _run(
        [
            str(find_binaries() / "pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
            conninfo,
            str(source),
        ],
        env,
    )
    counts = _counts(url)
    expected = {k: int(v) for k, v in (manifest.get("counts") or {}).items()}
    differ = {t: (counts.get(t), n) for t, n in expected.items() if counts.get(t) != n}
    if differ:
        raise BackupError(f"the restored row counts differ from the backup's (restored, counted): {differ}")
    with psycopg.connect(url, autocommit=True) as conn:
        revision = current_revision(conn)
    return {"database": database, "url": url, "revision": revision, "counts": counts}
