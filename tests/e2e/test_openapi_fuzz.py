"""schemathesis over the whole OpenAPI document: no 5xx, and every response as documented.

The real application (``create_app``) over a real test database, called in-process over ASGI, as each kind of
caller the API serves: the service token, the admin token and a logged-in trader (a web session cookie, and the
trusted ``Origin`` on unsafe methods, as a browser sends). Each caller fuzzes the operations the path policy of
the authorization matrix lets it call (the matrix itself checks every refusal); the operations come from
``/openapi.json``, so a new route is fuzzed by default.

Per operation: at most ``EXAMPLES`` cases, derandomized (the same cases on every run), positive and negative
data, path parameters half the time replaced by real ids (an account with a resting order, a fill, a
notification) so the calls reach past "not found". Checks: not a server error, status code / content type /
body conform to the operation's documented responses. After each caller's run the ``/metrics`` counts of 5xx
and of ``value_out_of_range`` (arithmetic that failed inside a command) must be 0.

A separate, fast test requires a documented (non-empty) response schema on every JSON operation, apart from an
explicit list of operations still to be documented (which may only shrink).

Bound: ``EXAMPLES`` <= 25 per operation, the whole module well under 3 minutes on 2 cores
(``HYPOTHESIS``-profile independent: the settings are fixed here).
"""

from __future__ import annotations

import re
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.e2e.test_authorization_matrix import expectation
from tests.web_kit import ADMIN_TOKEN, SERVICE_TOKEN, csrf_headers, login_cookie, make_user, open_test_platform

from propdesk.domain.quotes import Quote

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.python.asgi import shutdown_lifespans  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CALLER_OF_ROLE = {"service": "service_token", "admin": "admin_token", "trader": "trader_a"}
# Server-sent event streams never end on their own; the authorization matrix opens them (and checks their status).
STREAMS = {"/api/v1/admin/stream", "/api/v1/stream/accounts/{account_id}"}
# Public operations are fuzzed once (as the trader, who also uses them), not once per caller.
PUBLIC_ROLE = "trader"

# JSON operations whose 2xx body has no documented schema yet (FastAPI's default ``{}``). Only ever shrinks:
# a new JSON route must come with a response model.
UNDOCUMENTED: set[str] = {
    "GET /api/v1/accounts",
    "GET /api/v1/accounts/{account_id}",
    "GET /api/v1/accounts/{account_id}/daily-stats",
    "GET /api/v1/accounts/{account_id}/equity",
    "GET /api/v1/accounts/{account_id}/journal",
    "GET /api/v1/accounts/{account_id}/news",
    "GET /api/v1/accounts/{account_id}/orders",
    "GET /api/v1/accounts/{account_id}/positions",
    "GET /api/v1/accounts/{account_id}/rules",
    "GET /api/v1/accounts/{account_id}/trades",
    "GET /api/v1/accounts/{account_id}/violations",
    "GET /api/v1/admin/prop/accounts/{account_id}/audit-log",
    "GET /api/v1/me",
    "GET /api/v1/notifications",
    "GET /api/v1/plans",
    "GET /api/v1/plans/{plan_id}",
    "GET /api/v1/prop/accounts/{account_id}/consistency-snapshots",
    "GET /api/v1/prop/accounts/{account_id}/daily-stats",
    "GET /api/v1/prop/accounts/{account_id}/decision-context",
    "GET /api/v1/prop/accounts/{account_id}/rules",
    "GET /api/v1/prop/accounts/{account_id}/snapshot",
    "GET /api/v1/prop/accounts/{account_id}/violations",
    "GET /api/v1/prop/decision-actions/{decision_action_uuid}",
    "GET /api/v1/prop/plans",
    "GET /api/v1/prop/plans/{plan_id}",
    "GET /api/v1/stream/accounts/{account_id}",
    "GET /healthz",
    "POST /api/v1/accounts/{account_id}/positions/{symbol}/modify",
    "POST /api/v1/accounts/{account_id}/risk-preview",
    "POST /api/v1/admin/calendar/events",
    "POST /api/v1/admin/eod",
    "POST /api/v1/admin/plans",
    "POST /api/v1/admin/plans/{plan_id}/retire",
    "POST /api/v1/admin/plans/{plan_id}/retirement",
    "POST /api/v1/admin/prop/accounts/{account_id}/liquidate",
    "POST /api/v1/admin/prop/accounts/{account_id}/lock",
    "POST /api/v1/admin/prop/accounts/{account_id}/pause",
    "POST /api/v1/admin/prop/accounts/{account_id}/recompute",
    "POST /api/v1/admin/prop/accounts/{account_id}/resume",
    "POST /api/v1/admin/prop/accounts/{account_id}/void-fill",
    "POST /api/v1/admin/prop/accounts/{account_id}/void-order",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/logout",
    "POST /api/v1/auth/password-reset",
    "POST /api/v1/auth/password-reset/confirm",
    "POST /api/v1/auth/signup",
    "POST /api/v1/checkout",
    "POST /api/v1/notifications/{notification_id}/read",
    "POST /api/v1/prop/accounts/{account_id}/decision-actions",
    "POST /api/v1/prop/accounts/{account_id}/mark-to-market",
    "POST /api/v1/prop/accounts/{account_id}/positions/{symbol}/modify",
    "POST /api/v1/prop/mark-to-market-all",
    "POST /api/v1/prop/quotes",
    "POST /api/v1/risk/check-trade",
    "PUT /api/v1/accounts/{account_id}/journal/{fill_id}",
}


