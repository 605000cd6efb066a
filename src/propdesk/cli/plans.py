"""Challenge plans (`propdesk plans ...`) and `propdesk evaluate`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from .common import (
    CliError,
    JsonOpt,
    _out,
    _run,
    _settings,
    emit_json,
    open_platform,
)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(
    rulebook: Annotated[
        str, typer.Option("--rulebook", help="A plan file (YAML/JSON) or a preset id (PRESET or PRESET@OFFER).")
    ],
    trades: Annotated[str, typer.Option("--trades", help="Trade log CSV (RULES.md format).")],
    phase: Annotated[str | None, typer.Option("--phase", help="Phase to evaluate (default: the first).")] = None,
    prices: Annotated[str | None, typer.Option("--prices", help="Bars or ticks CSV for floating P&L.")] = None,
    calendar: Annotated[
        str | None, typer.Option("--calendar", help="Economic calendar CSV (time,currency,impact,title).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a trade log against a rulebook, offline (no database). Exit 0 whatever the verdict; 2 with a
    one-line message naming the row and column for bad input."""
    from pathlib import Path

    from ..domain.rules.schema import RulebookError
    from ..evaluation import InputError, render_report
    from ..evaluation import evaluate as run_evaluation
    from ..rulebooks import load_rulebook

    try:
        book = load_rulebook(rulebook)
        result = run_evaluation(
            book,
            Path(trades),
            phase=phase,
            prices_path=Path(prices) if prices else None,
            calendar_path=Path(calendar) if calendar else None,
        )
    except (InputError, RulebookError) as exc:
        sys.stderr.write(f"propdesk evaluate: {exc}\n")
        raise typer.Exit(2) from None
    if as_json:
        emit_json(result)
    else:
        _out(render_report(result, book))


# ------------------------------------------------------------------------------------------------ plans
plans_app = typer.Typer(help="Challenge plans (rulebook + offers).", no_args_is_help=True)


@plans_app.command("validate")
def plans_validate(
    files: Annotated[list[str], typer.Argument(help="Plan files (YAML or JSON).")], as_json: JsonOpt = False
) -> None:
    """Validate plan files without a database; exit 2 on the first error (file, key, reason)."""
    from pathlib import Path

    from ..domain.rules.schema import RulebookError
    from ..rulebooks import load_file

    ok: list[dict[str, Any]] = []
    for f in files:
        try:
            book = load_file(Path(f))
        except RulebookError as exc:
            sys.stderr.write(f"propdesk plans validate: {exc}\n")
            raise typer.Exit(2) from None
        ok.append(
            {
                "file": f,
                "id": book.id,
                "version": book.version,
                "phases": [p.id for p in book.phases],
                "offers": [o.id for o in book.offers],
            }
        )
    if as_json:
        emit_json({"valid": ok})
    else:
        for item in ok:
            _out(
                f"{item['file']}: ok ({item['id']}, phases {', '.join(item['phases'])}, "
                f"offers {', '.join(item['offers']) or '-'})"
            )


@plans_app.command("list")
def plans_list(as_json: JsonOpt = False) -> None:
    """The plan catalogue in the database (the latest active version of each plan)."""

    def body() -> int:
        with open_platform(_settings()) as platform:
            items = platform.plans.catalogue()
        if as_json:
            emit_json({"items": items})
        else:
            for p in items:
                offers = ", ".join(f"{o['id']} ({o['price']} {o['currency']})" for o in p["offers"])
                _out(
                    f"{p['id']} v{p['version']}: {p['name']} — phases {', '.join(x['id'] for x in p['phases'])};"
                    f" offers {offers or '-'}"
                )
        return 0

    _run(body)


@plans_app.command("import")
def plans_import(
    file: Annotated[str, typer.Argument(help="A plan file (YAML or JSON).")], as_json: JsonOpt = False
) -> None:
    """Store a plan file as the next version of its id (running accounts keep their frozen version)."""

    def body() -> int:
        from pathlib import Path

        from ..domain.errors import DomainError

        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{file}: cannot read: {exc}") from exc
        with open_platform(_settings()) as platform:
            try:
                book = platform.plans.create_version(text, actor="cli", where=file)
            except DomainError as exc:
                raise CliError(exc.message) from exc
        if as_json:
            emit_json({"id": book.id, "version": book.version})
        else:
            _out(f"stored {book.id} version {book.version}")
        return 0

    _run(body)
