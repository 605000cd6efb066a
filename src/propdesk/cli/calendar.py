"""The economic calendar (`propdesk calendar ...`)."""

from __future__ import annotations

from typing import Annotated

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

calendar_app = typer.Typer(help="The economic calendar (the news rule reads it).", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------ calendar
@calendar_app.command("import")
def calendar_import(
    file: Annotated[
        str,
        typer.Argument(
            help="A .csv (time,currency,impact,title[,country]) or .ics file (docs: propdesk.marketdata.calendar)."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Import economic calendar events from a CSV or ICS file (idempotent: re-importing updates in place)."""

    def body() -> int:
        from ..marketdata.calendar import CalendarError, EconomicCalendar

        with open_platform(_settings()) as platform:
            try:
                result = EconomicCalendar(platform.db, platform.clock, platform.catalogue).import_file(file)
            except CalendarError as exc:
                raise CliError(str(exc)) from exc
        if as_json:
            emit_json({"file": file, **result.to_json()})
        else:
            _out(f"{file}: {result.inserted} new, {result.updated} updated, {result.unchanged} unchanged")
        return 0

    _run(body)


@calendar_app.command("sync")
def calendar_sync(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days ahead from today (UTC).")] = 7,
    as_json: JsonOpt = False,
) -> None:
    """Fetch the Finnhub economic calendar for today .. today + DAYS (needs PROPDESK_FINNHUB_API_KEY;
    PROPDESK_FINNHUB_BASE_URL overrides the API URL)."""

    def body() -> int:
        from datetime import timedelta

        from ..marketdata.calendar import CalendarError, EconomicCalendar

        settings = _settings()
        key = settings.finnhub_api_key
        if not key:
            raise CliError("calendar sync needs a Finnhub API key: set PROPDESK_FINNHUB_API_KEY")
        base_url = settings.finnhub_base_url
        with open_platform(settings) as platform:
            start = platform.clock.now().date()
            end = start + timedelta(days=days)
            try:
                result = EconomicCalendar(platform.db, platform.clock, platform.catalogue).sync_finnhub(
                    key, start, end, base_url=base_url
                )
            except CalendarError as exc:
                raise CliError(str(exc)) from exc
        if as_json:
            emit_json({"from": start, "to": end, **result.to_json()})
        else:
            _out(
                f"finnhub {start}..{end}: {result.inserted} new, {result.updated} updated, {result.unchanged} unchanged"
            )
        return 0

    _run(body)
