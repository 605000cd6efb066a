"""The event outbox: events written by the database in the transaction of the command that caused them.

``outbox`` rows are inserted by ``AFTER INSERT`` (and, for ``rule_states``, ``UPDATE``) triggers on ``ledger``,
``rule_states`` and ``violations``, so no write path can forget one and none exists for a command that rolled
back. The catalogue is closed (``domain/events.py``, and the CHECK below): ``account.changed`` (at most one per
account and transaction, by a partial unique index), ``account.status_changed``, ``order.filled`` and
``violation.recorded``, each with a versioned payload and a unique ``event_id``.

``txid`` is the writing transaction's id (``xid8``): ``propdesk worker outbox-relay`` reads only rows whose
transaction is older than every transaction still running (``pg_snapshot_xmin``) in ``(txid, id)`` order, so a
transaction that took a lower ``id`` but committed later is never skipped. ``outbox_cursors`` holds how far each
relay has published. Only the engine role writes either table (the same guard as the execution tables).

Revision ID: 0010
"""

from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, owner = f"{prefix}_engine", f"{prefix}_owner"
    op.execute("""
CREATE TABLE outbox (
  id bigserial PRIMARY KEY,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  event_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  type text NOT NULL CHECK (type IN ('account.changed', 'account.status_changed', 'order.filled',
                                     'violation.recorded')),
  version int NOT NULL CHECK (version > 0),
  account_id uuid,
  payload jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_position ON outbox (txid, id);
CREATE UNIQUE INDEX outbox_account_changed_once ON outbox (account_id, txid) WHERE type = 'account.changed';

CREATE TABLE outbox_cursors (
  name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
  txid xid8 NOT NULL,
  id bigint NOT NULL,
  published bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL
);

CREATE FUNCTION outbox_account_changed(acc uuid) RETURNS void LANGUAGE sql AS $$
  INSERT INTO outbox (type, version, account_id, payload)
  VALUES ('account.changed', 1, acc, jsonb_build_object('account_id', acc))
  ON CONFLICT (account_id, txid) WHERE type = 'account.changed' DO NOTHING
$$;

CREATE FUNCTION outbox_from_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM outbox_account_changed(NEW.account_id);
  IF NEW.kind = 'status_changed' THEN
    INSERT INTO outbox (type, version, account_id, payload) VALUES ('account.status_changed', 1, NEW.account_id,
      jsonb_build_object('account_id', NEW.account_id, 'from', NEW.evidence->>'from', 'to', NEW.evidence->>'to',
                         'trigger', NEW.evidence->>'trigger'));
  ELSIF NEW.kind = 'fill' THEN
    INSERT INTO outbox (type, version, account_id, payload) VALUES ('order.filled', 1, NEW.account_id,
      jsonb_build_object('account_id', NEW.account_id, 'order_id', NEW.order_id, 'fill_id', NEW.fill_id));
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION outbox_from_rule_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM outbox_account_changed(NEW.account_id);
  RETURN NULL;
END $$;

CREATE FUNCTION outbox_from_violation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM outbox_account_changed(NEW.account_id);
  INSERT INTO outbox (type, version, account_id, payload) VALUES ('violation.recorded', 1, NEW.account_id,
    jsonb_build_object('account_id', NEW.account_id, 'violation_id', NEW.id, 'rule', NEW.rule, 'kind', NEW.kind,
                       'action', NEW.action));
  RETURN NULL;
END $$;

CREATE TRIGGER ledger_outbox AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION outbox_from_ledger();
CREATE TRIGGER rule_states_outbox AFTER INSERT ON rule_states
  FOR EACH ROW EXECUTE FUNCTION outbox_from_rule_state();
-- An update says something only when a field a consumer (the risk book) holds changed: the floors, their
-- anchors and locks, the peak, the day, the pause, the warnings, the verdict. The mark's day high/low and the
-- bookkeeping extras move on nearly every mark and would only make every consumer re-read the account.
CREATE TRIGGER rule_states_outbox_update AFTER UPDATE ON rule_states
  FOR EACH ROW WHEN (
    (OLD.state->'engine') - ARRAY['day_high_equity', 'day_low_equity', 'last_t', 'balance', 'equity',
                                  'max_dd_pct', 'day_pnl', 'day_closes']
    IS DISTINCT FROM
    (NEW.state->'engine') - ARRAY['day_high_equity', 'day_low_equity', 'last_t', 'balance', 'equity',
                                  'max_dd_pct', 'day_pnl', 'day_closes']
  ) EXECUTE FUNCTION outbox_from_rule_state();
CREATE TRIGGER violations_outbox AFTER INSERT ON violations FOR EACH ROW EXECUTE FUNCTION outbox_from_violation();
""")
    for t in ("outbox", "outbox_cursors"):
        op.execute(
            f"CREATE TRIGGER {t}_engine_only BEFORE INSERT OR UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION engine_write_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {t}_engine_only_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION engine_write_guard()"
        )
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
    # Events are never edited; old ones the relays have passed are pruned (DELETE) by the relay.
    op.execute(f"GRANT SELECT, INSERT, DELETE ON outbox TO {engine}")
    op.execute(f"GRANT USAGE ON SEQUENCE outbox_id_seq TO {engine}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON outbox_cursors TO {engine}")


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_outbox ON ledger")
    op.execute("DROP TRIGGER rule_states_outbox ON rule_states")
    op.execute("DROP TRIGGER rule_states_outbox_update ON rule_states")
    op.execute("DROP TRIGGER violations_outbox ON violations")
    op.execute("DROP FUNCTION outbox_from_ledger(), outbox_from_rule_state(), outbox_from_violation()")
    op.execute("DROP FUNCTION outbox_account_changed(uuid)")
    op.execute("DROP TABLE outbox_cursors, outbox")
