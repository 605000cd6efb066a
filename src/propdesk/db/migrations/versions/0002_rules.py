"""Rules engine: rulebook versions, evaluator state, violations, daily statistics, consistency snapshots,
external trade checks, economic calendar events.

Revision ID: 0002
"""

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

M = "numeric(28,10)"


def fin(col: str) -> str:
    return f"CHECK ({col} NOT IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric))"


ENGINE_TABLES = ("rule_states", "violations", "daily_stats", "consistency_snapshots", "external_trades")
APPEND_ONLY = ("violations", "consistency_snapshots")
OTHER_TABLES = ("rulebooks", "economic_events")


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    op.execute(f"""
CREATE TABLE rulebooks (
  id text NOT NULL CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{{0,63}}$'),
  version int NOT NULL CHECK (version > 0),
  name text NOT NULL,
  body jsonb NOT NULL,
  digest text NOT NULL,
  source text NOT NULL DEFAULT 'preset',
  created_at timestamptz NOT NULL,
  created_by text NOT NULL DEFAULT 'system',
  retired_at timestamptz,
  PRIMARY KEY (id, version)
);

ALTER TABLE accounts ADD COLUMN rulebook_id text, ADD COLUMN rulebook_version int, ADD COLUMN offer_id text,
  ADD COLUMN phase_started_at timestamptz;

CREATE TABLE rule_states (
  account_id uuid PRIMARY KEY REFERENCES accounts(id),
  state jsonb NOT NULL,
  updated_at timestamptz NOT NULL
);

CREATE TABLE violations (
  id bigserial PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts(id),
  rule text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('breach','warning','flag','reject','pass')),
  severity text NOT NULL CHECK (severity IN ('info','warning','critical')),
  action text NOT NULL,
  at timestamptz NOT NULL,
  value {M} {fin("value")},
  limit_value {M} {fin("limit_value")},
  evidence jsonb NOT NULL,
  inputs_hash text NOT NULL,
  phase text NOT NULL,
  order_id uuid,
  created_at timestamptz NOT NULL
);
CREATE INDEX violations_account ON violations(account_id, id);
CREATE INDEX violations_recent ON violations(created_at DESC);

CREATE TABLE daily_stats (
  account_id uuid NOT NULL REFERENCES accounts(id),
  trading_day date NOT NULL,
  day_start timestamptz NOT NULL,
  start_balance {M} NOT NULL {fin("start_balance")},
  start_equity {M} NOT NULL {fin("start_equity")},
  high_equity {M} NOT NULL {fin("high_equity")},
  low_equity {M} NOT NULL {fin("low_equity")},
  end_balance {M} {fin("end_balance")},
  end_equity {M} {fin("end_equity")},
  closed_pnl {M} NOT NULL DEFAULT 0 {fin("closed_pnl")},
  trades_opened int NOT NULL DEFAULT 0,
  trades_closed int NOT NULL DEFAULT 0,
  daily_floor {M} {fin("daily_floor")},
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (account_id, trading_day)
);

CREATE TABLE consistency_snapshots (
  id bigserial PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts(id),
  ref text NOT NULL,
  profit {M} NOT NULL {fin("profit")},
  cumulative_profit {M} NOT NULL {fin("cumulative_profit")},
  share_pct {M} NOT NULL {fin("share_pct")},
  max_share_pct {M} NOT NULL {fin("max_share_pct")},
  violated boolean NOT NULL,
  at timestamptz NOT NULL,
  UNIQUE (account_id, ref)
);

CREATE TABLE external_trades (
  account_id uuid NOT NULL REFERENCES accounts(id),
  ticket text NOT NULL CHECK (length(ticket) BETWEEN 1 AND 100),
  request_hash text NOT NULL,
  payload jsonb NOT NULL,
  result jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (account_id, ticket)
);

CREATE TABLE economic_events (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  currency text NOT NULL DEFAULT '',
  country text NOT NULL DEFAULT '',
  impact text NOT NULL CHECK (impact IN ('high','medium','low')),
  title text NOT NULL,
  source text NOT NULL DEFAULT 'admin',
  external_id text,
  created_at timestamptz NOT NULL,
  UNIQUE (source, external_id)
);
CREATE INDEX economic_events_at ON economic_events(at);
""")
    for t in ENGINE_TABLES:
        op.execute(
            f"CREATE TRIGGER {t}_engine_only BEFORE INSERT OR UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION engine_write_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {t}_engine_only_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION engine_write_guard()"
        )
    for t in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION append_only_guard()"
        )
    for t in ENGINE_TABLES + OTHER_TABLES:
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {engine}")
        op.execute(f"GRANT SELECT ON {t} TO {app}")
    for t in ENGINE_TABLES:
        op.execute(f"CREATE POLICY app_own ON {t} FOR SELECT TO {app} USING (account_id IN (SELECT id FROM accounts))")
    for t in OTHER_TABLES:
        op.execute(f"CREATE POLICY app_read ON {t} FOR SELECT TO {app} USING (true)")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {engine}")
