"""The account repository: the SQL of account truth (accounts, balances, ledger, positions, orders, fills).

``ExecutionService`` decides; this module reads and writes the rows, always on the caller's connection and inside
the caller's transaction (the account row locked by ``load``). It holds no business rule: every value it writes
was computed by the service from the pure core. It lives in ``execution`` (not ``db``) because these tables are
the execution core's alone: only the engine role may write them, and only through this module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from ..domain import gates as G
from ..domain.errors import NotFound
from ..domain.ledger import Entry
from ..domain.lifecycle import TERMINAL, Mode, Status
from ..domain.orders import OrderRequest, OrderStatus
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position, Valuation
from ..domain.quotes import Quote

Row = dict[str, Any]


@dataclass
class AccountCtx:
    """An account loaded under its lock: the rows plus the derived valuation."""

    account: Row
    balance: Row
    positions: dict[str, Position]
    resting: list[Row]
    policy: ExecutionPolicy
    valuation: Valuation | None = None
    entries: list[Entry] = field(default_factory=list)
    # The rules evaluator and its extras, loaded once per command and saved by the rules bridge.
    rule_ev: Any = None
    rule_extras: dict[str, Any] = field(default_factory=dict)
    rule_applying: bool = False
    rule_saved: str | None = None  # the rules state as last stored (JSON), so an unchanged state is not rewritten

    @property
    def id(self) -> uuid.UUID:
        return self.account["id"]  # type: ignore[no-any-return]

    @property
    def status(self) -> Status:
        return Status(self.account["status"])


@dataclass(frozen=True)
class CreateAccount:
    owner_id: str
    mode: Mode = Mode.CHALLENGE
    phase: str = "phase_1"
    clone_id: str | None = None
    parent_account_id: uuid.UUID | None = None
    policy: ExecutionPolicy = field(default_factory=ExecutionPolicy)
    rulebook: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    start: bool = False
    rulebook_id: str | None = None
    rulebook_version: int | None = None
    offer_id: str | None = None


def _ledger_insert(n: int) -> str:
    row = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    return (
        "INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, equity_after, order_id,"
        " fill_id, evidence, created_at) VALUES " + ",".join([row] * n)
    )


_LEDGER_INSERTS = [""] + [_ledger_insert(n) for n in range(1, 6)]
_POLICIES: dict[str, ExecutionPolicy] = {}


def _policy(data: dict[str, Any]) -> ExecutionPolicy:
    """The account's frozen policy; parsed once per distinct policy (policies repeat across accounts)."""
    key = json.dumps(data, sort_keys=True)
    policy = _POLICIES.get(key)
    if policy is None:
        policy = ExecutionPolicy.from_json(data)
        if len(_POLICIES) < 10_000:
            _POLICIES[key] = policy
    return policy


