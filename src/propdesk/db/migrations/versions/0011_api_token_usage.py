"""API tokens: who revoked a token and why, and when it was last used; "log out everywhere" in the auth audit.

``api_tokens`` (migration 0001) already has ``expires_at`` and ``revoked_at``. This adds ``revoked_by`` (the
principal that revoked it: an admin's ``user:<uuid>`` or token id, or ``cli``), ``revoke_reason`` and
``last_used_at`` (written at most once a minute per token by ``identity.auth.TokenStore``, never per request).
The engine role already reads and writes the table (0001); the app role gets nothing, as before.

``auth_events.kind`` gains ``logout_everywhere`` (a user ended all their sessions) and ``sessions_revoked`` (an
admin did it for them).

Revision ID: 0011
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# 0004's kinds plus the two "log out everywhere" kinds.
AUTH_EVENT_KINDS = (
    "login_ok",
    "login_failed",
    "logout",
    "signup",
    "signup_existing",
    "reset_requested",
    "reset_done",
    "authz_failed",
    "session_expired",
    "user_created",
)
NEW_KINDS = ("logout_everywhere", "sessions_revoked")


def _kind_check(kinds: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{k}'" for k in kinds)
    return (
        "ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check,"
        f" ADD CONSTRAINT auth_events_kind_check CHECK (kind IN ({listed}))"
    )


def upgrade() -> None:
    op.execute("""
ALTER TABLE api_tokens
  ADD COLUMN revoked_by text CHECK (length(revoked_by) <= 200),
  ADD COLUMN revoke_reason text CHECK (length(revoke_reason) <= 1000),
  ADD COLUMN last_used_at timestamptz;
""")
    op.execute(_kind_check(AUTH_EVENT_KINDS + NEW_KINDS))


def downgrade() -> None:
    # auth_events is append-only: rows of the new kinds stay, so the wider kind check stays too.
    op.execute("ALTER TABLE api_tokens DROP COLUMN revoked_by, DROP COLUMN revoke_reason, DROP COLUMN last_used_at")
