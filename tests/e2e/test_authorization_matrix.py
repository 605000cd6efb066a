"""The authorization matrix: every route x every kind of caller, with 0 unexpected allows.

The route list is read at test time: every (method, path) of ``/openapi.json`` plus the page routes the schema
leaves out (``app.routes``), so a route another helper adds later is covered without touching this file. The
expectation comes from the web contract's path policy, by path prefix (an unknown prefix fails the test: the
policy must say who may call a new area), and from ownership: an account-scoped trader route called by another
trader must answer 404, exactly like an account that does not exist.

Callers: anonymous, trader A, trader B, an admin session, the service token, the admin token, and an expired
session (idle timeout passed on the injected clock). Path parameters are real ids: trader A's account, its
resting order, a fill, a notification. Unsafe methods carry the trusted Origin (so CSRF does not mask the
authorization decision) and a body that validates, so an ownership refusal is not hidden behind a 422.

The calls go to a real uvicorn server (server-sent event routes never end; a stream is opened, its status read,
and closed). Allowed calls may do anything but fail with a 5xx.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route
from tests.web_kit import (
    ADMIN_TOKEN,
    PASSWORD,
    SERVICE_TOKEN,
    csrf_headers,
    login_cookie,
    make_user,
    open_test_platform,
)

from propdesk.domain.quotes import Quote
from propdesk.identity.users import UserRole

pytestmark = pytest.mark.e2e

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CALLERS = ("anonymous", "expired_session", "service_token", "admin_token", "trader_b", "admin_session", "trader_a")
SESSIONS = {"trader_a", "trader_b", "admin_session"}

# ----------------------------------------------------------------------------------------------- the path policy
# The web contract (briefs/web_contract.md, issue 5), restated here on purpose rather than imported from the
# middleware: the test must fail if the implementation drifts from the contract.
PUBLIC_PATHS = {"/", "/login", "/signup", "/logout", "/healthz", "/metrics", "/openapi.json"}
PUBLIC_PREFIXES = ("/reset", "/static/", "/docs", "/api/v1/auth/")


def policy(method: str, path: str) -> str:
    """public | page | admin_page | service | admin | market | session, from the path alone."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return "public"
    if path == "/app" or path.startswith(("/app/", "/account/")):
        return "page"  # /account/security: the signed-in user's own security page (TOTP)
    if path == "/admin" or path.startswith("/admin/"):
        return "admin_page"
    if path.startswith("/api/v1/plans") and method in ("GET", "HEAD"):
        return "public"
    if path.startswith(("/api/v1/prop/", "/api/v1/risk/")):
        return "service"
    if path.startswith("/api/v1/admin/"):
        return "admin"
    if path.startswith("/api/v1/market/"):
        return "market"
    if path.startswith("/api/v1/"):
        return "session"
    raise AssertionError(
        f"{method} {path}: a path outside every area of the path policy; say in the web "
        "contract (and in this test's policy) who may call it"
    )


OWNED = re.compile(r"\{(account_id|fill_id|notification_id)\}")


def expectation(method: str, path: str, caller: str) -> str:
    """allow | deny | any (either is acceptable: a public route).

    Account-scoped trader pages and trader API routes are the owner's only: an admin session is denied (404)
    like another trader (issue 13, defect 4); admins use /admin/accounts/{id}/as-trader."""
    area = policy(method, path)
    owned = bool(OWNED.search(path))
    if area == "public":
        return "any"
    if area == "page":
        if caller not in SESSIONS:
            return "deny"
        if owned and caller in ("trader_b", "admin_session"):
            return "deny"
        return "allow"
    if area == "admin_page":
        return "allow" if caller == "admin_session" else "deny"
    if area == "service":
        return "allow" if caller in ("service_token", "admin_token") else "deny"
    if area == "admin":
        return "allow" if caller in ("admin_token", "admin_session") else "deny"
    if area == "market":
        return "allow" if caller not in ("anonymous", "expired_session") else "deny"
    # session: the trader API; owner-scoped routes are the owner's only (admins included)
    if caller not in SESSIONS:
        return "deny"
    if owned and caller in ("trader_b", "admin_session"):
        return "deny"
    return "allow"


def denial_ok(area: str, caller: str, owned: bool, status: int, location: str) -> bool:
    """Whether a refusal has the shape the policy promises (not just "some 4xx")."""
    if area in ("page", "admin_page"):
        if caller not in SESSIONS:
            return status == 303 and location.startswith("/login")
        return status in (403, 404)
    if caller in ("anonymous", "expired_session"):
        return status == 401
    if owned and caller in SESSIONS and area == "session":
        return status in (404, 422)  # ownership: "not found", as for an id that does not exist
    return status == 403


# ----------------------------------------------------------------------------------------------- the routes
@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body_schema: dict[str, Any] | None
    params: dict[str, dict[str, Any]]  # path parameter -> its schema


