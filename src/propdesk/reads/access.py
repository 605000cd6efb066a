"""Database access for the web layer: every trader (and admin) read runs on the APP role, as that user.

``user_conn(platform, user)`` hands out a connection of the app role's pool inside one transaction in which
``propdesk.user_id`` is set (transaction-local) to the user's id. Row-level security then decides what the
connection sees: a trader sees the rows of the accounts whose ``owner_id`` is that id; an admin user sees
every row, because the admin policies ask the ``is_admin()`` SECURITY DEFINER function (migration 0005).

Why the setting can be trusted: the web layer is the only code that sets it, from the authenticated session's
user, and the app role cannot write any execution table (engine-only triggers) whatever it sets. The setting is
``set_config(..., true)``: it dies with the transaction, so a pooled connection never carries one user's id
into the next request.

Writes are the exception, not the rule: the transaction is READ ONLY unless ``write=True`` (journal notes and
marking notifications read are the only app-role writes; RLS ``WITH CHECK`` policies bound them to the user's
own rows). Account truth is written by the execution core on the engine role, never here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

if TYPE_CHECKING:
    from ..bootstrap import Platform

Conn = psycopg.Connection[dict[str, Any]]


class HasUserId(Protocol):
    """Anything carrying a user id: ``identity.users.WebUser`` in practice."""

    @property
    def id(self) -> uuid.UUID: ...


def owner_key(user: HasUserId) -> str:
    """The ``accounts.owner_id`` of the accounts a web user owns: the text form of the user's UUID."""
    return str(user.id)


@contextmanager
def user_conn(platform: Platform, user: HasUserId, *, write: bool = False) -> Iterator[Conn]:
    """An app-role connection inside a transaction acting as ``user`` (RLS applies); committed at the end
    (rolled back on an exception). READ ONLY unless ``write``."""
    pool = platform.db.app_pool
    if pool is None:
        raise RuntimeError("the app role's pool is not open (Database(open_app_pool=True))")
    user_id = owner_key(user)
    uuid.UUID(user_id)  # a malformed id must never reach the setting (it would match no row, but fail loudly)
    with platform.db.connection(pool) as conn, conn.transaction():
        if not write:
            conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('propdesk.user_id', %s, true)", (user_id,))
        yield conn


__all__ = ["Conn", "HasUserId", "owner_key", "user_conn"]
