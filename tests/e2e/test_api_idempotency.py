"""The Idempotency-Key header: a retried request never executes twice."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from structlog.testing import capture_logs

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"
ORDER = {"symbol": "EURUSD", "side": "buy", "quantity": "0.10", "stop_loss": "1.09000"}


def post_order(client: Any, aid: str, key: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"{PREFIX}/accounts/{aid}/orders", json=body or ORDER, headers=headers)


def test_the_same_key_and_body_replays_the_original_response_byte_for_byte(
    desk: Any, client: Any, account: Any
) -> None:
    aid = account["id"]
    first = post_order(client, aid, "order-1")
    assert first.status_code == 201
    ledger = desk.ledger_count(aid)
    desk.tick(5)
    for _ in range(3):
        again = post_order(
            client, aid, "order-1", {"stop_loss": "1.09000", "quantity": "0.10", "side": "buy", "symbol": "EURUSD"}
        )  # key order does not matter
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert desk.count("orders", aid) == 1
    assert desk.ledger_count(aid) == ledger


def test_the_same_key_with_another_body_is_409_and_executes_nothing(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert post_order(client, aid, "order-1").status_code == 201
    before = desk.state(aid)
    r = post_order(client, aid, "order-1", {**ORDER, "quantity": "0.20"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    r = client.post(f"{PREFIX}/accounts/{aid}/positions/EURUSD/close", headers={"Idempotency-Key": "order-1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"
    assert desk.state(aid) == before


def test_keys_belong_to_their_principal(desk: Any, client: Any, admin: Any, account: Any) -> None:
    aid = account["id"]
    assert post_order(client, aid, "shared-key").status_code == 201
    r = post_order(admin, aid, "shared-key")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert desk.count("orders", aid) == 2


def test_a_recorded_gate_rejection_is_replayed_not_rerun(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    first = post_order(client, aid, "too-big", {**ORDER, "quantity": "1.00"})
    assert first.status_code == 422
    before = desk.state(aid)
    again = post_order(client, aid, "too-big", {**ORDER, "quantity": "1.00"})
    assert (again.status_code, again.content) == (422, first.content)
    assert desk.state(aid) == before


def test_a_refused_command_is_stored_too(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    url = f"{PREFIX}/accounts/{aid}/positions/EURUSD/close"
    first = client.post(url, headers={"Idempotency-Key": "close-1"})
    assert first.status_code == 409
    assert desk.order(aid).status_code == 201
    again = client.post(url, headers={"Idempotency-Key": "close-1"})
    assert (again.status_code, again.content) == (409, first.content)
    assert client.post(url, headers={"Idempotency-Key": "close-2"}).status_code == 201


def test_ten_concurrent_requests_with_one_key_execute_exactly_one_order(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    barrier = threading.Barrier(10)

    def go(_: int) -> Any:
        barrier.wait()
        return post_order(client, aid, "burst-1")

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(go, range(10)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {201, 409}, codes
    created = [r for r in responses if r.status_code == 201]
    assert created
    assert len({r.content for r in created}) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_key_in_flight"
    assert desk.count("orders", aid) == 1
    assert desk.count("fills", aid) == 1


def test_ten_concurrent_distinct_keys_each_execute(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    barrier = threading.Barrier(10)

    def go(i: int) -> Any:
        barrier.wait()
        return post_order(client, aid, f"distinct-{i}", {**ORDER, "quantity": "0.01"})

    with ThreadPoolExecutor(10) as pool:
        codes = [r.status_code for r in pool.map(go, range(10))]
    assert codes == [201] * 10
    assert desk.count("fills", aid) == 10


def test_an_internal_error_is_not_stored_so_the_retry_executes(
    desk: Any, client: Any, platform: Any, account: Any, monkeypatch: Any
) -> None:
    aid = account["id"]
    real = platform.execution.submit_order
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup with a secret /etc/passwd")
        return real(*args, **kwargs)

    monkeypatch.setattr(platform.execution, "submit_order", flaky)
    with capture_logs() as logs:
        r = post_order(client, aid, "flaky-1")
    assert any(e["event"] == "unhandled_exception" and e["log_level"] == "error" for e in logs)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "passwd" not in r.text and "Traceback" not in r.text
    assert desk.count("orders", aid) == 0
    r = post_order(client, aid, "flaky-1")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert desk.count("orders", aid) == 1


def test_account_creation_and_quotes_accept_the_header(desk: Any, client: Any, platform: Any, clock: Any) -> None:
    body = {"owner_id": "t", "mode": "audition"}
    a = client.post(f"{PREFIX}/accounts", json=body, headers={"Idempotency-Key": "acc-1"})
    b = client.post(f"{PREFIX}/accounts", json=body, headers={"Idempotency-Key": "acc-1"})
    assert (a.status_code, b.status_code) == (201, 201) and a.content == b.content
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 1
    q = {"symbol": "EURUSD", "bid": "1.1", "ask": "1.2", "ts": clock.now().isoformat()}
    first = client.post(f"{PREFIX}/quotes", json=q, headers={"Idempotency-Key": "q-1"})
    again = client.post(f"{PREFIX}/quotes", json=q, headers={"Idempotency-Key": "q-1"})
    assert first.json()["accepted"] == 1 and again.content == first.content


@pytest.mark.parametrize("key", ["", "k" * 201, "tab\there", "café"])
def test_a_malformed_key_is_422(client: Any, account: Any, desk: Any, key: str) -> None:
    before = desk.state(account["id"])
    r = client.post(
        f"{PREFIX}/accounts/{account['id']}/orders", json=ORDER, headers=[("Idempotency-Key", key.encode("utf-8"))]
    )  # type: ignore[arg-type]
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert desk.state(account["id"]) == before


def test_two_key_headers_are_refused(client: Any, account: Any) -> None:
    r = client.post(
        f"{PREFIX}/accounts/{account['id']}/orders",
        json=ORDER,
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )  # type: ignore[arg-type]
    assert r.status_code == 422


def test_the_short_lock_wait_covers_only_the_key_claim_not_the_command(desk: Any) -> None:
    """The claim waits at most IN_FLIGHT_WAIT_MS for a row another request holds; the command that follows runs
    with the session's own lock_timeout (an order may wait longer for its account's lock)."""
    from propdesk.api.idempotency import IN_FLIGHT_WAIT_MS, Commands

    commands = Commands(desk.platform.db.engine_url, desk.clock, pool_size=1)
    try:
        with commands.pool.connection() as conn, conn.transaction():
            session = conn.execute("SELECT current_setting('lock_timeout') AS v").fetchone()["v"]
            assert commands._claim(conn, "test-principal", "key-1", "POST", "/x", "hash") is None
            after = conn.execute("SELECT current_setting('lock_timeout') AS v").fetchone()["v"]
            assert after == session and after != f"{IN_FLIGHT_WAIT_MS}ms"
            assert conn.execute("SELECT count(*) AS n FROM idempotency_keys WHERE key = 'key-1'").fetchone()["n"] == 1
    finally:
        commands.close()
