"""Tamper evidence: hash chains over the ledger (one per account) and the admin audit log (one), computed by the
database, and signed anchors of the chain heads.

Chains. A ``BEFORE INSERT`` trigger sets ``prev_hash`` and ``row_hash`` on every new row (any value an INSERT
supplies is overwritten), so no application write path changes:

    row_hash = sha256(prev_hash || canonical bytes of the row)

``prev_hash`` is the ``row_hash`` of the previous row of the chain, or 32 zero bytes for the first row.

- ``ledger``: one chain per account, in ``seq`` order. The trigger takes the account's row with the highest
  ``seq`` as the previous one and refuses a ``seq`` that is not the next one (the chain and ``verify`` both
  assume 1, 2, 3, ...). Writers of one account are already serialized by the account row lock
  (``SELECT ... FOR UPDATE`` before every ledger write, and the new account's own uncommitted row at creation);
  a multi-row INSERT works because a row-level BEFORE trigger (a volatile function) sees the rows the same
  statement inserted before it, which PostgreSQL processes in VALUES order. Should two writers ever race, the
  second one's row takes a ``seq`` that either exists (unique violation) or does not follow its view of the
  chain (refused): a race fails loudly, it never forks the chain.
- ``admin_audit``: one chain over the whole table in ``chain_seq`` order, assigned by the trigger under a
  transaction-scoped advisory lock (``pg_advisory_xact_lock(CHAIN_LOCK)``, held until commit), because
  ``bigserial`` ids may commit out of order. Under READ COMMITTED the trigger's lookup of the last row runs
  after the lock is granted, so it sees the previous holder's committed row; a REPEATABLE READ writer that does
  not would reuse a ``chain_seq`` and fail on its unique index, never fork. Audit writes are serialized from
  their INSERT to their commit; they are rare (admin actions, worker failures).

Canonical form, version 1 (``chain_ledger_bytes`` / ``chain_audit_bytes``, mirrored by ``propdesk.db.chain``):
the UTF-8 bytes of a tag followed by each field in the order below, each field encoded as ``N`` for SQL NULL,
else ``S<n>:<value>`` where ``<n>`` is the byte length (decimal) of the UTF-8 ``<value>``; no separators
(the length prefixes make the encoding unambiguous). Values are rendered as:

- uuid: lower-case hyphenated (``uuid::text``); bigint: decimal; text: as stored;
- numeric: PostgreSQL's ``numeric::text`` (the column scale fixes the digits: ``-11.0000000000``);
- jsonb: PostgreSQL's ``jsonb::text``, deterministic for a value (keys ordered by length then bytes, one space
  after ``:`` and ``,``), whatever key order the writer sent;
- timestamptz: UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fractional digits), whatever the session's
  ``TimeZone``.

Fields: ledger tag ``propdesk.ledger.v1`` then id, account_id, seq, kind, category, amount, balance_after,
equity_after, order_id, fill_id, evidence, created_at. Admin audit tag ``propdesk.admin_audit.v1`` then
chain_seq, id, actor, action, account_id, reason, before, after, details, created_at.

Existing rows are chained here, in order (ledger by account then ``seq``, the audit log by ``id``), so a
database upgraded from an older version continues its chains. The append-only and engine-only triggers stay:
an UPDATE of the hash columns is refused like any other (this migration disables them only for its backfill).

Anchors. ``chain_anchors`` (and its ``chain_anchor_heads``) hold, periodically, the heads of the chains that
moved since the previous anchor and an HMAC-SHA256 signature by a key kept outside the database (see
``propdesk.db.chain``). The engine role may INSERT and SELECT them; every UPDATE, DELETE or TRUNCATE is refused
(append-only), as is an INSERT by any other role (engine-only).

Revision ID: 0008
"""

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The advisory lock key of the admin audit chain (also in propdesk.db.chain): 'pdchain1' as a big-endian int64.
CHAIN_LOCK = int.from_bytes(b"pdchain1", "big")
ZERO = "'\\x" + "00" * 32 + "'::bytea"

