"""The economic calendar on a real PostgreSQL: CSV/ICS import, Finnhub sync through the official client against
a fake server on loopback, the ``affecting`` window, the CLI, and the news rule refusing an order end to end."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import finnhub
import pytest
from tests.fakes.finnhub_server import FakeFinnhub
from tests.integration.test_cli import run_cli

from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.policy import ExecutionPolicy
from propdesk.domain.quotes import Quote
from propdesk.execution.service import CreateAccount
from propdesk.marketdata.calendar import CalendarError, EconomicCalendar, EconomicEvent
from propdesk.rulebooks import load_rulebook

pytestmark = pytest.mark.integration

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "calendar"
NFP = datetime(2026, 3, 2, 13, 30, tzinfo=UTC)


def rows(database: Any) -> list[dict[str, Any]]:
    with database.read() as c:
        return c.execute(
            "SELECT at, currency, country, impact, title, source, external_id FROM economic_events ORDER BY at, title"
        ).fetchall()  # type: ignore[no-any-return]


@pytest.fixture
def cal(database: Any, clock: Any) -> EconomicCalendar:
    return EconomicCalendar(database, clock)


def test_csv_import_is_idempotent_and_derives_the_currency_from_the_country(
    cal: EconomicCalendar, database: Any
) -> None:
    first = cal.import_csv(FIX / "events.csv")
    assert first.to_json() == {"inserted": 3, "updated": 0, "unchanged": 0}
    again = cal.import_file(FIX / "events.csv")
    assert again.to_json() == {"inserted": 0, "updated": 0, "unchanged": 3}
    got = rows(database)
    assert len(got) == 3
    de = next(r for r in got if r["country"] == "DE")
    assert de["currency"] == "EUR" and de["at"] == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert {r["source"] for r in got} == {"csv"}


def test_a_bad_csv_row_names_the_file_row_and_column(cal: EconomicCalendar, tmp_path: Path, database: Any) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,currency,impact,title\n2026-03-02T13:30:00Z,USD,high,ok\n2026-03-02 13:30,USD,high,x\n")
    with pytest.raises(CalendarError, match=r"bad.csv: row 3, column time: .* no UTC offset"):
        cal.import_csv(bad)
    assert rows(database) == []  # nothing half-imported
    bad.write_text("time,currency,impact,title\n2026-03-02T13:30:00Z,USD,extreme,x\n")
    with pytest.raises(CalendarError, match="row 2: impact must be high, medium or low"):
        cal.import_csv(bad)


def test_ics_import_reads_utc_and_tzid_starts_x_properties_and_summary_tags(
    cal: EconomicCalendar, database: Any
) -> None:
    assert cal.import_ics(FIX / "events.ics").inserted == 3
    assert cal.import_file(FIX / "events.ics").unchanged == 3
    got = {r["title"]: r for r in rows(database)}
    assert set(got) == {"USD Non-Farm Payrolls", "BoJ Policy Rate Statement", "CAD Ivey PMI"}
    nfp = got["USD Non-Farm Payrolls"]
    assert (nfp["at"], nfp["currency"], nfp["impact"], nfp["external_id"]) == (
        NFP,
        "USD",
        "high",
        "ics-nfp-2026-03@propdesk.test",
    )
    boj = got["BoJ Policy Rate Statement"]
    assert (boj["at"], boj["currency"], boj["country"], boj["impact"]) == (
        datetime(2026, 3, 3, 3, 0, tzinfo=UTC),
        "JPY",
        "JP",
        "high",
    )
    ivey = got["CAD Ivey PMI"]
    assert (ivey["at"], ivey["currency"], ivey["impact"]) == (datetime(2026, 3, 2, 15, 0, tzinfo=UTC), "CAD", "medium")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DTSTART:20260302T133000", "floating"),
        ("DTSTART;VALUE=DATE:20260302", "all-day"),
        ("DTSTART;TZID=Mars/Olympus:20260302T133000", "unknown TZID"),
    ],
)
def test_ics_starts_without_a_definite_instant_are_refused(
    cal: EconomicCalendar, tmp_path: Path, line: str, message: str
) -> None:
    f = tmp_path / "x.ics"
    f.write_text(f"BEGIN:VCALENDAR\nBEGIN:VEVENT\n{line}\nSUMMARY:[high] USD x\nEND:VEVENT\nEND:VCALENDAR\n")
    with pytest.raises(CalendarError, match=message):
        cal.import_ics(f)


def test_finnhub_sync_through_the_official_client(cal: EconomicCalendar, database: Any) -> None:
    with FakeFinnhub(token="good-key") as fake:
        fake.events += [
            fake.row("2026-03-02 13:30:00", "US", "Non-Farm Payrolls", "high", estimate=180, unit="K"),
            fake.row("2026-03-03 10:00:00", "DE", "ZEW Economic Sentiment", "medium"),
            fake.row("2026-03-04 00:30:00", "AU", "GDP q/q", "low"),
            fake.row("2026-03-05 01:00:00", "CN", "Caixin PMI", ""),
            fake.row("2026-04-01 01:00:00", "US", "Out of range", "high"),
        ]
        client = finnhub.Client(api_key="good-key")
        first = cal.sync_finnhub(client, date(2026, 3, 2), date(2026, 3, 9), base_url=fake.base_url)
        assert first.inserted == 4
        # a key string works too; re-sync is idempotent, and a changed row is updated in place
        fake.events[0]["impact"] = "medium"
        again = cal.sync_finnhub("good-key", date(2026, 3, 2), date(2026, 3, 9), base_url=fake.base_url)
        assert again.to_json() == {"inserted": 0, "updated": 1, "unchanged": 3}
        assert fake.requests[-1]["path"] == "/api/v1/calendar/economic"
        assert fake.requests[-1]["query"] == {"from": "2026-03-02", "to": "2026-03-09", "token": "good-key"}
    got = {r["title"]: r for r in rows(database)}
    assert (got["Non-Farm Payrolls"]["currency"], got["Non-Farm Payrolls"]["impact"]) == ("USD", "medium")
    assert got["Non-Farm Payrolls"]["at"] == NFP and got["Non-Farm Payrolls"]["source"] == "finnhub"
    assert got["ZEW Economic Sentiment"]["currency"] == "EUR"
    assert got["GDP q/q"]["currency"] == "AUD"
    assert (got["Caixin PMI"]["currency"], got["Caixin PMI"]["impact"]) == ("CNY", "low")


def test_finnhub_bad_key_is_a_401_error_and_an_empty_calendar_is_fine(cal: EconomicCalendar, database: Any) -> None:
    with FakeFinnhub(token="good-key") as fake:
        with pytest.raises(CalendarError, match="HTTP 401: Invalid API key") as info:
            cal.sync_finnhub("bad-key", date(2026, 3, 2), date(2026, 3, 3), base_url=fake.base_url)
        assert info.value.status_code == 401
        empty = cal.sync_finnhub("good-key", date(2026, 3, 2), date(2026, 3, 3), base_url=fake.base_url)
    assert empty.to_json() == {"inserted": 0, "updated": 0, "unchanged": 0}
    assert rows(database) == []


def test_affecting_includes_both_window_ends_and_excludes_one_second_beyond(cal: EconomicCalendar) -> None:
    a, b = timedelta(minutes=30), timedelta(minutes=15)
    t = NFP
    cal.upsert(
        [
            EconomicEvent(t - a, "USD", "high", "at t-a", source="test", external_id="1"),
            EconomicEvent(t + b, "EUR", "high", "at t+b", source="test", external_id="2"),
            EconomicEvent(t - a - timedelta(seconds=1), "USD", "high", "before", source="test", external_id="3"),
            EconomicEvent(t + b + timedelta(seconds=1), "USD", "high", "after", source="test", external_id="4"),
            EconomicEvent(t, "JPY", "high", "other currency", source="test", external_id="5"),
            EconomicEvent(t, "USD", "medium", "medium", source="test", external_id="6"),
        ]
    )
    assert [e.title for e in cal.affecting("EURUSD", t, a, b)] == ["at t-a", "at t+b"]
    assert [e.title for e in cal.affecting("EURUSD", t, a, b, impact="medium")] == ["at t-a", "medium", "at t+b"]
    assert [e.title for e in cal.affecting("USDJPY", t, timedelta(0), timedelta(0))] == ["other currency"]
    assert cal.affecting("GBPJPY", t, timedelta(0), timedelta(0)) != []
    assert cal.affecting("EURGBP", t, a, timedelta(0)) == []  # the EUR event at t+b is outside
    with pytest.raises(CalendarError, match="unknown symbol"):
        cal.affecting("NOPE", t, a, b)


def test_an_imported_high_impact_usd_event_makes_the_news_rule_refuse_an_eurusd_order(
    cal: EconomicCalendar, service: Any, quotes: Any, clock: Any, tmp_path: Path
) -> None:
    book = load_rulebook("strict-risk@100k")
    policy = ExecutionPolicy(
        starting_balance=book.starting_balance,
        max_notional=Decimal(10) ** 9,
        max_position_equity_pct=Decimal(100000),
        max_leverage=Decimal(200),
    )
    acc, created = service.create_account(
        CreateAccount(
            owner_id="news-import",
            policy=policy,
            rulebook=book.to_json(),
            rulebook_id=book.id,
            rulebook_version=book.version,
            start=True,
        )
    )
    assert created
    quotes.put(Quote("EURUSD", Decimal("1.09990"), Decimal("1.10000"), clock.now()))
    order = OrderRequest("EURUSD", Side.BUY, Decimal(1), stop_loss=Decimal("1.09500"))
    assert service.submit_order(acc["id"], order).accepted  # no event yet
    f = tmp_path / "nfp.csv"
    at = clock.now() + timedelta(minutes=10)
    f.write_text(f"time,currency,impact,title\n{at.isoformat()},USD,high,Non-Farm Payrolls\n")
    assert cal.import_csv(f).inserted == 1
    out = service.submit_order(acc["id"], order)
    assert out.rejection is not None
    assert out.rejection.code == "rule_violation"
    assert out.rejection.details["rule"] == "news_trading"


def test_cli_calendar_import_and_sync(db_url: str, tmp_path: Path, database: Any) -> None:
    proc = run_cli("calendar", "import", str(FIX / "events.csv"), "--json", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"inserted":3' in proc.stdout.strip().splitlines()[-1]
    proc = run_cli("calendar", "import", str(tmp_path / "x.txt"), db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 2 and "unknown calendar format" in proc.stderr
    proc = run_cli("calendar", "sync", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 2 and "PROPDESK_FINNHUB_API_KEY" in proc.stderr
    with FakeFinnhub(token="cli-key") as fake:
        today = datetime.now(UTC).date()
        fake.events.append(fake.row(f"{today + timedelta(days=1)} 12:30:00", "US", "CPI m/m", "high"))
        env = {"PROPDESK_FINNHUB_API_KEY": "cli-key", "PROPDESK_FINNHUB_BASE_URL": fake.base_url}
        proc = run_cli("calendar", "sync", "--days", "3", "--json", db_url=db_url, data_dir=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert '"inserted":1' in proc.stdout.strip().splitlines()[-1]
        env["PROPDESK_FINNHUB_API_KEY"] = "wrong"
        proc = run_cli("calendar", "sync", db_url=db_url, data_dir=tmp_path, env=env)
        assert proc.returncode == 2 and "401" in proc.stderr
    assert any(r["title"] == "CPI m/m" for r in rows(database))
