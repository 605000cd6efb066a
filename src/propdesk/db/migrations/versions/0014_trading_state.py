"""The platform kill switch: a trading mode for the platform and per symbol (``active``, ``reduce_only``,
``halted``).

``trading_state`` holds one row per scope: ``*`` for the whole platform, or a symbol. A missing row means
``active``. The effective mode of a symbol is the stricter of the platform's and the symbol's. Every change is
audited in ``admin_audit`` (action ``trading_state``) in the same transaction; every process reads the table
through a cache of well under a second (``execution/trading_state.py``), and the execution gates refuse orders
(``trading_halted``, ``trading_reduce_only``). The engine role writes it (the admin API and ``propdesk risk``
run as the engine role); the app role reads it.

Revision ID: 0014
"""

from alembic import context, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    op.execute("""
CREATE TABLE trading_state (
  scope text PRIMARY KEY CHECK (scope = '*' OR scope ~ '^[A-Z0-9]{1,16}$'),
  mode text NOT NULL CHECK (mode IN ('active', 'reduce_only', 'halted')),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
  actor text NOT NULL CHECK (length(actor) <= 200),
  updated_at timestamptz NOT NULL
);
""")
    op.execute("ALTER TABLE trading_state ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE trading_state FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY engine_all ON trading_state TO {engine} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY owner_all ON trading_state TO {owner} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY app_read ON trading_state FOR SELECT TO {app} USING (true)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON trading_state TO {engine}")
    op.execute(f"GRANT SELECT ON trading_state TO {app}")


def downgrade() -> None:
    op.execute("DROP TABLE trading_state")
