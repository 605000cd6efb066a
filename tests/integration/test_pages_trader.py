"""The trader app's pages, server-rendered: accounts + checkout, the dashboard / trading screen, the journal.

Reads go through the app role as the signed-in user (row-level security): another trader's account is a 404
page, never a hint that it exists.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.web_kit import login_cookie, make_user

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


@pytest.fixture
def browser_like(app: Any) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


def new_account(platform: Any, user: Any, offer: str = "10k") -> uuid.UUID:
    from propdesk.domain.lifecycle import Mode
    from propdesk.domain.policy import ExecutionPolicy
    from propdesk.execution.service import CreateAccount

    sized = platform.plans.get("classic-2step").for_offer(offer)
    policy = ExecutionPolicy.from_json({"starting_balance": str(sized.starting_balance), "currency": sized.currency})
    account, _ = platform.execution.create_account(
        CreateAccount(
            owner_id=str(user.id),
            mode=Mode.CHALLENGE,
            phase=sized.phases[0].id,
            policy=policy,
            rulebook=sized.to_json(),
            rulebook_id=sized.id,
            rulebook_version=sized.version,
            offer_id=offer,
            start=True,
        )
    )
    return account["id"]  # type: ignore[no-any-return]


def as_user(client: TestClient, platform: Any, user: Any) -> TestClient:
    client.cookies.clear()
    client.cookies.update(login_cookie(platform, user))
    return client


def test_anonymous_visitors_are_sent_to_login_for_the_app(browser_like: TestClient) -> None:
    r = browser_like.get("/app")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_my_accounts_lists_only_my_accounts_and_offers_checkout_with_the_dev_provider(
    browser_like: TestClient, platform: Any
) -> None:
    me, other = make_user(platform, "me@example.test"), make_user(platform, "other@example.test")
    mine = new_account(platform, me)
    theirs = new_account(platform, other)
    html = as_user(browser_like, platform, me).get("/app").text
    assert f'data-account-id="{mine}"' in html and str(theirs) not in html
    assert "10,000.00" in html
    assert "DEV PAYMENT PROVIDER" in html and 'id="checkout"' in html
    plans = json.loads(re.search(r'<script type="application/json" id="plans-data">(.*?)</script>', html, re.S)[1])
    assert {p["id"] for p in plans} == {p["id"] for p in platform.plans.catalogue()}


def test_the_plan_chosen_on_the_landing_page_is_preselected(browser_like: TestClient, platform: Any) -> None:
    me = make_user(platform, "me@example.test")
    html = as_user(browser_like, platform, me).get("/app?plan=strict-risk").text
    assert re.search(r'<option value="strict-risk" selected>', html)


def test_the_dashboard_shows_status_balances_rule_panels_and_the_trading_screen(
    browser_like: TestClient, platform: Any
) -> None:
    me = make_user(platform, "me@example.test", timezone="America/New_York")
    account = new_account(platform, me)
    r = as_user(browser_like, platform, me).get(f"/app/accounts/{account}")
    assert r.status_code == 200
    html = r.text
    assert 'data-status="active"' in html and "phase 1" in html
    assert 'id="stat-equity">10,000.00' in html
    for rule in ("profit_target", "max_daily_loss", "max_loss", "trading_days", "days_left", "next_reset"):
        assert f'data-rule="{rule}"' in html, rule
    assert "Your zone (America/New_York)" in html and "Firm's zone (Europe/Prague)" in html
    assert "9,500.00" in html  # today's daily floor: 10,000 minus 5% of the initial balance
    assert "9,000.00" in html  # the static max-loss floor
    assert 'id="ticket"' in html and 'id="price-chart"' in html and 'id="equity-chart"' in html
    boot = json.loads(re.search(r'<script type="application/json" id="boot">(.*?)</script>', html, re.S)[1])
    assert boot["account_id"] == str(account) and boot["symbol"] == "EURUSD"
    assert Decimal(boot["data"]["floors"]["daily"]) == Decimal("9500")
    assert boot["equity"]["points"] and boot["equity"]["max_loss_floor"]


def test_a_drawdown_beyond_70_percent_of_a_limit_shows_a_warning(platform: Any) -> None:
    from propdesk.web.trader_views import build_alerts

    overview = {
        "status": "active",
        "as_of": None,
        "rules": {
            "panel": {
                "daily_loss": {
                    "used_pct": "72.50",
                    "floor": "9500.00",
                    "room": "137.50",
                    "value": "9637.50",
                    "computation": "x",
                },
                "max_loss": {"used_pct": "36.25", "floor": "9000.00", "room": "637.50", "value": "9637.50"},
            }
        },
    }
    alerts = build_alerts(overview, [])
    assert [a["title"] for a in alerts] == ["Drawdown warning: 72.50% of the daily loss limit used"]
    breach = {
        "id": 7,
        "kind": "breach",
        "rule": "max_daily_loss",
        "at": None,
        "value": "9400",
        "limit": "9500",
        "action": "fail",
        "evidence": {"equity": "9400"},
    }
    alerts = build_alerts({**overview, "status": "failed"}, [breach])
    assert alerts[0]["kind"] == "breach" and alerts[0]["level"] == "error" and len(alerts) == 1


def test_another_traders_account_and_a_bad_id_are_not_found_pages(browser_like: TestClient, platform: Any) -> None:
    owner, other = make_user(platform, "owner@example.test"), make_user(platform, "nosy@example.test")
    account = new_account(platform, owner)
    client = as_user(browser_like, platform, other)
    for path in (
        f"/app/accounts/{account}",
        f"/app/accounts/{account}/journal",
        f"/app/accounts/{uuid.uuid4()}",
        "/app/accounts/not-a-uuid",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "Not found" in r.text and "10,000" not in r.text


def test_the_journal_lists_closed_trades_violations_and_notifications(browser_like: TestClient, platform: Any) -> None:
    from propdesk.domain.orders import OrderRequest, OrderType, Side
    from propdesk.domain.quotes import Quote

    me = make_user(platform, "me@example.test")
    account = new_account(platform, me)
    ex, clock = platform.execution, platform.clock
    platform.quotes.put(Quote("EURUSD", Decimal("1.10000"), Decimal("1.10010"), clock.now()))
    assert ex.submit_order(account, OrderRequest("EURUSD", Side.BUY, Decimal("0.02"), OrderType.MARKET)).accepted
    clock.advance(60)
    platform.quotes.put(Quote("EURUSD", Decimal("1.10100"), Decimal("1.10110"), clock.now()))
    assert ex.close_position(account, "EURUSD", None).accepted
    html = as_user(browser_like, platform, me).get(f"/app/accounts/{account}/journal").text
    assert html.count('class="note-form inline-form"') == 1
    assert 'id="violations-table"' in html and "Notifications" in html