# The two *_bytes functions are PL/pgSQL on purpose: their one RETURN expression is planned once per session with
# chain_field/chain_ts inlined (about 3 us a row), where a non-inlined SQL function runs an executor per call.
FUNCTIONS = """
CREATE FUNCTION chain_field(v text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN v IS NULL THEN 'N' ELSE 'S' || octet_length(convert_to(v, 'UTF8')) || ':' || v END
$$;

CREATE FUNCTION chain_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION chain_ledger_bytes(id bigint, account_id uuid, seq bigint, kind text, category text,
                                   amount numeric, balance_after numeric, equity_after numeric, order_id uuid,
                                   fill_id uuid, evidence jsonb, created_at timestamptz)
RETURNS bytea LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN convert_to('propdesk.ledger.v1' || public.chain_field(id::text) || public.chain_field(account_id::text)
    || public.chain_field(seq::text) || public.chain_field(kind) || public.chain_field(category)
    || public.chain_field(amount::text) || public.chain_field(balance_after::text)
    || public.chain_field(equity_after::text) || public.chain_field(order_id::text)
    || public.chain_field(fill_id::text) || public.chain_field(evidence::text)
    || public.chain_field(public.chain_ts(created_at)), 'UTF8');
END $$;

CREATE FUNCTION chain_audit_bytes(chain_seq bigint, id bigint, actor text, action text, account_id uuid,
                                  reason text, before jsonb, after jsonb, details jsonb, created_at timestamptz)
RETURNS bytea LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN convert_to('propdesk.admin_audit.v1' || public.chain_field(chain_seq::text)
    || public.chain_field(id::text) || public.chain_field(actor) || public.chain_field(action)
    || public.chain_field(account_id::text) || public.chain_field(reason) || public.chain_field(before::text)
    || public.chain_field(after::text) || public.chain_field(details::text)
    || public.chain_field(public.chain_ts(created_at)), 'UTF8');
END $$;

CREATE FUNCTION ledger_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last_seq bigint;
  last_hash bytea;
BEGIN
  SELECT l.seq, l.row_hash INTO last_seq, last_hash FROM public.ledger l
   WHERE l.account_id = NEW.account_id ORDER BY l.seq DESC LIMIT 1;
  IF NOT FOUND THEN
    last_seq := 0;
    last_hash := @ZERO@;
  END IF;
  IF NEW.seq IS DISTINCT FROM last_seq + 1 THEN
    RAISE EXCEPTION 'propdesk: ledger seq % of account % does not follow the chain head %',
      NEW.seq, NEW.account_id, last_seq USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  NEW.prev_hash := last_hash;
  NEW.row_hash := sha256(last_hash || public.chain_ledger_bytes(NEW.id, NEW.account_id, NEW.seq, NEW.kind,
    NEW.category, NEW.amount, NEW.balance_after, NEW.equity_after, NEW.order_id, NEW.fill_id, NEW.evidence,
    NEW.created_at));
  RETURN NEW;
END $$;

CREATE FUNCTION admin_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last_seq bigint;
  last_hash bytea;
BEGIN
  PERFORM pg_advisory_xact_lock(@LOCK@);
  SELECT a.chain_seq, a.row_hash INTO last_seq, last_hash FROM public.admin_audit a
   ORDER BY a.chain_seq DESC LIMIT 1;
  IF NOT FOUND THEN
    last_seq := 0;
    last_hash := @ZERO@;
  END IF;
  NEW.chain_seq := last_seq + 1;
  NEW.prev_hash := last_hash;
  NEW.row_hash := sha256(last_hash || public.chain_audit_bytes(NEW.chain_seq, NEW.id, NEW.actor, NEW.action,
    NEW.account_id, NEW.reason, NEW.before, NEW.after, NEW.details, NEW.created_at));
  RETURN NEW;
END $$;
""".replace("@ZERO@", ZERO).replace("@LOCK@", str(CHAIN_LOCK))

BACKFILL = """
CREATE TEMP TABLE chain_backfill (id bigint PRIMARY KEY, chain_seq bigint, prev_hash bytea, row_hash bytea);

DO $$
DECLARE
  r record;
  prev bytea;
  cur uuid;
  h bytea;
BEGIN
  FOR r IN SELECT * FROM public.ledger ORDER BY account_id, seq LOOP
    IF cur IS DISTINCT FROM r.account_id THEN
      cur := r.account_id;
      prev := @ZERO@;
    END IF;
    h := sha256(prev || public.chain_ledger_bytes(r.id, r.account_id, r.seq, r.kind, r.category, r.amount,
      r.balance_after, r.equity_after, r.order_id, r.fill_id, r.evidence, r.created_at));
    INSERT INTO chain_backfill VALUES (r.id, NULL, prev, h);
    prev := h;
  END LOOP;
END $$;
UPDATE public.ledger l SET prev_hash = b.prev_hash, row_hash = b.row_hash FROM chain_backfill b WHERE b.id = l.id;
TRUNCATE chain_backfill;

DO $$
DECLARE
  r record;
  prev bytea := @ZERO@;
  n bigint := 0;
  h bytea;
BEGIN
  FOR r IN SELECT * FROM public.admin_audit ORDER BY id LOOP
    n := n + 1;
    h := sha256(prev || public.chain_audit_bytes(n, r.id, r.actor, r.action, r.account_id, r.reason, r.before,
      r.after, r.details, r.created_at));
    INSERT INTO chain_backfill VALUES (r.id, n, prev, h);
    prev := h;
  END LOOP;
END $$;
UPDATE public.admin_audit a SET chain_seq = b.chain_seq, prev_hash = b.prev_hash, row_hash = b.row_hash
  FROM chain_backfill b WHERE b.id = a.id;
DROP TABLE chain_backfill;
""".replace("@ZERO@", ZERO)

HASH = "CHECK (octet_length({c}) = 32)"


