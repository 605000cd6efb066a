"""The bus a database is used with, recorded in the database: processes that share a database share the bus.

The first process to start on a database registers the bus it connected to (``server_identity``: the NATS cluster
name, or the server name of a single server) and picks the instance's subject namespace; every later process
reads the row, uses that namespace, and refuses to start when it is connected to another bus. Without this, a
``propdesk serve`` started with another ``NATS_URL`` (or its own embedded server) would silently fill orders at
prices nobody else sees.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .subjects import valid_namespace

__all__ = ["BusIdentity", "BusMismatchError", "identity_of", "register"]


class BusMismatchError(RuntimeError):
    """This process is connected to another bus (or uses another namespace) than the one its database uses."""


@dataclass(frozen=True)
class BusIdentity:
    """Which bus, and which namespace on it."""

    server_identity: str
    namespace: str
    url_hint: str = ""


def identity_of(server_info: dict[str, Any]) -> str:
    """A NATS server's stable identity from its ``INFO``: the cluster name when clustered (every node of the cluster
    is the same bus), else the server name (stable across restarts only when configured, as the embedded server's
    is; the generated ``server_id`` changes on every start and is never used)."""
    cluster = server_info.get("cluster")
    if isinstance(cluster, str) and cluster:
        return f"cluster:{cluster}"
    name = server_info.get("server_name")
    if isinstance(name, str) and name:
        return f"server:{name}"
    raise BusMismatchError(
        "the NATS server has neither a cluster name nor a server name to register; "
        "configure server_name (or a cluster name) on it"
    )


def new_namespace() -> str:
    """A fresh instance namespace (``i`` + 12 hex digits)."""
    return "i" + secrets.token_hex(6)


def register(db: Any, server_identity: str, *, namespace: str | None = None, url_hint: str = "") -> BusIdentity:
    """Register this database's bus on first use, else check that ``server_identity`` (and ``namespace`` when
    given) is the registered one; returns the registered identity (its namespace is the one to use).

    Raises:
        BusMismatchError: when the database is registered with another bus or namespace.
    """
    if namespace is not None:
        valid_namespace(namespace)
    with db.tx() as c:
        c.execute(
            "INSERT INTO bus_registration (server_identity, namespace, url_hint) VALUES (%s, %s, %s)"
            " ON CONFLICT (singleton) DO NOTHING",
            (server_identity, namespace or new_namespace(), url_hint[:500]),
        )
        row = c.execute("SELECT server_identity, namespace, url_hint FROM bus_registration").fetchone()
    registered = BusIdentity(row["server_identity"], row["namespace"], row["url_hint"])
    if registered.server_identity != server_identity or (namespace is not None and namespace != registered.namespace):
        raise BusMismatchError(
            f"this database uses the price bus {registered.server_identity} (namespace {registered.namespace}"
            + (f", at {registered.url_hint}" if registered.url_hint else "")
            + f"), but this process is connected to {server_identity}"
            + (f" with namespace {namespace}" if namespace is not None else "")
            + ". Processes that share a database must share the bus: point NATS_URL (or the data directory) at the "
            "registered bus. To move the database to another bus on purpose, delete its row in bus_registration "
            "as the database owner while no process runs."
        )
    return registered
