"""Hostile inputs (RELIABILITY.md): each gets a clear 4xx, never a 500, and changes nothing.

Two kinds: inputs refused at the edge (validation, media type, size) leave the account exactly as it was, ledger
included; inputs that are well-formed but break a rule (lots off the step, SL on the wrong side, a paused
account) are gate rejections: 422 with the gate's code, and the refusal itself is recorded (one rejected order,
one ``order_rejected`` ledger entry) while money, positions and fills do not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import structlog.testing

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"
OK = {"symbol": "EURUSD", "side": "buy", "quantity": "0.10"}
JSON = {"Content-Type": "application/json"}


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# (name, body: dict (sent as JSON) or bytes (sent as is), extra headers, expected status, expected error code)
EDGE_CASES: list[tuple[str, Any, dict[str, str], int, str | None]] = [
    ("NaN string", {**OK, "quantity": "NaN"}, {}, 422, "validation_error"),
    ("NaN literal", raw('{"symbol":"EURUSD","side":"buy","quantity":NaN}'), JSON, 422, "validation_error"),
    ("Infinity literal", raw('{"symbol":"EURUSD","side":"buy","quantity":Infinity}'), JSON, 422, "validation_error"),
    ("-Infinity literal", raw('{"symbol":"EURUSD","side":"buy","quantity":-Infinity}'), JSON, 422, "validation_error"),
    ("Infinity string", {**OK, "quantity": "Infinity"}, {}, 422, "validation_error"),
    ("1e400 number", raw('{"symbol":"EURUSD","side":"buy","quantity":1e400}'), JSON, 422, "validation_error"),
    ("1e400 string", {**OK, "quantity": "1e400"}, {}, 422, "validation_error"),
    ("1e-400 number", raw('{"symbol":"EURUSD","side":"buy","quantity":1e-400}'), JSON, 422, "validation_error"),
    (
        "5000-digit integer",
        raw('{"symbol":"EURUSD","side":"buy","quantity":1' + "0" * 5000 + "}"),
        JSON,
        422,
        "validation_error",
    ),
    ("5000-digit string", {**OK, "quantity": "1" + "0" * 5000}, {}, 422, "validation_error"),
    (
        "20-digit integer",
        raw('{"symbol":"EURUSD","side":"buy","quantity":10000000000000000000}'),
        JSON,
        422,
        "validation_error",
    ),
    ("negative quantity", {**OK, "quantity": "-0.10"}, {}, 422, "validation_error"),
    ("zero quantity", {**OK, "quantity": "0"}, {}, 422, "validation_error"),
    ("boolean quantity", {**OK, "quantity": True}, {}, 422, "validation_error"),
    ("list quantity", {**OK, "quantity": ["0.1"]}, {}, 422, "validation_error"),
    ("quantity with spaces", {**OK, "quantity": " 0.10 "}, {}, 422, "validation_error"),
    ("hex quantity", {**OK, "quantity": "0x10"}, {}, 422, "validation_error"),
    ("too many decimals (quantity)", {**OK, "quantity": "0.123456789"}, {}, 422, "validation_error"),
    ("too many decimals (price)", {**OK, "stop_loss": "1.09000000001"}, {}, 422, "validation_error"),
    ("lower-case symbol", {**OK, "symbol": "eurusd"}, {}, 422, "validation_error"),
    ("mixed-case symbol", {**OK, "symbol": "EurUsd"}, {}, 422, "validation_error"),
    ("symbol with spaces", {**OK, "symbol": " EURUSD"}, {}, 422, "validation_error"),
    ("symbol with newline", {**OK, "symbol": "EURUSD\n"}, {}, 422, "validation_error"),
    ("Cyrillic look-alike symbol", {**OK, "symbol": "\u0415URUSD"}, {}, 422, "validation_error"),
    ("full-width symbol", {**OK, "symbol": "\uff25\uff35\uff32\uff35\uff33\uff24"}, {}, 422, "validation_error"),
    ("zero-width joiner in symbol", {**OK, "symbol": "EUR\u200dUSD"}, {}, 422, "validation_error"),
    ("empty symbol", {**OK, "symbol": ""}, {}, 422, "validation_error"),
    ("too long symbol", {**OK, "symbol": "A" * 17}, {}, 422, "validation_error"),
    ("client-supplied fill price", {**OK, "price": "1.00000"}, {}, 422, "validation_error"),
    ("client-supplied fill", {**OK, "fill_price": "1.00000"}, {}, 422, "validation_error"),
    ("client-supplied status", {**OK, "status": "filled"}, {}, 422, "validation_error"),
    ("side outside the enum", {**OK, "side": "BUY"}, {}, 422, "validation_error"),
    ("side hold", {**OK, "side": "hold"}, {}, 422, "validation_error"),
    ("order type outside the enum", {**OK, "order_type": "market_on_close"}, {}, 422, "validation_error"),
    ("limit order without a price", {**OK, "order_type": "limit"}, {}, 422, "validation_error"),
    ("market order with a limit price", {**OK, "limit_price": "1.1"}, {}, 422, "validation_error"),
    ("negative stop loss", {**OK, "stop_loss": "-1"}, {}, 422, "validation_error"),
    ("client order id with NUL", {**OK, "client_order_id": "a\u0000b"}, {}, 422, "validation_error"),
    (
        "client order id with a lone surrogate",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1","client_order_id":"\\ud800"}'),
        JSON,
        422,
        "validation_error",
    ),
    ("client order id too long", {**OK, "client_order_id": "x" * 101}, {}, 422, "validation_error"),
    (
        "duplicate keys",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1","quantity":"100"}'),
        JSON,
        422,
        "validation_error",
    ),
    (
        "deep nesting",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1","x":' + "[" * 5000 + "]" * 5000 + "}"),
        JSON,
        422,
        "validation_error",
    ),
    ("invalid UTF-8", b'{"symbol":"EURUSD","side":"\xff\xfe","quantity":"0.1"}', JSON, 422, "validation_error"),
    ("truncated JSON", raw('{"symbol":"EURUSD","side":'), JSON, 422, "validation_error"),
    ("JSON array body", raw("[]"), JSON, 422, "validation_error"),
    ("JSON string body", raw('"buy"'), JSON, 422, "validation_error"),
    ("empty body", b"", JSON, 422, "validation_error"),
    (
        "wrong content type",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1"}'),
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "form content type",
        b"symbol=EURUSD&side=buy&quantity=0.1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    ("no content type", raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1"}'), {}, 415, "unsupported_media_type"),
    (
        "latin-1 charset",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1"}'),
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "unsupported_media_type",
    ),
    (
        "oversized body",
        raw('{"symbol":"EURUSD","side":"buy","quantity":"0.1","pad":"' + "x" * 1_100_000 + '"}'),
        JSON,
        413,
        "body_too_large",
    ),
]


@pytest.fixture
def snapshot(desk: Any, account: Any) -> Iterator[Any]:
    """The account's full state before, checked unchanged after."""
    before = desk.state(account["id"])
    yield before
    assert desk.state(account["id"]) == before


