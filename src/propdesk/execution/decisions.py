"""Decision actions: batches of proposed actions from traders, bots and AI agents.

A batch carries a ``decision_run_id``; each action a ``decision_action_id``. The pair, with the account, is the
idempotency key: a retried batch returns the stored result of every action it already ran, without running the
gates again, and an action id reused with a different body is a conflict. Each action runs in its own
transaction under the account lock and links to the order and fill it produced. ``hold`` and any action the
engine does not know are recorded as ``unsupported``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from ..domain.errors import Conflict, DomainError, InvalidInput, NotFound
from ..domain.gates import Code
from ..domain.money import fmt
from ..domain.orders import OrderRequest, OrderType, Side
from .service import ExecutionService, OrderOutcome

SUPPORTED = ("open", "close", "modify", "cancel")


@dataclass(frozen=True)
class DecisionAction:
    """One proposed action, already type-checked by the edge. Fields not used by ``action`` stay None."""

    decision_action_id: str
    action: str
    symbol: str | None = None
    side: Side | None = None
    quantity: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    order_id: uuid.UUID | None = None
    client_order_id: str | None = None
    rationale: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def request_hash(self) -> str:
        """A stable hash of the action's body: the same id with another body is a conflict."""
        body = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(body.encode()).hexdigest()


def _missing(action: DecisionAction, *names: str) -> list[str]:
    return [n for n in names if getattr(action, n) is None]


