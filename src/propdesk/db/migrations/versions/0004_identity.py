"""Identity: web users, server-side sessions, password resets, the email outbox and the authentication audit log.

The engine role reads and writes these tables (identity runs before any user is known, like the API token
store). The app role sees only its own ``users`` row (``propdesk.user_id``); admin policies come with 0005.
``auth_events`` is append-only: an audit trail is never edited.

Revision ID: 0004
"""

from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("users", "web_sessions", "password_resets", "email_outbox", "auth_events")
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


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    kinds = ", ".join(f"'{k}'" for k in AUTH_EVENT_KINDS)
    op.execute(f"""
CREATE TABLE users (
  id uuid PRIMARY KEY,
  -- Stored lower-cased, so the unique index is case-insensitive by construction.
  email text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254
                                    AND position('@' IN email) > 1),
  password_hash text NOT NULL CHECK (length(password_hash) BETWEEN 20 AND 512),
  role text NOT NULL CHECK (role IN ('trader','admin')),
  display_name text NOT NULL DEFAULT '' CHECK (length(display_name) <= 100),
  timezone text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) BETWEEN 1 AND 64),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  disabled_at timestamptz
);

CREATE TABLE web_sessions (
  id uuid PRIMARY KEY,
  token_hash text NOT NULL UNIQUE CHECK (length(token_hash) = 64),
  user_id uuid NOT NULL REFERENCES users(id),
  created_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  ip text CHECK (length(ip) <= 64),
  user_agent text CHECK (length(user_agent) <= 300)
);
CREATE INDEX web_sessions_user ON web_sessions(user_id) WHERE revoked_at IS NULL;

CREATE TABLE password_resets (
  token_hash text PRIMARY KEY CHECK (length(token_hash) = 64),
  user_id uuid NOT NULL REFERENCES users(id),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX password_resets_user ON password_resets(user_id);

CREATE TABLE email_outbox (
  id bigserial PRIMARY KEY,
  to_address text NOT NULL CHECK (length(to_address) BETWEEN 3 AND 254),
  subject text NOT NULL CHECK (length(subject) <= 300),
  body text NOT NULL,
  kind text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
  transport text CHECK (transport IN ('smtp','console')),
  created_at timestamptz NOT NULL,
  sent_at timestamptz,
  failed_at timestamptz,
  error text,
  attempts int NOT NULL DEFAULT 0 CHECK (attempts >= 0)
);
CREATE INDEX email_outbox_pending ON email_outbox(id) WHERE sent_at IS NULL;

CREATE TABLE auth_events (
  id bigserial PRIMARY KEY,
  ts timestamptz NOT NULL,
  kind text NOT NULL CHECK (kind IN ({kinds})),
  user_id uuid REFERENCES users(id),
  ip text CHECK (length(ip) <= 64),
  detail jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX auth_events_ts ON auth_events(ts DESC);
CREATE INDEX auth_events_user ON auth_events(user_id, id) WHERE user_id IS NOT NULL;
""")
    op.execute(
        "CREATE TRIGGER auth_events_append_only BEFORE UPDATE OR DELETE ON auth_events "
        "FOR EACH ROW EXECUTE FUNCTION append_only_guard()"
    )
    op.execute(
        "CREATE TRIGGER auth_events_append_only_truncate BEFORE TRUNCATE ON auth_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION append_only_guard()"
    )
    for t in TABLES:
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {engine}")
    # A trader's database session sees its own user row and nothing else of identity (no hashes of others,
    # no sessions, no reset tokens). 0005 adds the admin policies through is_admin().
    # Column-level grant: the app role never reads a password hash, not even its own.
    op.execute(
        f"GRANT SELECT (id, email, role, display_name, timezone, created_at, updated_at, disabled_at) ON users TO {app}"
    )
    op.execute(
        f"CREATE POLICY app_self ON users FOR SELECT TO {app} "
        f"USING (id::text = current_setting('propdesk.user_id', true))"
    )
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {engine}")


def downgrade() -> None:
    op.execute("DROP TABLE auth_events, email_outbox, password_resets, web_sessions, users")
