"""`propdesk risk ...`: the risk desk's platform kill switch (audited; every process enforces it within a second).

``propdesk risk halt|reduce-only|resume [--symbol S] --reason R`` sets the platform's mode (no ``--symbol``) or
one symbol's; ``propdesk risk status`` prints the modes. The audit row's actor is ``cli`` (or ``--actor``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import CliError, JsonOpt, _out, _run, _settings, emit_json, open_platform

risk_app = typer.Typer(help="The risk desk: the platform kill switch.", no_args_is_help=True)

SymbolOpt = Annotated[str | None, typer.Option("--symbol", help="One symbol; unset: the whole platform.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the admin audit).")]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who, for the audit.")]


def _set(mode: str, symbol: str | None, reason: str, actor: str, as_json: bool) -> None:
    def body() -> int:
        from ..execution.trading_state import PLATFORM, set_mode

        if not reason.strip():
            raise CliError("--reason must not be empty")
        settings = _settings().model_copy(update={"bus_enabled": False})  # the switch lives in PostgreSQL only
        with open_platform(settings) as platform, platform.db.tx() as c:
            try:
                out = set_mode(
                    c,
                    scope=symbol.upper() if symbol else PLATFORM,
                    mode=mode,
                    reason=reason,
                    actor=actor,
                    at=platform.clock.now(),
                    known_symbol=lambda s: platform.catalogue.get(s) is not None,
                )
            except ValueError as exc:
                raise CliError(str(exc)) from None
        scope = "platform" if out["scope"] == PLATFORM else out["scope"]
        if as_json:
            emit_json({**out, "scope": scope})
        else:
            _out(f"{scope}: {out['before']} -> {out['mode']} ({reason})")
        return 0

    _run(body)


@risk_app.command("halt")
def halt(reason: ReasonOpt, symbol: SymbolOpt = None, actor: ActorOpt = "cli", as_json: JsonOpt = False) -> None:
    """Halt trading (the platform, or one symbol): every trader order is refused ``trading_halted``."""
    _set("halted", symbol, reason, actor, as_json)


@risk_app.command("reduce-only")
def reduce_only(reason: ReasonOpt, symbol: SymbolOpt = None, actor: ActorOpt = "cli", as_json: JsonOpt = False) -> None:
    """Only orders that reduce an open position are accepted (others: ``trading_reduce_only``)."""
    _set("reduce_only", symbol, reason, actor, as_json)


@risk_app.command("resume")
def resume(reason: ReasonOpt, symbol: SymbolOpt = None, actor: ActorOpt = "cli", as_json: JsonOpt = False) -> None:
    """Back to active trading (the platform, or one symbol)."""
    _set("active", symbol, reason, actor, as_json)


@risk_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """The platform's mode and every symbol that is not active."""

    def body() -> int:
        from ..execution.trading_state import read_all

        settings = _settings().model_copy(update={"bus_enabled": False})
        with open_platform(settings) as platform, platform.db.read() as c:
            rows = read_all(c)
        if as_json:
            emit_json(rows)
        elif not rows:
            _out("platform: active")
        else:
            for r in rows:
                _out(f"{'platform' if r['scope'] == '*' else r['scope']}: {r['mode']} ({r['reason']}, {r['actor']})")
        return 0

    _run(body)
