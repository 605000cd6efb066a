"""Decision actions over HTTP: batches from an agent, idempotent by (account, run, action id)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"


def batch(client: Any, aid: str, run: str, actions: list[dict[str, Any]], **kw: Any) -> Any:
    return client.post(
        f"{PREFIX}/accounts/{aid}/decision-actions", json={"decision_run_id": run, "actions": actions}, **kw
    )


ACTIONS = [
    {
        "decision_action_id": "a1",
        "action": "open",
        "symbol": "EURUSD",
        "side": "buy",
        "quantity": "0.10",
        "stop_loss": "1.09000",
        "rationale": "momentum",
    },
    {"decision_action_id": "a2", "action": "open", "symbol": "XAUUSD", "side": "sell", "quantity": 0.1},
    {"decision_action_id": "a3", "action": "hold", "rationale": "nothing to do"},
    {"decision_action_id": "a4", "action": "moonwalk"},
    {"decision_action_id": "a5", "action": "open", "symbol": "EURUSD", "side": "buy", "quantity": "0.001"},
]


def test_a_batch_runs_each_action_and_links_what_it_produced(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    r = batch(client, aid, "run-1", ACTIONS)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["executed", "executed", "unsupported", "unsupported", "rejected"]
    assert [x["replayed"] for x in results] == [False] * 5
    a1 = results[0]
    assert a1["order_id"] and a1["fill_id"]
    assert a1["result"]["fill"]["price"] == "1.10005"
    fills = {f["id"]: f for f in client.get(f"{PREFIX}/accounts/{aid}/fills").json()["items"]}
    assert fills[a1["fill_id"]]["order_id"] == a1["order_id"]
    orders = {o["id"]: o for o in client.get(f"{PREFIX}/accounts/{aid}/orders").json()["items"]}
    assert orders[a1["order_id"]]["decision_action_id"] == a1["id"]
    assert results[2]["result"]["rejection"]["code"] == "unsupported_action"
    assert results[3]["action"] == "moonwalk"
    assert results[4]["result"]["rejection"]["code"] == "invalid_quantity"
    assert results[4]["order_id"] == results[4]["result"]["order"]["id"]
    stored = client.get(f"{PREFIX}/decision-actions/{a1['id']}")
    assert stored.status_code == 200
    assert {k: v for k, v in stored.json().items()} == {k: v for k, v in a1.items() if k != "replayed"}


def test_a_retried_batch_returns_the_stored_results_without_running_the_gates_again(
    desk: Any, client: Any, account: Any
) -> None:
    aid = account["id"]
    first = batch(client, aid, "run-1", ACTIONS).json()["results"]
    ledger, orders = desk.ledger_count(aid), desk.count("orders", aid)
    desk.tick(120)  # quotes are now stale: rerunning the gates would reject
    again = batch(client, aid, "run-1", ACTIONS)
    assert again.status_code == 200
    results = again.json()["results"]
    assert [x["replayed"] for x in results] == [True] * 5
    assert [x["status"] for x in results] == [x["status"] for x in first]
    assert [x["order_id"] for x in results] == [x["order_id"] for x in first]
    assert desk.ledger_count(aid) == ledger
    assert desk.count("orders", aid) == orders


def test_a_partly_new_batch_runs_only_the_new_actions(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    batch(client, aid, "run-1", ACTIONS[:1])
    r = batch(client, aid, "run-1", ACTIONS[:2]).json()["results"]
    assert [x["replayed"] for x in r] == [True, False]
    assert desk.count("fills", aid) == 2


def test_duplicate_action_ids_in_one_batch_are_422_and_record_nothing(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    before = desk.state(aid)
    r = batch(client, aid, "run-1", [ACTIONS[0], {**ACTIONS[2], "decision_action_id": "a1"}])
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "duplicate_action_ids"
    assert r.json()["error"]["details"] == {"duplicates": ["a1"]}
    assert desk.state(aid) == before


def test_an_action_id_reused_with_another_body_is_409(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert batch(client, aid, "run-1", ACTIONS[:1]).status_code == 200
    before = desk.state(aid)
    r = batch(client, aid, "run-1", [{**ACTIONS[0], "quantity": "0.20"}])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert r.json()["error"]["details"] == {"decision_action_ids": ["a1"]}
    assert desk.state(aid) == before
    # The same action id in another run is another action.
    assert (
        batch(client, aid, "run-2", [{**ACTIONS[0], "quantity": "0.20"}]).json()["results"][0]["status"] == "executed"
    )


def test_the_same_number_written_differently_is_the_same_action(client: Any, account: Any) -> None:
    aid = account["id"]
    batch(client, aid, "run-1", [ACTIONS[1]])
    for same in ("0.1", "0.10", "1e-1", 0.100):
        r = batch(client, aid, "run-1", [{**ACTIONS[1], "quantity": same}])
        assert r.status_code == 200 and r.json()["results"][0]["replayed"] is True, same


def test_close_modify_and_cancel_actions(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert desk.order(aid, quantity="0.30").status_code == 201
    resting = desk.order(aid, symbol="XAUUSD", order_type="limit", limit_price="1900.00").json()["order"]
    r = batch(
        client,
        aid,
        "run-2",
        [
            {"decision_action_id": "m", "action": "modify", "symbol": "EURUSD", "stop_loss": "1.08000"},
            {"decision_action_id": "c", "action": "close", "symbol": "EURUSD", "quantity": "0.10"},
            {"decision_action_id": "x", "action": "cancel", "order_id": resting["id"]},
            {"decision_action_id": "bad", "action": "close"},
            {"decision_action_id": "gone", "action": "cancel", "order_id": str(uuid.uuid4())},
        ],
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["executed", "executed", "executed", "rejected", "rejected"]
    assert res[1]["fill_id"] is not None
    assert res[2]["order_id"] == resting["id"]
    assert res[3]["result"]["rejection"]["code"] == "invalid_action"
    assert res[4]["result"]["rejection"]["code"] == "order_not_found"
    pos = client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"][0]
    assert (pos["quantity"], pos["stop_loss"]) == ("0.2", "1.08")


@pytest.mark.parametrize(
    "body",
    [
        {"decision_run_id": "r", "actions": []},
        {"decision_run_id": "r", "actions": [{"decision_action_id": f"a{i}", "action": "hold"} for i in range(101)]},
        {"decision_run_id": "", "actions": [{"decision_action_id": "a", "action": "hold"}]},
        {"decision_run_id": "r", "actions": [{"decision_action_id": "a", "action": "open", "symbol": "eurusd"}]},
        {"decision_run_id": "r", "actions": [{"decision_action_id": "a", "action": "open", "fill_price": "1.0"}]},
        {"decision_run_id": "r", "actions": [{"decision_action_id": "a", "action": "hold", "quantity": "NaN"}]},
        {"decision_run_id": "r", "actions": [{"decision_action_id": "a", "action": "ho ld"}]},
        {
            "decision_run_id": "r",
            "actions": [
                {
                    "decision_action_id": "a",
                    "action": "open",
                    "symbol": "EURUSD",
                    "side": "buy",
                    "quantity": "0.1",
                    "order_type": "limit",
                }
            ],
        },
    ],
)
def test_malformed_batches_are_422_and_record_nothing(desk: Any, client: Any, account: Any, body: Any) -> None:
    before = desk.state(account["id"])
    r = client.post(f"{PREFIX}/accounts/{account['id']}/decision-actions", json=body)
    assert r.status_code == 422, r.text
    assert desk.state(account["id"]) == before


def test_unknown_account_and_unknown_decision_action_are_404(client: Any) -> None:
    r = batch(client, str(uuid.uuid4()), "r", [{"decision_action_id": "a", "action": "hold"}])
    assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found"
    r = client.get(f"{PREFIX}/decision-actions/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "decision_action_not_found"
