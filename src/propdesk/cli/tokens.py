"""API tokens (`propdesk tokens ...`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import (
    JsonOpt,
    RoleChoice,
    _log,
    _out,
    _run,
    _settings,
    emit_json,
    open_platform,
)

tokens_app = typer.Typer(help="API tokens for services and admins.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------ tokens
@tokens_app.command("create")
def tokens_create(
    role: Annotated[RoleChoice, typer.Option(help="service: the API's machine clients; admin: also the admin routes.")],
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "",
    ttl_days: Annotated[
        float | None, typer.Option(min=0.0001, help="Expire after this many days (default: never).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token. It is printed once; only its hash is stored."""

    def body() -> int:
        from datetime import timedelta

        from ..identity.auth import Role

        settings = _settings()
        with open_platform(settings) as platform:
            ttl = timedelta(days=ttl_days) if ttl_days is not None else None
            token, principal = platform.tokens.create(Role(role.value), name, ttl)
            with platform.db.read() as c:
                row = c.execute(
                    "SELECT name, created_at, expires_at FROM api_tokens WHERE id = %s", (principal.id,)
                ).fetchone()
        _log().info("token_created", token_id=principal.id, role=role.value, name=row["name"] if row else name)
        result = {
            "token": token,
            "id": principal.id,
            "role": role.value,
            "name": row["name"] if row else name,
            "created_at": row["created_at"] if row else None,
            "expires_at": row["expires_at"] if row else None,
        }
        if as_json:
            emit_json(result)
        else:
            _out(token)
            sys.stderr.write(
                f"created {role.value} token {principal.id} ({result['name']}); "
                f"expires {result['expires_at'] or 'never'}. It is shown only once.\n"
            )
        return 0

    _run(body)
