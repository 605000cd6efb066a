"""The admin panel's JSON reads over HTTP on a real PostgreSQL, on a known set of accounts made through the
execution core (quotes and orders over the service API, so every status was reached by the rules engine):

    pass      phase_1 passed with one winning trade (its funded account opens: 1 funded)
    fail-1    daily loss breached by quotes -> failed
    fail-2    daily loss breached by quotes -> failed
    liq       liquidated by an admin
    live      phase_1, active, untouched
    audition  an audition account without a plan (never a challenge)

So: 4 ended challenge accounts, pass rate 1/4 = 25.00%, breach rate 2/4 = 50.00%; 1 funded; pending payouts 0
("payouts not enabled"). Reads run as the admin user on the app role (RLS), and with the admin bearer token.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests import web_kit
from tests.web_kit import ADMIN_TOKEN, SERVICE_TOKEN, login, open_test_platform

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

PUBLIC_URL = "http://testserver"
# Bearer calls need no Origin (no cookie rides along); it is sent anyway so these tests depend on no CSRF detail.
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Origin": PUBLIC_URL}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Origin": PUBLIC_URL}
POLICY = {"max_notional": "2000000", "max_position_equity_pct": "3000", "max_leverage": "30", "fee_bps": "0"}

PLAN = """
id: panel-plan
name: Panel Plan
starting_balance: "100000"
timezone: UTC
rules:
  max_daily_loss: {pct: 5, base: initial_balance, anchor: start_of_day_balance}
  max_loss: {pct: 10, mode: static}
phases:
  - id: phase_1
    rules: {profit_target: {pct: 1}}
  - id: funded
    profit_split_pct: 80
offers:
  - {id: 100k, starting_balance: "100000", price: "500"}
