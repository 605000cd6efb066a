"""Market data: persisted candles (minute bars aggregated from ticks, on mid prices).

Prices are mid ((bid + ask) / 2), the same convention as the in-memory CandleAggregator, so a chart drawn from
persisted bars and one drawn from the live open bar agree. ``synthetic`` marks a bar with no ticks behind it
(carried forward, or synthesised when a provider's aggregates came back empty during market hours).

Market data is not per-trader: the engine role writes, the app role reads every row.

Revision ID: 0003
"""

from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

M = "numeric(28,10)"


def fin(col: str) -> str:
    return f"CHECK ({col} NOT IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric))"


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    op.execute(f"""
CREATE TABLE candles (
  symbol text NOT NULL CHECK (length(symbol) BETWEEN 1 AND 32),
  timeframe text NOT NULL CHECK (timeframe ~ '^[0-9]{{1,4}}[mhd]$'),
  start timestamptz NOT NULL,
  open {M} NOT NULL CHECK (open > 0) {fin("open")},
  high {M} NOT NULL {fin("high")},
  low {M} NOT NULL CHECK (low > 0) {fin("low")},
  close {M} NOT NULL CHECK (close > 0) {fin("close")},
  tick_count int NOT NULL DEFAULT 0 CHECK (tick_count >= 0),
  synthetic boolean NOT NULL DEFAULT false,
  source text NOT NULL DEFAULT 'ticks',
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (symbol, timeframe, start),
  CHECK (high >= low AND high >= open AND high >= close AND low <= open AND low <= close)
);
""")
    op.execute("ALTER TABLE candles ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE candles FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY engine_all ON candles TO {engine} USING (true) WITH CHECK (true)")
    op.execute(f"CREATE POLICY owner_all ON candles TO {owner} USING (true) WITH CHECK (true)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON candles TO {engine}")
    op.execute(f"GRANT SELECT ON candles TO {app}")
    op.execute(f"CREATE POLICY app_read ON candles FOR SELECT TO {app} USING (true)")


def downgrade() -> None:
    op.execute("DROP TABLE candles")
