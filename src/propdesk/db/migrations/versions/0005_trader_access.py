"""Trader access: purchases, trade notes, notifications, the ``is_admin()`` function and the admin read policies.

How the app role's reads are bounded (the web layer sets ``propdesk.user_id`` per request, see web/access.py):

- a trader sees the rows of the accounts whose ``owner_id`` is its user id (``app_own`` policies of 0001/0002;
  every child table filters through ``accounts``), its own user row, purchases, notes and notifications;
- an admin user sees every row of the tables an admin page needs, through ``app_admin`` policies asking
  ``is_admin()``: a SECURITY DEFINER function owned by the owner role, with a fixed ``search_path``, EXECUTE
  revoked from PUBLIC and granted to the app role only. It answers whether the current ``propdesk.user_id`` is
  an enabled admin in ``users``. Token hashes (web_sessions, api_tokens, password_resets, idempotency_keys)
  stay unreadable to the app role for everyone.

New tables:

- ``purchases``: a checkout, written by the engine role in the same transaction as the account it creates
  (engine-only trigger, like every execution table); unique per (user, idempotency key), so a key can never
  collide with (and so reveal) another user's purchase.
- ``trade_notes``: the trader's journal note on a fill. The only execution-adjacent table the app role writes:
  INSERT/UPDATE of its own rows, on fills of accounts it owns (``WITH CHECK``); keyed by (user, fill), so a
  unique violation can only ever be about the caller's own note.
- ``notifications``: filled by triggers (a rule decision in ``violations``; an account status change), which
  fire under the engine role and insert through a SECURITY DEFINER function; the app role may only set
  ``read_at`` on its own rows (column grant + policy).

Revision ID: 0005
"""

from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

M = "numeric(28,10)"
ME = "current_setting('propdesk.user_id', true)"


def fin(col: str) -> str:
    return f"CHECK ({col} NOT IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric))"


