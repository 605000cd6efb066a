"""Orders over HTTP: market with SL/TP, resting limit/stop orders firing on POST /quotes, SL/TP firing, close,
partial close, cancel, modify, recorded gate rejections, and the paginated lists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"


def test_market_order_with_sl_tp_fills_at_the_mid_and_carries_its_levels(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    r = desk.order(aid, stop_loss="1.09000", take_profit="1.12000", client_order_id="c-1")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rejection"] is None
    assert body["order"]["status"] == "filled"
    assert body["order"]["client_order_id"] == "c-1"
    assert body["fill"]["price"] == "1.10005"  # mid of 1.10000 / 1.10010
    assert body["fill"]["fee"] == "11"  # 10 bps of 11,000.50
    assert body["fill"]["quote"]["bid"] == "1.10000"
    pos = client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"]
    assert pos == [
        {
            "symbol": "EURUSD",
            "quantity": "0.1",
            "side": "long",
            "avg_price": "1.10005",
            "stop_loss": "1.09",
            "take_profit": "1.12",
            "opened_at": "2026-03-02T10:00:00Z",
            "mark_price": "1.1",
            "unrealized_pnl": "-0.5",
            "notional": "11000",
        }
    ]
    bal = desk.balance(aid)
    assert bal["cash"] == "99989"
    assert bal["fees"] == "11"


def test_limit_order_rests_and_fills_when_a_posted_quote_crosses_it(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    r = desk.order(aid, order_type="limit", limit_price="1.09500", take_profit="1.11000")
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert order["status"] == "open" and r.json()["fill"] is None
    desk.tick()
    out = desk.quote("EURUSD", "1.09700", "1.09710")  # not crossed yet
    assert out["triggers"]["orders"] == 0
    desk.tick()
    out = desk.quote("EURUSD", "1.09480", "1.09490")
    assert out["accepted"] == 1
    assert out["triggers"]["orders"] == 1
    orders = client.get(f"{PREFIX}/accounts/{aid}/orders").json()["items"]
    assert [o["status"] for o in orders if o["id"] == order["id"]] == ["filled"]
    fills = client.get(f"{PREFIX}/accounts/{aid}/fills").json()["items"]
    assert fills[0]["order_id"] == order["id"] and fills[0]["price"] == "1.09485"
    pos = client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"]
    assert pos[0]["take_profit"] == "1.11"


def test_stop_order_fills_when_the_market_rises_through_it(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    r = desk.order(aid, order_type="stop", stop_price="1.10500")
    assert r.json()["order"]["status"] == "open"
    desk.tick()
    assert desk.quote("EURUSD", "1.10510", "1.10520")["triggers"]["orders"] == 1
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"][0]["quantity"] == "0.1"


def test_stop_loss_fires_on_the_first_quote_that_crosses_it(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid, quantity="0.40", stop_loss="1.09000").status_code == 201
    desk.tick()
    out = desk.quote("EURUSD", "1.08990", "1.09000")
    assert out["triggers"]["protective"] == 1
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    orders = client.get(f"{PREFIX}/accounts/{aid}/orders").json()["items"]
    closing = [o for o in orders if o["purpose"] == "stop_loss"]
    assert len(closing) == 1 and closing[0]["side"] == "sell" and closing[0]["quantity"] == "0.4"
    bal = desk.balance(aid)
    # Bought 0.4 at 1.10005, closed at the mid 1.08995: -0.0101 x 0.4 x 100,000 = -404 realized.
    assert bal["realized_pnl"] == "-404"


def test_take_profit_of_a_short_fires_on_a_falling_ask(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid, symbol="XAUUSD", side="sell", quantity="0.10", take_profit="1990.00").status_code == 201
    desk.tick()
    assert desk.quote("XAUUSD", "1989.00", "1989.50")["triggers"]["protective"] == 1
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    assert desk.balance(aid)["realized_pnl"] == "110"  # (2000.25 - 1989.25) x 0.1 lots x 100 oz


def test_partial_close_then_full_close(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid, quantity="0.30").status_code == 201
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/EURUSD/close", json={"quantity": "0.10"})
    assert r.status_code == 201, r.text
    assert r.json()["order"]["purpose"] == "close" and r.json()["fill"]["quantity"] == "0.1"
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"][0]["quantity"] == "0.2"
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/EURUSD/close", json={"quantity": "0.50"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_quantity"
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/EURUSD/close")
    assert r.status_code == 201
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/EURUSD/close")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_position"


def test_cancel_a_resting_order(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    oid = desk.order(aid, order_type="limit", limit_price="1.05000").json()["order"]["id"]
    r = client.post(f"{PREFIX}/accounts/{aid}/orders/{oid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    r = client.post(f"{PREFIX}/accounts/{aid}/orders/{oid}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_open"
    r = client.post(f"{PREFIX}/accounts/{aid}/orders/{uuid.uuid4()}/cancel")
    assert r.status_code == 404 and r.json()["error"]["code"] == "order_not_found"
    desk.tick()
    assert desk.quote("EURUSD", "1.04000", "1.04010")["triggers"]["orders"] == 0


def test_modify_sets_and_clears_levels_and_refuses_the_wrong_side(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    url = f"{PREFIX}/accounts/{aid}/positions/EURUSD/modify"
    r = client.post(url, json={"stop_loss": "1.09500", "take_profit": "1.11500"})
    assert r.status_code == 200, r.text
    assert (r.json()["stop_loss"], r.json()["take_profit"]) == ("1.095", "1.115")
    r = client.post(url, json={"stop_loss": "1.10500"})  # above the bid of a long
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_stop_loss"
    r = client.post(url, json={"clear_take_profit": True})
    assert r.status_code == 200 and r.json()["take_profit"] is None and r.json()["stop_loss"] == "1.095"
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/XAUUSD/modify", json={"stop_loss": "1900"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_position"
    r = client.post(url, json={})
    assert r.status_code == 422


def test_a_gate_rejection_is_recorded_and_answers_422_with_the_reason(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    cash = desk.balance(aid)["cash"]
    ledger = desk.ledger_count(aid)
    r = desk.order(aid, quantity="1.00")  # 110,000 of notional > 50,000 per order
    assert r.status_code == 422
    body = r.json()
    assert body["error"]["code"] == "notional_exceeded"
    assert body["error"]["details"] == {"notional": "110010.00", "limit": "50000.00"}
    assert body["order"]["status"] == "rejected" and body["order"]["reject_code"] == "notional_exceeded"
    rejected = client.get(f"{PREFIX}/accounts/{aid}/orders", params={"status": "rejected"}).json()["items"]
    assert [o["id"] for o in rejected] == [body["order"]["id"]]
    assert desk.ledger_count(aid) == ledger + 1
    assert desk.balance(aid)["cash"] == cash
    assert desk.count("fills", aid) == 0


def test_missing_price_is_a_gate_rejection_never_a_guess(desk: Any, account: Any) -> None:
    r = desk.order(account["id"], symbol="GBPUSD")
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_price"


def test_stale_price_is_a_gate_rejection(desk: Any, account: Any) -> None:
    desk.tick(61)
    r = desk.order(account["id"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "stale_price"
    assert r.json()["error"]["details"]["max_quote_age_seconds"] == 60


def test_duplicate_client_order_id_is_409(desk: Any, account: Any) -> None:
    aid = account["id"]
    first = desk.order(aid, client_order_id="abc-1")
    assert first.status_code == 201
    r = desk.order(aid, client_order_id="abc-1", quantity="0.20")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "duplicate_client_order_id"
    assert r.json()["error"]["details"]["order_id"] == first.json()["order"]["id"]
    assert desk.count("orders", aid) == 1


def test_orders_fills_and_ledger_paginate_without_gaps_or_repeats(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    for i in range(7):
        assert desk.order(aid, side="buy" if i % 2 == 0 else "sell").status_code == 201
    for what, n in (("orders", 7), ("fills", 7), ("ledger", desk.ledger_count(aid))):
        seen: list[Any] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            body = client.get(f"{PREFIX}/accounts/{aid}/{what}", params=params).json()
            seen += body["items"]
            cursor = body["next_cursor"]
            if not cursor:
                break
        key = "seq" if what == "ledger" else "id"
        assert len(seen) == n and len({x[key] for x in seen}) == n, what
    seqs = [e["seq"] for e in client.get(f"{PREFIX}/accounts/{aid}/ledger", params={"limit": 500}).json()["items"]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_snapshot_renders_money_without_padding(desk: Any, client: Any, account: Any) -> None:
    assert desk.order(account["id"]).status_code == 201
    snap = client.get(f"{PREFIX}/accounts/{account['id']}/snapshot").json()
    assert snap["balance"]["cash"] == "99989"
    assert snap["balance"]["equity"] == "99988.5"
    assert snap["positions"][0]["avg_price"] == "1.10005"
    assert snap["as_of"] == "2026-03-02T10:00:00Z"
    assert snap["account"]["starting_balance"] == "100000"
