"""Quotes held by the sanity band (``marketdata/band.py``), one per symbol, until confirmed or accepted by an admin.

A held quote lives in the memory of the process that received it and in this table, so the admin panel of any
process lists it and can accept it (the accepting process then stores and publishes it like any quote). Only the
engine role writes it; RLS is forced as everywhere.

Revision ID: 0012
"""

from alembic import context, op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, owner = f"{prefix}_engine", f"{prefix}_owner"
    op.execute("""
CREATE TABLE held_quotes (
  symbol text PRIMARY KEY CHECK (length(symbol) BETWEEN 1 AND 32),
  bid numeric(28,10) NOT NULL CHECK (bid > 0 AND bid < 'Infinity'),
  ask numeric(28,10) NOT NULL CHECK (ask > 0 AND ask < 'Infinity'),
  ts timestamptz NOT NULL,
  source text NOT NULL,
  last_mid numeric(28,10),
  deviation_pct numeric(28,10),
  band_pct numeric(28,10),
  held_at timestamptz NOT NULL
);
""")
    op.execute(
        "CREATE TRIGGER held_quotes_engine_only BEFORE INSERT OR UPDATE OR DELETE ON held_quotes "
        "FOR EACH ROW EXECUTE FUNCTION engine_write_guard()"
    )
    op.execute("ALTER TABLE held_quotes ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE held_quotes FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY engine_all ON held_quotes TO {engine} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY owner_all ON held_quotes TO {owner} USING (true) WITH CHECK (true)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON held_quotes TO {engine}")


def downgrade() -> None:
    op.execute("DROP TABLE held_quotes")
