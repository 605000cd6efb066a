"""Commands and the ``Idempotency-Key`` header: a retry can never execute twice.

Every mutating route hands its effect to ``Commands.run``. The effect runs in ONE engine transaction that,
when the request carries an ``Idempotency-Key``, also holds the key's row:

    BEGIN
      INSERT INTO idempotency_keys (principal, key, method, path, request_hash, ...) ON CONFLICT DO NOTHING
        - no conflict: the key is ours; a concurrent request with the same key now blocks on this row
        - conflict (the row is committed): same request hash -> replay the stored status and body;
          another hash (or method/path) -> 409 ``idempotency_key_reused``
        - still blocked after ``IN_FLIGHT_WAIT_MS`` -> 409 ``idempotency_key_in_flight``
      SAVEPOINT; effect(conn)   -- the service methods join this transaction through ``conn=``
        - a DomainError/ApiError rolls back to the savepoint and becomes the (stored) 4xx response
      UPDATE idempotency_keys SET status_code, response   -- the exact response text
    COMMIT

The effect, its outcome and the key row commit together or not at all: there is no window in which the effect
is committed and the key is not (or the reverse), so a crash at any point is safe to retry. Unexpected errors
(5xx) roll everything back and are never stored, so the retry runs afresh. A key is scoped to the principal;
"the same request" is the SHA-256 of method, path, query and the canonical body (``body.request_hash``).

Commands run on their own engine-role connection pool. Some effects open further connections from the
platform's pool while they hold the command's (the quote store's fallback read, ``on_quote``,
``mark_all``); with separate pools no request ever waits for a connection of the pool it already holds one of,
so a burst of commands cannot deadlock the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from starlette.requests import Request
from starlette.responses import Response

from ..db.health import DatabaseHealth, checked_pool
from ..domain.clock import Clock
from ..domain.errors import DomainError
from ..identity.auth import Principal
from ..logs import get as get_logger
from ..metrics import Metrics
from .body import request_hash
from .errors import ApiError, describe
from .render import JSON_MEDIA_TYPE, dumps

HEADER = "idempotency-key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 200
IN_FLIGHT_WAIT_MS = 5000

Conn = psycopg.Connection[dict[str, Any]]


@dataclass
class Outcome:
    """What an effect produced: the HTTP status and the body to render (and store)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


Effect = Callable[[Conn], Outcome]

# Arithmetic that cannot be carried out: decimal InvalidOperation / Overflow / DivisionByZero (ArithmeticError)
# and a value outside a numeric column's range. Inputs are bounded at the edge; whatever still slips through is
# the client's value, so it is a 422 with a reason, never a 500 (and it is logged and counted: a missing bound).
OUT_OF_RANGE: tuple[type[BaseException], ...] = (ArithmeticError, psycopg.errors.NumericValueOutOfRange)


