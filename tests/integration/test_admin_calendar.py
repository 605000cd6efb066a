"""The economic calendar in the admin panel, on a real PostgreSQL: ``GET /api/v1/admin/calendar/events`` (window,
filters, validation, the symbols each event affects, per-source freshness), the ``/admin/calendar`` page, entry
through ``POST /api/v1/admin/calendar/events`` (audited, then listed), and the demo's calendar week.

The clock is the conftest's ``ManualClock`` at T0 = Monday 2026-03-02 10:00 UTC, so the default window is
Sunday 10:00 .. next Monday 10:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.web_kit import ADMIN_TOKEN, csrf_headers, login, make_user, web_client

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/api/v1/admin/calendar/events"
USD_SYMBOLS = {
    "EURUSD",
    "GBPUSD",
    "USDJPY",
    "AUDUSD",
    "USDCAD",
    "USDCHF",
    "NZDUSD",
    "XAUUSD",
    "XAGUSD",
    "WTIUSD",
    "US500",
    "US100",
    "US30",
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "TSLA",
    "BTCUSD",
    "ETHUSD",
}


def seed(platform: Any, clock: Any) -> None:
    """Events around T0 from three sources, entered at different times (``created_at`` is the clock's)."""
    from propdesk.marketdata.calendar import EconomicCalendar, EconomicEvent

    cal = EconomicCalendar(platform.db, clock, platform.catalogue)
    clock.set(T0 - timedelta(days=3))
    cal.upsert(
        [
            EconomicEvent(
                T0 - timedelta(days=2), "USD", "high", "Old NFP", "US", "csv", "old-nfp"
            ),  # before the window
            EconomicEvent(T0 - timedelta(hours=2), "USD", "high", "CPI m/m", "US", "csv", "cpi"),
        ]
    )
    clock.set(T0 - timedelta(hours=1))
    cal.upsert(
        [
            EconomicEvent(T0 + timedelta(hours=1), "JPY", "medium", "BoJ minutes", "JP", "finnhub"),
            EconomicEvent(T0 + timedelta(days=3), "EUR", "low", "German Ifo", "DE", "finnhub"),
            EconomicEvent(T0 + timedelta(days=10), "GBP", "high", "BoE rate", "GB", "finnhub"),  # after the window
        ]
    )
    clock.set(T0)


@pytest.fixture
def seeded(platform: Any, clock: Any) -> None:
    seed(platform, clock)


@pytest.fixture
def admin_user(platform: Any) -> Any:
    return make_user(platform, "risk@firm.test", "admin")


@pytest.fixture
def admin_web(app: Any, platform: Any, admin_user: Any) -> Iterator[Any]:
    with web_client(platform) as c:
        yield login(c, platform, admin_user)


@pytest.fixture
def token(platform: Any) -> Iterator[Any]:
    with web_client(platform, headers=ADMIN) as c:
        yield c


def titles(body: dict[str, Any]) -> list[str]:
    return [i["title"] for i in body["items"]]


# ---------------------------------------------------------------------------------------------- API
def test_the_default_window_is_a_day_back_to_a_week_ahead_oldest_first_with_affected_symbols(
    seeded: None, admin_web: Any
) -> None:
    r = admin_web.get(URL)
    assert r.status_code == 200, r.text
    body = r.json()
    assert titles(body) == ["CPI m/m", "BoJ minutes", "German Ifo"]
    assert body["window"] == {"start": "2026-03-01T10:00:00Z", "end": "2026-03-09T10:00:00Z"}
    cpi, boj, ifo = body["items"]
    assert set(cpi) == {"id", "at", "currency", "country", "impact", "title", "source", "created_at", "symbols"}
    assert cpi["at"] == "2026-03-02T08:00:00Z" and cpi["impact"] == "high" and cpi["source"] == "csv"
    # Matched as the news rule matches: the event's currency is the symbol's base or quote currency.
    assert set(cpi["symbols"]) == USD_SYMBOLS
    assert boj["symbols"] == ["EURJPY", "GBPJPY", "USDJPY"]  # alphabetical
    assert set(ifo["symbols"]) == {"EURUSD", "EURGBP", "EURJPY"}
    assert body["next_cursor"] is None and body["limit"] == 200


def test_impact_is_a_minimum_and_currency_an_exact_filter_within_an_explicit_window(
    seeded: None, admin_web: Any
) -> None:
    assert titles(admin_web.get(URL, params={"impact": "medium"}).json()) == ["CPI m/m", "BoJ minutes"]
    assert titles(admin_web.get(URL, params={"impact": "high"}).json()) == ["CPI m/m"]
    assert titles(admin_web.get(URL, params={"currency": "EUR"}).json()) == ["German Ifo"]
    wide = admin_web.get(URL, params={"from": "2026-02-27T00:00:00Z", "to": "2026-03-13T00:00:00+00:00"}).json()
    assert titles(wide) == ["Old NFP", "CPI m/m", "BoJ minutes", "German Ifo", "BoE rate"]
    # The end is exclusive; another offset is the same instant.
    start = admin_web.get(URL, params={"from": "2026-03-02T06:00:00-05:00", "to": "2026-03-02T11:00:01Z"}).json()
    assert titles(start) == ["BoJ minutes"]  # 06:00 in New York is 11:00 UTC: the start is inclusive
    end = admin_web.get(URL, params={"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T11:00:00Z"}).json()
    assert titles(end) == []


def test_pages_follow_the_cursor_oldest_first(seeded: None, admin_web: Any) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    for _ in range(5):
        body = admin_web.get(URL, params=params).json()
        seen += titles(body)
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == ["CPI m/m", "BoJ minutes", "German Ifo"]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-03-02T10:00:00"},  # no UTC offset
        {"to": "yesterday"},
        {"from": "2026-03-05T00:00:00Z", "to": "2026-03-04T00:00:00Z"},  # ends before it starts
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T00:00:00Z"},  # empty
        {"from": "2026-01-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"},  # more than 62 days
        {"impact": "extreme"},
        {"impact": "HIGH"},
        {"currency": "usd"},
        {"currency": "US"},
        {"currency": "USDX"},
        {"limit": "0"},
        {"limit": "501"},
        {"cursor": "not-a-cursor"},
    ],
)
def test_a_bad_window_filter_or_cursor_is_a_422_with_a_reason(admin_web: Any, params: dict[str, str]) -> None:
    r = admin_web.get(URL, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"]


def test_a_window_over_62_days_says_so(admin_web: Any) -> None:
    r = admin_web.get(URL, params={"from": "2026-01-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"})
    assert r.json()["error"]["code"] == "window_too_long" and r.json()["error"]["details"]["max_days"] == 62


def test_sources_show_their_counts_and_when_their_newest_event_arrived(seeded: None, admin_web: Any) -> None:
    sources = {s["source"]: s for s in admin_web.get(URL).json()["sources"]}
    assert sources == {
        "csv": {"source": "csv", "events": 2, "in_window": 1, "newest_created_at": "2026-02-27T10:00:00Z"},
        "finnhub": {"source": "finnhub", "events": 3, "in_window": 2, "newest_created_at": "2026-03-02T09:00:00Z"},
    }


def test_the_admin_token_reads_the_same_calendar_as_the_admin_session(seeded: None, admin_web: Any, token: Any) -> None:
    assert token.get(URL).json() == admin_web.get(URL).json()


def test_traders_and_anonymous_callers_cannot_read_the_calendar_list(platform: Any, app: Any) -> None:
    trader = make_user(platform, "tess@traders.test")
    with web_client(platform) as anon:
        assert anon.get(URL).status_code == 401
        assert login(anon, platform, trader).get(URL).status_code == 403


# ---------------------------------------------------------------------------------------------- entry
def test_an_event_added_by_an_admin_is_audited_with_the_admin_and_then_listed(
    platform: Any, admin_web: Any, admin_user: Any
) -> None:
    event = {
        "at": "2026-03-03T13:30:00Z",
        "currency": "USD",
        "impact": "high",
        "title": "Powell testimony",
        "country": "US",
    }
    r = admin_web.post(URL, json=event, headers=csrf_headers(platform))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["source"] == "admin" and set(created["symbols"]) == USD_SYMBOLS

    with platform.db.read() as c:
        audit = c.execute("SELECT actor, action, account_id, reason, after, details FROM admin_audit").fetchall()
    assert len(audit) == 1
    row = audit[0]
    assert row["action"] == "calendar_event_add" and row["account_id"] is None
    assert row["actor"] == f"user:{admin_user.id}" or str(admin_user.id) in row["actor"]
    assert "Powell testimony" in row["reason"] and row["details"] == {"event_id": created["id"], "source": "admin"}
    assert row["after"]["at"].startswith("2026-03-03T13:30:00")

    listed = admin_web.get(URL, params={"impact": "high"}).json()
    assert [(i["id"], i["title"], i["source"]) for i in listed["items"]] == [
        (created["id"], "Powell testimony", "admin")
    ]
    assert {s["source"]: s["events"] for s in listed["sources"]} == {"admin": 1}
    # The entry is in the admin activity feed too.
    feed = admin_web.get("/api/v1/admin/activity").json()["items"]
    assert any(i["kind"] == "admin" and i["data"]["action"] == "calendar_event_add" for i in feed)


def test_the_admin_token_can_add_an_event_and_is_named_in_the_audit(platform: Any, token: Any) -> None:
    r = token.post(
        URL, json={"at": "2026-03-04T12:45:00Z", "currency": "EUR", "impact": "high", "title": "ECB rate decision"}
    )
    assert r.status_code == 201, r.text
    with platform.db.read() as c:
        actor = c.execute("SELECT actor FROM admin_audit WHERE action='calendar_event_add'").fetchone()["actor"]
    assert actor and not actor.startswith("user:")


@pytest.mark.parametrize(
    "body",
    [
        {"at": "2026-03-03T13:30:00", "currency": "USD", "impact": "high", "title": "naive time"},
        {"at": "2026-03-03T13:30:00Z", "currency": "usd", "impact": "high", "title": "lower-case currency"},
        {"at": "2026-03-03T13:30:00Z", "currency": "USD", "impact": "huge", "title": "bad impact"},
        {"at": "2026-03-03T13:30:00Z", "currency": "USD", "impact": "high", "title": ""},
        {"at": "", "currency": "USD", "impact": "high", "title": "no time"},
    ],
)
def test_a_refused_event_is_a_422_and_writes_neither_the_event_nor_an_audit_row(
    platform: Any, admin_web: Any, body: dict[str, str]
) -> None:
    r = admin_web.post(URL, json=body, headers=csrf_headers(platform))
    assert r.status_code == 422, r.text
    with platform.db.read() as c:
        counts = c.execute(
            "SELECT (SELECT count(*) FROM economic_events) AS events, (SELECT count(*) FROM admin_audit) AS audit"
        ).fetchone()
    assert counts == {"events": 0, "audit": 0}


# ---------------------------------------------------------------------------------------------- page
def test_the_calendar_page_renders_the_window_for_an_admin_and_refuses_everyone_else(
    seeded: None, platform: Any, admin_web: Any
) -> None:
    r = admin_web.get("/admin/calendar")
    assert r.status_code == 200, r.text
    html = r.text
    assert 'href="/admin/calendar" class="active"' in html
    for title in ("CPI m/m", "BoJ minutes", "German Ifo"):
        assert title in html
    assert "Old NFP" not in html and "BoE rate" not in html
    assert html.count('<tr data-event-id="') == 3
    # UTC and New York (EST in early March 2026): CPI at 08:00 UTC is 03:00 in New York.
    assert "Mon 02 Mar 08:00" in html and "Mon 02 Mar 03:00 EST" in html
    assert 'id="calendar-add"' in html and 'id="calendar-meta"' in html and "<script>" not in html
    assert "EURJPY, GBPJPY, USDJPY" in html
    # Sources with their freshness.
    assert 'data-source="csv"' in html and 'data-source="finnhub"' in html

    high = admin_web.get("/admin/calendar", params={"impact": "high", "preset": "last7"}).text
    assert "CPI m/m" in high and "Old NFP" in high and "BoJ minutes" not in high
    # A hand-edited query falls back instead of failing.
    assert admin_web.get("/admin/calendar", params={"impact": "x", "currency": "??", "preset": "zz"}).status_code == 200

    trader = make_user(platform, "tina@traders.test")
    with web_client(platform) as anon:
        r = anon.get("/admin/calendar", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert login(anon, platform, trader).get("/admin/calendar", follow_redirects=False).status_code == 403


def test_an_upcoming_high_impact_event_is_highlighted_on_the_page(platform: Any, clock: Any, admin_web: Any) -> None:
    from propdesk.marketdata.calendar import EconomicCalendar, EconomicEvent

    EconomicCalendar(platform.db, clock, platform.catalogue).upsert(
        [
            EconomicEvent(T0 + timedelta(minutes=45), "USD", "high", "ISM Services PMI", "US", "csv", "ism"),
            EconomicEvent(T0 - timedelta(minutes=45), "USD", "high", "Earlier CPI", "US", "csv", "cpi-early"),
            EconomicEvent(T0 + timedelta(minutes=50), "USD", "medium", "Factory Orders", "US", "csv", "fo"),
        ]
    )
    html = admin_web.get("/admin/calendar").text
    assert html.count("is-upcoming-high") == 1 and 'id="next-high"' in html
    assert "Next high-impact event: <strong>USD ISM Services PMI</strong>" in html


# ---------------------------------------------------------------------------------------------- demo
def test_the_demo_week_is_seeded_idempotently_with_a_high_impact_usd_event_coming_up(platform: Any, clock: Any) -> None:
    from propdesk.demo import DEMO_CALENDAR, seed_demo_calendar

    clock.set(T0 + timedelta(minutes=20))
    first = seed_demo_calendar(platform)
    assert first.inserted == len(DEMO_CALENDAR)
    again = seed_demo_calendar(platform)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(DEMO_CALENDAR))
    # A restart an hour later moves the same rows; it adds none.
    clock.advance(3600)
    later = seed_demo_calendar(platform)
    assert later.inserted == 0 and later.updated == len(DEMO_CALENDAR)

    now = clock.now()
    with platform.db.read() as c:
        rows = c.execute("SELECT at, currency, impact, source, external_id FROM economic_events").fetchall()
    assert len(rows) == len(DEMO_CALENDAR) and {r["source"] for r in rows} == {"demo"}
    assert all(r["external_id"].startswith("demo:") for r in rows)
    soon = [
        r
        for r in rows
        if r["currency"] == "USD"
        and r["impact"] == "high"
        and timedelta(minutes=30) <= r["at"] - now <= timedelta(minutes=90)
    ]
    assert len(soon) == 1
    assert any(now - timedelta(days=1) <= r["at"] < now for r in rows)  # some in the past day
    assert all(r["at"] - now <= timedelta(days=7) for r in rows)  # a week
    assert {r["currency"] for r in rows} >= {"USD", "EUR", "GBP", "JPY", "AUD"}
    assert {r["impact"] for r in rows} == {"high", "medium", "low"}
