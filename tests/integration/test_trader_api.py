"""The trader API over HTTP, as signed-in web users (session cookie + trusted Origin), on a real PostgreSQL.

Checkout opens an account on the plan's rulebook version (idempotently); orders through the trader routes meet
the same gates and rulebook as every other door; partial close, SL/TP changes, cancel; journal notes;
notifications of a breach; and another trader's account is a 404 on every route, for reads and writes alike.
"""

from __future__ import annotations

import uuid
import warnings
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.web_kit import ADMIN_TOKEN, SERVICE_TOKEN, csrf_headers, login_cookie, make_user, open_test_platform

from propdesk.domain.quotes import Quote
from propdesk.identity.users import UserRole

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

D = Decimal
API = "/api/v1"


class Trader:
    """A TestClient signed in as one web user, sending the trusted Origin on every call."""

    def __init__(self, app: Any, platform: Any, email: str, role: UserRole = UserRole.TRADER):
        self.user = make_user(platform, email, role)
        self.client = TestClient(app, headers=csrf_headers(platform))
        self.client.cookies.update(login_cookie(platform, self.user))

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(API + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        self.client.app.state.platform.clock.advance(1)  # one command per second: a strict order in histories
        return self.client.post(API + path, json=body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.client.put(API + path, json=body, **kw)

    def buy(self, plan: str = "classic-2step", offer: str = "10k", key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        r = self.post("/checkout", {"plan_id": plan, "offer_id": offer, "payment_provider": "dev"}, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()


@pytest.fixture
def alice(app: Any, platform: Any) -> Trader:
    return Trader(app, platform, "alice@example.test")


@pytest.fixture
def bob(app: Any, platform: Any) -> Trader:
    return Trader(app, platform, "bob@example.test")


def quote(platform: Any, symbol: str, bid: str, ask: str) -> None:
    """A new quote, one second after the last thing that happened (so histories have a strict order)."""
    platform.clock.advance(1)
    q = platform.quotes.put(Quote(symbol, D(bid), D(ask), platform.clock.now()))
    assert q is not None
    platform.execution.on_quote(q)
    platform.quotes.announce(q)


def test_the_plan_catalogue_is_public(app: Any) -> None:
    anon = TestClient(app)
    items = anon.get(f"{API}/plans").json()["items"]
    classic = next(p for p in items if p["id"] == "classic-2step")
    assert {o["id"]: o["price"] for o in classic["offers"]}["10k"] == "99"
    assert anon.get(f"{API}/plans/classic-2step").json()["phases"][0]["id"] == "phase_1"
    assert anon.get(f"{API}/plans/no-such-plan").status_code == 404


def test_checkout_opens_an_active_phase_1_account_on_the_plans_version_and_is_idempotent(
    alice: Trader, platform: Any
) -> None:
    first = alice.buy("classic-2step", "25k", key="buy-1")
    assert first["payment"] == {
        "provider": "dev",
        "test_mode": True,
        "status": "confirmed",
        "note": "DEV PAYMENT PROVIDER: confirmed at once, no money moved",
    }
    acc = first["account"]
    assert (acc["status"], acc["phase"], acc["starting_balance"]) == ("active", "phase_1", "25000")
    version = platform.plans.get("classic-2step").version
    assert acc["plan"] == {"id": "classic-2step", "version": version, "offer_id": "25k"}
    assert first["purchase"]["amount"] == "199" and first["purchase"]["account_id"] == acc["id"]
    # The same key again: the same account and purchase, nothing new.
    again = alice.post(
        "/checkout",
        {"plan_id": "classic-2step", "offer_id": "25k", "payment_provider": "dev"},
        headers={"Idempotency-Key": "buy-1"},
    )
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["account"]["id"] == acc["id"]
    mine = alice.get("/accounts").json()["items"]
    assert [a["id"] for a in mine] == [acc["id"]]
    assert mine[0]["owner_id"] == str(alice.user.id)
    with platform.db.read() as c:
        row = c.execute(
            "SELECT rulebook_id, rulebook_version, offer_id, starting_balance FROM accounts WHERE id=%s",
            (uuid.UUID(acc["id"]),),
        ).fetchone()
        n = c.execute("SELECT count(*) AS n FROM purchases").fetchone()["n"]
    assert (row["rulebook_id"], row["rulebook_version"], row["offer_id"], row["starting_balance"]) == (
        "classic-2step",
        version,
        "25k",
        D(25000),
    )
    assert n == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"plan_id": "classic-2step", "offer_id": "7k"}, "invalid_offer"),
        ({"plan_id": "classic-2step", "offer_id": "10k", "payment_provider": "stripe"}, "unknown_payment_provider"),
        ({"plan_id": "nope", "offer_id": "10k"}, "plan_not_found"),
        ({"plan_id": "classic-2step", "offer_id": "10k", "price": "0"}, "validation_error"),
    ],
)
def test_a_bad_checkout_is_a_clear_4xx_and_opens_nothing(alice: Trader, body: dict[str, Any], code: str) -> None:
    r = alice.post("/checkout", body)
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code
    assert alice.get("/accounts").json()["items"] == []


