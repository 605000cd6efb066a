"""Rate limits shared by every API process: one row per counted attempt, in an UNLOGGED table.

``rate_limit_hits`` holds the attempts inside the sliding windows of ``web/ratelimit.PgRateLimits``. It is
UNLOGGED on purpose: a crash of the server empties it, which only forgets a few minutes of counted attempts
(acceptable for a rate limit), while a logged table would write WAL on every login, sign-up, reset request and
trader order. Unlogged tables are not replicated either, so a promoted standby starts with empty windows.

``key_hash`` is the SHA-256 of the key: keys are email addresses and client IPs, and nothing here needs them
back. The engine role is the one that writes (the login, sign-up and reset routes run before any user is known,
and the limiter uses the engine pool like the identity store); the app role gets nothing. Row-level security is
enabled and forced like on every other table, with the engine and owner policies of the identity tables.

Revision ID: 0007
"""

from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, owner = f"{prefix}_engine", f"{prefix}_owner"
    op.execute("""
CREATE UNLOGGED TABLE rate_limit_hits (
  bucket text NOT NULL CHECK (length(bucket) BETWEEN 1 AND 64),
  key_hash bytea NOT NULL CHECK (length(key_hash) = 32),
  at timestamptz NOT NULL
);
CREATE INDEX rate_limit_hits_key ON rate_limit_hits(bucket, key_hash, at);
""")
    op.execute("ALTER TABLE rate_limit_hits ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE rate_limit_hits FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY engine_all ON rate_limit_hits TO {engine} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY owner_all ON rate_limit_hits TO {owner} USING (true) WITH CHECK (true)")
    # No UPDATE: a hit is inserted, counted, and deleted once it has left its window (or by a reset).
    op.execute(f"GRANT SELECT, INSERT, DELETE ON rate_limit_hits TO {engine}")


def downgrade() -> None:
    op.execute("DROP TABLE rate_limit_hits")
