"""Database schema and roles (`propdesk db ...`) and `propdesk verify`."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated

import typer

from .common import (
    CliError,
    JsonOpt,
    _log,
    _out,
    _run,
    _settings,
    emit_json,
    open_platform,
    redact,
)

db_app = typer.Typer(help="Database schema and roles.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------ db
@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create the roles if missing and migrate the database to head (idempotent)."""

    def body() -> int:
        import psycopg

        from ..bootstrap import resolve_database
        from ..db.migrate import HEAD, current_revision, upgrade

        settings = _settings()
        log = _log()
        admin_url, embedded = resolve_database(settings)
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                before = current_revision(conn)
            upgrade(admin_url, settings.db_role_prefix)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                after = current_revision(conn)
        finally:
            if embedded is not None:
                embedded.__exit__(None, None, None)
        result = {
            "database": redact(admin_url),
            "embedded": embedded is not None,
            "data_dir": str(settings.data_dir.resolve()) if embedded is not None else None,
            "role_prefix": settings.db_role_prefix,
            "revision_before": before,
            "revision": after,
            "head": HEAD,
            "changed": before != after,
        }
        log.info("db_upgraded", **result)
        if as_json:
            emit_json(result)
        else:
            what = f"migrated {before or 'an empty database'} -> {after}" if before != after else f"already at {after}"
            sys.stderr.write(f"propdesk db upgrade: {what} ({redact(admin_url)}, roles {settings.db_role_prefix}_*)\n")
        return 0

    _run(body)


@db_app.command("backup")
def db_backup(
    file: Annotated[str, typer.Argument(help="The archive to write (never overwritten); a manifest goes beside it.")],
    as_json: JsonOpt = False,
) -> None:
    """A consistent backup of the whole database (pg_dump, custom format) while the platform keeps running."""

    def body() -> int:
        from pathlib import Path

        from ..bootstrap import resolve_database
        from ..clock import SystemClock
        from ..db.backup import BackupError, backup

        settings = _settings()
        admin_url, embedded = resolve_database(settings)
        try:
            manifest = backup(admin_url, Path(file), SystemClock().now())
        except BackupError as exc:
            raise CliError(str(exc)) from None
        finally:
            if embedded is not None:
                embedded.__exit__(None, None, None)
        _log().info("db_backup_done", file=file, **manifest.to_json())
        if as_json:
            emit_json({"file": str(Path(file).resolve()), **manifest.to_json()})
        else:
            _out(f"backup {file}: revision {manifest.revision}, {manifest.size_bytes} bytes, rows {manifest.counts}")
        return 0

    _run(body)


@db_app.command("restore")
def db_restore(
    file: Annotated[str, typer.Argument(help="An archive made by `propdesk db backup` (its manifest beside it).")],
    database: Annotated[str, typer.Option("--database", help="The NEW database to restore into (same server).")],
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a new database on the same server and check it against its manifest; then point
    DATABASE_URL at it and run `propdesk verify` (docs/OPERATIONS.md)."""

    def body() -> int:
        import re
        from pathlib import Path

        from ..bootstrap import resolve_database
        from ..db.backup import BackupError, restore

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise CliError("--database: lowercase letters, digits and '_' (at most 63), not starting with a digit")
        settings = _settings()
        admin_url, embedded = resolve_database(settings)
        try:
            result = restore(admin_url, Path(file), database, settings.db_role_prefix)
        except BackupError as exc:
            raise CliError(str(exc)) from None
        finally:
            if embedded is not None:
                embedded.__exit__(None, None, None)
        out = {**result, "url": redact(result["url"])}
        _log().info("db_restore_done", **out)
        if as_json:
            emit_json(out)
        else:
            _out(f"restored {file} into {database} (revision {result['revision']}); rows {result['counts']}")
        return 0

    _run(body)


# ------------------------------------------------------------------------------------------------ verify
def verify(
    account: Annotated[str | None, typer.Argument(help="One account id (default: every account).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute balances and positions from the ledger and compare with the stored ones (exit 1 on mismatch)."""

    def body() -> int:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ..workers.reconcile import account_ids, verify_chains_report
        from ..workers.reconcile import verify as verify_accounts

        settings = _settings()
        only: list[uuid.UUID] | None = None
        if account is not None:
            try:
                only = [uuid.UUID(account)]
            except ValueError:
                raise CliError(f"{account!r} is not an account id (a UUID)") from None
        with open_platform(settings) as platform:
            ids = account_ids(platform.db, only)
            if only is not None and not ids:
                raise CliError(f"account {account} not found")
            console = Console(stderr=True)
            with Progress(
                TextColumn("verify"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task("verify", total=len(ids))
                report = verify_accounts(platform.execution, ids, on_account=lambda _a, _r: progress.advance(task))
            # Tamper evidence: every hash chain recomputed and checked against its signed anchors.
            chains = verify_chains_report(platform.db, settings.data_dir)
        _log().info(
            "verify_done",
            accounts=report.checked,
            ok=report.ok,
            mismatched=len(report.mismatched),
            errors=len(report.errors),
            chains_clean=chains.clean,
        )
        if as_json:
            emit_json({**report.to_json(), "clean": report.clean and chains.clean, "chains": chains.to_json()})
        else:
            _out(
                f"verified {report.checked} accounts: {report.ok} ok, {len(report.mismatched)} mismatched, "
                f"{len(report.errors)} could not be checked"
            )
            for m in report.mismatched:
                for f in m["mismatches"]:
                    _out(f"  MISMATCH {m['account_id']} {f['field']}: ledger {f['ledger']} != stored {f['stored']}")
            for e in report.errors:
                _out(f"  ERROR    {e['account_id']}: {e['error']}")
            _out(f"hash chains: {'clean' if chains.clean else 'TAMPERING DETECTED'}")
            for problem in chains.problems:
                where = ", ".join(f"{k}={v}" for k, v in problem.items() if k not in ("chain", "problem"))
                _out(f"  CHAIN    {problem['chain']}: {problem['problem']} ({where})")
            for warning in chains.warnings:
                _out(f"  WARNING  {warning}")
        return 0 if report.clean and chains.clean else 1

    _run(body)