class AccountRepository:
    """The SQL of account truth. Stateless: every method runs on the caller's connection, in its transaction."""

    # ------------------------------------------------------------------ the account and its children
    def load(self, conn: Any, account_id: uuid.UUID, *, lock: bool = True) -> AccountCtx:
        """The account row (locked unless ``lock=False``), its balances, positions and resting orders, in one round
        trip (a pipeline). The valuation is left to the caller."""
        with conn.pipeline():
            acc_cur = conn.execute(
                "SELECT * FROM accounts WHERE id = %s" + (" FOR UPDATE" if lock else ""), (account_id,)
            )
            bal_cur = conn.execute("SELECT * FROM balances WHERE account_id = %s", (account_id,))
            # In symbol order: a flatten closes positions in this order, and the high-water mark is the running
            # maximum of cash over those fills, so two identical accounts must close in the same order.
            pos_cur = conn.execute("SELECT * FROM positions WHERE account_id = %s ORDER BY symbol", (account_id,))
            rest_cur = conn.execute(
                "SELECT * FROM orders WHERE account_id = %s AND status = 'open' ORDER BY created_at", (account_id,)
            )
        row = acc_cur.fetchone()
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        bal = bal_cur.fetchone()
        pos_rows = pos_cur.fetchall()
        resting = rest_cur.fetchall()
        positions = {
            r["symbol"]: Position(
                r["symbol"], r["quantity"], r["avg_price"], r["stop_loss"], r["take_profit"], r["opened_at"]
            )
            for r in pos_rows
        }
        return AccountCtx(row, bal, positions, resting, _policy(row["policy"]))

    def account_row(self, conn: Any, account_id: uuid.UUID) -> Row | None:
        return conn.execute("SELECT * FROM accounts WHERE id = %s", (account_id,)).fetchone()  # type: ignore[no-any-return]

    def lock_idempotency_key(self, conn: Any, key: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (key,))

    def account_by_idempotency_key(self, conn: Any, key: str) -> Row | None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM accounts WHERE idempotency_key = %s",
            (key,),
        ).fetchone()

    def account_exists(self, conn: Any, account_id: uuid.UUID) -> bool:
        return conn.execute("SELECT id FROM accounts WHERE id = %s", (account_id,)).fetchone() is not None

    def insert_account(self, conn: Any, acc_id: uuid.UUID, cmd: CreateAccount, now: datetime) -> None:
        """The account row (status ``pending``) and its zero balances row."""
        policy = cmd.policy
        conn.execute(
            "INSERT INTO accounts (id, owner_id, clone_id, parent_account_id, mode, phase, status, currency,"
            " starting_balance, policy, rulebook, idempotency_key, request_hash, created_at, updated_at,"
            " rulebook_id, rulebook_version, offer_id)"
            " VALUES (%s,%s,%s,%s,%s,%s,'pending',%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                acc_id,
                cmd.owner_id,
                cmd.clone_id,
                cmd.parent_account_id,
                cmd.mode.value,
                cmd.phase,
                policy.currency,
                policy.starting_balance,
                Jsonb(policy.to_json()),
                Jsonb(cmd.rulebook) if cmd.rulebook is not None else None,
                cmd.idempotency_key,
                cmd.request_hash,
                now,
                now,
                cmd.rulebook_id,
                cmd.rulebook_version,
                cmd.offer_id,
            ),
        )
        conn.execute(
            "INSERT INTO balances (account_id, cash, equity, unrealized_pnl, realized_pnl, fees, deposits,"
            " high_watermark, ledger_seq, updated_at) VALUES (%s,0,0,0,0,0,0,0,0,%s)",
            (acc_id, now),
        )

    def set_status(self, conn: Any, account_id: uuid.UUID, new: Status, now: datetime) -> None:
        ended = new in TERMINAL
        conn.execute(
            "UPDATE accounts SET status=%s, updated_at=%s,"
            " started_at = CASE WHEN %s AND started_at IS NULL THEN %s ELSE started_at END,"
            " ended_at = CASE WHEN %s THEN %s ELSE ended_at END WHERE id=%s",
            (new.value, now, new is Status.ACTIVE, now, ended, now, account_id),
        )

    # ------------------------------------------------------------------ ledger and balances
    def insert_ledger(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Ledger rows (account_id, seq, kind, category, amount, balance_after, equity_after, order_id, fill_id,
        evidence, created_at) as one multi-row INSERT."""
        if rows:
            conn.execute(
                _LEDGER_INSERTS[len(rows)] if len(rows) < len(_LEDGER_INSERTS) else _ledger_insert(len(rows)),
                [v for r in rows for v in r],
            )

    def write_balances(
        self,
        conn: Any,
        account_id: uuid.UUID,
        bal: Row,
        *,
        equity: Decimal,
        unrealized: Decimal,
        margin: Decimal,
        now: datetime,
        marked: bool,
    ) -> None:
        conn.execute(
            "UPDATE balances SET cash=%s, equity=%s, unrealized_pnl=%s, realized_pnl=%s, fees=%s, deposits=%s,"
            " adjustments=%s, high_watermark=%s, margin_used=%s, ledger_seq=%s, updated_at=%s,"
            " marked_at = CASE WHEN %s THEN %s ELSE marked_at END WHERE account_id=%s",
            (
                bal["cash"],
                equity,
                unrealized,
                bal["realized_pnl"],
                bal["fees"],
                bal["deposits"],
                bal["adjustments"],
                bal["high_watermark"],
                margin,
                bal["ledger_seq"],
                now,
                marked,
                now,
                account_id,
            ),
        )

    def ledger_totals_rows(self, conn: Any, account_id: uuid.UUID) -> list[Row]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT amount, category, equity_after FROM ledger WHERE account_id=%s ORDER BY seq", (account_id,)
        ).fetchall()

    # ------------------------------------------------------------------ orders
    def order_by_client_id(self, conn: Any, account_id: uuid.UUID, client_order_id: str) -> Row | None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM orders WHERE account_id = %s AND client_order_id = %s", (account_id, client_order_id)
        ).fetchone()

    def order(self, conn: Any, account_id: uuid.UUID, order_id: uuid.UUID) -> Row | None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM orders WHERE id = %s AND account_id = %s", (order_id, account_id)
        ).fetchone()

    def open_order(self, conn: Any, account_id: uuid.UUID, order_id: uuid.UUID) -> Row | None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM orders WHERE id=%s AND account_id=%s AND status='open'", (order_id, account_id)
        ).fetchone()

    def order_by_id(self, conn: Any, order_id: uuid.UUID) -> Row:
        return conn.execute("SELECT * FROM orders WHERE id=%s", (order_id,)).fetchone()  # type: ignore[no-any-return]

    def queue_order(
        self,
        conn: Any,
        account_id: uuid.UUID,
        order_id: uuid.UUID,
        req: OrderRequest,
        status: OrderStatus,
        now: datetime,
        notional: Decimal | None,
        *,
        rejection: G.Rejection | None = None,
        decision_action_id: uuid.UUID | None = None,
    ) -> Any:
        """Send the order's INSERT ... RETURNING and return its cursor (in a pipeline the row comes later)."""
        closed = now if status in (OrderStatus.FILLED, OrderStatus.REJECTED) else None
        return conn.execute(
            "INSERT INTO orders (id, account_id, client_order_id, symbol, side, order_type, quantity, limit_price,"
            " stop_price, stop_loss, take_profit, reduce_only, purpose, status, reject_code, reject_reason,"
            " reject_details, notional, decision_action_id, created_at, updated_at, closed_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
            (
                order_id,
                account_id,
                req.client_order_id,
                req.symbol,
                req.side.value,
                req.order_type.value,
                req.quantity,
                req.limit_price,
                req.stop_price,
                req.stop_loss,
                req.take_profit,
                req.reduce_only,
                req.purpose.value,
                status.value,
                rejection.code if rejection else None,
                rejection.message if rejection else None,
                Jsonb(rejection.details) if rejection else None,
                notional,
                decision_action_id,
                now,
                now,
                closed,
            ),
        )

    def close_order(self, conn: Any, order_id: uuid.UUID, status: OrderStatus, now: datetime) -> Row:
        """Set a final status (cancelled, voided) and return the row."""
        return conn.execute(  # type: ignore[no-any-return]
            "UPDATE orders SET status=%s, updated_at=%s, closed_at=%s WHERE id=%s RETURNING *",
            (status.value, now, now, order_id),
        ).fetchone()

    def cancel_order(self, conn: Any, order_id: uuid.UUID, now: datetime) -> None:
        conn.execute(
            "UPDATE orders SET status='cancelled', updated_at=%s, closed_at=%s WHERE id=%s", (now, now, order_id)
        )

    def reject_order(self, conn: Any, order_id: uuid.UUID, rejection: G.Rejection, now: datetime) -> None:
        conn.execute(
            "UPDATE orders SET status='rejected', reject_code=%s, reject_reason=%s, reject_details=%s,"
            " updated_at=%s, closed_at=%s WHERE id=%s",
            (rejection.code, rejection.message, Jsonb(rejection.details), now, now, order_id),
        )

    def mark_order_filled(self, conn: Any, order_id: uuid.UUID, now: datetime) -> Row:
        return conn.execute(  # type: ignore[no-any-return]
            "UPDATE orders SET status='filled', updated_at=%s, closed_at=%s WHERE id=%s RETURNING *",
            (now, now, order_id),
        ).fetchone()

    def set_order_levels(
        self, conn: Any, order_id: uuid.UUID, sl: Decimal | None, tp: Decimal | None, now: datetime
    ) -> Row:
        return conn.execute(  # type: ignore[no-any-return]
            "UPDATE orders SET stop_loss=%s, take_profit=%s, updated_at=%s WHERE id=%s RETURNING *",
            (sl, tp, now, order_id),
        ).fetchone()

    # ------------------------------------------------------------------ positions
    def position(self, conn: Any, account_id: uuid.UUID, symbol: str) -> Row:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM positions WHERE account_id=%s AND symbol=%s", (account_id, symbol)
        ).fetchone()

    def delete_position(self, conn: Any, account_id: uuid.UUID, symbol: str) -> None:
        conn.execute("DELETE FROM positions WHERE account_id = %s AND symbol = %s", (account_id, symbol))

    def upsert_position(self, conn: Any, account_id: uuid.UUID, symbol: str, pos: Position, now: datetime) -> None:
        conn.execute(
            "INSERT INTO positions (account_id, symbol, quantity, avg_price, stop_loss, take_profit, opened_at,"
            " updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (account_id, symbol) DO UPDATE SET"
            " quantity=EXCLUDED.quantity, avg_price=EXCLUDED.avg_price, stop_loss=EXCLUDED.stop_loss,"
            " take_profit=EXCLUDED.take_profit, opened_at=EXCLUDED.opened_at, updated_at=EXCLUDED.updated_at",
            (
                account_id,
                symbol,
                pos.quantity,
                pos.avg_price,
                pos.stop_loss,
                pos.take_profit,
                pos.opened_at or now,
                now,
            ),
        )

    # ------------------------------------------------------------------ fills and voids
    def queue_fill(
        self,
        conn: Any,
        fill_id: uuid.UUID,
        order_id: uuid.UUID,
        account_id: uuid.UUID,
        req: OrderRequest,
        px: Decimal,
        notional: Decimal,
        fee: Decimal,
        realized: Decimal,
        slip_bps: Decimal,
        quote: Quote,
        now: datetime,
    ) -> Any:
        """Send the fill's INSERT ... RETURNING and return its cursor (in a pipeline the row comes later)."""
        return conn.execute(
            "INSERT INTO fills (id, order_id, account_id, symbol, side, quantity, price, notional, fee,"
            " realized_pnl, slippage_bps, quote, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " RETURNING *",
            (
                fill_id,
                order_id,
                account_id,
                req.symbol,
                req.side.value,
                req.quantity,
                px,
                notional,
                fee,
                realized,
                slip_bps,
                Jsonb(quote.evidence()),
                now,
            ),
        )

    def fill(self, conn: Any, account_id: uuid.UUID, fill_id: uuid.UUID) -> Row | None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM fills WHERE id=%s AND account_id=%s", (fill_id, account_id)
        ).fetchone()

    def fill_voided(self, conn: Any, fill_id: uuid.UUID) -> bool:
        return bool(conn.execute("SELECT 1 FROM fill_voids WHERE fill_id=%s", (fill_id,)).fetchone())

    def insert_fill_void(
        self, conn: Any, fill_id: uuid.UUID, account_id: uuid.UUID, reason: str, actor: str, now: datetime
    ) -> None:
        conn.execute(
            "INSERT INTO fill_voids (fill_id, account_id, reason, actor, created_at) VALUES (%s,%s,%s,%s,%s)",
            (fill_id, account_id, reason, actor, now),
        )

    def unvoided_fill_ids(self, conn: Any, order_id: uuid.UUID) -> list[Row]:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT f.id FROM fills f LEFT JOIN fill_voids v ON v.fill_id = f.id"
            " WHERE f.order_id=%s AND v.fill_id IS NULL",
            (order_id,),
        ).fetchall()

    def live_fills_with_rates(self, conn: Any, account_id: uuid.UUID, symbol: str) -> list[Row]:
        """The non-voided fills of ``symbol`` in ledger order, each with the conversion rate it was booked at."""
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT f.side, f.quantity, f.price, l.evidence->>'conversion_rate' AS rate FROM fills f"
            " JOIN ledger l ON l.fill_id = f.id LEFT JOIN fill_voids v ON v.fill_id = f.id"
            " WHERE f.account_id=%s AND f.symbol=%s AND v.fill_id IS NULL ORDER BY l.seq",
            (account_id, symbol),
        ).fetchall()

    def live_fills(self, conn: Any, account_id: uuid.UUID, symbol: str) -> list[Row]:
        """The non-voided fills of ``symbol`` in ledger order (side, quantity, price)."""
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT f.side, f.quantity, f.price FROM fills f JOIN ledger l ON l.fill_id = f.id"
            " LEFT JOIN fill_voids v ON v.fill_id = f.id WHERE f.account_id=%s AND f.symbol=%s"
            " AND v.fill_id IS NULL ORDER BY l.seq",
            (account_id, symbol),
        ).fetchall()

    def booked_realized(self, conn: Any, account_id: uuid.UUID, symbol: str) -> Decimal:
        """The ledger's realized P&L of ``symbol`` (fills' P&L plus every correction), unrounded."""
        row = conn.execute(
            "SELECT COALESCE(SUM(l.amount), 0) AS total FROM ledger l JOIN fills f"
            " ON f.id = (l.evidence->>'fill_id')::uuid WHERE l.account_id=%s AND l.category='pnl' AND f.symbol=%s",
            (account_id, symbol),
        ).fetchone()
        return row["total"]  # type: ignore[no-any-return]

    def fill_symbols(self, conn: Any, account_id: uuid.UUID) -> set[str]:
        return {
            r["symbol"]
            for r in conn.execute("SELECT DISTINCT symbol FROM fills WHERE account_id=%s", (account_id,)).fetchall()
        }
