"""The account repository: the SQL of account truth (accounts, balances, ledger, positions, orders, fills).

``ExecutionService`` decides; this module reads and writes the rows, always on the caller's connection and inside
the caller's transaction (the account row locked by ``load``). It holds no business rule: every value it writes
was computed by the service from the pure core. It lives in ``execution`` (not ``db``) because these tables are
the execution core's alone: only the engine role may write them, and only through this module.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..domain.ledger import Entry
from ..domain.lifecycle import Mode, Status
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position, Valuation

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
    return ("INSERT INTO ledger (account_id, seq, kind, category, amount, balance_after, equity_after, order_id,"
            " fill_id, evidence, created_at) VALUES " + ",".join([row] * n))


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