"""


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    p = open_test_platform(db_url, clock, db_pool_size=8, public_url=PUBLIC_URL)
    yield p
    p.close()


@pytest.fixture
def service(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers=SERVICE) as c:
        yield c


def make_user(platform: Any, email: str, role: str = "trader") -> Any:
    return web_kit.make_user(platform, email, role, display_name=email.split("@")[0].title())


def session_client(app: Any, platform: Any, user: Any) -> TestClient:
    return login(TestClient(app, base_url=PUBLIC_URL), platform, user)


@pytest.fixture
def admin_user(platform: Any) -> Any:
    return make_user(platform, "boss@firm.test", "admin")


@pytest.fixture
def admin_web(app: Any, platform: Any, admin_user: Any, service: TestClient) -> TestClient:
    """The admin, logged in (session cookie): reads go through the app role as this user."""
    return session_client(app, platform, admin_user)


@pytest.fixture
def admin_token(app: Any, service: TestClient) -> TestClient:
    return TestClient(app, headers=ADMIN)


class Book:
    """Drives accounts through the execution core in-process: the feed's publish path for quotes (so the rules
    engine reacts as it does live) and the execution service for orders."""

    def __init__(self, platform: Any, clock: Any):
        self.platform = platform
        self.clock = clock

    def quote(self, bid: str, symbol: str = "EURUSD") -> None:
        from propdesk.domain.quotes import Quote
        from propdesk.marketdata.feed import publish

        ask = Decimal(bid) + Decimal("0.00010")
        stored = publish(
            self.platform.quotes,
            self.platform.execution,
            Quote(symbol, Decimal(bid), ask, self.clock.now(), 0, "test"),
            _NoLog(),
        )
        assert stored is not None

    def open(self, owner: str) -> str:
        from propdesk.domain.policy import ExecutionPolicy
        from propdesk.execution.service import CreateAccount

        book = self.platform.plans.get("panel-plan").for_offer("100k")
        policy = ExecutionPolicy.from_json(
            {**POLICY, "starting_balance": str(book.starting_balance), "currency": book.currency}
        )
        row, _ = self.platform.execution.create_account(
            CreateAccount(
                owner_id=owner,
                phase=book.phases[0].id,
                policy=policy,
                start=True,
                rulebook=book.to_json(),
                rulebook_id=book.id,
                rulebook_version=book.version,
                offer_id="100k",
            )
        )
        return str(row["id"])

    def buy(self, acc: str, lots: str) -> None:
        from propdesk.domain.orders import OrderRequest, Side

        out = self.platform.execution.submit_order(uuid.UUID(acc), OrderRequest("EURUSD", Side.BUY, Decimal(lots)))
        assert out.accepted, out

    def close(self, acc: str) -> None:
        self.platform.execution.close_position(uuid.UUID(acc), "EURUSD")

    def status(self, acc: str) -> str:
        with self.platform.db.read() as c:
            return c.execute("SELECT status FROM accounts WHERE id=%s", (uuid.UUID(acc),)).fetchone()["status"]  # type: ignore[no-any-return]


class _NoLog:
    def error(self, event: str, **kw: Any) -> None:
        raise AssertionError(f"{event}: {kw}")


@pytest.fixture
def known(platform: Any, service: TestClient, clock: Any) -> dict[str, Any]:
    """The known set of accounts of the module docstring, owned by two web traders (and one service owner)."""
    from propdesk.domain.lifecycle import Mode, Trigger
    from propdesk.domain.policy import ExecutionPolicy
    from propdesk.execution.service import CreateAccount

    platform.plans.create_version(PLAN, actor="test")
    alice = make_user(platform, "alice@traders.test")
    bob = make_user(platform, "bob@traders.test")
    book = Book(platform, clock)
    book.quote("1.10000")
    ids: dict[str, Any] = {"alice": alice, "bob": bob}

    ids["pass"] = book.open(str(alice.id))
    book.buy(ids["pass"], "5")
    clock.advance(60)
    book.quote("1.10300")  # +1,500 = the 1% target
    book.close(ids["pass"])
    assert book.status(ids["pass"]) == "passed"

    for name in ("fail-1", "fail-2"):
        clock.advance(60)
        book.quote("1.10000")
        ids[name] = book.open(str(bob.id))
        book.buy(ids[name], "10")
        clock.advance(5)
        book.quote("1.09400")  # -6,000 floating: below the 95,000 daily floor
        assert book.status(ids[name]) == "failed"

    clock.advance(60)
    book.quote("1.10000")
    ids["liq"] = book.open(str(bob.id))
    # An admin liquidation, audited like the admin route does it.
    from propdesk.api.routes.admin import write_audit

    with platform.db.tx() as c:
        platform.execution.apply_trigger(
            uuid.UUID(ids["liq"]), Trigger.LIQUIDATE, actor="env:admin", reason="chargeback", conn=c
        )
        write_audit(
            c,
            actor="env:admin",
            action="liquidate",
            account_id=uuid.UUID(ids["liq"]),
            reason="chargeback",
            before={"status": "active"},
            after={"status": "liquidated"},
            details={"outcome": "applied"},
            at=clock.now(),
        )

    ids["live"] = book.open(str(alice.id))
    row, _ = platform.execution.create_account(
        CreateAccount(owner_id="bot-7", mode=Mode.AUDITION, policy=ExecutionPolicy(), start=True)
    )
    ids["audition"] = str(row["id"])
    with platform.db.read() as c:
        child = c.execute("SELECT id FROM accounts WHERE parent_account_id=%s", (uuid.UUID(ids["pass"]),)).fetchone()
    ids["funded"] = str(child["id"])
    return ids


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_count_passes_and_breaches_over_ended_challenge_accounts(
    known: dict[str, Any], admin_web: TestClient
) -> None:
    r = admin_web.get("/api/v1/admin/metrics")
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["challenges"] == {
        "ended": 4,
        "passed": 1,
        "failed": 2,
        "expired": 0,
        "pass_rate_pct": "25",
        "breach_rate_pct": "50",
    }
    assert m["funded"] == 1
    by_phase = {p["phase"]: p["count"] for p in m["active_by_phase"]}
    # live: alice's second account and the audition account (phase_1 by default), and the funded account that
    # the pass opened.
    assert by_phase["phase_1"] == 2 and by_phase["funded"] == 1
    assert sum(by_phase.values()) == m["live_accounts"] == 3
    assert m["total_accounts"] == 7
    assert "ended challenge accounts" in m["definitions"]["pass_rate"]


def test_pending_payouts_are_zero_from_the_query_and_labelled_not_enabled(
    known: dict[str, Any], admin_web: TestClient
) -> None:
    payouts = admin_web.get("/api/v1/admin/metrics").json()["pending_payouts"]
    assert payouts["enabled"] is False and payouts["note"] == "payouts not enabled"
    assert payouts["count"] == 0 and Decimal(payouts["amount"]) == 0
    assert Decimal(payouts["accrued_profit_split"]) == 0  # the funded account has not traded yet


def test_email_and_notification_delivery_are_counted_from_their_tables(
    known: dict[str, Any], platform: Any, admin_web: TestClient
) -> None:
    with platform.db.tx() as c:
        c.execute(
            "INSERT INTO email_outbox (to_address, subject, body, kind, created_at, sent_at)"
            " VALUES ('a@x.test', 's', 'b', 'reset', now(), now())"
        )
        c.execute(
            "INSERT INTO email_outbox (to_address, subject, body, kind, created_at, failed_at, attempts)"
            " VALUES ('b@x.test', 's', 'b', 'reset', now(), now(), 3)"
        )
        c.execute(
            "INSERT INTO email_outbox (to_address, subject, body, kind, created_at)"
            " VALUES ('c@x.test', 's', 'b', 'reset', now())"
        )
        notes = c.execute("SELECT count(*) AS n FROM notifications").fetchone()["n"]
    m = admin_web.get("/api/v1/admin/metrics").json()
    assert m["email"] == {"enabled": True, "sent": 1, "failed": 1, "pending": 1}
    # Breaches, passes and status changes of web users' accounts notify them (migration 0005's triggers).
    assert m["notifications"]["total"] == notes > 0


# ---------------------------------------------------------------------------------------------- traders
def test_the_trader_table_shows_every_account_with_its_trader_and_loss_usage(
    known: dict[str, Any], admin_web: TestClient
) -> None:
    page = admin_web.get("/api/v1/admin/traders?limit=50").json()
    assert page["total"] == 7
    rows = {r["account_id"]: r for r in page["items"]}
    failed = rows[known["fail-1"]]
    assert failed["trader"] == "bob@traders.test" and failed["status"] == "failed" and failed["violations"] >= 1
    assert failed["plan"] == "panel-plan" and failed["daily_used_pct"] is None  # ended: no live usage
    live = rows[known["live"]]
    assert live["trader"] == "alice@traders.test" and Decimal(live["daily_used_pct"]) == 0
    assert Decimal(live["max_used_pct"]) == 0 and Decimal(live["equity"]) == Decimal(100000)
    assert rows[known["audition"]]["trader"] == "bot-7" and rows[known["audition"]]["plan"] is None
    assert set(page["filters"]["plans"]) == {"panel-plan"}


def test_the_trader_table_searches_filters_sorts_and_pages_in_sql(known: dict[str, Any], admin_web: TestClient) -> None:
    found = admin_web.get("/api/v1/admin/traders?q=ALICE").json()
    assert {r["account_id"] for r in found["items"]} == {known["pass"], known["live"], known["funded"]}
    assert admin_web.get("/api/v1/admin/traders?q=%25").json()["total"] == 0  # a wildcard is literal
    failed = admin_web.get("/api/v1/admin/traders?status=failed").json()
    assert {r["account_id"] for r in failed["items"]} == {known["fail-1"], known["fail-2"]}
    funded = admin_web.get("/api/v1/admin/traders?phase=funded&plan=panel-plan").json()
    assert [r["account_id"] for r in funded["items"]] == [known["funded"]]

    by_equity = admin_web.get("/api/v1/admin/traders?sort=equity").json()["items"]
    equities = [Decimal(r["equity"]) for r in by_equity]
    assert equities == sorted(equities)
    desc = admin_web.get("/api/v1/admin/traders?sort=-violations").json()["items"]
    assert [r["violations"] for r in desc] == sorted((r["violations"] for r in desc), reverse=True)

    first = admin_web.get("/api/v1/admin/traders?sort=created&limit=3").json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    second = admin_web.get(f"/api/v1/admin/traders?sort=created&limit=3&cursor={first['next_cursor']}").json()
    third = admin_web.get(f"/api/v1/admin/traders?sort=created&limit=3&cursor={second['next_cursor']}").json()
    seen = [r["account_id"] for p in (first, second, third) for r in p["items"]]
    assert len(seen) == len(set(seen)) == 7 and third["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "sort=password_hash",
        "sort=equity;drop",
        "sort=-",
        "status=bogus",
        "cursor=not-a-cursor",
        "limit=0",
        "limit=1000",
    ],
)
def test_a_bad_sort_key_filter_or_cursor_is_a_422_not_a_500(admin_web: TestClient, query: str) -> None:
    r = admin_web.get(f"/api/v1/admin/traders?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_sort", "validation_error", "invalid_cursor")


# ---------------------------------------------------------------------------------------------- activity
def test_the_activity_feed_is_one_time_ordered_union_with_a_cursor(
    known: dict[str, Any], admin_web: TestClient
) -> None:
    items: list[dict[str, Any]] = []
    url = "/api/v1/admin/activity?limit=7"
    while url:
        page = admin_web.get(url).json()
        items.extend(page["items"])
        url = f"/api/v1/admin/activity?limit=7&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    keys = [(i["at"], i["kind"], i["ref"]) for i in items]
    assert keys == sorted(keys, reverse=True) and len(keys) == len(set(keys))
    kinds = {i["kind"] for i in items}
    assert {"order", "fill", "breach", "pass", "status", "admin"} <= kinds
    breach = next(i for i in items if i["kind"] == "breach")
    assert breach["trader"] == "bob@traders.test" and "max_daily_loss" in breach["summary"]
    admin = next(i for i in items if i["kind"] == "admin")
    assert admin["data"]["action"] == "liquidate" and "chargeback" in admin["summary"]


# ---------------------------------------------------------------------------------------------- violations
def test_flags_and_violations_show_rule_evidence_and_the_automatic_action(
    known: dict[str, Any], admin_web: TestClient
) -> None:
    page = admin_web.get("/api/v1/admin/violations").json()
    breaches = [v for v in page["items"] if v["account_id"] in (known["fail-1"], known["fail-2"])]
    assert len(breaches) == 2
    for v in breaches:
        assert v["kind"] == "breach" and v["rule"] == "max_daily_loss" and v["action"] == "fail"
        assert v["action_taken"].startswith("phase failed") and Decimal(v["limit"]) == Decimal(95000)
        assert v["evidence"]["anchor"] == "start_of_day_balance" and v["trader"] == "bob@traders.test"
    everything = admin_web.get("/api/v1/admin/violations?kind=all").json()["items"]
    assert any(v["kind"] == "pass" for v in everything)
    one = admin_web.get(f"/api/v1/admin/violations?kind=breach&account_id={known['fail-1']}&limit=1").json()
    assert [v["account_id"] for v in one["items"]] == [known["fail-1"]]
    assert admin_web.get("/api/v1/admin/violations?kind=nonsense").status_code == 422


# ---------------------------------------------------------------------------------------------- account
def test_the_account_overview_has_everything_the_admin_page_shows(known: dict[str, Any], admin_web: TestClient) -> None:
    r = admin_web.get(f"/api/v1/admin/accounts/{known['fail-1']}/overview")
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["account"]["status"] == "failed" and o["account"]["trader"] == "bob@traders.test"
    assert o["rules"]["limits"] and o["equity"]["points"] and o["ledger"] and o["orders"]
    assert any(f["voided"] is False for order in o["orders"] for f in order["fills"])
    assert o["violations"][0]["rule"] == "max_daily_loss"
    assert o["daily_stats"] and o["positions"] == []
    liq = admin_web.get(f"/api/v1/admin/accounts/{known['liq']}/overview").json()
    assert [a["action"] for a in liq["audit"]] == ["liquidate"] and liq["audit"][0]["reason"] == "chargeback"
    assert admin_web.get(f"/api/v1/admin/accounts/{uuid.uuid4()}/overview").status_code == 404


# ---------------------------------------------------------------------------------------------- access
def test_the_admin_token_reads_the_same_as_the_admin_session(
    known: dict[str, Any], admin_web: TestClient, admin_token: TestClient
) -> None:
    for path in ("/api/v1/admin/metrics", "/api/v1/admin/traders?sort=created", "/api/v1/admin/violations"):
        a, b = admin_web.get(path), admin_token.get(path)
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json()


def test_a_trader_session_and_anonymous_callers_get_nothing(known: dict[str, Any], app: Any, platform: Any) -> None:
    trader = session_client(app, platform, known["alice"])
    anon = TestClient(app)
    for path in (
        "/api/v1/admin/metrics",
        "/api/v1/admin/activity",
        "/api/v1/admin/traders",
        "/api/v1/admin/violations",
        f"/api/v1/admin/accounts/{known['live']}/overview",
        "/api/v1/admin/stream",
    ):
        assert trader.get(path).status_code == 403, path
        assert anon.get(path).status_code == 401, path


def test_an_admin_reading_through_the_app_role_sees_every_trader_and_a_trader_only_its_own(
    known: dict[str, Any], platform: Any, admin_user: Any
) -> None:
    from propdesk.reads import admin as admin_reads
    from propdesk.reads.access import user_conn

    with user_conn(platform, admin_user) as c:
        _, total = admin_reads.traders(c)
    assert total == 7
    with user_conn(platform, known["alice"]) as c:
        rows, total = admin_reads.traders(c)
        feed, _ = admin_reads.activity(c, limit=200)
    assert total == 3 and {r["trader"] for r in rows} == {"alice@traders.test"}
    assert {i["account_id"] for i in feed} <= {uuid.UUID(known[k]) for k in ("pass", "live", "funded")}


# ---------------------------------------------------------------------------------------------- pages
def test_the_admin_pages_render_for_an_admin_and_refuse_everyone_else(
    known: dict[str, Any], app: Any, platform: Any, admin_web: TestClient
) -> None:
    home = admin_web.get("/admin")
    assert home.status_code == 200 and "bob@traders.test" in home.text and "Pass rate" in home.text
    assert "payouts not enabled" in home.text and "<script>" not in home.text
    table = admin_web.get("/admin/partials/traders?q=alice&sort=-equity")
    assert table.status_code == 200 and "alice@traders.test" in table.text and "bob@" not in table.text
    assert admin_web.get("/admin/partials/traders?sort=nonsense").status_code == 200  # falls back to the default
    account = admin_web.get(f"/admin/accounts/{known['fail-1']}")
    assert account.status_code == 200 and "max daily loss" in account.text and 'id="reason-dialog"' in account.text
    assert admin_web.get(f"/admin/accounts/{uuid.uuid4()}").status_code == 404
    violations = admin_web.get("/admin/violations")
    assert violations.status_code == 200 and violations.text.count('data-kind="breach"') == 2
    plans = admin_web.get("/admin/plans")
    assert plans.status_code == 200 and "panel-plan" in plans.text and "classic-2step" in plans.text

    trader = session_client(app, platform, known["alice"])
    assert trader.get("/admin", follow_redirects=False).status_code == 403
    anon = TestClient(app)
    r = anon.get("/admin/violations", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_retiring_a_plan_from_the_panel_records_the_admins_reason(
    known: dict[str, Any], platform: Any, admin_web: TestClient
) -> None:
    r = admin_web.post(
        "/api/v1/admin/plans/panel-plan/retirement",
        json={"reason": "replaced by v2 pricing"},
        headers={"Origin": PUBLIC_URL},
    )
    assert r.status_code == 200, r.text
    assert r.json()["retired_versions"] == 1
    with platform.db.read() as c:
        audit = c.execute("SELECT actor, reason FROM admin_audit WHERE action='plan_retire'").fetchone()
    assert audit["reason"] == "replaced by v2 pricing" and audit["actor"].startswith("user:")
    blank = admin_web.post(
        "/api/v1/admin/plans/panel-plan/retirement", json={"reason": ""}, headers={"Origin": PUBLIC_URL}
    )
    assert blank.status_code == 422


def test_the_live_stream_sends_late_and_same_instant_items_exactly_once(platform: Any, clock: Any) -> None:
    from datetime import timedelta

    from propdesk.api.routes.admin import write_audit
    from propdesk.api.routes.admin_panel import ActivityFollower

    def audit(reason: str, at: Any) -> None:
        with platform.db.tx() as c:
            write_audit(
                c,
                actor="env:admin",
                action="note",
                account_id=None,
                reason=reason,
                before=None,
                after=None,
                details={},
                at=at,
            )

    now = clock.now()
    audit("before the stream", now)
    follower = ActivityFollower(lookback=timedelta(seconds=30))
    with platform.db.read() as c:
        follower.prime(c)
        assert follower.poll(c) == []  # what existed at connect time is not re-sent
    audit("same instant", now)  # one transaction stamps many items with one instant
    audit("committed late", now - timedelta(seconds=5))  # stamped before an item already sent, committed after
    with platform.db.read() as c:
        fresh = follower.poll(c)
        assert sorted(i["data"]["reason"] for i in fresh) == ["committed late", "same instant"]
        assert follower.poll(c) == []
