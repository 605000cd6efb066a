"""Upcoming news and the news blackout for the trader: ``GET /api/v1/accounts/{id}/news`` and the dashboard's News
panel, on a real PostgreSQL with the injected clock.

The read model (``reads.trader.news_panel``) lists the events around now whose impact is at least the plan's news
rule's, with the symbols each one touches (base or quote currency, as the news rule matches) and the blackout
window around it, so a refusal by the news rule is never a surprise: what the panel says is blocked now is what
the engine refuses.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.web_kit import csrf_headers, login_cookie, make_user

from propdesk.domain.quotes import Quote
from propdesk.marketdata.calendar import EconomicCalendar, EconomicEvent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

API = "/api/v1"
FOREX_USD = {"EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCAD", "USDCHF", "NZDUSD"}


class Trader:
    """A TestClient signed in as one web user (session cookie + trusted Origin)."""

    def __init__(self, app: Any, platform: Any, email: str, timezone: str = "UTC"):
        self.platform = platform
        self.user = make_user(platform, email, timezone=timezone)
        self.client = TestClient(app, headers=csrf_headers(platform))
        self.client.cookies.update(login_cookie(platform, self.user))

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(API + path, **kw)

    def buy(self, plan: str, offer: str) -> str:
        self.platform.clock.advance(1)
        r = self.client.post(f"{API}/checkout", json={"plan_id": plan, "offer_id": offer, "payment_provider": "dev"})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["account"]["id"])

    def relogin(self) -> None:
        """A fresh session (after the clock jumped past the idle timeout)."""
        self.client.cookies.clear()
        self.client.cookies.update(login_cookie(self.platform, self.user))

    def news(self, account_id: str, **params: Any) -> dict[str, Any]:
        r = self.get(f"/accounts/{account_id}/news", params=params)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def alice(app: Any, platform: Any) -> Trader:
    return Trader(app, platform, "alice@example.test", timezone="America/New_York")


@pytest.fixture
def bob(app: Any, platform: Any) -> Trader:
    return Trader(app, platform, "bob@example.test")


def add_events(platform: Any, *events: tuple[timedelta, str, str, str]) -> None:
    """Events ``(offset from now, currency, impact, title)`` through the calendar's own upsert."""
    now = platform.clock.now()
    EconomicCalendar(platform.db, platform.clock).upsert(
        [EconomicEvent(now + off, cur, impact, title, source="csv") for off, cur, impact, title in events]
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def titles(body: dict[str, Any]) -> list[str]:
    return [e["title"] for e in body["events"]]


def test_the_panel_lists_the_events_inside_the_window_with_the_plans_news_rule(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")  # news_trading: 30 min before / 30 min after, high, reject_order
    add_events(
        platform,
        (timedelta(minutes=-45), "USD", "high", "Gone: released 45 min ago"),
        (timedelta(minutes=-20), "USD", "high", "Still in its blackout"),
        (timedelta(hours=2), "USD", "high", "US CPI"),
        (timedelta(hours=23, minutes=59), "EUR", "high", "ECB decision"),
        (timedelta(hours=30), "GBP", "high", "BoE in 30 h"),
    )
    body = alice.news(acc)
    assert body["rule"] == {
        "minutes_before": 30,
        "minutes_after": 30,
        "impact": "high",
        "scope": "open_and_close",
        "action": "reject_order",
    }
    # From now - minutes_after (a blackout that may still run) to now + 24 h, oldest first.
    assert titles(body) == ["Still in its blackout", "US CPI", "ECB decision"]
    assert body["hours"] == 24
    cpi = body["events"][1]
    now = platform.clock.now()
    assert at(cpi["at"]) == now + timedelta(hours=2)
    assert at(cpi["blackout_from"]) == now + timedelta(hours=1, minutes=30)
    assert at(cpi["blackout_to"]) == now + timedelta(hours=2, minutes=30)
    assert cpi["currency"] == "USD" and cpi["impact"] == "high" and cpi["active"] is False
    # A longer look ahead reaches the event 30 h away.
    assert "BoE in 30 h" in titles(alice.news(acc, hours=48))


def test_only_events_at_least_as_important_as_the_rule_are_shown(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")  # impact: high
    add_events(
        platform,
        (timedelta(hours=1), "USD", "high", "NFP"),
        (timedelta(hours=1), "USD", "medium", "ISM"),
        (timedelta(hours=1), "USD", "low", "Redbook"),
    )
    assert titles(alice.news(acc)) == ["NFP"]
    assert alice.news(acc)["impact"] == "high"


def test_an_event_affects_the_symbols_whose_base_or_quote_currency_it_concerns(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")
    add_events(
        platform,
        (timedelta(hours=1), "JPY", "high", "BoJ rate decision"),
        (timedelta(hours=2), "USD", "high", "FOMC"),
        (timedelta(hours=3), "CNY", "high", "China CPI"),
    )  # no tradeable symbol quotes CNY
    body = alice.news(acc)
    boj, fomc = body["events"]
    assert boj["title"] == "BoJ rate decision" and boj["symbols"] == ["EURJPY", "GBPJPY", "USDJPY"]
    assert set(fomc["symbols"]) >= FOREX_USD and {"XAUUSD", "US500", "BTCUSD"} <= set(fomc["symbols"])
    assert "EURGBP" not in fomc["symbols"] and "EURJPY" not in fomc["symbols"]
    assert "China CPI" not in titles(body)  # touches nothing the account can trade


def test_active_flag_and_blackout_now_follow_the_injected_clock(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")
    add_events(platform, (timedelta(minutes=20), "GBP", "high", "UK GDP"))
    body = alice.news(acc)
    assert body["events"][0]["active"] is True  # 20 min ahead: inside the 30 min before it
    assert body["blackout_now"] == ["EURGBP", "GBPJPY", "GBPUSD"]
    platform.clock.advance(49 * 60)  # 29 min after the release: still inside the 30 min after it
    alice.relogin()
    body = alice.news(acc)
    assert body["events"][0]["active"] is True and body["blackout_now"] == ["EURGBP", "GBPJPY", "GBPUSD"]
    platform.clock.advance(2 * 60)  # 31 min after: over, and out of the panel's window
    body = alice.news(acc)
    assert body["events"] == [] and body["blackout_now"] == []


def test_a_symbol_the_panel_shows_as_blocked_now_is_refused_by_the_news_rule(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")
    add_events(platform, (timedelta(minutes=10), "EUR", "high", "ECB press conference"))
    assert "EURUSD" in alice.news(acc)["blackout_now"]
    platform.clock.advance(1)
    q = platform.quotes.put(Quote("EURUSD", Decimal("1.10000"), Decimal("1.10010"), platform.clock.now()))
    assert q is not None
    platform.execution.on_quote(q)
    platform.clock.advance(1)
    r = alice.client.post(
        f"{API}/accounts/{acc}/orders",
        json={"symbol": "EURUSD", "side": "buy", "quantity": "1", "stop_loss": "1.09900"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["rule"] == "news_trading"


def test_a_plan_without_a_news_rule_shows_high_impact_events_without_a_blackout(alice: Trader, platform: Any) -> None:
    acc = alice.buy("one-step-eod", "25k")
    add_events(
        platform,
        (timedelta(minutes=-90), "USD", "high", "An hour and a half ago"),
        (timedelta(minutes=-30), "USD", "high", "Half an hour ago"),
        (timedelta(minutes=5), "USD", "high", "Retail sales"),
        (timedelta(minutes=5), "USD", "medium", "PMI"),
    )
    body = alice.news(acc)
    assert body["rule"] is None and body["impact"] == "high"
    assert titles(body) == ["Half an hour ago", "Retail sales"]  # 1 h back without a rule; high only
    assert all(e["blackout_from"] is None and e["blackout_to"] is None and e["active"] is False for e in body["events"])
    assert body["blackout_now"] == []


def test_another_traders_account_is_not_found(alice: Trader, bob: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")
    r = bob.get(f"/accounts/{acc}/news")
    assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found"
    assert bob.get(f"/accounts/{uuid.uuid4()}/news").status_code == 404


@pytest.mark.parametrize("hours", ["0", "169", "-1", "abc", "1.5"])
def test_hours_outside_1_to_168_is_a_422(alice: Trader, platform: Any, hours: str) -> None:
    acc = alice.buy("strict-risk", "25k")
    r = alice.get(f"/accounts/{acc}/news", params={"hours": hours})
    assert r.status_code == 422, r.text


def test_the_dashboard_shows_the_news_panel_with_local_and_utc_times_and_the_countdown(
    alice: Trader, platform: Any
) -> None:
    acc = alice.buy("strict-risk", "25k")
    add_events(
        platform,
        (timedelta(minutes=12, seconds=4), "USD", "high", "Non-Farm Payrolls"),
        (timedelta(hours=3), "EUR", "high", "ECB rate decision <b>"),
    )
    html = alice.client.get(f"/app/accounts/{acc}").text
    assert 'id="news-panel"' in html and ">News<" in html
    assert "Non-Farm Payrolls" in html and "ECB rate decision &lt;b&gt;" in html  # autoescaped
    # T0 is 10:00 UTC: the release at 10:12 UTC is 05:12 in New York (the trader's zone), the blackout 09:42-10:42.
    assert "Mon 02 Mar 05:12 EST" in html and "Mon 02 Mar 10:12 UTC" in html
    assert "04:42 EST – 05:42 EST" in html
    assert "blackout now, ends in 42m 04s" in html  # rendered at the server's now; dashboard.js ticks it
    assert "blackout in 2h 30m 00s" in html
    assert 'data-symbols="' in html and "EURUSD" in html
    assert 'id="ticket-news"' in html  # the ticket's blackout notice, filled in by dashboard.js
    assert "30 min before to 30 min after each high-impact event" in html and "orders are refused" in html


def test_the_dashboard_says_when_nothing_is_coming_and_when_the_plan_has_no_news_rule(
    alice: Trader, platform: Any
) -> None:
    strict = alice.buy("strict-risk", "25k")
    html = alice.client.get(f"/app/accounts/{strict}").text
    assert "No high-impact events in the next 24 h." in html and "no news rule" not in html
    plain = alice.buy("one-step-eod", "25k")
    html = alice.client.get(f"/app/accounts/{plain}").text
    assert "This plan has no news rule" in html
