"""The bus this database is used with: processes that share a database must share the price bus.

``bus_registration`` holds one row: the identity of the NATS the first process connected with (the cluster name,
or the server name of a single server such as the embedded one) and the subject namespace of this instance
(``bus/subjects.py``). A process connected to another bus refuses to start (``bus/registration.py``), so two
processes on one database can never hold different prices.

The engine role registers (the first process inserts the row) and reads it; it cannot change it: moving a database
to another bus is an operator's deliberate act (an UPDATE or DELETE as the owner, see docs). The app role gets
nothing. Row-level security is enabled and forced like on every other table.

Revision ID: 0008
"""

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, owner = f"{prefix}_engine", f"{prefix}_owner"
    op.execute("""
CREATE TABLE bus_registration (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  server_identity text NOT NULL CHECK (length(server_identity) BETWEEN 1 AND 200),
  namespace text NOT NULL CHECK (namespace ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
  url_hint text NOT NULL DEFAULT '' CHECK (length(url_hint) <= 500),
  registered_at timestamptz NOT NULL DEFAULT now()
);
""")
    op.execute("ALTER TABLE bus_registration ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE bus_registration FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY engine_all ON bus_registration TO {engine} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY owner_all ON bus_registration TO {owner} USING (true) WITH CHECK (true)")
    op.execute(f"GRANT SELECT, INSERT ON bus_registration TO {engine}")


def downgrade() -> None:
    op.execute("DROP TABLE bus_registration")
