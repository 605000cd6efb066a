"""The economic calendar: events cached in PostgreSQL (``economic_events``), fed by Finnhub, CSV and ICS files.

The news rule reads ``economic_events`` directly; :meth:`EconomicCalendar.affecting` is the same question asked
from outside the execution core ("high-impact events touching symbol S around time t").

Sources and idempotency
    Every row has a ``source`` (``finnhub``, ``csv``, ``ics``; ``admin`` rows come from the API) and an
    ``external_id``; ``(source, external_id)`` is unique, so re-importing a file or re-syncing a range updates
    rows in place instead of duplicating them. Without an explicit id (CSV ``id`` column, ICS ``UID``) the id is
    a digest of ``(time, currency, country, title)``.

CSV
    A header row with ``time,currency,impact,title`` and optionally ``country`` and ``id``. ``time`` is ISO 8601
    with an offset (``2026-03-02T13:30:00Z``, ``2026-03-02 08:30-05:00``); ``impact`` is high|medium|low; an
    empty ``currency`` is derived from ``country``.

ICS (RFC 5545, VEVENT only)
    ``DTSTART`` must be a date-time in UTC (``...Z``) or carry a ``TZID`` (an IANA zone); floating and all-day
    starts are refused. ``SUMMARY`` is the title. Impact and currency come from the properties ``X-IMPACT``
    (high|medium|low), ``X-CURRENCY`` (ISO 4217) and ``X-COUNTRY`` (ISO 3166 alpha-2) when present, else from
    the summary: an impact tag ``[high]``/``(medium)``/``[low]`` anywhere (removed from the title) and the
    first known three-letter currency code as a word (``"[high] USD Non-Farm Payrolls"``).

Finnhub
    ``GET /calendar/economic?from=YYYY-MM-DD&to=YYYY-MM-DD`` through the official ``finnhub-python`` client; the
    rows' ``time`` is UTC, ``country`` maps to a currency (:data:`COUNTRY_CURRENCY`), ``impact`` to
    high|medium|low (unknown or empty -> low, so it never blocks trading by itself).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..db.database import Database
from ..domain.clock import Clock
from ..domain.instruments import DEFAULT_CATALOGUE, Catalogue, Instrument

IMPACTS = ("low", "medium", "high")
_RANK = {name: i for i, name in enumerate(IMPACTS)}


def affected_symbols(catalogue: Iterable[Instrument], currency: str, country: str = "") -> list[str]:
    """The enabled catalogue symbols an event touches, matched as the news rule matches them
    (``domain.rules.pretrade.news_hits``): the event's currency, or its country code, is the instrument's base or
    quote currency. A USD event therefore touches every USD-quoted index, stock and metal as well as the pairs."""
    keys = {k.upper() for k in (currency, country) if k}
    return sorted(
        i.symbol for i in catalogue if i.enabled and keys & {i.base_currency.upper(), i.quote_currency.upper()}
    )


COUNTRY_CURRENCY: dict[str, str] = {
    "US": "USD",
    "EU": "EUR",
    "EA": "EUR",
    "EMU": "EUR",
    "DE": "EUR",
    "FR": "EUR",
    "IT": "EUR",
    "ES": "EUR",
    "NL": "EUR",
    "BE": "EUR",
    "AT": "EUR",
    "PT": "EUR",
    "IE": "EUR",
    "FI": "EUR",
    "GR": "EUR",
    "GB": "GBP",
    "UK": "GBP",
    "JP": "JPY",
    "CA": "CAD",
    "AU": "AUD",
    "NZ": "NZD",
    "CH": "CHF",
    "CN": "CNY",
}
KNOWN_CURRENCIES = frozenset(COUNTRY_CURRENCY.values())

_IMPACT_ALIASES = {
    "high": "high",
    "h": "high",
    "3": "high",
    "red": "high",
    "medium": "medium",
    "med": "medium",
    "moderate": "medium",
    "m": "medium",
    "2": "medium",
    "orange": "medium",
    "low": "low",
    "l": "low",
    "1": "low",
    "yellow": "low",
    "none": "low",
    "holiday": "low",
    "": "low",
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{0,3}$")
_ICS_TAG = re.compile(r"[\[(](high|medium|low)[\])]", re.IGNORECASE)
_ICS_WORD = re.compile(r"\b[A-Z]{3}\b")


class CalendarError(ValueError):
    """A calendar input or provider could not be used (bad file row, provider error); the message says where."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class EconomicEvent:
    at: datetime
    currency: str
    impact: str
    title: str
    country: str = ""
    source: str = "import"
    external_id: str | None = None

    def key(self) -> str:
        """The external id: the given one, else a digest of what identifies the event."""
        if self.external_id:
            return self.external_id
        raw = "|".join((self.at.astimezone(UTC).isoformat(), self.currency, self.country, self.title))
        return "h:" + hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def to_json(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged}


