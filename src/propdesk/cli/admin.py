"""Web users with admin rights (`propdesk admin ...`)."""

from __future__ import annotations

import sys
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
)

# ------------------------------------------------------------------------------------------------ admin users
admin_app = typer.Typer(help="Web users with admin rights (the admin panel).", no_args_is_help=True)


@admin_app.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="The admin's email address (the login).")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin instead of prompting."),
    ] = False,
    display_name: Annotated[str, typer.Option(help="The name shown in the panel.")] = "",
    with_totp: Annotated[
        bool,
        typer.Option("--totp", help="Enroll a one-time code (TOTP) at once: prints the secret and URI, once."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a web user with the admin role (the first admin of a new install). The password must have 10..256
    characters mixing letters with digits or symbols; an address that already has an account is refused. With
    ``--totp`` the admin's second factor is enabled too (the secret and its otpauth:// URI are printed once)."""

    def body() -> int:
        from ..domain.errors import Conflict, InvalidInput
        from ..identity.users import UserRole, check_password, normalize_email

        try:
            address = normalize_email(email)
        except InvalidInput as exc:
            raise CliError(f"invalid --email: {exc.message}") from None
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        try:
            check_password(password)
        except InvalidInput as exc:
            raise CliError(f"weak password: {exc.message}") from None
        settings = _settings()
        with open_platform(settings) as platform:
            try:
                user = platform.identity.create_user(
                    address, password, role=UserRole.ADMIN, display_name=display_name, audit_kind="user_created"
                )
            except Conflict:
                raise CliError(f"a user with the email {address} already exists") from None
            except InvalidInput as exc:
                raise CliError(exc.message) from None
            enrollment = platform.identity.enroll_totp_directly(user.id, actor="cli") if with_totp else None
        _log().info("admin_created", user_id=str(user.id), email=user.email, second_factor=with_totp)
        result: dict[str, object] = {
            "id": str(user.id),
            "email": user.email,
            "role": user.role.value,
            "display_name": user.display_name,
            "login_url": settings.public_url.rstrip("/") + "/login",
        }
        if enrollment is not None:
            result["totp"] = {"secret": enrollment.secret, "otpauth_uri": enrollment.uri}
        if as_json:
            emit_json(result)
        else:
            _out(f"created admin {user.email} ({user.id}); log in at {result['login_url']}")
            if enrollment is not None:
                _print_enrollment(enrollment.secret, enrollment.uri)
        return 0

    _run(body)


def _print_enrollment(secret: str, uri: str) -> None:
    _out("one-time code (TOTP) enabled; add it to an authenticator app now, it is not shown again:")
    _out(f"  secret: {secret}")
    _out(f"  uri:    {uri}")


@admin_app.command("totp")
def admin_totp(
    email: Annotated[str, typer.Option(help="The user's email address (the login).")],
    as_json: JsonOpt = False,
) -> None:
    """(Re)enroll a user's one-time code (TOTP) from the shell: a new secret, enabled at once (any earlier one stops
    working), printed once with its otpauth:// URI. For the first admin, who has no session yet, or a lost device
    (audited in auth_events as ``totp_enabled`` by ``cli``)."""

    def body() -> int:
        settings = _settings()
        with open_platform(settings) as platform:
            user = platform.identity.find_user(email)
            if user is None:
                raise CliError(f"no enabled user with the email {email!r}")
            enrollment = platform.identity.enroll_totp_directly(user.id, actor="cli")
        _log().info("totp_enrolled", user_id=str(user.id), email=user.email, by="cli")
        if as_json:
            emit_json(
                {
                    "id": str(user.id),
                    "email": user.email,
                    "totp": {"secret": enrollment.secret, "otpauth_uri": enrollment.uri},
                }
            )
        else:
            _out(f"{user.email} ({user.id}):")
            _print_enrollment(enrollment.secret, enrollment.uri)
        return 0

    _run(body)
