"""/healthz, /metrics, the error envelope, request logs and JSON rendering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

pytestmark = pytest.mark.e2e
PREFIX = "/api/v1/prop"


def test_healthz_is_ok_with_a_fresh_heartbeat(anon: Any, desk: Any) -> None:
    desk.heartbeat(timedelta(seconds=3))
    r = anon.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok", body
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"]
    worker = body["checks"]["mark_to_market_worker"]
    assert worker["ok"] is True and worker["age_seconds"] == 3.0 and worker["last_beat_at"].endswith("Z")


def test_healthz_is_degraded_without_or_with_a_stale_heartbeat(anon: Any, desk: Any) -> None:
    r = anon.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert r.json()["checks"]["mark_to_market_worker"]["reason"] == "no heartbeat recorded"
    desk.heartbeat(timedelta(seconds=61))
    r = anon.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert r.json()["checks"]["mark_to_market_worker"]["age_seconds"] == 61.0


def test_healthz_reports_migrations_behind_head(anon: Any, desk: Any, platform: Any, monkeypatch: Any) -> None:
    from propdesk.api.routes import ops

    desk.heartbeat(timedelta(seconds=1))
    monkeypatch.setattr(ops, "HEAD", "9999")
    body = anon.get("/healthz").json()
    assert body["status"] == "degraded"
    assert body["checks"]["migrations"] == {
        "ok": False,
        "current": body["checks"]["migrations"]["current"],
        "head": "9999",
    }


def test_healthz_is_503_when_the_database_is_unreachable(platform: Any, monkeypatch: Any) -> None:
    from starlette.testclient import TestClient

    from propdesk.api.routes import ops
    from propdesk.db.database import Database
    from propdesk.web.app import create_app

    dead = Database("host=127.0.0.1 port=1 dbname=none user=nobody connect_timeout=1", "pdtest", pool_size=1)
    monkeypatch.setattr(ops, "DB_TIMEOUT_SECONDS", 0.5)
    real = platform.db
    platform.db = dead
    try:
        with capture_logs():
            r = TestClient(create_app(platform)).get("/healthz")
    finally:
        platform.db = real
        dead.close()
    assert r.status_code == 503
    assert r.json()["status"] == "down"
    assert r.json()["checks"]["database"]["ok"] is False


def test_metrics_expose_requests_order_latency_rejections_and_mark_to_market(
    desk: Any, client: Any, anon: Any, account: Any
) -> None:
    aid = account["id"]
    assert desk.order(aid).status_code == 201
    assert desk.order(aid, quantity="0.001").status_code == 422
    assert client.post(f"{PREFIX}/mark-to-market-all").status_code == 200
    r = anon.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'propdesk_http_requests_total{method="POST",route="/api/v1/prop/accounts/{account_id}/orders",'
        'status="201"} 1.0' in text
    )
    assert 'route="/api/v1/prop/accounts/{account_id}/orders",status="422"} 1.0' in text
    assert "propdesk_order_latency_seconds_count 2.0" in text
    assert 'propdesk_gate_rejections_total{reason="invalid_quantity"} 1.0' in text
    assert "propdesk_mtm_cycle_seconds_count 1.0" in text
    assert "propdesk_mtm_failures_total 0.0" in text
    assert 'propdesk_quotes_total{outcome="accepted"}' in text


def test_unknown_route_wrong_method_and_internal_errors_use_the_envelope(
    client: Any, anon: Any, account: Any, platform: Any, monkeypatch: Any
) -> None:
    r = client.get(f"{PREFIX}/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = anon.get("/no/such/page")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get(f"{PREFIX}/quotes")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.delete(f"{PREFIX}/accounts/{account['id']}")
    assert r.status_code == 405

    def boom(*a: Any, **k: Any) -> Any:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(platform.execution, "snapshot", boom)
    with capture_logs() as logs:
        r = client.get(f"{PREFIX}/accounts/{account['id']}/snapshot", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the request id identifies it",
            "details": {"request_id": "req-42"},
        }
    }
    assert r.headers["X-Request-ID"] == "req-42"
    errors = [e for e in logs if e["event"] == "unhandled_exception"]
    assert len(errors) == 1 and errors[0]["request_id"] == "req-42" and "ZeroDivisionError" in errors[0]["error"]


def test_validation_errors_are_json_safe_and_name_the_field(client: Any, account: Any) -> None:
    r = client.post(
        f"{PREFIX}/accounts/{account['id']}/orders",
        json={"symbol": "EURUSD", "side": "buy", "quantity": "1e400", "extra": b"x".hex()},
    )
    assert r.status_code == 422
    errors = r.json()["error"]["details"]["errors"]
    locs = [e["loc"] for e in errors]
    assert ["body", "quantity"] in locs and ["body", "extra"] in locs
    for e in errors:
        assert set(e) <= {"loc", "msg", "type", "ctx"}
        assert "input" not in e


def test_one_structured_log_line_per_request(client: Any, account: Any) -> None:
    with capture_logs() as logs:
        client.get(f"{PREFIX}/accounts/{account['id']}")
    lines = [e for e in logs if e["event"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["route"] == "/api/v1/prop/accounts/{account_id}"
    assert line["status"] == 200 and line["duration_ms"] >= 0 and line["principal"] == "env:service"
    assert line["request_id"]


def test_refused_authentication_is_logged_without_the_token(anon: Any) -> None:
    with capture_logs() as logs:
        anon.get(f"{PREFIX}/instruments", headers={"Authorization": "Bearer sekrit-value"})
    refused = [e for e in logs if e["event"] == "auth_refused"]
    assert len(refused) == 1
    assert "sekrit" not in repr(logs)


def test_json_renders_decimals_plainly_and_times_in_utc(desk: Any, client: Any) -> None:
    acc = desk.create_account(starting_balance="99754.2000", policy={"max_notional": "1E+4"})
    assert acc["starting_balance"] == "99754.2"
    assert acc["balance"]["cash"] == "99754.2"
    assert acc["policy"]["max_notional"] == "10000"
    assert acc["created_at"] == "2026-03-02T10:00:00Z"
