"""Foundation: instruments, accounts, balances, orders, fills, positions, ledger, decision actions, quotes,
idempotency keys, API tokens, admin audit log, worker heartbeats; engine-only write triggers; RLS everywhere.

Revision ID: 0001
"""

from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Exact money: NUMERIC(28,10); NaN and +-Infinity are refused by CHECK (Postgres numeric accepts them).
M = "numeric(28,10)"


def fin(col: str) -> str:
    return f"CHECK ({col} NOT IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric))"


EXECUTION_TABLES = ("accounts", "balances", "orders", "fills", "fill_voids", "positions", "ledger", "decision_actions")
APPEND_ONLY = ("ledger", "fills", "fill_voids", "admin_audit")
OTHER_TABLES = ("instruments", "quotes", "idempotency_keys", "api_tokens", "admin_audit", "worker_heartbeats")


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    op.execute(f"""
CREATE TABLE instruments (
  symbol text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9]{{1,16}}$'),
  asset_class text NOT NULL CHECK (asset_class IN ('forex','metal','energy','index','equity','crypto')),
  contract_size {M} NOT NULL CHECK (contract_size > 0) {fin("contract_size")},
  tick_size {M} NOT NULL CHECK (tick_size > 0) {fin("tick_size")},
  price_precision int NOT NULL CHECK (price_precision BETWEEN 0 AND 10),
  quote_currency text NOT NULL, base_currency text NOT NULL,
  min_lot {M} NOT NULL CHECK (min_lot > 0) {fin("min_lot")},
  lot_step {M} NOT NULL CHECK (lot_step > 0) {fin("lot_step")},
  max_lot {M} NOT NULL CHECK (max_lot > 0) {fin("max_lot")},
  enabled boolean NOT NULL DEFAULT true,
  description text NOT NULL DEFAULT ''
);

CREATE TABLE accounts (
  id uuid PRIMARY KEY,
  owner_id text NOT NULL CHECK (length(owner_id) BETWEEN 1 AND 200),
  clone_id text CHECK (length(clone_id) BETWEEN 1 AND 200),
  parent_account_id uuid REFERENCES accounts(id),
  mode text NOT NULL CHECK (mode IN ('challenge','audition')),
  phase text NOT NULL CHECK (length(phase) BETWEEN 1 AND 64),
  status text NOT NULL CHECK (status IN ('pending','active','day_paused','paused','locked','passed','failed',
                                         'expired','liquidated','completed')),
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
  starting_balance {M} NOT NULL CHECK (starting_balance > 0) {fin("starting_balance")},
  policy jsonb NOT NULL,
  rulebook jsonb,
  idempotency_key text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
  request_hash text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  started_at timestamptz,
  ended_at timestamptz
);
CREATE INDEX accounts_owner ON accounts(owner_id);
CREATE INDEX accounts_clone ON accounts(clone_id) WHERE clone_id IS NOT NULL;
CREATE INDEX accounts_status ON accounts(status);

CREATE TABLE balances (
  account_id uuid PRIMARY KEY REFERENCES accounts(id),
  cash {M} NOT NULL {fin("cash")},
  equity {M} NOT NULL {fin("equity")},
  unrealized_pnl {M} NOT NULL {fin("unrealized_pnl")},
  realized_pnl {M} NOT NULL {fin("realized_pnl")},
  fees {M} NOT NULL {fin("fees")},
  deposits {M} NOT NULL {fin("deposits")},
  adjustments {M} NOT NULL DEFAULT 0 {fin("adjustments")},
  high_watermark {M} NOT NULL {fin("high_watermark")},
  margin_used {M} NOT NULL DEFAULT 0 {fin("margin_used")},
  ledger_seq bigint NOT NULL,
  marked_at timestamptz,
  updated_at timestamptz NOT NULL
);

CREATE TABLE orders (
  id uuid PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts(id),
  client_order_id text CHECK (length(client_order_id) BETWEEN 1 AND 100),
  symbol text NOT NULL,
  side text NOT NULL CHECK (side IN ('buy','sell')),
  order_type text NOT NULL CHECK (order_type IN ('market','limit','stop')),
  quantity {M} NOT NULL CHECK (quantity > 0) {fin("quantity")},
  limit_price {M} {fin("limit_price")},
  stop_price {M} {fin("stop_price")},
  stop_loss {M} {fin("stop_loss")},
  take_profit {M} {fin("take_profit")},
  reduce_only boolean NOT NULL DEFAULT false,
  purpose text NOT NULL,
  status text NOT NULL CHECK (status IN ('open','filled','cancelled','rejected','voided')),
  reject_code text,
  reject_reason text,
  reject_details jsonb,
  notional {M} {fin("notional")},
  decision_action_id uuid,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  closed_at timestamptz,
  UNIQUE (account_id, client_order_id)
);
CREATE INDEX orders_account ON orders(account_id, created_at);
CREATE INDEX orders_open ON orders(symbol) WHERE status = 'open';

CREATE TABLE fills (
  id uuid PRIMARY KEY,
  order_id uuid NOT NULL REFERENCES orders(id),
  account_id uuid NOT NULL REFERENCES accounts(id),
  symbol text NOT NULL,
  side text NOT NULL CHECK (side IN ('buy','sell')),
  quantity {M} NOT NULL CHECK (quantity > 0) {fin("quantity")},
  price {M} NOT NULL CHECK (price > 0) {fin("price")},
  notional {M} NOT NULL {fin("notional")},
  fee {M} NOT NULL {fin("fee")},
  realized_pnl {M} NOT NULL {fin("realized_pnl")},
  slippage_bps {M} NOT NULL DEFAULT 0 {fin("slippage_bps")},
  quote jsonb NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE INDEX fills_account ON fills(account_id, created_at);

CREATE TABLE fill_voids (
  fill_id uuid PRIMARY KEY REFERENCES fills(id),
  account_id uuid NOT NULL REFERENCES accounts(id),
  reason text NOT NULL,
  actor text NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE TABLE positions (
  account_id uuid NOT NULL REFERENCES accounts(id),
  symbol text NOT NULL,
  quantity {M} NOT NULL CHECK (quantity <> 0) {fin("quantity")},
  avg_price {M} NOT NULL CHECK (avg_price > 0) {fin("avg_price")},
  stop_loss {M} {fin("stop_loss")},
  take_profit {M} {fin("take_profit")},
  opened_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (account_id, symbol)
);
CREATE INDEX positions_symbol ON positions(symbol);

CREATE TABLE ledger (
  id bigserial PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts(id),
  seq bigint NOT NULL CHECK (seq > 0),
  kind text NOT NULL,
  category text NOT NULL CHECK (category IN ('none','deposit','pnl','fee','adjustment')),
  amount {M} NOT NULL {fin("amount")},
  balance_after {M} NOT NULL {fin("balance_after")},
  equity_after {M} {fin("equity_after")},
  order_id uuid,
  fill_id uuid UNIQUE,
  evidence jsonb NOT NULL DEFAULT '{{}}',
  created_at timestamptz NOT NULL,
  UNIQUE (account_id, seq),
  CHECK (category <> 'none' OR amount = 0)
);

CREATE TABLE decision_actions (
  id uuid PRIMARY KEY,
  account_id uuid NOT NULL REFERENCES accounts(id),
  decision_run_id text NOT NULL CHECK (length(decision_run_id) BETWEEN 1 AND 200),
  decision_action_id text NOT NULL CHECK (length(decision_action_id) BETWEEN 1 AND 200),
  action text NOT NULL,
  payload jsonb NOT NULL,
  request_hash text NOT NULL,
  status text NOT NULL CHECK (status IN ('executed','rejected','unsupported')),
  result jsonb NOT NULL,
  order_id uuid REFERENCES orders(id),
  fill_id uuid REFERENCES fills(id),
  created_at timestamptz NOT NULL,
  UNIQUE (account_id, decision_run_id, decision_action_id)
);

CREATE TABLE quotes (
  symbol text PRIMARY KEY,
  bid {M} NOT NULL CHECK (bid > 0) {fin("bid")},
  ask {M} NOT NULL CHECK (ask >= bid) {fin("ask")},
  ts timestamptz NOT NULL,
  seq bigint NOT NULL,
  source text NOT NULL,
  received_at timestamptz NOT NULL
);

CREATE TABLE idempotency_keys (
  principal text NOT NULL,
  key text NOT NULL,
  method text NOT NULL,
  path text NOT NULL,
  request_hash text NOT NULL,
  status_code int,
  response jsonb,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (principal, key)
);

CREATE TABLE api_tokens (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  role text NOT NULL CHECK (role IN ('service','admin')),
  token_hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz,
  revoked_at timestamptz
);

CREATE TABLE admin_audit (
  id bigserial PRIMARY KEY,
  actor text NOT NULL,
  action text NOT NULL,
  account_id uuid,
  reason text NOT NULL,
  before jsonb,
  after jsonb,
  details jsonb NOT NULL DEFAULT '{{}}',
  created_at timestamptz NOT NULL
);
CREATE INDEX admin_audit_account ON admin_audit(account_id, id);

CREATE TABLE worker_heartbeats (
  name text PRIMARY KEY,
  beat_at timestamptz NOT NULL,
  details jsonb NOT NULL DEFAULT '{{}}'
);

-- Only the execution engine writes account truth. Fails closed: any other role, including superusers and the
-- table owner, is refused (an owner can still disable the trigger explicitly, which is a migration's job).
CREATE FUNCTION engine_write_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> '{engine}' THEN
    RAISE EXCEPTION 'propdesk: % on % refused for role %: only the execution engine writes account truth',
      TG_OP, TG_TABLE_NAME, current_user USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $$;

-- Append-only tables: corrections are new reversing entries, never edits.
CREATE FUNCTION append_only_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'propdesk: % on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;
""")
    for t in EXECUTION_TABLES:
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
        op.execute(
            f"CREATE TRIGGER {t}_append_only_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION append_only_guard()"
        )

    all_tables = EXECUTION_TABLES + OTHER_TABLES
    for t in all_tables:
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {engine}")

    # The web layer's app role reads; it never writes account truth. A trader sees only rows of accounts
    # whose owner_id equals the per-request setting propdesk.user_id (set by the web layer).
    op.execute(
        f"GRANT SELECT ON accounts, balances, orders, fills, fill_voids, positions, ledger, "
        f"decision_actions, instruments, quotes TO {app}"
    )
    op.execute(
        f"CREATE POLICY app_own ON accounts FOR SELECT TO {app} "
        f"USING (owner_id = current_setting('propdesk.user_id', true))"
    )
    for t in ("balances", "orders", "fills", "fill_voids", "positions", "ledger", "decision_actions"):
        op.execute(f"CREATE POLICY app_own ON {t} FOR SELECT TO {app} USING (account_id IN (SELECT id FROM accounts))")
    for t in ("instruments", "quotes"):
        op.execute(f"CREATE POLICY app_read ON {t} FOR SELECT TO {app} USING (true)")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {engine}")
    op.execute(f"GRANT SELECT ON alembic_version TO {engine}, {app}")
