"""The event outbox's closed catalogue: what leaves the database after a command commits, and where it goes.

Events are written by the database itself, in the transaction of the command that caused them (triggers of
migration 0010 on ``ledger``, ``rule_states`` and ``violations``), so an event exists exactly when its cause
committed. ``propdesk worker outbox-relay`` carries them onto the bus; every consumer (the risk book, and later
notifications, email, webhooks, AI jobs) reads them there. Each event has a unique ``event_id`` (the bus
de-duplicates redeliveries by it) and a versioned payload; a consumer ignores a version it does not know.

| type | version | payload | written when |
| --- | --- | --- | --- |
| ``account.changed`` | 1 | ``account_id`` | its ledger or rule state changed (once per account and transaction) |
| ``account.status_changed`` | 1 | ``account_id``, ``from``, ``to``, ``trigger`` | a ``status_changed`` ledger entry |
| ``order.filled`` | 1 | ``account_id``, ``order_id``, ``fill_id`` | a ``fill`` ledger entry |
| ``violation.recorded`` | 1 | ``account_id``, ``violation_id``, ``rule``, ``kind``, ``action`` | a ``violations`` row |

Accounts are spread over ``PARTITIONS`` fixed partitions by a stable hash of their id; a deployment of N risk
shards gives shard ``i`` the partitions ``p`` with ``p % N == i`` (so the partition of an account never depends on
N, and re-sharding moves whole partitions).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

PARTITIONS = 256


class EventType(StrEnum):
    ACCOUNT_CHANGED = "account.changed"
    ACCOUNT_STATUS_CHANGED = "account.status_changed"
    ORDER_FILLED = "order.filled"
    VIOLATION_RECORDED = "violation.recorded"


#: The payload version each type is written with today.
VERSIONS: dict[EventType, int] = {t: 1 for t in EventType}


def partition_of(account_id: uuid.UUID) -> int:
    """The account's partition, 0..PARTITIONS-1: stable across processes, machines and versions."""
    return int.from_bytes(hashlib.sha256(account_id.bytes).digest()[:4], "big") % PARTITIONS


def shard_of(account_id: uuid.UUID, shards: int) -> int:
    """The shard (0..shards-1) that owns the account in a deployment of ``shards`` shards."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return partition_of(account_id) % shards


def partitions_of_shard(shard: int, shards: int) -> list[int]:
    """Every partition shard ``shard`` of ``shards`` owns."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be between 0 and {shards - 1}")
    return [p for p in range(PARTITIONS) if p % shards == shard]


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox event as read from the database (``txid``, ``id``: its position in commit order)."""

    id: int
    txid: int
    event_id: uuid.UUID
    type: str
    version: int
    account_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime

    @property
    def known(self) -> bool:
        """Is this a type and version this code understands? (A newer writer may add versions.)"""
        try:
            return VERSIONS[EventType(self.type)] >= self.version
        except ValueError:
            return False

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "type": self.type,
            "version": self.version,
            "account_id": str(self.account_id) if self.account_id is not None else None,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
            "position": [self.txid, self.id],
        }
