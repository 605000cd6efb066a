"""Admin controls over HTTP, each with an audit entry (actor, reason, before/after) in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"
ADMIN = "/api/v1/admin/prop/accounts"


def audit_log(admin: Any, aid: str, **params: Any) -> Any:
    r = admin.get(f"{ADMIN}/{aid}/audit-log", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_pause_resume_lock_resume_each_audited_with_before_and_after(desk: Any, admin: Any, account: Any) -> None:
    aid = account["id"]
    for action, status in (("pause", "paused"), ("resume", "active"), ("lock", "locked"), ("resume", "active")):
        r = admin.post(f"{ADMIN}/{aid}/{action}", json={"reason": f"ops: {action}"})
        assert r.status_code == 200, r.text
        assert r.json()["account"]["status"] == status
        assert r.json()["audit"]["action"] == action
    entries = audit_log(admin, aid)["items"]
    assert [(e["action"], e["before"]["status"], e["after"]["status"]) for e in entries] == [
        ("pause", "active", "paused"),
        ("resume", "paused", "active"),
        ("lock", "active", "locked"),
        ("resume", "locked", "active"),
    ]
    first = entries[0]
    assert first["actor"] == "env:admin"
    assert first["reason"] == "ops: pause"
    assert first["account_id"] == aid
    assert first["before"]["balance"]["cash"] == "100000"
    assert first["details"]["outcome"] == "applied"
    assert first["created_at"].endswith("Z")


def test_a_refused_admin_action_is_audited_and_changes_nothing(desk: Any, admin: Any, account: Any) -> None:
    aid = account["id"]
    before = desk.state(aid)
    r = admin.post(f"{ADMIN}/{aid}/resume", json={"reason": "oops"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "illegal_transition"
    assert desk.state(aid) == before
    (entry,) = audit_log(admin, aid)["items"]
    assert entry["action"] == "resume"
    assert entry["details"]["outcome"] == "refused"
    assert entry["details"]["error"]["code"] == "illegal_transition"
    assert entry["before"] == entry["after"]


def test_admin_liquidate_closes_positions_and_records_who_and_why(
    desk: Any, client: Any, admin: Any, account: Any
) -> None:
    aid = account["id"]
    assert desk.order(aid, quantity="0.20").status_code == 201
    r = admin.post(f"{ADMIN}/{aid}/liquidate", json={"reason": "risk desk decision"})
    assert r.status_code == 200, r.text
    assert r.json()["account"]["status"] == "liquidated"
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    (entry,) = audit_log(admin, aid)["items"]
    assert (entry["action"], entry["before"]["status"], entry["after"]["status"]) == (
        "liquidate",
        "active",
        "liquidated",
    )
    ledger = client.get(f"{PREFIX}/accounts/{aid}/ledger", params={"limit": 500}).json()["items"]
    liquidation = next(e for e in ledger if e["kind"] == "liquidation")
    assert liquidation["evidence"]["actor"] == "env:admin"
    assert liquidation["evidence"]["reason"] == "risk desk decision"


def test_void_fill_reverses_fee_and_position_without_deleting_anything(
    desk: Any, client: Any, admin: Any, account: Any
) -> None:
    aid = account["id"]
    fill = desk.order(aid).json()["fill"]
    assert desk.balance(aid)["cash"] == "99989"
    ledger = desk.ledger_count(aid)
    r = admin.post(f"{ADMIN}/{aid}/void-fill", json={"reason": "bad tick", "fill_id": fill["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["fill"]["id"] == fill["id"]
    assert desk.balance(aid)["cash"] == "100000"
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    fills = client.get(f"{PREFIX}/accounts/{aid}/fills").json()["items"]
    assert [(f["id"], f["voided"]) for f in fills] == [(fill["id"], True)]
    assert desk.ledger_count(aid) > ledger
    (entry,) = audit_log(admin, aid)["items"]
    assert entry["details"]["fill_id"] == fill["id"]
    assert entry["before"]["balance"]["cash"] == "99989" and entry["after"]["balance"]["cash"] == "100000"
    r = admin.post(f"{ADMIN}/{aid}/void-fill", json={"reason": "again", "fill_id": fill["id"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "fill_already_voided"
    r = admin.post(f"{ADMIN}/{aid}/void-fill", json={"reason": "x", "fill_id": str(uuid.uuid4())})
    assert r.status_code == 404 and r.json()["error"]["code"] == "fill_not_found"
    recompute = admin.post(f"{ADMIN}/{aid}/recompute", json={"reason": "after void"}).json()["result"]
    assert recompute["ok"] is True, recompute


def test_void_order_voids_a_resting_order_or_the_fills_of_a_filled_one(
    desk: Any, client: Any, admin: Any, account: Any
) -> None:
    aid = account["id"]
    resting = desk.order(aid, order_type="limit", limit_price="1.05000").json()["order"]
    filled = desk.order(aid, symbol="XAUUSD").json()["order"]
    r = admin.post(f"{ADMIN}/{aid}/void-order", json={"reason": "fat finger", "order_id": resting["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["order"]["status"] == "voided"
    r = admin.post(f"{ADMIN}/{aid}/void-order", json={"reason": "bad price", "order_id": filled["id"]})
    assert r.status_code == 200, r.text
    assert client.get(f"{PREFIX}/accounts/{aid}/positions").json()["items"] == []
    assert desk.balance(aid)["cash"] == "100000"
    entries = audit_log(admin, aid)["items"]
    assert [e["details"]["order_id"] for e in entries] == [resting["id"], filled["id"]]


def test_recompute_reports_the_ledger_fold_and_is_audited(desk: Any, admin: Any, account: Any) -> None:
    aid = account["id"]
    desk.order(aid)
    desk.order(aid, side="sell", quantity="0.05")
    r = admin.post(f"{ADMIN}/{aid}/recompute", json={"reason": "nightly check"})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["ok"] is True and result["mismatches"] == []
    assert result["entries"] == desk.ledger_count(aid)
    (entry,) = audit_log(admin, aid)["items"]
    assert entry["action"] == "recompute" and entry["details"]["result"]["ok"] is True


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("pause", {}),
        ("pause", {"reason": ""}),
        ("pause", {"reason": "x" * 501}),
        ("pause", {"reason": "a\u0000b"}),
        ("void-order", {"reason": "x"}),
        ("void-order", {"reason": "x", "order_id": "nope"}),
        ("void-fill", {"reason": "x"}),
        ("recompute", {"reason": "x", "force": True}),
    ],
)
def test_admin_actions_need_a_reason_and_their_ids(desk: Any, admin: Any, account: Any, action: str, body: Any) -> None:
    before = desk.state(account["id"])
    r = admin.post(f"{ADMIN}/{account['id']}/{action}", json=body)
    assert r.status_code == 422, r.text
    assert desk.state(account["id"]) == before
    assert audit_log(admin, account["id"])["items"] == []


def test_admin_on_an_unknown_account_is_404(admin: Any) -> None:
    r = admin.post(f"{ADMIN}/{uuid.uuid4()}/pause", json={"reason": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found"
    assert admin.get(f"{ADMIN}/{uuid.uuid4()}/audit-log").status_code == 404


def test_the_audit_log_paginates(admin: Any, account: Any) -> None:
    aid = account["id"]
    for _ in range(3):
        admin.post(f"{ADMIN}/{aid}/pause", json={"reason": "p"})
        admin.post(f"{ADMIN}/{aid}/resume", json={"reason": "r"})
    first = audit_log(admin, aid, limit=4)
    second = audit_log(admin, aid, limit=4, cursor=first["next_cursor"])
    assert len(first["items"]) == 4 and len(second["items"]) == 2 and second["next_cursor"] is None
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 6


def test_an_admin_retry_with_the_same_key_audits_once(admin: Any, account: Any) -> None:
    aid = account["id"]
    headers = {"Idempotency-Key": "pause-1"}
    a = admin.post(f"{ADMIN}/{aid}/pause", json={"reason": "p"}, headers=headers)
    b = admin.post(f"{ADMIN}/{aid}/pause", json={"reason": "p"}, headers=headers)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert len(audit_log(admin, aid)["items"]) == 1