@pytest.fixture
def world(db_url: str, clock: Any) -> Iterator[dict[str, Any]]:
    """A platform with a trader, an active challenge account with a resting order, a fill and a notification."""
    from propdesk.domain.lifecycle import Trigger
    from propdesk.domain.orders import OrderRequest, OrderType, Side
    from propdesk.web.app import create_app

    platform = open_test_platform(db_url, clock)
    try:
        app = create_app(platform)
        trader = make_user(platform, "fuzz-trader@example.test")
        for symbol, bid, ask in (("EURUSD", "1.10000", "1.10010"), ("XAUUSD", "2000.00", "2000.50")):
            assert platform.quotes.put(Quote(symbol, Decimal(bid), Decimal(ask), clock.now()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient
        # Not entered: the app's lifespan (which closes the command pool on exit) belongs to schemathesis' run.
        http = TestClient(app, headers=csrf_headers(platform))
        http.cookies.update(login_cookie(platform, trader))
        r = http.post(
            "/api/v1/checkout", json={"plan_id": "classic-2step", "offer_id": "10k", "payment_provider": "dev"}
        )
        assert r.status_code == 201, r.text
        spec = http.get("/openapi.json").json()
        account = uuid.UUID(r.json()["account"]["id"])
        ex = platform.execution
        assert ex.submit_order(account, OrderRequest("EURUSD", Side.BUY, Decimal("0.2"))).accepted
        fill = ex.close_position(account, "EURUSD", Decimal("0.1")).fill
        assert fill is not None
        resting = ex.submit_order(
            account, OrderRequest("EURUSD", Side.BUY, Decimal("0.1"), OrderType.LIMIT, limit_price=Decimal("1.05"))
        )
        ex.apply_trigger(account, Trigger.PAUSE, actor="fuzz", reason="a notification")
        ex.apply_trigger(account, Trigger.RESUME, actor="fuzz", reason="and back")
        with platform.db.read() as c:
            note = c.execute(
                "SELECT id FROM notifications WHERE user_id=%s ORDER BY id LIMIT 1", (trader.id,)
            ).fetchone()
        ids = {
            "account_id": str(account),
            "order_id": str(resting.order["id"]),
            "fill_id": str(fill["id"]),
            "notification_id": str(note["id"]),
            "symbol": "EURUSD",
            "plan_id": "classic-2step",
        }
        yield {"platform": platform, "app": app, "trader": trader, "ids": ids, "spec": spec}
    finally:
        try:
            shutdown_lifespans()  # schemathesis keeps the app's lifespan open for the process
        finally:
            platform.close()


def role_operations(spec: dict[str, Any], role: str) -> list[tuple[str, str]]:
    """(method, path) of the JSON operations ``role`` may call (allowed, or public for PUBLIC_ROLE)."""
    out = []
    for path, ops in spec["paths"].items():
        if path in STREAMS:
            continue
        for method in ops:
            want = expectation(method.upper(), path, CALLER_OF_ROLE[role])
            if want == "allow" or (want == "any" and role == PUBLIC_ROLE):
                out.append((method.upper(), path))
    return sorted(out)


def metric_total(platform: Any, name: str, **labels: str) -> float:
    total = 0.0
    for family in platform.metrics.registry.collect():
        for s in family.samples:
            if s.name == name and all(re.fullmatch(v, s.labels.get(k, "")) for k, v in labels.items()):
                total += s.value
    return total


@pytest.mark.parametrize("role", ["service", "admin", "trader"])
def test_fuzzed_requests_get_no_5xx_and_documented_responses(world: dict[str, Any], role: str) -> None:
    platform, ids = world["platform"], world["ids"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", world["app"])
    wanted = set(role_operations(world["spec"], role))
    operations = [r.ok() for r in schema.get_all_operations() if (r.ok().method.upper(), r.ok().path) in wanted]
    assert len(operations) == len(wanted) > 5

    def headers(method: str) -> tuple[dict[str, str], dict[str, str]]:
        if role == "service":
            return {"Authorization": f"Bearer {SERVICE_TOKEN}"}, {}
        if role == "admin":
            return {"Authorization": f"Bearer {ADMIN_TOKEN}"}, {}
        # A fresh session per case: a fuzzed logout must not turn the rest of the run into 401s.
        extra = csrf_headers(platform) if method in UNSAFE else {}
        return extra, login_cookie(platform, world["trader"])

    def fuzz(op: Any) -> Any:
        strategy = st.one_of(
            op.as_strategy(generation_mode=GenerationMode.POSITIVE),
            op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, real=st.booleans())
        def run(case: Any, real: bool) -> None:
            if real and case.path_parameters:
                for name in case.path_parameters:
                    if name in ids:
                        case.path_parameters[name] = ids[name]
            hdrs, cookies = headers(op.method.upper())
            case.call_and_validate(headers=hdrs, cookies=cookies, checks=CHECKS)

        return run

    failures: list[str] = []
    started = time.monotonic()
    for op in operations:
        try:
            fuzz(op)()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            failures.append(f"{op.method.upper()} {op.path}:\n{str(exc)[:3000]}")
    elapsed = time.monotonic() - started
    statuses: Counter[str] = Counter()
    for family in platform.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "propdesk_http_requests_total":
                statuses[sample.labels["status"]] += int(sample.value)
    print(f"\nschemathesis as {role}: {len(operations)} operations x <= {EXAMPLES} cases in {elapsed:.1f}s")
    print(f"  answers by status: {dict(sorted(statuses.items()))}")
    for f in failures:
        print("FAILURE", f, sep="\n")
    assert failures == []
    assert metric_total(platform, "propdesk_http_requests_total", status=r"5\d\d") == 0
    assert metric_total(platform, "propdesk_value_out_of_range_total") == 0


def test_every_json_operation_documents_its_response_schema(world: dict[str, Any]) -> None:
    spec = world["spec"]
    missing = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op.get("responses", {}).items():
                if not status.startswith("2"):
                    continue
                content = response.get("content") or {}
                if "application/json" in content and not content["application/json"].get("schema"):
                    missing.add(f"{method.upper()} {path}")
    assert missing - UNDOCUMENTED == set(), "JSON operations without a response schema (add a response model)"
    assert UNDOCUMENTED - missing == set(), "documented now: remove them from UNDOCUMENTED"
