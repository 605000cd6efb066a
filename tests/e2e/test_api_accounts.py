"""Accounts over HTTP: creation (idempotent by body key), reads, clone listing, and the lifecycle."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"


def test_create_account_freezes_the_policy_and_funds_the_starting_balance(client: Any) -> None:
    r = client.post(
        f"{PREFIX}/accounts",
        json={
            "owner_id": "agent-owner",
            "clone_id": "clone-1",
            "mode": "audition",
            "starting_balance": "50000",
            "policy": {"max_open_positions": 3, "fee_bps": "5", "slippage_model": "spread"},
        },
    )
    assert r.status_code == 201, r.text
    acc = r.json()
    assert acc["status"] == "pending"
    assert acc["phase"] == "phase_1"
    assert acc["starting_balance"] == "50000"
    assert acc["policy"]["max_open_positions"] == 3
    assert acc["policy"]["fee_bps"] == "5"
    assert acc["policy"]["slippage_model"] == "spread"
    assert acc["balance"]["cash"] == "50000"
    assert acc["balance"]["equity"] == "50000"
    assert "request_hash" not in acc
    assert acc["created_at"].endswith("Z")
    uuid.UUID(acc["id"])


def test_create_with_body_idempotency_key_returns_the_same_account_with_200(client: Any, platform: Any) -> None:
    body = {"owner_id": "trader-9", "mode": "challenge", "idempotency_key": "create-trader-9-phase-1"}
    first = client.post(f"{PREFIX}/accounts", json=body)
    again = client.post(f"{PREFIX}/accounts", json=body)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 1


def test_create_with_body_idempotency_key_and_another_body_is_409(client: Any) -> None:
    body = {"owner_id": "trader-9", "mode": "challenge", "idempotency_key": "k-1"}
    assert client.post(f"{PREFIX}/accounts", json=body).status_code == 201
    r = client.post(f"{PREFIX}/accounts", json={**body, "owner_id": "trader-10"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "policy",
    [
        {"max_leverage": "-1"},
        {"no_such_key": 1},
        {"max_open_positions": "5"},
        {"slippage_model": "free_lunch"},
        {"allowed_asset_classes": ["tulips"]},
        {"auto_liquidation_drawdown_pct": "150"},
        {"max_notional": "Infinity"},
        # values that passed before and then broke arithmetic (negative fill prices,
        # overflowing fees) or slipped past the number grammar
        {"slippage_model": "random_bps", "slippage_bps_min": "1", "slippage_bps_max": "20000"},
        {"fee_bps": "1e15"},
        {"starting_balance": "1e16"},
        {"max_leverage": "100000"},
        {"fee_bps": "1_0"},
        {"fee_bps": " 5"},
        {"fee_bps": "+5"},
        {"fee_bps": "٥"},
        {"max_open_orders": 10_000_000},
        {"max_quote_age_seconds": 0},
    ],
)
def test_invalid_policy_override_is_422_and_creates_nothing(client: Any, platform: Any, policy: Any) -> None:
    r = client.post(f"{PREFIX}/accounts", json={"owner_id": "t", "mode": "audition", "policy": policy})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_policy", "validation_error")
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 0


def test_get_account_unknown_is_404_and_malformed_id_is_422(client: Any) -> None:
    r = client.get(f"{PREFIX}/accounts/{uuid.uuid4()}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "account_not_found"
    r = client.get(f"{PREFIX}/accounts/not-a-uuid")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["path", "account_id"]


def test_child_account_links_its_parent_and_an_unknown_parent_is_404(desk: Any, client: Any) -> None:
    parent = desk.create_account(start=False)
    child = desk.create_account(start=False, parent_account_id=parent["id"], phase="phase_2")
    assert child["parent_account_id"] == parent["id"]
    r = client.post(
        f"{PREFIX}/accounts", json={"owner_id": "t", "mode": "audition", "parent_account_id": str(uuid.uuid4())}
    )
    assert r.status_code == 404


def test_clone_accounts_are_listed_page_by_page(desk: Any, client: Any, clock: Any) -> None:
    created = []
    for i in range(5):
        created.append(desk.create_account(start=False, clone_id="agent-7", owner_id=f"o{i}")["id"])
        clock.advance(1)
    desk.create_account(start=False, clone_id="agent-8")
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get(
            f"{PREFIX}/clones/agent-7/accounts", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += [a["id"] for a in body["items"]]
        assert all(a["balance"]["cash"] == "100000" for a in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == created
    assert client.get(f"{PREFIX}/clones/nobody/accounts").json() == {"items": [], "next_cursor": None}


def test_a_cursor_from_another_list_or_garbage_is_422(desk: Any, client: Any, account: Any) -> None:
    for _ in range(3):
        desk.order(account["id"])
    ledger = client.get(f"{PREFIX}/accounts/{account['id']}/ledger", params={"limit": 1}).json()
    r = client.get(f"{PREFIX}/accounts/{account['id']}/orders", params={"cursor": ledger["next_cursor"]})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_cursor"
    for garbage in ("!!!", "eyJrIjoibGVkZ2VyIiwidiI6WyJ4Il19", "e30", "a" * 600):
        r = client.get(f"{PREFIX}/accounts/{account['id']}/ledger", params={"cursor": garbage})
        assert r.status_code == 422, garbage


def test_lifecycle_start_is_idempotent_complete_is_terminal_and_illegal_moves_are_409(desk: Any, client: Any) -> None:
    acc = desk.create_account(start=False)
    url = f"{PREFIX}/accounts/{acc['id']}"
    r = client.post(f"{url}/start")
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = client.post(f"{url}/start", json={"reason": "again"})
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = client.post(f"{url}/complete", json={"reason": "end of audition"})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert r.json()["ended_at"].endswith("Z")
    for move in ("start", "complete", "liquidate"):
        r = client.post(f"{url}/{move}")
        assert r.status_code == 409, move
        err = r.json()["error"]
        assert err["code"] == "illegal_transition"
        assert err["details"]["status"] == "completed"
        assert err["details"]["allowed"] == []


def test_complete_with_open_positions_or_resting_orders_is_409_account_has_exposure_and_changes_nothing(
    desk: Any, client: Any, account: Any
) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    resting = desk.order(aid, order_type="limit", limit_price="1.05000")
    assert resting.status_code == 201
    order_id = resting.json()["order"]["id"]
    before = desk.state(aid)
    r = client.post(f"{PREFIX}/accounts/{aid}/complete", json={"reason": "end of audition"})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "account_has_exposure"
    assert err["details"] == {"symbols": ["EURUSD"], "order_ids": [order_id]}
    assert desk.state(aid) == before
    # Only resting orders (no position) are exposure too.
    other = desk.create_account()
    assert desk.order(other["id"], order_type="limit", limit_price="1.05000").status_code == 201
    r = client.post(f"{PREFIX}/accounts/{other['id']}/complete", json={"flatten": False})
    assert r.status_code == 409 and r.json()["error"]["details"]["symbols"] == []


def test_complete_with_flatten_cancels_orders_closes_positions_with_evidence_then_completes(
    desk: Any, client: Any, account: Any, platform: Any
) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    assert desk.order(aid, symbol="XAUUSD", side="sell", quantity="0.10").status_code == 201
    order_id = desk.order(aid, order_type="limit", limit_price="1.05000").json()["order"]["id"]
    r = client.post(f"{PREFIX}/accounts/{aid}/complete", json={"reason": "end of audition", "flatten": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    assert client.get(f"{PREFIX}/accounts/{aid}/orders", params={"status": "open"}).json()["items"] == []
    ledger = client.get(f"{PREFIX}/accounts/{aid}/ledger", params={"limit": 500}).json()["items"]
    cancelled = [e for e in ledger if e["kind"] == "order_cancelled"]
    assert [e["order_id"] for e in cancelled] == [order_id]
    closes = [e for e in ledger if e["kind"] == "fill" and e["evidence"]["purpose"] == "close"]
    assert sorted(e["evidence"]["symbol"] for e in closes) == ["EURUSD", "XAUUSD"]
    # Each close carries its evidence: the quote it rested on and the position before and after.
    assert all(e["evidence"]["quote"] and e["evidence"]["position_after"] is None for e in closes)
    status = [e for e in ledger if e["kind"] == "status_changed"][-1]["evidence"]
    assert status["to"] == "completed" and status["trigger"] == "complete"
    assert status["flattened"] == {"closed": ["EURUSD", "XAUUSD"], "cancelled_orders": [order_id]}
    assert platform.execution.recompute(uuid.UUID(aid))["ok"] is True


def test_liquidate_closes_every_position_and_cancels_resting_orders(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    assert desk.order(aid, symbol="XAUUSD", side="sell", quantity="0.10").status_code == 201
    assert desk.order(aid, order_type="limit", limit_price="1.05000").status_code == 201
    r = client.post(f"{PREFIX}/accounts/{aid}/liquidate", json={"reason": "agent misbehaved"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "liquidated"
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    assert client.get(f"{PREFIX}/accounts/{aid}/orders", params={"status": "open"}).json()["items"] == []
    kinds = [e["kind"] for e in client.get(f"{PREFIX}/accounts/{aid}/ledger", params={"limit": 500}).json()["items"]]
    assert "liquidation" in kinds


def test_no_route_can_make_an_account_pass(client: Any, admin: Any, desk: Any) -> None:
    spec = client.get("/openapi.json").json()
    for path in spec["paths"]:
        assert not re.search(r"/pass(\b|/|$)", path), path
        assert "passed" not in path
    acc = desk.create_account()
    for path in (f"{PREFIX}/accounts/{acc['id']}/pass", f"/api/v1/admin/prop/accounts/{acc['id']}/pass"):
        r = admin.post(path, json={"reason": "x"})
        assert r.status_code == 404
    assert client.get(f"{PREFIX}/accounts/{acc['id']}").json()["status"] == "active"


def test_openapi_lists_every_route_of_the_foundation(client: Any) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    a = "/api/v1/prop/accounts/{account_id}"
    expected = {
        "/api/v1/prop/accounts",
        a,
        "/api/v1/prop/clones/{clone_id}/accounts",
        f"{a}/start",
        f"{a}/complete",
        f"{a}/liquidate",
        f"{a}/ledger",
        f"{a}/snapshot",
        f"{a}/decision-context",
        f"{a}/orders",
        f"{a}/fills",
        f"{a}/positions",
        f"{a}/orders/{{order_id}}/cancel",
        f"{a}/positions/{{symbol}}/close",
        f"{a}/positions/{{symbol}}/modify",
        f"{a}/decision-actions",
        "/api/v1/prop/decision-actions/{decision_action_uuid}",
        f"{a}/mark-to-market",
        "/api/v1/prop/mark-to-market-all",
        "/api/v1/prop/quotes",
        "/api/v1/prop/instruments",
        "/healthz",
        "/metrics",
    } | {
        f"/api/v1/admin/prop/accounts/{{account_id}}/{x}"
        for x in ("pause", "resume", "lock", "liquidate", "void-order", "void-fill", "recompute", "audit-log")
    }
    assert expected <= paths, expected - paths


def test_instruments_are_listed_with_lot_rules(client: Any) -> None:
    body = client.get(f"{PREFIX}/instruments", params={"limit": 500}).json()
    eurusd = next(i for i in body["items"] if i["symbol"] == "EURUSD")
    assert eurusd == {
        "symbol": "EURUSD",
        "asset_class": "forex",
        "contract_size": "100000",
        "tick_size": "0.00001",
        "price_precision": 5,
        "quote_currency": "USD",
        "base_currency": "EUR",
        "min_lot": "0.01",
        "lot_step": "0.01",
        "max_lot": "100",
        "enabled": True,
        "description": "EUR/USD",
    }
    first = client.get(f"{PREFIX}/instruments", params={"limit": 5}).json()
    second = client.get(f"{PREFIX}/instruments", params={"limit": 5, "cursor": first["next_cursor"]}).json()
    assert [i["symbol"] for i in first["items"] + second["items"]] == sorted(i["symbol"] for i in body["items"])[:10]


def test_decision_context_has_what_an_agent_needs(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid, quantity="0.20").status_code == 201
    assert desk.order(aid, order_type="limit", limit_price="1.05000").status_code == 201
    ctx = client.get(f"{PREFIX}/accounts/{aid}/decision-context").json()
    assert ctx["can_trade"] is True
    assert ctx["supported_actions"] == ["open", "close", "modify", "cancel"]
    assert ctx["snapshot"]["positions"][0]["symbol"] == "EURUSD"
    assert ctx["snapshot"]["positions"][0]["quantity"] == "0.2"
    assert ctx["policy"]["max_open_positions"] == 5
    assert {i["symbol"] for i in ctx["instruments"]} >= {"EURUSD", "XAUUSD", "AAPL", "BTCUSD"}
    quotes = {q["symbol"]: q for q in ctx["quotes"]}
    assert quotes["EURUSD"]["bid"] == "1.10000" and quotes["EURUSD"]["stale"] is False
    assert "GBPUSD" in ctx["missing_quotes"]
    limits = ctx["limits"]
    assert limits["open_positions"] == {"used": 1, "limit": 5, "room": 4}
    assert limits["open_orders"] == {"used": 1, "limit": 10, "room": 9}
    assert limits["order_notional"] == {"limit": "50000"}
    # 0.2 lots of EURUSD marked at the bid 1.10000 = 22,000 of notional; leverage 5x on ~99,978 of equity.
    assert limits["aggregate_notional"]["used"] == "22000"
    assert limits["leverage"]["limit"] == "5"
    assert float(limits["margin"]["free"]) < float(limits["margin"]["equity"])
    # The binding limit is the position-to-equity cap: 50% of ~99,977 equity < the 50,000 per-order limit.
    assert limits["max_new_position_notional"] == limits["position_equity_pct"]["max_position_notional"] == "49988.5"


def test_mark_to_market_records_a_mark_and_mark_all_reports(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    desk.tick()
    desk.quote("EURUSD", "1.10100", "1.10110")
    r = client.post(f"{PREFIX}/accounts/{aid}/mark-to-market")
    assert r.status_code == 200, r.text
    assert r.json()["balance"]["marked_at"].endswith("Z")
    assert r.json()["balance"]["unrealized_pnl"] == "9.5"
    r = client.post(f"{PREFIX}/mark-to-market-all")
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("marked", "failed", "accounts")} == {"marked": 1, "failed": [], "accounts": 1}
    # The bulk mark at an unchanged price stores nothing new: the ledger grows only when the high-water mark rises.
    assert body["bulk"]["ledger_rows"] == 0 and body["bulk"]["unchanged"] == 1
    kinds = [e["kind"] for e in client.get(f"{PREFIX}/accounts/{aid}/ledger", params={"limit": 500}).json()["items"]]
    assert kinds.count("mark_to_market") == 1