@pytest.mark.parametrize(("name", "body", "headers", "status", "code"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_hostile_order_bodies_are_refused_at_the_edge_and_change_nothing(
    client: Any,
    account: Any,
    snapshot: Any,
    name: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    url = f"{PREFIX}/accounts/{account['id']}/orders"
    if isinstance(body, bytes):
        r = client.post(url, content=body, headers=headers)
    else:
        r = client.post(url, json=body, headers=headers)
    assert r.status_code == status, (name, r.text[:500])
    err = r.json()["error"]
    assert err["code"] == code
    assert set(err) == {"code", "message", "details"}
    assert "Traceback" not in r.text


def test_an_oversized_chunked_body_without_content_length_is_413(client: Any, account: Any, snapshot: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"symbol":"EURUSD","side":"buy","quantity":"0.1","pad":"'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}'

    r = client.post(f"{PREFIX}/accounts/{account['id']}/orders", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert r.json()["error"]["details"] == {"limit_bytes": 1_000_000}


GATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("lots below the minimum", {**OK, "quantity": "0.001"}, "invalid_quantity"),
    ("lots off the step", {**OK, "quantity": "0.015"}, "invalid_quantity"),
    ("lots above the maximum", {**OK, "quantity": "101"}, "invalid_quantity"),
    ("unknown symbol", {**OK, "symbol": "ZZZZZZ"}, "unknown_symbol"),
    ("stop loss above a buy's entry", {**OK, "stop_loss": "1.20000"}, "invalid_stop_loss"),
    ("take profit below a buy's entry", {**OK, "take_profit": "1.00000"}, "invalid_take_profit"),
    ("stop loss below a sell's entry", {**OK, "side": "sell", "stop_loss": "1.00000"}, "invalid_stop_loss"),
    ("too many decimals for the instrument", {**OK, "stop_loss": "1.090001"}, "invalid_price"),
    ("notional above the per-order limit", {**OK, "quantity": "0.50"}, "notional_exceeded"),
]


@pytest.mark.parametrize(("name", "body", "code"), GATE_CASES, ids=[c[0] for c in GATE_CASES])
def test_rule_breaking_orders_are_recorded_gate_rejections_that_move_no_money(
    desk: Any, client: Any, account: Any, name: str, body: dict[str, Any], code: str
) -> None:
    aid = account["id"]
    status, cash, equity, seq, ledger, orders, fills, positions, actions = desk.state(aid)
    r = client.post(f"{PREFIX}/accounts/{aid}/orders", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["order"]["status"] == "rejected"
    assert desk.state(aid) == (status, cash, equity, seq + 1, ledger + 1, orders + 1, fills, positions, actions)


@pytest.mark.parametrize("move", ["pause", "lock"])
def test_orders_on_a_paused_or_locked_account_are_rejected(
    desk: Any, client: Any, admin: Any, account: Any, move: str
) -> None:
    aid = account["id"]
    assert admin.post(f"/api/v1/admin/prop/accounts/{aid}/{move}", json={"reason": "test"}).status_code == 200
    r = desk.order(aid)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "account_not_active"
    assert desk.count("fills", aid) == 0


def test_orders_on_a_finished_account_are_rejected(desk: Any, client: Any, account: Any) -> None:
    aid = account["id"]
    assert client.post(f"{PREFIX}/accounts/{aid}/complete").status_code == 200
    r = desk.order(aid)
    assert r.status_code == 422 and r.json()["error"]["code"] == "account_not_active"


QUOTE = {"symbol": "EURUSD", "bid": "1.2", "ask": "1.3", "ts": "2026-03-02T10:00:05+00:00"}
QUOTE_CASES: list[tuple[str, Any]] = [
    ("naive timestamp", {**QUOTE, "ts": "2026-03-02T10:00:05"}),
    ("timestamp as a number", {**QUOTE, "ts": 1772445605}),
    ("date only", {**QUOTE, "ts": "2026-03-02"}),
    ("two days ahead", {**QUOTE, "ts": "2026-03-04T10:00:05Z"}),
    ("a year ahead", {**QUOTE, "ts": "2027-03-02T10:00:05Z"}),
    ("year 9999", {**QUOTE, "ts": "9999-12-31T23:59:59Z"}),
    ("two days old", {**QUOTE, "ts": "2026-02-28T10:00:05Z"}),
    ("ask below bid", {**QUOTE, "bid": "1.3", "ask": "1.2"}),
    ("NaN bid", {**QUOTE, "bid": "NaN"}),
    ("negative bid", {**QUOTE, "bid": "-1.2"}),
    ("zero bid", {**QUOTE, "bid": "0"}),
    ("unknown symbol", {**QUOTE, "symbol": "ZZZZZZ"}),
    ("odd-case symbol", {**QUOTE, "symbol": "EurUsd"}),
    ("negative seq", {**QUOTE, "seq": -1}),
    ("fractional seq", {**QUOTE, "seq": 1.5}),
    ("huge seq", {**QUOTE, "seq": 2**64}),
    ("extra field", {**QUOTE, "source": "forged"}),
    ("one bad quote in a batch", [QUOTE, {**QUOTE, "symbol": "GBPUSD", "ts": "2026-03-02T10:00:05"}]),
    ("empty batch", []),
    ("1001 quotes", [QUOTE] * 1001),
]


@pytest.mark.parametrize(("name", "body"), QUOTE_CASES, ids=[c[0] for c in QUOTE_CASES])
def test_hostile_quotes_are_422_and_store_nothing(
    client: Any, platform: Any, account: Any, name: str, body: Any
) -> None:
    before = [platform.quotes.latest(s) for s in ("EURUSD", "GBPUSD")]
    r = client.post(f"{PREFIX}/quotes", json=body)
    assert r.status_code == 422, (name, r.text)
    assert [platform.quotes.latest(s) for s in ("EURUSD", "GBPUSD")] == before


def test_stale_and_out_of_order_ticks_are_dropped_and_reported(
    desk: Any, client: Any, platform: Any, account: Any, clock: Any
) -> None:
    latest = platform.quotes.latest("EURUSD")
    older = {**QUOTE, "ts": (clock.now() - timedelta(seconds=5)).isoformat()}
    r = client.post(
        f"{PREFIX}/quotes", json=[older, {**QUOTE, "ts": clock.now().isoformat(), "bid": "1.10000", "ask": "1.10010"}]
    )
    assert r.status_code == 200
    assert r.json()["accepted"] == 0 and r.json()["dropped"] == 2
    assert [x["reason"] for x in r.json()["results"]] == ["out_of_order", "duplicate"]
    assert platform.quotes.latest("EURUSD") == latest


ACCOUNT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("owner with spaces", {"owner_id": "a b"}),
    ("owner unicode", {"owner_id": "tr\u0430der"}),
    ("owner empty", {"owner_id": ""}),
    ("owner too long", {"owner_id": "x" * 201}),
    ("mode upper case", {"mode": "CHALLENGE"}),
    ("mode unknown", {"mode": "funded"}),
    ("phase with spaces", {"phase": "phase 1"}),
    ("starting balance NaN", {"starting_balance": "NaN"}),
    ("starting balance negative", {"starting_balance": "-5"}),
    ("starting balance 1e400", {"starting_balance": "1e400"}),
    ("starting balance 1e17", {"starting_balance": "100000000000000000"}),
    ("currency lower case", {"currency": "usd"}),
    ("start as a string", {"start": "true"}),
    ("start as 1", {"start": 1}),
    ("policy not an object", {"policy": ["max_leverage", 5]}),
    ("policy Infinity", {"policy": {"max_leverage": "Infinity"}}),
    ("policy too many keys", {"policy": {f"k{i}": 1 for i in range(33)}}),
    ("starting balance twice", {"starting_balance": "5", "policy": {"starting_balance": "6"}}),
    ("status forged", {"status": "passed"}),
    ("idempotency key with control char", {"idempotency_key": "a\tb"}),
    ("parent not a uuid", {"parent_account_id": "123"}),
]


@pytest.mark.parametrize(("name", "extra"), ACCOUNT_CASES, ids=[c[0] for c in ACCOUNT_CASES])
def test_hostile_account_bodies_are_422_and_create_nothing(
    client: Any, platform: Any, name: str, extra: dict[str, Any]
) -> None:
    r = client.post(f"{PREFIX}/accounts", json={"owner_id": "t", "mode": "audition", **extra})
    assert r.status_code == 422, (name, r.text)
    with platform.db.read() as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 0


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"limit": "1e2"}, {"cursor": "%%%"}, {"status": "FILLED"}]
)
def test_hostile_queries_are_422(client: Any, account: Any, query: dict[str, Any]) -> None:
    r = client.get(f"{PREFIX}/accounts/{account['id']}/orders", params=query)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/123/snapshot",
        "/accounts/%00/ledger",
        "/accounts/00000000-0000-0000-0000-00000000000g/orders",
        "/accounts/{id}/positions/eurusd/close",
        "/accounts/{id}/positions/EUR%20USD/close",
        "/accounts/{id}/orders/not-a-uuid/cancel",
        "/decision-actions/1",
    ],
)
def test_hostile_paths_are_4xx(client: Any, account: Any, snapshot: Any, path: str) -> None:
    url = PREFIX + path.replace("{id}", account["id"])
    r = client.post(url) if url.endswith(("close", "cancel")) else client.get(url)
    assert r.status_code in (404, 422), r.text