def endpoints(app: Any, spec: dict[str, Any]) -> list[Endpoint]:
    out: dict[tuple[str, str], Endpoint] = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method.upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            body = (((op.get("requestBody") or {}).get("content") or {}).get("application/json") or {}).get("schema")
            params = {p["name"]: p.get("schema", {}) for p in op.get("parameters", []) if p.get("in") == "path"}
            out[(method.upper(), path)] = Endpoint(method.upper(), path, body, params)
    for method, raw in all_routes(app.routes):  # plus the pages, which the schema leaves out
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", raw)
        names = re.findall(r"\{(\w+)\}", path)
        out.setdefault((method, path), Endpoint(method, path, None, {n: {} for n in names}))
    return sorted(out.values(), key=lambda e: (e.path, e.method))


def all_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, walking included routers (newer FastAPI wraps them, with their prefix)."""
    for r in routes:
        if isinstance(r, Mount):
            yield "GET", prefix + r.path + "/app.css"  # static files: a real one
        elif isinstance(r, Route):
            for m in sorted((r.methods or set()) - {"HEAD"}):
                yield m, prefix + r.path
        elif hasattr(r, "original_router"):
            context = getattr(r, "include_context", None)
            yield from all_routes(r.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))


def resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return resolve(options[0], spec)
    return schema


def sample(schema: dict[str, Any], spec: dict[str, Any], name: str, ids: dict[str, Any], path: str) -> Any:
    """A value that validates, by field name first (real ids, a plausible order), else by type."""
    if name in ids["fields"]:
        return ids["fields"][name]
    s = resolve(schema, spec)
    if "enum" in s:
        return s["enum"][0]
    kind = s.get("type")
    if kind == "object" or "properties" in s:
        props = s.get("properties", {})
        wanted = list(s.get("required", []))
        if not wanted and path.endswith("/modify"):
            wanted = ["stop_loss"]
        return {k: sample(props[k], spec, k, ids, path) for k in wanted if k in props}
    if kind == "array":
        return [sample(s.get("items", {}), spec, name, ids, path)] * max(1, s.get("minItems", 1))
    if kind == "integer":
        return max(1, s.get("minimum", 1))
    if kind == "number":
        return "1"
    if kind == "boolean":
        return False
    if s.get("format") == "uuid":
        return str(uuid.uuid4())
    if s.get("format") == "date-time":
        return ids["now"]
    return "matrix"


# ----------------------------------------------------------------------------------------------- the world
@pytest.fixture
def world(db_url: str, clock: Any) -> Iterator[dict[str, Any]]:
    from propdesk.demo import ApiServer
    from propdesk.domain.lifecycle import Trigger
    from propdesk.domain.orders import OrderRequest, OrderType, Side
    from propdesk.web.app import create_app

    platform = open_test_platform(db_url, clock)
    app = create_app(platform)
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    try:
        users = {
            "trader_a": make_user(platform, "matrix-a@example.test"),
            "trader_b": make_user(platform, "matrix-b@example.test"),
            "admin_session": make_user(platform, "matrix-admin@example.test", UserRole.ADMIN),
        }
        expired_user = make_user(platform, "matrix-gone@example.test")
        http = httpx.Client(base_url=server.url, timeout=20, headers=csrf_headers(platform))

        def session_headers(user: Any) -> dict[str, str]:
            token = next(iter(login_cookie(platform, user).items()))
            return {"Cookie": f"{token[0]}={token[1]}"}

        assert platform.quotes.put(Quote("EURUSD", Decimal("1.10000"), Decimal("1.10010"), clock.now()))
        accounts = {}
        for who in ("trader_a", "trader_b"):
            r = http.post(
                "/api/v1/checkout",
                json={"plan_id": "classic-2step", "offer_id": "10k", "payment_provider": "dev"},
                headers=session_headers(users[who]),
            )
            assert r.status_code == 201, r.text
            accounts[who] = uuid.UUID(r.json()["account"]["id"])
        ex = platform.execution
        a = accounts["trader_a"]
        assert ex.submit_order(a, OrderRequest("EURUSD", Side.BUY, Decimal("0.2"))).accepted
        fill = ex.close_position(a, "EURUSD", Decimal("0.1")).fill
        assert fill is not None
        resting = ex.submit_order(
            a, OrderRequest("EURUSD", Side.BUY, Decimal("0.1"), OrderType.LIMIT, limit_price=Decimal("1.05"))
        )
        assert resting.order["status"] == "open"
        ex.apply_trigger(a, Trigger.PAUSE, actor="matrix", reason="a notification")
        ex.apply_trigger(a, Trigger.RESUME, actor="matrix", reason="and back")
        with platform.db.read() as c:
            note = c.execute(
                "SELECT id FROM notifications WHERE user_id=%s ORDER BY id LIMIT 1", (users["trader_a"].id,)
            ).fetchone()
        assert note is not None
        # The expired session: made now, then the idle timeout passes. Every other session is made per call.
        expired = session_headers(expired_user)
        clock.advance((platform.settings.session_idle_minutes + 1) * 60)
        now = clock.now().isoformat().replace("+00:00", "Z")
        ids = {
            "path": {
                "account_id": str(a),
                "order_id": str(resting.order["id"]),
                "fill_id": str(fill["id"]),
                "notification_id": str(note["id"]),
                "symbol": "EURUSD",
                "plan_id": "classic-2step",
                "clone_id": "matrix-clone",
            },
            "fields": {
                "symbol": "EURUSD",
                "side": "buy",
                "quantity": "0.01",
                "plan_id": "classic-2step",
                "offer_id": "10k",
                "payment_provider": "dev",
                "note": "matrix",
                "reason": "matrix",
                "order_id": str(resting.order["id"]),
                "fill_id": str(fill["id"]),
                "account_id": str(a),
                "owner_id": "matrix",
                "mode": "challenge",
                "decision_run_id": "matrix",
                "stop_loss": "1.05",
                "decision_action_id": "m1",
                "action": "hold",
                "bid": "1.1",
                "ask": "1.1001",
                "ts": now,
                "email": "matrix-new@example.test",
                "password": PASSWORD,
                "ticket": "m1",
                "lots": "0.01",
                "open_time": now,
                "open_price": "1.1",
                "at": now,
                "currency": "USD",
                "impact": "high",
                "title": "matrix",
                "text": "id: matrix\n",
            },
            "now": now,
        }
        callers: dict[str, Any] = {
            "anonymous": lambda: {},
            "expired_session": lambda: dict(expired),
            "service_token": lambda: {"Authorization": f"Bearer {SERVICE_TOKEN}"},
            "admin_token": lambda: {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            **{name: (lambda u=u: session_headers(u)) for name, u in users.items()},
        }
        yield {"platform": platform, "app": app, "http": http, "ids": ids, "callers": callers}
        http.close()
    finally:
        server.stop()
        platform.close()


def call(http: httpx.Client, method: str, url: str, headers: dict[str, str], body: Any) -> tuple[int, str]:
    """(status, Location). A server-sent event stream is opened, its status read, and closed."""
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    try:
        with http.stream(method, url, follow_redirects=False, **kwargs) as r:
            if "text/event-stream" not in r.headers.get("content-type", ""):
                r.read()
            return r.status_code, r.headers.get("location", "")
    finally:
        http.cookies.clear()  # a sign-up or login answer sets a cookie: it must not follow the next caller


def test_every_route_for_every_caller_has_no_unexpected_allow(world: dict[str, Any]) -> None:
    http, ids, callers = world["http"], world["ids"], world["callers"]
    spec = http.get("/openapi.json").json()
    routes = endpoints(world["app"], spec)
    assert len(routes) > 50
    cells: Counter[str] = Counter()
    unexpected_allows: list[str] = []
    wrong_refusals: list[str] = []
    errors: list[str] = []
    for ep, caller in itertools.product(routes, CALLERS):
        path = ep.path
        for name, schema in ep.params.items():
            value = ids["path"].get(name)
            if value is None:
                kind = schema.get("type")
                value = "1" if kind == "integer" else str(uuid.uuid4()) if schema.get("format") == "uuid" else "x"
            path = path.replace("{" + name + "}", value)
        body = None
        if ep.method in UNSAFE:
            body = sample(ep.body_schema, spec, "", ids, ep.path) if ep.body_schema else None
        status, location = call(http, ep.method, path, callers[caller](), body)
        want = expectation(ep.method, ep.path, caller)
        cell = f"{ep.method} {ep.path} as {caller}: {status}"
        cells[want] += 1
        if status >= 500:
            errors.append(cell)
        elif want == "deny":
            if 200 <= status < 300 or (300 <= status < 400 and not location.startswith("/login")):
                unexpected_allows.append(cell)
            elif not denial_ok(policy(ep.method, ep.path), caller, bool(OWNED.search(ep.path)), status, location):
                wrong_refusals.append(cell + (f" -> {location}" if location else ""))
    total = sum(cells.values())
    print(
        f"\nauthorization matrix: {len(routes)} routes x {len(CALLERS)} callers = {total} cells "
        f"({cells['deny']} must refuse, {cells['allow']} allowed, {cells['any']} either); "
        f"unexpected allows: {len(unexpected_allows)}"
    )
    for label, items in (("UNEXPECTED ALLOW", unexpected_allows), ("WRONG REFUSAL", wrong_refusals), ("5xx", errors)):
        for item in items:
            print(f"  {label}: {item}")
    assert unexpected_allows == []
    assert wrong_refusals == []
    assert errors == []


def test_the_policy_covers_every_route_prefix(world: dict[str, Any]) -> None:
    # A route in an area the contract does not name fails here with its path (policy() raises).
    spec = world["http"].get("/openapi.json").json()
    areas = Counter(policy(e.method, e.path) for e in endpoints(world["app"], spec))
    assert areas["session"] > 10 and areas["service"] > 10 and areas["admin"] > 5
