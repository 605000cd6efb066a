"""TOTP second factor (RFC 6238) for web users: the secret, a pending secret during enrollment, and the last
accepted time step (a code is accepted once).

New ``users`` columns: ``totp_secret`` (base32, set while TOTP is enabled), ``totp_enabled_at``,
``totp_pending_secret``/``totp_pending_at`` (an enrollment not yet confirmed with a code) and ``totp_last_step``
(the newest accepted 30-second step: that step and every older one are refused, so a code cannot be replayed).
The engine role reads and writes them (its grant on ``users`` covers every column, 0004); the app role's grant on
``users`` is column-level (0004), so it never reads a secret (nor a password hash).

``auth_events.kind`` gains ``totp_enrollment_started``, ``totp_enabled``, ``totp_disabled`` and
``totp_code_refused`` (a wrong code at confirmation or removal; a wrong code at login is a ``login_failed``).

Revision ID: 0013
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# 0011's kinds plus the TOTP kinds.
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
    "logout_everywhere",
    "sessions_revoked",
)
NEW_KINDS = ("totp_enrollment_started", "totp_enabled", "totp_disabled", "totp_code_refused")


def _kind_check(kinds: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{k}'" for k in kinds)
    return (
        "ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind_check,"
        f" ADD CONSTRAINT auth_events_kind_check CHECK (kind IN ({listed}))"
    )


def upgrade() -> None:
    op.execute("""
ALTER TABLE users
  ADD COLUMN totp_secret text CHECK (length(totp_secret) BETWEEN 16 AND 128),
  ADD COLUMN totp_enabled_at timestamptz,
  ADD COLUMN totp_pending_secret text CHECK (length(totp_pending_secret) BETWEEN 16 AND 128),
  ADD COLUMN totp_pending_at timestamptz,
  ADD COLUMN totp_last_step bigint CHECK (totp_last_step >= 0),
  ADD CONSTRAINT users_totp_enabled_has_secret CHECK ((totp_secret IS NULL) = (totp_enabled_at IS NULL)),
  ADD CONSTRAINT users_totp_pending_has_time CHECK ((totp_pending_secret IS NULL) = (totp_pending_at IS NULL));
""")
    op.execute(_kind_check(AUTH_EVENT_KINDS + NEW_KINDS))


def downgrade() -> None:
    # auth_events is append-only: rows of the new kinds stay, so the wider kind check stays too.
    op.execute(
        "ALTER TABLE users DROP COLUMN totp_secret, DROP COLUMN totp_enabled_at, DROP COLUMN totp_pending_secret,"
        " DROP COLUMN totp_pending_at, DROP COLUMN totp_last_step"
    )