def _overflow() -> Any:
    return Decimal("9e999999") * Decimal("9e999999")


def _invalid_operation() -> Any:
    return Decimal("NaN") < 0


@pytest.mark.parametrize("failure", [_overflow, _invalid_operation])
def test_arithmetic_failing_inside_a_command_is_422_value_out_of_range_logged_and_counted(
    client: Any, platform: Any, account: Any, snapshot: Any, monkeypatch: Any, failure: Any
) -> None:
    # Inputs are bounded at the edge; whatever arithmetic still fails inside a command is the client's value:
    # a 4xx with a reason (never a 500), logged at error level and counted in /metrics.
    def failing_mark(*args: Any, **kwargs: Any) -> Any:
        failure()
        raise AssertionError("the arithmetic above raises")

    monkeypatch.setattr(platform.execution, "mark_to_market", failing_mark)
    metric = "propdesk_value_out_of_range_total"
    assert f'{metric}{{route=""}} 0.0' in client.get("/metrics").text  # present before the first failure
    with structlog.testing.capture_logs() as logged:
        r = client.post(f"{PREFIX}/accounts/{account['id']}/mark-to-market")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "value_out_of_range"
    assert "Traceback" not in r.text
    route = "/api/v1/prop/accounts/{account_id}/mark-to-market"
    assert f'{metric}{{route="{route}"}} 1.0' in client.get("/metrics").text
    assert [e["route"] for e in logged if e["event"] == "value_out_of_range" and e["log_level"] == "error"] == [route]