def test_orders_through_the_trader_route_meet_the_rulebook_and_the_gates(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    # strict-risk: every order needs a stop loss -> refused with the rule, its reason and numbers, and recorded.
    r = alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "1"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "rule_violation" and err["details"]["rule"] == "max_risk_per_trade"
    assert "stop loss" in err["message"]
    assert r.json()["order"]["status"] == "rejected"
    # Risking more than 2% of equity at the stop: refused with the numbers.
    r = alice.post(
        f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "1", "stop_loss": "1.09000"}
    )
    assert r.status_code == 422 and D(r.json()["error"]["details"]["risk"]) == 1010
    # An execution gate: a quantity off the lot step.
    r = alice.post(
        f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.001", "stop_loss": "1.09900"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] != "rule_violation"
    # Within the rules: filled.
    r = alice.post(
        f"/accounts/{acc}/orders",
        {"symbol": "EURUSD", "side": "buy", "quantity": "1", "stop_loss": "1.09900", "take_profit": "1.10500"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["fill"]["price"] == "1.10005"
    orders = alice.get(f"/accounts/{acc}/orders").json()["items"]
    assert [o["status"] for o in orders] == ["filled", "rejected", "rejected", "rejected"]


def test_risk_preview_shows_the_risk_at_the_stop_in_money_and_percent_of_equity(alice: Trader, platform: Any) -> None:
    acc = alice.buy("strict-risk", "25k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    r = alice.post(
        f"/accounts/{acc}/risk-preview",
        {"symbol": "EURUSD", "side": "buy", "quantity": "1", "stop_loss": "1.09910", "take_profit": "1.10210"},
    )
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["entry_price"], p["risk"], p["risk_pct"], p["reward"], p["equity"]) == (
        "1.1001",
        "100",
        "0.4",
        "200",
        "25000",
    )
    assert p["max_risk_per_trade"] == {"pct": "2", "amount": "500", "require_stop_loss": True}
    assert p["gate"] is None
    big = alice.post(f"/accounts/{acc}/risk-preview", {"symbol": "EURUSD", "side": "buy", "quantity": "100"}).json()
    assert big["gate"]["code"] and big["risk"] is None
    with platform.db.read() as c:  # a preview records nothing
        assert c.execute("SELECT count(*) AS n FROM orders").fetchone()["n"] == 0


def test_risk_preview_at_the_largest_allowed_quantity_and_levels_answers_and_beyond_is_a_422(
    alice: Trader, platform: Any
) -> None:
    acc = alice.buy("strict-risk", "25k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    extreme = {"symbol": "EURUSD", "side": "sell", "quantity": "100", "stop_loss": "99999999999999999.9999999999"}
    r = alice.post(f"/accounts/{acc}/risk-preview", {**extreme, "take_profit": "0.0000000001"})
    assert r.status_code == 200, r.text
    assert r.json()["gate"]["code"] and Decimal(r.json()["risk_pct"]) > 0
    r = alice.post(f"/accounts/{acc}/risk-preview", {**extreme, "quantity": "100.00000001"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "quantity_out_of_range", r.text


def test_partial_close_modify_and_cancel(alice: Trader, platform: Any) -> None:
    acc = alice.buy("classic-2step", "10k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    assert (
        alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.5"}).status_code == 201
    )
    r = alice.post(f"/accounts/{acc}/positions/EURUSD/modify", {"stop_loss": "1.09500", "take_profit": "1.11000"})
    assert r.status_code == 200, r.text
    pos = alice.get(f"/accounts/{acc}/positions").json()["items"]
    assert (pos[0]["stop_loss"], pos[0]["take_profit"], pos[0]["quantity"]) == ("1.095", "1.11", "0.5")
    quote(platform, "EURUSD", "1.10100", "1.10110")
    pos = alice.get(f"/accounts/{acc}/positions").json()
    assert pos["items"][0]["unrealized_pnl"] == "47.5" and pos["items"][0]["mid"] == "1.10105"
    r = alice.post(f"/accounts/{acc}/positions/EURUSD/close", {"quantity": "0.2"})
    assert r.status_code == 201 and r.json()["fill"]["quantity"] == "0.2"
    assert alice.get(f"/accounts/{acc}/positions").json()["items"][0]["quantity"] == "0.3"
    r = alice.post(
        f"/accounts/{acc}/orders",
        {"symbol": "EURUSD", "side": "buy", "quantity": "0.1", "order_type": "limit", "limit_price": "1.09000"},
    )
    assert r.status_code == 201 and r.json()["order"]["status"] == "open"
    oid = r.json()["order"]["id"]
    r = alice.post(f"/accounts/{acc}/orders/{oid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert alice.post(f"/accounts/{acc}/orders/{oid}/cancel").json()["error"]["code"] == "order_not_open"
    trades = alice.get(f"/accounts/{acc}/trades").json()["items"]
    assert [(t["side"], t["quantity"], t["closes"]) for t in trades] == [("sell", "0.2", True), ("buy", "0.5", False)]


def test_overview_rules_and_equity_feed_the_dashboard(alice: Trader, platform: Any) -> None:
    acc = alice.buy("classic-2step", "10k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.5"})
    quote(platform, "EURUSD", "1.09900", "1.09910")
    ov = alice.get(f"/accounts/{acc}").json()
    assert ov["status"] == "active" and ov["plan"]["id"] == "classic-2step" and ov["can_trade"] is True
    assert ov["balance"]["unrealized_pnl"] == "-52.5"
    panel = ov["rules"]["panel"]
    assert D(panel["daily_loss"]["floor"]) == 9500 and panel["daily_loss"]["anchor"] == "start_of_day_balance"
    assert D(panel["max_loss"]["floor"]) == 9000 and panel["max_loss"]["mode"] == "static"
    assert D(panel["profit_target"]["target"]) == 1000
    assert panel["trading_days"] == {"done": 1, "required": 4, "met": False}
    assert panel["days_left"]["days"] == 30
    assert panel["next_reset"]["firm"]["timezone"] == "Europe/Prague"
    assert panel["next_reset"]["firm"]["local"].startswith("2026-03-03T00:00:00+01:00")
    assert panel["next_reset"]["trader"]["timezone"] == "UTC"
    eq = alice.get(f"/accounts/{acc}/equity").json()
    assert eq["points"][-1]["live"] is True and eq["points"][-1]["equity"] == "9892.5"  # 10000 - 55 fee - 52.5
    assert [D(p["value"]) for p in eq["max_loss_floor"]] == [9000, 9000]
    assert D(eq["daily_floor"][-1]["value"]) == 9500
    times = [p["t"] for p in eq["points"]]
    assert times == sorted(set(times))


def test_a_trailing_max_loss_floor_is_drawn_as_it_climbed_day_by_day(alice: Trader, platform: Any) -> None:
    """The equity chart's max-loss line follows an intraday trailing floor across days: each day ends on the
    floor it reached, and the line ends on the engine's current floor."""
    acc = alice.buy("futures-trailing", "50k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    assert alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "2"}).status_code in (
        200,
        201,
    )
    floors: list[Decimal] = []
    for bid in ("1.10200", "1.10400"):  # +400 then +800 of open profit: the floor trails the new equity highs
        quote(platform, "EURUSD", bid, str(D(bid) + D("0.0001")))
        floors.append(D(alice.get(f"/accounts/{acc}").json()["rules"]["panel"]["max_loss"]["floor"]))
        platform.clock.advance(86400)
        platform.execution.roll_day(uuid.UUID(acc))
        alice.client.cookies.update(login_cookie(platform, alice.user))  # a day idle ended the web session
    assert floors[0] < floors[1]
    eq = alice.get(f"/accounts/{acc}/equity").json()
    assert eq["max_loss_mode"] == "intraday_trailing"
    values = [D(p["value"]) for p in eq["max_loss_floor"]]
    times = [p["t"] for p in eq["max_loss_floor"]]
    assert times == sorted(set(times))
    assert values[0] == D("48000")  # the day it opened: 50000 - 2000, before any profit
    assert floors[0] in values and floors[1] in values
    assert values == sorted(values) and values[-1] == floors[-1]


def test_journal_notes_on_closed_trades(alice: Trader, bob: Trader, platform: Any) -> None:
    acc = alice.buy()["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.5"})
    fill = alice.post(f"/accounts/{acc}/positions/EURUSD/close").json()["fill"]["id"]
    r = alice.put(f"/accounts/{acc}/journal/{fill}", {"note": "cut it early"})
    assert r.status_code == 200 and r.json()["note"] == "cut it early"
    assert alice.put(f"/accounts/{acc}/journal/{fill}", {"note": "cut it early, again"}).status_code == 200
    journal = alice.get(f"/accounts/{acc}/journal").json()["items"]
    assert [(j["id"], j["note"]) for j in journal] == [(fill, "cut it early, again")]
    assert alice.put(f"/accounts/{acc}/journal/{uuid.uuid4()}", {"note": "x"}).status_code == 404
    assert alice.put(f"/accounts/{acc}/journal/{fill}", {"note": "x" * 4001}).status_code == 422
    # Bob can neither read nor write it, and cannot tell it exists.
    assert bob.put(f"/accounts/{acc}/journal/{fill}", {"note": "mine"}).json()["error"]["code"] == "account_not_found"
    bob_acc = bob.buy()["account"]["id"]
    assert bob.put(f"/accounts/{bob_acc}/journal/{fill}", {"note": "mine"}).json()["error"]["code"] == "fill_not_found"


def test_a_breach_shows_up_as_a_notification_with_its_evidence(alice: Trader, bob: Trader, platform: Any) -> None:
    acc = alice.buy("classic-2step", "10k")["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    r = alice.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.8"})
    assert r.status_code == 201, r.text
    quote(platform, "EURUSD", "1.09300", "1.09310")  # -564 and the fee: beyond the 500 daily allowance
    assert alice.get(f"/accounts/{acc}").json()["status"] == "failed"
    notes = alice.get("/notifications").json()
    kinds = [n["kind"] for n in notes["items"]]
    assert "breach" in kinds and "status" in kinds and notes["unread"] == len(kinds)
    breach = next(n for n in notes["items"] if n["kind"] == "breach")
    assert breach["title"] == "Rule breached: max_daily_loss" and breach["account_id"] == acc
    assert breach["evidence"]["rule"] == "max_daily_loss" and breach["evidence"]["evidence"]
    violations = alice.get(f"/accounts/{acc}/violations").json()["items"]
    assert any(v["kind"] == "breach" and v["rule"] == "max_daily_loss" for v in violations)
    r = alice.post(f"/notifications/{breach['id']}/read")
    assert r.status_code == 200 and r.json()["read_at"]
    assert alice.get("/notifications?unread=true").json()["unread"] == len(kinds) - 1
    # Bob has none, and cannot mark Alice's read.
    assert bob.get("/notifications").json() == {"items": [], "unread": 0}
    assert bob.post(f"/notifications/{notes['items'][0]['id']}/read").status_code == 404


def test_another_traders_account_is_a_404_on_every_route(alice: Trader, bob: Trader, app: Any, platform: Any) -> None:
    acc = alice.buy()["account"]["id"]
    quote(platform, "EURUSD", "1.10000", "1.10010")
    r = alice.post(
        f"/accounts/{acc}/orders",
        {"symbol": "EURUSD", "side": "buy", "quantity": "0.1", "order_type": "limit", "limit_price": "1.09"},
    )
    oid = r.json()["order"]["id"]
    admin = Trader(app, platform, "boss@example.test", UserRole.ADMIN)
    for who in (bob, admin):
        for path in (
            "",
            "/positions",
            "/orders",
            "/trades",
            "/violations",
            "/equity",
            "/rules",
            "/daily-stats",
            "/journal",
        ):
            r = who.get(f"/accounts/{acc}{path}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found", path
        for path, body in (
            ("/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.1"}),
            (f"/orders/{oid}/cancel", None),
            ("/positions/EURUSD/close", None),
            ("/positions/EURUSD/modify", {"stop_loss": "1.05"}),
            ("/risk-preview", {"symbol": "EURUSD", "side": "buy", "quantity": "0.1"}),
        ):
            r = who.post(f"/accounts/{acc}{path}", body)
            assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found", path
        # The same answer as for an account that does not exist at all.
        assert who.get(f"/accounts/{uuid.uuid4()}").json()["error"]["code"] == "account_not_found"
        assert who.get("/accounts").json()["items"] == []
    with platform.db.read() as c:
        assert c.execute("SELECT status FROM orders WHERE id=%s", (uuid.UUID(oid),)).fetchone()["status"] == "open"


def test_bearer_tokens_and_anonymous_callers_cannot_use_the_trader_api(app: Any, alice: Trader) -> None:
    acc = alice.buy()["account"]["id"]
    for token in (SERVICE_TOKEN, ADMIN_TOKEN):
        c = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        assert c.get(f"{API}/accounts/{acc}").status_code == 403
        assert c.get(f"{API}/accounts").status_code == 403
    anon = TestClient(app)
    assert anon.get(f"{API}/accounts").status_code == 401
    assert anon.get(f"{API}/notifications").status_code == 401


def test_order_submission_is_rate_limited_per_user(db_url: str, clock: Any) -> None:
    from propdesk.web.app import create_app

    p = open_test_platform(db_url, clock, rate_orders_user="2/60")
    try:
        t = Trader(create_app(p), p, "fast@example.test")
        acc = t.buy()["account"]["id"]
        quote(p, "EURUSD", "1.10000", "1.10010")
        codes = [
            t.post(f"/accounts/{acc}/orders", {"symbol": "EURUSD", "side": "buy", "quantity": "0.01"}) for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [201, 201, 429]
        assert int(codes[-1].headers["Retry-After"]) >= 1
    finally:
        p.close()