NEW_TABLES = ("purchases", "trade_notes", "notifications")
# Tables an admin page reads through the app role, beyond what 0001-0004 already open to it.
ADMIN_READ = (
    "accounts",
    "balances",
    "orders",
    "fills",
    "fill_voids",
    "positions",
    "ledger",
    "decision_actions",
    "rule_states",
    "violations",
    "daily_stats",
    "consistency_snapshots",
    "external_trades",
    "admin_audit",
    "worker_heartbeats",
    "users",
    "auth_events",
    "email_outbox",
    *NEW_TABLES,
)
# SELECT grants the app role lacks so far (the policies above still decide which rows).
NEW_APP_SELECT = ("admin_audit", "worker_heartbeats", "auth_events", "email_outbox", *NEW_TABLES)


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, app, owner = f"{prefix}_engine", f"{prefix}_app", f"{prefix}_owner"
    op.execute(f"""
CREATE TABLE purchases (
  id uuid PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users(id),
  plan_id text NOT NULL,
  plan_version int NOT NULL CHECK (plan_version > 0),
  offer text NOT NULL CHECK (length(offer) BETWEEN 1 AND 64),
  amount {M} NOT NULL CHECK (amount >= 0) {fin("amount")},
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
  provider text NOT NULL CHECK (provider IN ('dev')),
  status text NOT NULL CHECK (status IN ('confirmed','failed','refunded')),
  account_id uuid REFERENCES accounts(id),
  idempotency text NOT NULL CHECK (length(idempotency) BETWEEN 1 AND 200),
  created_at timestamptz NOT NULL,
  UNIQUE (user_id, idempotency)
);
CREATE INDEX purchases_account ON purchases(account_id);

CREATE TABLE trade_notes (
  user_id uuid NOT NULL REFERENCES users(id),
  fill_id uuid NOT NULL REFERENCES fills(id),
  account_id uuid NOT NULL REFERENCES accounts(id),
  note text NOT NULL CHECK (length(note) <= 4000),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (user_id, fill_id)
);
CREATE INDEX trade_notes_account ON trade_notes(account_id);

CREATE TABLE notifications (
  id bigserial PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users(id),
  account_id uuid REFERENCES accounts(id),
  kind text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
  title text NOT NULL CHECK (length(title) <= 300),
  body text NOT NULL DEFAULT '' CHECK (length(body) <= 4000),
  evidence jsonb NOT NULL DEFAULT '{{}}',
  created_at timestamptz NOT NULL,
  read_at timestamptz
);
CREATE INDEX notifications_user ON notifications(user_id, id DESC);

-- The admin panel's activity feed reads the newest orders, fills, status changes and admin actions platform-wide.
CREATE INDEX orders_recent ON orders(created_at DESC);
CREATE INDEX fills_recent ON fills(created_at DESC);
CREATE INDEX ledger_status_changes ON ledger(created_at DESC) WHERE kind = 'status_changed';
CREATE INDEX admin_audit_recent ON admin_audit(created_at DESC);

-- Whether the user the web layer acts for is an enabled admin. SECURITY DEFINER (owner) so that it can read
-- users under forced RLS; the fixed search_path stops a caller from shadowing users or any function.
CREATE FUNCTION is_admin() RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public AS $$
  SELECT EXISTS (SELECT 1 FROM public.users u
                 WHERE u.id::text = pg_catalog.current_setting('propdesk.user_id', true)
                   AND u.role = 'admin' AND u.disabled_at IS NULL)
$$;
REVOKE ALL ON FUNCTION is_admin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_admin() TO {app};

-- Notifications are made by triggers on engine writes. The insert runs as the owner (SECURITY DEFINER): the
-- engine role needs no access to users or notifications. Accounts owned by something that is not a web user
-- (an AI agent's clone id, a service's owner string) get none.
CREATE FUNCTION notify_user(p_account uuid, p_kind text, p_title text, p_body text, p_evidence jsonb,
                            p_at timestamptz) RETURNS void LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, public AS $$
  INSERT INTO public.notifications (user_id, account_id, kind, title, body, evidence, created_at)
  SELECT u.id, a.id, p_kind, left(p_title, 300), left(p_body, 4000), p_evidence, p_at
    FROM public.accounts a JOIN public.users u ON u.id::text = a.owner_id
   WHERE a.id = p_account
$$;
REVOKE ALL ON FUNCTION notify_user(uuid, text, text, text, jsonb, timestamptz) FROM PUBLIC;

CREATE FUNCTION notify_violation() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, public AS $$
BEGIN
  IF NEW.kind IN ('breach', 'warning', 'flag', 'pass') THEN
    PERFORM public.notify_user(
      NEW.account_id, NEW.kind,
      CASE NEW.kind WHEN 'breach' THEN 'Rule breached: ' WHEN 'warning' THEN 'Warning: '
                    WHEN 'flag' THEN 'Flagged: ' ELSE 'Passed: ' END || NEW.rule,
      'Action: ' || NEW.action
        || coalesce('; value ' || trim_scale(NEW.value)::text, '')
        || coalesce('; limit ' || trim_scale(NEW.limit_value)::text, ''),
      jsonb_build_object('violation_id', NEW.id, 'rule', NEW.rule, 'kind', NEW.kind, 'action', NEW.action,
                         'severity', NEW.severity, 'phase', NEW.phase, 'at', NEW.at,
                         'value', trim_scale(NEW.value)::text, 'limit', trim_scale(NEW.limit_value)::text,
                         'evidence', NEW.evidence),
      NEW.created_at);
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION notify_violation() FROM PUBLIC;

CREATE FUNCTION notify_status() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, public AS $$
BEGIN
  -- pending -> active is the account opening, not news.
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (OLD.status = 'pending' AND NEW.status = 'active') THEN
    PERFORM public.notify_user(
      NEW.id, 'status',
      'Account ' || replace(NEW.status, '_', ' '),
      'Phase ' || NEW.phase || ': ' || replace(OLD.status, '_', ' ') || ' -> ' || replace(NEW.status, '_', ' '),
      jsonb_build_object('from', OLD.status, 'to', NEW.status, 'phase', NEW.phase),
      NEW.updated_at);
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION notify_status() FROM PUBLIC;

CREATE TRIGGER violations_notify AFTER INSERT ON violations FOR EACH ROW EXECUTE FUNCTION notify_violation();
CREATE TRIGGER accounts_notify_status AFTER UPDATE OF status ON accounts
  FOR EACH ROW EXECUTE FUNCTION notify_status();
""")
    # Purchases are account truth's companion: only the engine writes them.
    op.execute(
        "CREATE TRIGGER purchases_engine_only BEFORE INSERT OR UPDATE OR DELETE ON purchases "
        "FOR EACH ROW EXECUTE FUNCTION engine_write_guard()"
    )
    op.execute(
        "CREATE TRIGGER purchases_engine_only_truncate BEFORE TRUNCATE ON purchases "
        "FOR EACH STATEMENT EXECUTE FUNCTION engine_write_guard()"
    )
    for t in NEW_TABLES:
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {engine}")
    for t in NEW_APP_SELECT:
        op.execute(f"GRANT SELECT ON {t} TO {app}")

    # Own rows. The fill must belong to an account the user OWNS (not merely sees: an admin sees every account
    # and must not write notes into a trader's journal).
    op.execute(f"CREATE POLICY app_own ON purchases FOR SELECT TO {app} USING (user_id::text = {ME})")
    op.execute(f"CREATE POLICY app_own ON trade_notes FOR SELECT TO {app} USING (user_id::text = {ME})")
    owned_fill = (
        f"user_id::text = {ME} AND EXISTS (SELECT 1 FROM accounts a JOIN fills f ON f.account_id = a.id"
        f" WHERE a.id = trade_notes.account_id AND f.id = trade_notes.fill_id AND a.owner_id = {ME})"
    )
    op.execute(f"CREATE POLICY app_insert ON trade_notes FOR INSERT TO {app} WITH CHECK ({owned_fill})")
    op.execute(
        f"CREATE POLICY app_update ON trade_notes FOR UPDATE TO {app} USING (user_id::text = {ME})"
        f" WITH CHECK ({owned_fill})"
    )
    op.execute(
        f"GRANT INSERT (user_id, fill_id, account_id, note, created_at, updated_at),"
        f" UPDATE (note, updated_at) ON trade_notes TO {app}"
    )
    op.execute(f"CREATE POLICY app_own ON notifications FOR SELECT TO {app} USING (user_id::text = {ME})")
    op.execute(
        f"CREATE POLICY app_mark_read ON notifications FOR UPDATE TO {app} USING (user_id::text = {ME})"
        f" WITH CHECK (user_id::text = {ME})"
    )
    op.execute(f"GRANT UPDATE (read_at) ON notifications TO {app}")

    # Admin reads. ``(SELECT is_admin())`` is evaluated once per statement (an initplan), not once per row.
    for t in ADMIN_READ:
        op.execute(f"CREATE POLICY app_admin ON {t} FOR SELECT TO {app} USING ((SELECT is_admin()))")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {engine}")


def downgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    app = f"{prefix}_app"
    for t in ADMIN_READ:
        if t not in NEW_TABLES:
            op.execute(f"DROP POLICY IF EXISTS app_admin ON {t}")
    for t in ("admin_audit", "worker_heartbeats", "auth_events", "email_outbox"):
        op.execute(f"REVOKE SELECT ON {t} FROM {app}")
    op.execute("DROP INDEX IF EXISTS orders_recent, fills_recent, ledger_status_changes, admin_audit_recent")
    op.execute("DROP TRIGGER IF EXISTS violations_notify ON violations")
    op.execute("DROP TRIGGER IF EXISTS accounts_notify_status ON accounts")
    op.execute("DROP TABLE notifications, trade_notes, purchases")
    op.execute(
        "DROP FUNCTION notify_violation(), notify_status(), "
        "notify_user(uuid, text, text, text, jsonb, timestamptz), is_admin()"
    )
