"""API tokens (`propdesk tokens ...`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import (
    CliError,
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


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    """List the stored API tokens (never a hash): status, expiry, revocation, last use. Environment tokens
    (PROPDESK_SERVICE_TOKEN, PROPDESK_ADMIN_TOKEN, PROPDESK_CRON_SECRET) are not stored and not listed."""

    def body() -> int:
        settings = _settings()
        with open_platform(settings) as platform:
            items = platform.tokens.list()
        if as_json:
            emit_json({"items": items})
            return 0
        if not items:
            _out("no API tokens (environment tokens are not stored, so not listed)")
        for t in items:
            _out(
                f"{t['id']}  {t['role']:<7}  {t['status']:<7}  last used {t['last_used_at'] or 'never'}"
                f"  expires {t['expires_at'] or 'never'}  {t['name']}"
                + (f"  (revoked by {t['revoked_by']}: {t['revoke_reason']})" if t["revoked_at"] else "")
            )
        return 0

    _run(body)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `propdesk tokens list`).")],
    reason: Annotated[str, typer.Option(help="Why (kept with the token and in the admin audit log).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API token: refused at once here and by every running process within 5 s (their verified-token
    cache TTL). Environment tokens cannot be revoked: change the variable and restart."""

    def body() -> int:
        import uuid

        from psycopg.types.json import Jsonb

        from ..identity.auth import TokenNotRevocable

        if not reason.strip():
            raise CliError("--reason must not be blank")
        settings = _settings()
        with open_platform(settings) as platform:
            try:
                with platform.db.tx() as c:
                    row = platform.tokens.revoke(token_id, actor="cli", reason=reason.strip(), conn=c)
                    if row is not None:
                        c.execute(
                            "INSERT INTO admin_audit (actor, action, account_id, reason, details, created_at)"
                            " VALUES (%s,%s,NULL,%s,%s,%s)",
                            (
                                "cli",
                                "token_revoke",
                                reason.strip(),
                                Jsonb({"token_id": str(uuid.UUID(token_id)), "name": row["name"], "role": row["role"]}),
                                platform.clock.now(),
                            ),
                        )
            except TokenNotRevocable:
                raise CliError(
                    f"{token_id} is an environment token: it is not stored, so it cannot be revoked; change or unset"
                    " the variable (PROPDESK_SERVICE_TOKEN, PROPDESK_ADMIN_TOKEN, PROPDESK_CRON_SECRET) and restart"
                    " every process"
                ) from None
        if row is None:
            raise CliError(f"no API token {token_id!r}")
        _log().info("token_revoked", token_id=str(row["id"]), reason=reason.strip())
        if as_json:
            emit_json(row)
        else:
            _out(f"revoked {row['id']} ({row['name']}) at {row['revoked_at']}")
        return 0

    _run(body)