def parse_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (1..200 printable ASCII characters) or None; 422 when malformed."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise _bad_key("send one Idempotency-Key header")
    key = values[0]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(not 0x20 <= ord(c) <= 0x7E for c in key):
        raise _bad_key(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable ASCII characters")
    return key


def _bad_key(message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        message,
        {"errors": [{"loc": ["header", "Idempotency-Key"], "msg": message, "type": "value_error"}]},
    )


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # only reachable if a route escaped the auth middleware
        raise ApiError(401, "unauthorized", "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return principal


class Commands:
    """Runs mutating requests: one engine transaction per command, with the idempotency record inside it."""

    def __init__(
        self,
        conninfo: str,
        clock: Clock,
        *,
        pool_size: int = 10,
        health: DatabaseHealth | None = None,
        metrics: Metrics | None = None,
    ):
        self.clock = clock
        self.metrics = metrics
        self.health = health or DatabaseHealth(conninfo)
        self.pool: ConnectionPool[Conn] = checked_pool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            name="api-commands",
            kwargs={"row_factory": dict_row, "autocommit": False},
        )

    def close(self) -> None:
        self.pool.close()

    def run(self, request: Request, effect: Effect) -> Response:
        """Execute ``effect`` for ``request`` exactly once per idempotency key; returns the HTTP response."""
        principal = principal_of(request)
        key = parse_key(request)
        method = request.method
        path = request.scope["path"]
        rhash = getattr(request.state, "body_hash", None) or request_hash(
            method, path, request.scope.get("query_string", b"").decode("latin-1"), None
        )
        with self.health.connection(self.pool) as conn, conn.transaction():
            if key is not None:
                replay = self._claim(conn, principal.id, key, method, path, rhash)
                if replay is not None:
                    return replay
            status, body, headers = self._apply(conn, effect, request, self.metrics)
            text = dumps(body)
            if key is not None and status < 500:
                conn.execute(
                    "UPDATE idempotency_keys SET status_code=%s, response=%s WHERE principal=%s AND key=%s",
                    (status, Jsonb({"body": text.decode()}), principal.id, key),
                )
        return Response(text, status_code=status, headers=headers, media_type=JSON_MEDIA_TYPE)

    def _claim(self, conn: Conn, principal: str, key: str, method: str, path: str, rhash: str) -> Response | None:
        """Insert the key row (ours: None) or return the stored response of the same request."""
        # One round trip: a short lock wait for this INSERT only (a concurrent request with the same key holds the
        # row until it commits), then back to the session's setting (the claim opens the transaction, so RESET
        # restores exactly what was in force before) for the command itself.
        try:
            with conn.pipeline():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{IN_FLIGHT_WAIT_MS}ms",))
                cur = conn.execute(
                    "INSERT INTO idempotency_keys (principal, key, method, path, request_hash, created_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (principal, key) DO NOTHING RETURNING key",
                    (principal, key, method, path, rhash, self.clock.now()),
                )
                conn.execute("RESET lock_timeout")
            mine = cur.fetchone()
        except psycopg.errors.LockNotAvailable:
            raise ApiError(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        if mine is not None:
            return None
        row = conn.execute(
            "SELECT method, path, request_hash, status_code, response FROM idempotency_keys"
            " WHERE principal=%s AND key=%s",
            (principal, key),
        ).fetchone()
        if row is None:  # pragma: no cover - a conflict means the row exists and rows are never deleted here
            raise ApiError(409, "idempotency_key_in_flight", "retry shortly", headers={"Retry-After": "1"})
        if (row["method"], row["path"], row["request_hash"]) != (method, path, rhash):
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request",
                {"original_method": row["method"], "original_path": row["path"]},
            )
        if row["status_code"] is None or not isinstance(row["response"], dict):  # pragma: no cover - see module doc
            raise ApiError(409, "idempotency_key_in_flight", "retry shortly", headers={"Retry-After": "1"})
        return Response(
            str(row["response"]["body"]).encode(),
            status_code=row["status_code"],
            headers={REPLAY_HEADER: "true"},
            media_type=JSON_MEDIA_TYPE,
        )

    @staticmethod
    def _apply(
        conn: Conn, effect: Effect, request: Request | None = None, metrics: Metrics | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            with conn.transaction():  # a savepoint: a refused command leaves nothing behind
                out = effect(conn)
        except DomainError as exc:
            status, body = describe(exc)
            return status, body, {}
        except ApiError as exc:
            status, body = describe(exc)
            return status, body, exc.headers
        except OUT_OF_RANGE as exc:  # the savepoint is rolled back: nothing of the command remains
            return value_out_of_range(exc, request, metrics)
        return out.status, out.body, out.headers


def value_out_of_range(
    exc: BaseException, request: Request | None, metrics: Metrics | None
) -> tuple[int, Any, dict[str, str]]:
    """422 ``value_out_of_range`` for arithmetic that failed inside a command; logged at error level, counted."""
    route = getattr(request.scope.get("route"), "path", "") if request is not None else ""
    get_logger("propdesk.api").error(
        "value_out_of_range", route=route, error=type(exc).__name__, detail=str(exc)[:300], exc_info=exc
    )
    if metrics is not None:
        metrics.value_out_of_range.labels(route=route).inc()
    status, body = describe(
        ApiError(
            422,
            "value_out_of_range",
            "a value is outside the range this command can compute with",
            {"error": type(exc).__name__},
        )
    )
    return status, body, {}