def normalize_impact(value: Any) -> str:
    """A provider's impact (``high``, ``3``, ``Medium``, ``""``...) as high|medium|low; unknown -> low."""
    text = str(value if value is not None else "").strip().lower()
    return _IMPACT_ALIASES.get(text, "low")


def currency_of(country: str) -> str:
    return COUNTRY_CURRENCY.get(country.strip().upper(), "")


def parse_time(text: str, where: str) -> datetime:
    """ISO 8601 with an offset (``Z`` allowed) -> aware UTC datetime."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise CalendarError(f"{where}: not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise CalendarError(f"{where}: time {text!r} has no UTC offset")
    return t.astimezone(UTC)


def _check(ev: EconomicEvent, where: str) -> EconomicEvent:
    if ev.impact not in _RANK:
        raise CalendarError(f"{where}: impact must be high, medium or low (got {ev.impact!r})")
    if ev.currency and not _CURRENCY.match(ev.currency):
        raise CalendarError(f"{where}: currency must be a 3-letter code (got {ev.currency!r})")
    if not _COUNTRY.match(ev.country):
        raise CalendarError(f"{where}: country must be a 2-3 letter code (got {ev.country!r})")
    if not ev.title.strip():
        raise CalendarError(f"{where}: title is empty")
    if not ev.currency and not ev.country:
        raise CalendarError(f"{where}: neither currency nor a known country")
    return ev


# ------------------------------------------------------------------------------------------------ parsers
def parse_csv(text: str, name: str = "<csv>") -> list[EconomicEvent]:
    reader = csv.DictReader(io.StringIO(text))
    fields = {(f or "").strip().lower() for f in reader.fieldnames or ()}
    missing = {"time", "impact", "title"} - fields
    if missing or not ({"currency", "country"} & fields):
        raise CalendarError(f"{name}: the header needs time,currency,impact,title[,country][,id]")
    out: list[EconomicEvent] = []
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        where = f"{name}: row {i}"
        country = row.get("country", "").upper()
        ev = EconomicEvent(
            at=parse_time(row.get("time", ""), f"{where}, column time"),
            currency=row.get("currency", "").upper() or currency_of(country),
            impact=row.get("impact", "").lower(),
            title=row.get("title", ""),
            country=country,
            source="csv",
            external_id=row.get("id") or None,
        )
        out.append(_check(ev, where))
    return out


def _ics_lines(text: str) -> list[str]:
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line[1:]  # unfold a continuation line
        elif line:
            lines.append(line)
    return lines


def _ics_unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _ics_prop(line: str) -> tuple[str, dict[str, str], str]:
    head, _, value = line.partition(":")
    name, *params = head.split(";")
    pmap = {}
    for p in params:
        k, _, v = p.partition("=")
        pmap[k.strip().upper()] = v.strip().strip('"')
    return name.strip().upper(), pmap, value


def _ics_time(params: dict[str, str], value: str, where: str) -> datetime:
    v = value.strip()
    if params.get("VALUE", "").upper() == "DATE" or re.fullmatch(r"\d{8}", v):
        raise CalendarError(f"{where}: DTSTART is a date without a time (all-day events are not supported)")
    utc = v.endswith(("Z", "z"))
    try:
        naive = datetime.strptime(v.rstrip("Zz"), "%Y%m%dT%H%M%S")
    except ValueError:
        raise CalendarError(f"{where}: DTSTART {value!r} is not YYYYMMDDTHHMMSS[Z]") from None
    if utc:
        return naive.replace(tzinfo=UTC)
    tzid = params.get("TZID")
    if not tzid:
        raise CalendarError(f"{where}: DTSTART {value!r} is floating (needs a trailing Z or a TZID)")
    try:
        zone = ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(f"{where}: unknown TZID {tzid!r}") from None
    return naive.replace(tzinfo=zone).astimezone(UTC)


def parse_ics(text: str, name: str = "<ics>") -> list[EconomicEvent]:
    out: list[EconomicEvent] = []
    props: dict[str, tuple[dict[str, str], str]] | None = None
    count = 0
    for line in _ics_lines(text):
        pname, params, value = _ics_prop(line)
        if pname == "BEGIN" and value.strip().upper() == "VEVENT":
            props, count = {}, count + 1
        elif pname == "END" and value.strip().upper() == "VEVENT" and props is not None:
            out.append(_ics_event(props, f"{name}: VEVENT {count}"))
            props = None
        elif props is not None and pname not in props:
            props[pname] = (params, value)
    return out


def _ics_event(props: dict[str, tuple[dict[str, str], str]], where: str) -> EconomicEvent:
    if "DTSTART" not in props:
        raise CalendarError(f"{where}: no DTSTART")
    at = _ics_time(*props["DTSTART"], where)
    summary = _ics_unescape(props.get("SUMMARY", ({}, ""))[1]).strip()
    impact = _ics_unescape(props.get("X-IMPACT", ({}, ""))[1]).strip().lower()
    tag = _ICS_TAG.search(summary)
    if tag is not None:
        summary = (summary[: tag.start()] + summary[tag.end() :]).strip()
        summary = re.sub(r"\s{2,}", " ", summary)
        impact = impact or tag.group(1).lower()
    if not impact:
        raise CalendarError(f"{where}: no impact (an X-IMPACT property or a [high|medium|low] tag in SUMMARY)")
    country = _ics_unescape(props.get("X-COUNTRY", ({}, ""))[1]).strip().upper()
    currency = _ics_unescape(props.get("X-CURRENCY", ({}, ""))[1]).strip().upper()
    if not currency:
        currency = next((w for w in _ICS_WORD.findall(summary) if w in KNOWN_CURRENCIES), "") or currency_of(country)
    uid = _ics_unescape(props.get("UID", ({}, ""))[1]).strip() or None
    ev = EconomicEvent(at, currency, impact, summary, country, "ics", uid)
    return _check(ev, where)


def parse_finnhub(payload: Any) -> list[EconomicEvent]:
    """The ``economicCalendar`` rows of a Finnhub response as events (rows without a time or title are skipped)."""
    rows = payload.get("economicCalendar") if isinstance(payload, dict) else None
    if isinstance(rows, dict):  # some API versions nest the rows under "result"
        rows = rows.get("result")
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        raise CalendarError("finnhub: economicCalendar is not a list")
    out: list[EconomicEvent] = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("time") or not str(row.get("event") or "").strip():
            continue
        raw = str(row["time"]).strip().replace("T", " ")
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            continue
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        country = str(row.get("country") or "").strip().upper()[:3]
        title = str(row["event"]).strip()[:200]
        ev = EconomicEvent(at, currency_of(country), normalize_impact(row.get("impact")), title, country, "finnhub")
        out.append(ev)
    return out


# ------------------------------------------------------------------------------------------------ the store
class EconomicCalendar:
    """Reads and writes ``economic_events`` through the engine role."""

    def __init__(self, db: Database, clock: Clock | None = None, catalogue: Catalogue = DEFAULT_CATALOGUE) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    def upsert(self, events: Iterable[EconomicEvent]) -> UpsertResult:
        """Insert new events, update changed ones in place (by ``(source, external_id)``), in one transaction."""
        ins = upd = same = 0
        now = self._now()
        with self.db.tx() as c:
            for ev in events:
                row = c.execute(
                    "INSERT INTO economic_events (at, currency, country, impact, title, source, external_id,"
                    " created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (source, external_id) DO UPDATE SET at = EXCLUDED.at,"
                    " currency = EXCLUDED.currency, country = EXCLUDED.country, impact = EXCLUDED.impact,"
                    " title = EXCLUDED.title"
                    " WHERE (economic_events.at, economic_events.currency, economic_events.country,"
                    " economic_events.impact, economic_events.title) IS DISTINCT FROM"
                    " (EXCLUDED.at, EXCLUDED.currency, EXCLUDED.country, EXCLUDED.impact, EXCLUDED.title)"
                    " RETURNING (xmax = 0) AS inserted",
                    (ev.at, ev.currency, ev.country, ev.impact, ev.title, ev.source, ev.key(), now),
                ).fetchone()
                if row is None:
                    same += 1
                elif row["inserted"]:
                    ins += 1
                else:
                    upd += 1
        return UpsertResult(ins, upd, same)

    def import_csv(self, path: str | Path) -> UpsertResult:
        return self.upsert(parse_csv(_read(path), str(path)))

    def import_ics(self, path: str | Path) -> UpsertResult:
        return self.upsert(parse_ics(_read(path), str(path)))

    def import_file(self, path: str | Path) -> UpsertResult:
        """CSV or ICS by the file's extension (``.csv``; ``.ics``/``.ical``)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.import_csv(path)
        if suffix in (".ics", ".ical", ".ifb"):
            return self.import_ics(path)
        raise CalendarError(f"{path}: unknown calendar format {suffix or '(no extension)'!r} (expected .csv or .ics)")

    def sync_finnhub(
        self, client_or_key: Any, start: date | datetime, end: date | datetime, base_url: str | None = None
    ) -> UpsertResult:
        """Fetch ``[start, end]`` (whole days) from Finnhub and upsert it. ``client_or_key`` is a
        ``finnhub.Client`` or an API key; ``base_url`` (e.g. ``http://127.0.0.1:PORT/api/v1``) overrides the
        client's ``API_URL``."""
        import finnhub
        import requests

        client = finnhub.Client(api_key=client_or_key) if isinstance(client_or_key, str) else client_or_key
        if base_url:
            client.API_URL = base_url.rstrip("/")
        day0 = start.date() if isinstance(start, datetime) else start
        day1 = end.date() if isinstance(end, datetime) else end
        if day1 < day0:
            raise CalendarError(f"finnhub: the range ends ({day1}) before it starts ({day0})")
        try:
            payload = client.calendar_economic(_from=day0.isoformat(), to=day1.isoformat())
        except finnhub.FinnhubAPIException as exc:
            raise CalendarError(f"finnhub: HTTP {exc.status_code}: {exc.message}", status_code=exc.status_code) from exc
        except finnhub.FinnhubRequestException as exc:
            raise CalendarError(f"finnhub: {exc.message}") from exc
        except requests.RequestException as exc:
            raise CalendarError(f"finnhub: request failed: {type(exc).__name__}: {exc}") from exc
        return self.upsert(parse_finnhub(payload))

    def affecting(
        self, symbol: str, at: datetime, before: timedelta, after: timedelta, impact: str = "high"
    ) -> list[EconomicEvent]:
        """Events in ``[at - before, at + after]`` (both ends included) whose currency is the base or quote
        currency of ``symbol`` and whose impact is at least ``impact``, oldest first.

        For the news rule's blackout (``minutes_before`` / ``minutes_after`` the *event*) at time ``t``, ask
        ``affecting(S, t, before=minutes_after, after=minutes_before)``."""
        inst = self.catalogue.get(symbol)
        if inst is None:
            raise CalendarError(f"unknown symbol {symbol!r}")
        if impact not in _RANK:
            raise CalendarError(f"impact must be high, medium or low (got {impact!r})")
        levels = [name for name in IMPACTS if _RANK[name] >= _RANK[impact]]
        currencies = sorted({inst.base_currency, inst.quote_currency})
        with self.db.read() as c:
            rows = c.execute(
                "SELECT at, currency, country, impact, title, source, external_id FROM economic_events"
                " WHERE at BETWEEN %s AND %s AND currency = ANY(%s) AND impact = ANY(%s) ORDER BY at, id",
                (at - before, at + after, currencies, levels),
            ).fetchall()
        return [
            EconomicEvent(r["at"], r["currency"], r["impact"], r["title"], r["country"], r["source"], r["external_id"])
            for r in rows
        ]


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalendarError(f"{path}: cannot read: {exc}") from exc


__all__ = [
    "COUNTRY_CURRENCY",
    "CalendarError",
    "EconomicCalendar",
    "EconomicEvent",
    "UpsertResult",
    "currency_of",
    "normalize_impact",
    "parse_csv",
    "parse_finnhub",
    "parse_ics",
]
