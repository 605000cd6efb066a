"""Shared helpers of the command groups: output, settings, the platform, running a command and failing."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from ..bootstrap import Platform
    from ..settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one compact JSON line on stdout.")]


class RoleChoice(StrEnum):
    service = "service"
    admin = "admin"


# ------------------------------------------------------------------------------------------------ helpers
class CliError(Exception):
    """A command cannot run; the message is shown and the exit code is 2."""


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return format(o, "f")
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, uuid.UUID):
        return str(o)
    if isinstance(o, Enum):
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def emit_json(obj: Any) -> None:
    """One compact JSON line on stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n")
    sys.stdout.flush()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _log() -> Any:
    from .. import logs

    return logs.get("propdesk.cli")


_SETTINGS: list[Settings] = []


def _settings() -> Settings:
    """The settings, read once per process; configures JSON logs on stderr the first time."""
    if _SETTINGS:
        return _SETTINGS[0]
    from pydantic import ValidationError

    from .. import logs
    from ..settings import load_settings

    try:
        settings = load_settings()
    except ValidationError as exc:
        raise CliError(f"invalid configuration: {exc}") from exc
    logs.configure(settings.log_level, settings.log_json)
    # Alembic narrates every plugin it loads at INFO; the commands report what migrations did themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _SETTINGS.append(settings)
    return settings


def redact(url: str) -> str:
    """The URL without its password (for logs and output)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<unparseable database url>"
    if params.get("password"):
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def open_platform(settings: Settings, *, migrate: bool = True) -> Iterator[Platform]:
    """Resolve the database (starting the embedded server if needed), open the platform, and on exit close it
    and stop the embedded server if this process started it."""
    from ..bootstrap import open_platform as _open
    from ..bootstrap import resolve_database

    admin_url, embedded = resolve_database(settings)
    try:
        platform = _open(settings, admin_url=admin_url, migrate=migrate, configure_logs=False)
        platform.embedded = embedded
        try:
            yield platform
        finally:
            platform.close()
    finally:
        if embedded is not None:
            embedded.__exit__(None, None, None)  # stops the server only if this handle started it


def _run(fn: Callable[[], int | None]) -> None:
    """Run a command body: map expected failures to a message on stderr and exit code 2."""
    try:
        code = fn()
    except typer.Exit:
        raise
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        import psycopg

        from ..db.embedded import EmbeddedPostgresError
        from ..domain.errors import DomainError

        if isinstance(exc, EmbeddedPostgresError | psycopg.OperationalError | DomainError | ValueError | OSError):
            _fail(f"{type(exc).__name__}: {exc}")
        raise
    raise typer.Exit(code or 0)


def _fail(message: str) -> NoReturn:
    if _SETTINGS:  # logs are configured (JSON on stderr)
        _log().error("command_failed", error=message)
    sys.stderr.write(f"propdesk: {message}\n")
    raise typer.Exit(2)


def _load_create_app() -> Callable[[Any], Any]:
    try:
        from ..web.app import create_app
    except ImportError as exc:
        raise CliError(f"the API is not available in this build (propdesk.web.app.create_app): {exc}") from exc
    return create_app