def upgrade() -> None:
    prefix = context.config.attributes["role_prefix"]
    engine, owner = f"{prefix}_engine", f"{prefix}_owner"
    op.execute(FUNCTIONS)
    op.execute("ALTER TABLE ledger ADD COLUMN prev_hash bytea, ADD COLUMN row_hash bytea")
    op.execute(
        "ALTER TABLE admin_audit ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash bytea, ADD COLUMN row_hash bytea"
    )
    # The backfill is the one rewrite of existing rows: the guards are off for it only (ALTER TABLE holds an
    # ACCESS EXCLUSIVE lock on both tables until the migration commits, so no writer sees them off).
    op.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only, DISABLE TRIGGER ledger_engine_only")
    op.execute("ALTER TABLE admin_audit DISABLE TRIGGER admin_audit_append_only")
    op.execute(BACKFILL)
    op.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only, ENABLE TRIGGER ledger_engine_only")
    op.execute("ALTER TABLE admin_audit ENABLE TRIGGER admin_audit_append_only")
    op.execute(f"""
ALTER TABLE ledger ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN row_hash SET NOT NULL,
  ADD CONSTRAINT ledger_prev_hash_len {HASH.format(c="prev_hash")},
  ADD CONSTRAINT ledger_row_hash_len {HASH.format(c="row_hash")};
ALTER TABLE admin_audit ALTER COLUMN chain_seq SET NOT NULL, ALTER COLUMN prev_hash SET NOT NULL,
  ALTER COLUMN row_hash SET NOT NULL,
  ADD CONSTRAINT admin_audit_chain_seq_key UNIQUE (chain_seq),
  ADD CONSTRAINT admin_audit_prev_hash_len {HASH.format(c="prev_hash")},
  ADD CONSTRAINT admin_audit_row_hash_len {HASH.format(c="row_hash")};

-- Named to fire after the guards (BEFORE triggers run in name order): a refused write computes nothing.
CREATE TRIGGER ledger_hash_chain BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_chain();
CREATE TRIGGER admin_audit_hash_chain BEFORE INSERT ON admin_audit
  FOR EACH ROW EXECUTE FUNCTION admin_audit_chain();

CREATE TABLE chain_anchors (
  id bigserial PRIMARY KEY,
  anchored_at timestamptz NOT NULL,
  audit_chain_seq bigint,
  audit_row_hash bytea {HASH.format(c="audit_row_hash")},
  heads int NOT NULL CHECK (heads >= 0),
  digest bytea NOT NULL {HASH.format(c="digest")},
  prev_signature bytea {HASH.format(c="prev_signature")},
  signature bytea NOT NULL {HASH.format(c="signature")},
  CHECK ((audit_chain_seq IS NULL) = (audit_row_hash IS NULL))
);
-- The heads are inserted before their anchor row (the signature covers them), so the reference is deferred.
CREATE TABLE chain_anchor_heads (
  anchor_id bigint NOT NULL REFERENCES chain_anchors(id) DEFERRABLE INITIALLY DEFERRED,
  account_id uuid NOT NULL REFERENCES accounts(id),
  seq bigint NOT NULL CHECK (seq > 0),
  row_hash bytea NOT NULL {HASH.format(c="row_hash")},
  PRIMARY KEY (anchor_id, account_id)
);
CREATE INDEX chain_anchor_heads_account ON chain_anchor_heads(account_id, seq);
""")
    for t in ("chain_anchors", "chain_anchor_heads"):
        op.execute(
            f"CREATE TRIGGER {t}_engine_only BEFORE INSERT OR UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION engine_write_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {t}_engine_only_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION engine_write_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION append_only_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {t}_append_only_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION append_only_guard()"
        )
        op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY engine_all ON {t} TO {engine} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY owner_all ON {t} TO {owner} USING (true) WITH CHECK (true)")
        # No UPDATE or DELETE grant either: anchors are only ever added.
        op.execute(f"GRANT SELECT, INSERT ON {t} TO {engine}")
    op.execute(f"GRANT USAGE ON SEQUENCE chain_anchors_id_seq TO {engine}")


def downgrade() -> None:
    op.execute("DROP TABLE chain_anchor_heads, chain_anchors")
    op.execute("DROP TRIGGER ledger_hash_chain ON ledger")
    op.execute("DROP TRIGGER admin_audit_hash_chain ON admin_audit")
    op.execute("ALTER TABLE ledger DROP COLUMN prev_hash, DROP COLUMN row_hash")
    op.execute("ALTER TABLE admin_audit DROP COLUMN chain_seq, DROP COLUMN prev_hash, DROP COLUMN row_hash")
    op.execute(
        "DROP FUNCTION ledger_chain(), admin_audit_chain(), "
        "chain_ledger_bytes(bigint, uuid, bigint, text, text, numeric, numeric, numeric, uuid, uuid, jsonb,"
        " timestamptz), "
        "chain_audit_bytes(bigint, bigint, text, text, uuid, text, jsonb, jsonb, jsonb, timestamptz), "
        "chain_ts(timestamptz), chain_field(text)"
    )