class DecisionService:
    """Runs decision batches through the execution core."""

    def __init__(self, execution: ExecutionService):
        self.execution = execution
        self.db = execution.db

    @contextmanager
    def _conn(self, conn: Any | None, *, write: bool) -> Iterator[Any]:
        if conn is not None:
            yield conn
        else:
            with self.db.tx() if write else self.db.read() as c:
                yield c

    def submit_batch(
        self, account_id: uuid.UUID, decision_run_id: str, actions: Sequence[DecisionAction], *, conn: Any | None = None
    ) -> list[dict[str, Any]]:
        """Run a batch; returns one result per action, in order (stored results for actions already run).

        With ``conn`` the whole batch joins the caller's transaction (each action still runs in its own
        savepoint); without it each action commits on its own.
        """
        ids = [a.decision_action_id for a in actions]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        if dups:
            raise InvalidInput(
                "decision_action_id must be unique within a batch",
                code="duplicate_action_ids",
                details={"duplicates": dups},
            )
        with self._conn(conn, write=False) as c:
            if c.execute("SELECT 1 FROM accounts WHERE id=%s", (account_id,)).fetchone() is None:
                raise NotFound(f"account {account_id} not found", code="account_not_found")
            rows = c.execute(
                "SELECT decision_action_id, request_hash FROM decision_actions WHERE account_id=%s"
                " AND decision_run_id=%s AND decision_action_id = ANY(%s)",
                (account_id, decision_run_id, ids),
            ).fetchall()
        stored = {r["decision_action_id"]: r["request_hash"] for r in rows}
        clashes = [
            a.decision_action_id
            for a in actions
            if a.decision_action_id in stored and stored[a.decision_action_id] != a.request_hash()
        ]
        if clashes:
            raise Conflict(
                "decision_action_id reused with a different body",
                code="idempotency_key_reused",
                details={"decision_action_ids": clashes},
            )
        return [self._run_one(account_id, decision_run_id, a, conn=conn) for a in actions]

    def _run_one(
        self, account_id: uuid.UUID, run_id: str, a: DecisionAction, *, conn: Any | None = None
    ) -> dict[str, Any]:
        with self._conn(conn, write=True) as c:
            # The account lock serializes this action against every other command on the account, so a
            # concurrent retry of the same action waits here and then finds the stored result.
            c.execute("SELECT id FROM accounts WHERE id=%s FOR UPDATE", (account_id,))
            existing = c.execute(
                "SELECT * FROM decision_actions WHERE account_id=%s AND decision_run_id=%s AND decision_action_id=%s",
                (account_id, run_id, a.decision_action_id),
            ).fetchone()
            if existing is not None:
                if existing["request_hash"] != a.request_hash():
                    raise Conflict(
                        "decision_action_id reused with a different body",
                        code="idempotency_key_reused",
                        details={"decision_action_ids": [a.decision_action_id]},
                    )
                return {**present(existing), "replayed": True}
            action_uuid = uuid.uuid4()
            status, result, order_id, fill_id = self._execute(c, account_id, a, action_uuid)
            row = c.execute(
                "INSERT INTO decision_actions (id, account_id, decision_run_id, decision_action_id, action, payload,"
                " request_hash, status, result, order_id, fill_id, created_at) VALUES"
                " (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
                (
                    action_uuid,
                    account_id,
                    run_id,
                    a.decision_action_id,
                    a.action[:64],
                    Jsonb(a.raw),
                    a.request_hash(),
                    status,
                    Jsonb(result),
                    order_id,
                    fill_id,
                    self.execution.clock.now(),
                ),
            ).fetchone()
            return {**present(row), "replayed": False}

    def _execute(
        self, c: Any, account_id: uuid.UUID, a: DecisionAction, action_uuid: uuid.UUID
    ) -> tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]:
        if a.action not in SUPPORTED:
            rej = {
                "code": Code.UNSUPPORTED_ACTION,
                "message": f"action {a.action!r} is not supported; supported: {', '.join(SUPPORTED)}",
                "details": {"action": a.action},
            }
            return "unsupported", {"rejection": rej}, None, None
        required = {
            "open": ("symbol", "side", "quantity"),
            "close": ("symbol",),
            "modify": (),
            "cancel": ("order_id",),
        }[a.action]
        missing = _missing(a, *required)
        if a.action == "modify" and a.symbol is None and a.order_id is None:
            missing.append("symbol or order_id")
        if missing:
            rej = {
                "code": "invalid_action",
                "message": f"{a.action} needs {', '.join(missing)}",
                "details": {"missing": missing},
            }
            return "rejected", {"rejection": rej}, None, None
        ex = self.execution
        try:
            with c.transaction():  # a savepoint: a refused command leaves nothing behind
                if a.action == "open":
                    assert a.symbol is not None and a.side is not None and a.quantity is not None
                    req = OrderRequest(
                        a.symbol,
                        a.side,
                        a.quantity,
                        a.order_type,
                        a.limit_price,
                        a.stop_price,
                        a.stop_loss,
                        a.take_profit,
                        client_order_id=a.client_order_id,
                    )
                    return _from_outcome(ex.submit_order(account_id, req, conn=c, decision_action_id=action_uuid))
                if a.action == "close":
                    assert a.symbol is not None
                    return _from_outcome(
                        ex.close_position(account_id, a.symbol, a.quantity, conn=c, decision_action_id=action_uuid)
                    )
                if a.action == "modify":
                    row = ex.modify(
                        account_id,
                        symbol=a.symbol if a.order_id is None else None,
                        order_id=a.order_id,
                        stop_loss=a.stop_loss,
                        take_profit=a.take_profit,
                        conn=c,
                    )
                    return "executed", {"modified": _plain(row)}, a.order_id, None
                assert a.order_id is not None
                row = ex.cancel_order(account_id, a.order_id, conn=c)
                return "executed", {"cancelled": _plain(row)}, a.order_id, None
        except DomainError as exc:
            rej = {"code": exc.code, "message": exc.message, "details": exc.details}
            return "rejected", {"rejection": rej}, None, None


def _from_outcome(out: OrderOutcome) -> tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]:
    result: dict[str, Any] = {"order": _plain(out.order), "fill": _plain(out.fill) if out.fill else None}
    if out.rejection is not None:
        result["rejection"] = out.rejection.to_json()
        return "rejected", result, out.order["id"], None
    return "executed", result, out.order["id"], out.fill["id"] if out.fill else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready data (decimals and ids as strings)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            out[k] = fmt(v.normalize())
        elif isinstance(v, uuid.UUID):
            out[k] = str(v)
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat().replace("+00:00", "Z")
        else:
            out[k] = v
    return out


def present(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a stored decision action."""
    return {
        "id": str(row["id"]),
        "account_id": str(row["account_id"]),
        "decision_run_id": row["decision_run_id"],
        "decision_action_id": row["decision_action_id"],
        "action": row["action"],
        "status": row["status"],
        "order_id": str(row["order_id"]) if row["order_id"] else None,
        "fill_id": str(row["fill_id"]) if row["fill_id"] else None,
        "result": row["result"],
        "payload": row["payload"],
        "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
    }
