"""Presenters: the public shape of database rows (internal columns such as ``request_hash`` never leave).

Shared by the API's JSON routes and the read models; pure dict shaping, no rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_ACCOUNT_HIDDEN = frozenset({"request_hash"})


def present_account(row: Mapping[str, Any], balance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The public shape of an account row (optionally with its balances row)."""
    out = {k: v for k, v in row.items() if k not in _ACCOUNT_HIDDEN}
    if balance is not None:
        out["balance"] = present_balance(balance)
    return out


def present_balance(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "account_id"}


def present_fill(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out.setdefault("voided", False)
    return out


_AUDIT_HIDDEN = frozenset({"chain_seq", "prev_hash", "row_hash"})  # the hash chain (migration 0009)


def present_audit(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _AUDIT_HIDDEN}
