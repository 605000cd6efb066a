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

**The owner rule** (one rule, applied here and nowhere else): the trader pages (dashboard, journal), the trader
JSON API and the trader live stream answer 404 ``account_not_found`` for an account whose ``owner_id`` is not the
caller's, admins included (RLS would show an admin every row; ``require_owned`` stops them). They all open their
connection with ``owned_conn``. An admin sees a trader's screens only through the read-only, audited
``/admin/accounts/{id}/as-trader`` page, which opens ``admin_view_conn``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ..domain.errors import NotFound

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


def require_owned(conn: Conn, user: HasUserId, account_id: uuid.UUID) -> dict[str, Any]:
    """The account row when ``user`` OWNS it, else ``NotFound`` ``account_not_found`` (a missing account, another
    trader's, and any account of someone else for an admin alike: ids are not enumerable)."""
    row = conn.execute("SELECT * FROM accounts WHERE id=%s", (account_id,)).fetchone()
    if row is None or row["owner_id"] != owner_key(user):
        raise NotFound(f"account {account_id} not found", code="account_not_found")
    return row


@contextmanager
def owned_conn(platform: Platform, user: HasUserId, account_id: uuid.UUID, *, write: bool = False) -> Iterator[Conn]:
    """``user_conn`` for one account the user owns (``require_owned`` first): what every trader-facing read and
    command of one account opens (pages, the trader API, the live stream)."""
    with user_conn(platform, user, write=write) as conn:
        require_owned(conn, user, account_id)
        yield conn


class HasAdminFlag(HasUserId, Protocol):
    @property
    def is_admin(self) -> bool: ...


@contextmanager
def admin_view_conn(platform: Platform, admin: HasAdminFlag, account_id: uuid.UUID) -> Iterator[Conn]:
    """A READ ONLY ``user_conn`` of an admin user over any existing account (the ``is_admin()`` policies open its
    rows): the read-only "as trader" view of the admin panel. ``NotFound`` for a non-admin or a missing account."""
    if not admin.is_admin:
        raise NotFound(f"account {account_id} not found", code="account_not_found")
    with user_conn(platform, admin) as conn:
        if conn.execute("SELECT 1 FROM accounts WHERE id=%s", (account_id,)).fetchone() is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        yield conn


__all__ = [
    "Conn",
    "HasAdminFlag",
    "HasUserId",
    "admin_view_conn",
    "owned_conn",
    "owner_key",
    "require_owned",
    "user_conn",
]
