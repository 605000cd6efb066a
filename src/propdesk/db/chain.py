"""Tamper evidence: the hash chains over the ledger and the admin audit log, recomputed in Python, and signed
anchors of their heads.

The database computes the chains (``BEFORE INSERT`` triggers of migration 0009, whose docstring defines the
canonical form); this module recomputes them independently from the rows' fields and checks them against
what is stored and against the anchors.

What ``verify_chains`` detects
------------------------------
- A row whose fields were altered without recomputing its hash (``row_hash_mismatch``).
- A deleted, inserted or reordered row: the next row's ``prev_hash`` is not the hash of the row before it
  (``broken_link``), and for the ledger a ``seq`` that is not the next one (``seq_gap``).
- Any alteration, insertion or deletion at or before the last anchored head of a chain, even by a superuser who
  disables the triggers and recomputes every later hash so that the chain is consistent again: the recomputed
  chain no longer passes through the anchored hash (``anchor_mismatch``; ``anchored_row_missing`` when the
  anchored row is gone). This holds as long as the anchor key stays outside the database: forging or
  re-signing an anchor needs it (``anchor_signature_invalid``), and removing an anchor from the middle breaks
  the next one's ``prev_signature`` (``anchor_link_broken``).
- Deleted newest anchors, when ``<data_dir>/chain-anchors.log`` (every anchor's id and signature, appended after
  its commit) is given: an anchor of the log that is missing or different in the database is reported
  (``anchor_missing`` / ``anchor_log_mismatch``).

What it does not detect
-----------------------
- Changes after the last anchor made by someone able to write the tables with triggers off (a superuser, or
  the owner): they can alter or delete the newest rows and recompute the chain from there on. The window is
  the anchoring interval (the balance reconciliation of ``propdesk verify`` still catches a ledger that no
  longer folds to the stored balances, unless those were rewritten too).
- Truncation of the chain's tail after its last anchor, for the same reason.
- Deletion of the newest anchors when the anchor log is absent or was truncated too (keep the log on another
  medium, or ship it, to close this).
- Anything, if the anchor key leaks: whoever holds it can re-sign a rewritten history.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.rows import tuple_row

ZERO_HASH = bytes(32)
LEDGER_TAG = b"propdesk.ledger.v1"
AUDIT_TAG = b"propdesk.admin_audit.v1"
ANCHOR_TAG = "propdesk.anchor.v1"
# Transaction-scoped advisory lock keys: the audit chain's (as in migration 0009) and the anchor writer's.
CHAIN_LOCK = int.from_bytes(b"pdchain1", "big")
ANCHOR_LOCK = int.from_bytes(b"pdanchr1", "big")
KEY_FILE = "chain-anchor.key"
LOG_FILE = "chain-anchors.log"
KEY_ENV = "PROPDESK_ANCHOR_KEY"
FETCH_ROWS = 5000

# ------------------------------------------------------------------------------------------ the canonical form


def field_bytes(value: str | None) -> bytes:
    """One field: ``N`` for NULL, else ``S<byte length>:<UTF-8 value>``."""
    if value is None:
        return b"N"
    raw = value.encode()
    return b"S%d:%s" % (len(raw), raw)


def ts_text(at: datetime | None) -> str | None:
    """A timestamptz in UTC with six fractional digits: ``2026-03-02T10:00:00.000000Z``."""
    if at is None:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def ledger_bytes(
    id_: int,
    account_id: uuid.UUID,
    seq: int,
    kind: str,
    category: str,
    amount: str,
    balance_after: str,
    equity_after: str | None,
    order_id: uuid.UUID | None,
    fill_id: uuid.UUID | None,
    evidence: str,
    created_at: datetime,
) -> bytes:
    """The canonical bytes of a ledger row (numerics and jsonb as PostgreSQL renders them with ``::text``)."""
    return LEDGER_TAG + b"".join(
        field_bytes(v)
        for v in (
            str(id_),
            str(account_id),
            str(seq),
            kind,
            category,
            amount,
            balance_after,
            equity_after,
            _text(order_id),
            _text(fill_id),
            evidence,
            ts_text(created_at),
        )
    )


def audit_bytes(
    chain_seq: int,
    id_: int,
    actor: str,
    action: str,
    account_id: uuid.UUID | None,
    reason: str,
    before: str | None,
    after: str | None,
    details: str,
    created_at: datetime,
) -> bytes:
    """The canonical bytes of an admin audit row (jsonb as PostgreSQL renders it with ``::text``)."""
    return AUDIT_TAG + b"".join(
        field_bytes(v)
        for v in (
            str(chain_seq),
            str(id_),
            actor,
            action,
            _text(account_id),
            reason,
            before,
            after,
            details,
            ts_text(created_at),
        )
    )


def link(prev_hash: bytes, canonical: bytes) -> bytes:
    """A chain step: sha256(prev_hash || canonical bytes)."""
    return hashlib.sha256(prev_hash + canonical).digest()


LEDGER_SELECT = (
    "SELECT id, account_id, seq, kind, category, amount::text, balance_after::text,"
    " equity_after::text, order_id, fill_id, evidence::text, created_at, prev_hash, row_hash"
    " FROM ledger ORDER BY account_id, seq"
)
AUDIT_SELECT = (
    "SELECT chain_seq, id, actor, action, account_id, reason, before::text, after::text,"
    " details::text, created_at, prev_hash, row_hash FROM admin_audit ORDER BY chain_seq"
)

# ------------------------------------------------------------------------------------------ anchors


@dataclass(frozen=True)
class Anchor:
    """One signed anchor: the chain heads that moved since the previous one."""

    id: int
    anchored_at: datetime
    heads: int
    audit_chain_seq: int | None
    signature: bytes

    def log_line(self) -> str:
        return f"{self.id} {ts_text(self.anchored_at)} {self.signature.hex()}\n"


def anchor_digest(
    anchor_id: int,
    anchored_at: datetime,
    prev_signature: bytes | None,
    audit_head: tuple[int, bytes] | None,
    heads: Iterator[tuple[uuid.UUID, int, bytes]] | list[tuple[uuid.UUID, int, bytes]],
) -> bytes:
    """sha256 of the anchor's canonical text: lines ``propdesk.anchor.v1``, ``id <id>``, ``at <UTC ts>``,
    ``prev <hex signature or ->``, ``audit <chain_seq> <hex hash>`` (or ``audit -``), one ``head <account uuid>
    <seq> <hex hash>`` per head in account id order, and ``heads <count>``; each line ends with ``\\n``."""
    h = hashlib.sha256()
    h.update(
        f"{ANCHOR_TAG}\nid {anchor_id}\nat {ts_text(anchored_at)}\n"
        f"prev {prev_signature.hex() if prev_signature is not None else '-'}\n".encode()
    )
    h.update((f"audit {audit_head[0]} {audit_head[1].hex()}\n" if audit_head else "audit -\n").encode())
    n = 0
    for account_id, seq, row_hash in heads:
        n += 1
        h.update(f"head {account_id} {seq} {bytes(row_hash).hex()}\n".encode())
    h.update(f"heads {n}\n".encode())
    return h.digest()


def sign(key: bytes, digest: bytes) -> bytes:
    return hmac.new(key, digest, hashlib.sha256).digest()


def anchor(conn: Any, key: bytes, now: datetime) -> Anchor | None:
    """Write one anchor in the caller's (engine) transaction: the head of every ledger chain that moved since it
    was last anchored and the audit chain's head, signed with ``key`` together with the previous anchor's
    signature. Returns None (and writes nothing) when no chain moved. Anchor writers are serialized by an
    advisory lock; the heads are selected and inserted in one statement."""
    if now.tzinfo is None:
        raise ValueError("anchor time must be timezone-aware")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ANCHOR_LOCK,))
    cur = conn.cursor(row_factory=tuple_row)
    prev = cur.execute("SELECT signature, audit_chain_seq FROM chain_anchors ORDER BY id DESC LIMIT 1").fetchone()
    audit = cur.execute("SELECT chain_seq, row_hash FROM admin_audit ORDER BY chain_seq DESC LIMIT 1").fetchone()
    audit_head = (int(audit[0]), bytes(audit[1])) if audit else None
    row = cur.execute("SELECT nextval(pg_get_serial_sequence('chain_anchors', 'id'))").fetchone()
    anchor_id = int(row[0])
    heads = cur.execute(
        """INSERT INTO chain_anchor_heads (anchor_id, account_id, seq, row_hash)
           SELECT %s, a.id, h.seq, h.row_hash FROM accounts a
           CROSS JOIN LATERAL (SELECT l.seq, l.row_hash FROM ledger l WHERE l.account_id = a.id
                               ORDER BY l.seq DESC LIMIT 1) h
           WHERE h.seq > COALESCE((SELECT max(p.seq) FROM chain_anchor_heads p WHERE p.account_id = a.id), 0)
           RETURNING account_id, seq, row_hash""",
        (anchor_id,),
    ).fetchall()
    audit_moved = audit_head is not None and (prev is None or prev[1] is None or audit_head[0] > int(prev[1]))
    if not heads and not audit_moved:
        return None
    heads.sort(key=lambda r: r[0])
    prev_signature = bytes(prev[0]) if prev else None
    digest = anchor_digest(anchor_id, now, prev_signature, audit_head, [(r[0], r[1], bytes(r[2])) for r in heads])
    signature = sign(key, digest)
    cur.execute(
        "INSERT INTO chain_anchors (id, anchored_at, audit_chain_seq, audit_row_hash, heads, digest,"
        " prev_signature, signature) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            anchor_id,
            now,
            audit_head[0] if audit_head else None,
            audit_head[1] if audit_head else None,
            len(heads),
            digest,
            prev_signature,
            signature,
        ),
    )
    return Anchor(anchor_id, now, len(heads), audit_head[0] if audit_head else None, signature)


def append_anchor_log(path: Path, anchor_: Anchor) -> None:
    """Append the anchor's id and signature to the log outside the database (after its transaction committed:
    a logged anchor must exist, so a rolled-back one must never be logged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, anchor_.log_line().encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def anchor_key(data_dir: Path, env: Mapping[str, str] | None = None, *, create: bool = True) -> bytes | None:
    """The anchor signing key: ``PROPDESK_ANCHOR_KEY`` (its UTF-8 bytes, at least 32 characters) or the file
    ``<data_dir>/chain-anchor.key`` (64 hex digits, mode 0600), generated when missing and ``create`` is set.
    Returns None when there is none and ``create`` is false. A key file readable by others is refused."""
    env = os.environ if env is None else env
    value = env.get(KEY_ENV)
    if value:
        if len(value) < 32:
            raise ValueError(f"{KEY_ENV} must be at least 32 characters")
        return value.encode()
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            return None
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created concurrently by another process: read theirs
            pass
        else:
            try:
                os.write(fd, (secrets.token_hex(32) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}): chmod 600 it")
    return bytes.fromhex(path.read_text().strip())


# ------------------------------------------------------------------------------------------ verification


@dataclass
class ChainReport:
    """What ``verify_chains`` found: counts, and one entry per problem (``chain``, ``problem`` and where)."""

    ledger_rows: int = 0
    ledger_chains: int = 0
    audit_rows: int = 0
    anchors: int = 0
    anchored_heads_checked: int = 0
    signatures_checked: bool = False
    log_entries_checked: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def add(self, chain: str, problem: str, **where: Any) -> None:
        self.problems.append(
            {
                "chain": chain,
                "problem": problem,
                **{
                    k: (v.hex() if isinstance(v, bytes) else str(v) if isinstance(v, uuid.UUID) else v)
                    for k, v in where.items()
                },
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ledger_rows": self.ledger_rows,
            "ledger_chains": self.ledger_chains,
            "audit_rows": self.audit_rows,
            "anchors": self.anchors,
            "anchored_heads_checked": self.anchored_heads_checked,
            "signatures_checked": self.signatures_checked,
            "log_entries_checked": self.log_entries_checked,
            "clean": self.clean,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def _stream(conn: Any, name: str, query: str) -> Iterator[tuple[Any, ...]]:
    """A server-side cursor read in batches (constant memory whatever the table size)."""
    with conn.cursor(name=name, row_factory=tuple_row) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query)
        yield from cur


class _Anchored:
    """Anchored heads in key order, consumed alongside the chain's rows (a merge join)."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]):
        self._rows = rows
        self.head: tuple[Any, ...] | None = next(rows, None)

    def advance(self) -> None:
        self.head = next(self._rows, None)


def _check_anchored(
    report: ChainReport, chain: str, anchored: _Anchored, key: tuple[Any, ...], recomputed: bytes, where: dict[str, Any]
) -> None:
    """Report anchored heads below ``key`` (their row is gone) and compare the one at ``key``."""
    while anchored.head is not None and tuple(anchored.head[:-2]) < key:
        report.anchored_heads_checked += 1
        report.add(chain, "anchored_row_missing", **_where(chain, anchored.head), anchor_id=anchored.head[-1])
        anchored.advance()
    while anchored.head is not None and tuple(anchored.head[:-2]) == key:
        report.anchored_heads_checked += 1
        if bytes(anchored.head[-2]) != recomputed:
            report.add(
                chain,
                "anchor_mismatch",
                **where,
                anchor_id=anchored.head[-1],
                anchored=bytes(anchored.head[-2]),
                recomputed=recomputed,
            )
        anchored.advance()


def _where(chain: str, head: tuple[Any, ...]) -> dict[str, Any]:
    return {"account_id": head[0], "seq": head[1]} if chain == "ledger" else {"chain_seq": head[0]}


def _verify_ledger(conn: Any, report: ChainReport) -> None:
    anchored = _Anchored(
        _stream(
            conn,
            "chain_ledger_anchored",
            "SELECT account_id, seq, row_hash, anchor_id FROM chain_anchor_heads ORDER BY account_id, seq, anchor_id",
        )
    )
    account: uuid.UUID | None = None
    expected_seq = 1
    stored_prev = recomputed_prev = ZERO_HASH
    for (
        id_,
        account_id,
        seq,
        kind,
        category,
        amount,
        balance_after,
        equity_after,
        order_id,
        fill_id,
        evidence,
        created_at,
        prev_hash,
        row_hash,
    ) in _stream(conn, "chain_ledger", LEDGER_SELECT):
        report.ledger_rows += 1
        if account_id != account:
            if account is not None:  # anchored heads beyond the end of the previous chain
                _check_anchored(report, "ledger", anchored, (account, 2**63), ZERO_HASH, {})
            account, expected_seq = account_id, 1
            stored_prev = recomputed_prev = ZERO_HASH
            report.ledger_chains += 1
        where = {"account_id": account_id, "seq": seq, "id": id_}
        if seq != expected_seq:
            report.add("ledger", "seq_gap", **where, expected_seq=expected_seq)
        prev_hash, row_hash = bytes(prev_hash), bytes(row_hash)
        canonical = ledger_bytes(
            id_,
            account_id,
            seq,
            kind,
            category,
            amount,
            balance_after,
            equity_after,
            order_id,
            fill_id,
            evidence,
            created_at,
        )
        if prev_hash != stored_prev:
            report.add("ledger", "broken_link", **where)
        if link(prev_hash, canonical) != row_hash:
            report.add("ledger", "row_hash_mismatch", **where)
        recomputed = link(recomputed_prev, canonical)
        _check_anchored(report, "ledger", anchored, (account_id, seq), recomputed, where)
        stored_prev, recomputed_prev, expected_seq = row_hash, recomputed, seq + 1
    while anchored.head is not None:
        report.anchored_heads_checked += 1
        report.add("ledger", "anchored_row_missing", **_where("ledger", anchored.head), anchor_id=anchored.head[-1])
        anchored.advance()


def _verify_audit(conn: Any, report: ChainReport) -> None:
    anchored = _Anchored(
        _stream(
            conn,
            "chain_audit_anchored",
            "SELECT audit_chain_seq, audit_row_hash, id FROM chain_anchors"
            " WHERE audit_chain_seq IS NOT NULL ORDER BY audit_chain_seq, id",
        )
    )
    expected_seq = 1
    stored_prev = recomputed_prev = ZERO_HASH
    for (
        chain_seq,
        id_,
        actor,
        action,
        account_id,
        reason,
        before,
        after,
        details,
        created_at,
        prev_hash,
        row_hash,
    ) in _stream(conn, "chain_audit", AUDIT_SELECT):
        report.audit_rows += 1
        where = {"chain_seq": chain_seq, "id": id_}
        if chain_seq != expected_seq:
            report.add("admin_audit", "seq_gap", **where, expected_seq=expected_seq)
        prev_hash, row_hash = bytes(prev_hash), bytes(row_hash)
        canonical = audit_bytes(chain_seq, id_, actor, action, account_id, reason, before, after, details, created_at)
        if prev_hash != stored_prev:
            report.add("admin_audit", "broken_link", **where)
        if link(prev_hash, canonical) != row_hash:
            report.add("admin_audit", "row_hash_mismatch", **where)
        recomputed = link(recomputed_prev, canonical)
        _check_anchored(report, "admin_audit", anchored, (chain_seq,), recomputed, where)
        stored_prev, recomputed_prev, expected_seq = row_hash, recomputed, chain_seq + 1
    while anchored.head is not None:
        report.anchored_heads_checked += 1
        report.add("admin_audit", "anchored_row_missing", chain_seq=anchored.head[0], anchor_id=anchored.head[-1])
        anchored.advance()


def _verify_anchors(conn: Any, report: ChainReport, key: bytes | None) -> dict[int, bytes]:
    """Recompute every anchor's digest from its heads, check its signature (with ``key``) and its link to the
    previous anchor. Returns the signatures by anchor id (for the log check)."""
    heads = _Anchored(
        _stream(
            conn,
            "chain_anchor_heads",
            "SELECT anchor_id, account_id, seq, row_hash FROM chain_anchor_heads ORDER BY anchor_id, account_id",
        )
    )
    signatures: dict[int, bytes] = {}
    prev_signature: bytes | None = None
    for id_, anchored_at, audit_seq, audit_hash, n_heads, digest, stored_prev, signature in _stream(
        conn,
        "chain_anchors",
        "SELECT id, anchored_at, audit_chain_seq, audit_row_hash, heads, digest,"
        " prev_signature, signature FROM chain_anchors ORDER BY id",
    ):
        report.anchors += 1
        signature = bytes(signature)
        signatures[id_] = signature
        own: list[tuple[uuid.UUID, int, bytes]] = []
        while heads.head is not None and heads.head[0] < id_:
            report.add("anchor", "orphan_anchor_heads", anchor_id=heads.head[0])
            heads.advance()
        while heads.head is not None and heads.head[0] == id_:
            own.append((heads.head[1], heads.head[2], bytes(heads.head[3])))
            heads.advance()
        stored_prev = bytes(stored_prev) if stored_prev is not None else None
        if stored_prev != prev_signature:
            report.add("anchor", "anchor_link_broken", anchor_id=id_)
        audit_head = (int(audit_seq), bytes(audit_hash)) if audit_seq is not None else None
        recomputed = anchor_digest(id_, anchored_at, stored_prev, audit_head, own)
        if recomputed != bytes(digest) or n_heads != len(own):
            report.add("anchor", "anchor_digest_mismatch", anchor_id=id_)
        if key is not None and not hmac.compare_digest(sign(key, recomputed), signature):
            report.add("anchor", "anchor_signature_invalid", anchor_id=id_)
        prev_signature = signature
    while heads.head is not None:
        report.add("anchor", "orphan_anchor_heads", anchor_id=heads.head[0])
        heads.advance()
    report.signatures_checked = key is not None
    if key is None and report.anchors:
        report.warnings.append("no anchor key: anchor signatures were not checked")
    return signatures


def _verify_log(report: ChainReport, signatures: dict[int, bytes], log_path: Path) -> None:
    for number, line in enumerate(log_path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            anchor_id, signature = int(parts[0]), bytes.fromhex(parts[2])
        except (ValueError, IndexError):
            report.add("anchor", "anchor_log_unreadable", line=number)
            continue
        report.log_entries_checked += 1
        if anchor_id not in signatures:
            report.add("anchor", "anchor_missing", anchor_id=anchor_id)
        elif signatures[anchor_id] != signature:
            report.add("anchor", "anchor_log_mismatch", anchor_id=anchor_id)


def verify_chains(conn: Any, *, key: bytes | None = None, log_path: Path | None = None) -> ChainReport:
    """Recompute every chain from its rows and check it against the stored hashes, the anchors and (when
    ``log_path`` exists) the anchor log. ``conn`` must not be inside a transaction: the whole check reads one
    ``REPEATABLE READ READ ONLY`` snapshot, streamed through server-side cursors in chain order."""
    report = ChainReport()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        signatures = _verify_anchors(conn, report, key)
        _verify_ledger(conn, report)
        _verify_audit(conn, report)
    if log_path is not None and log_path.exists():
        _verify_log(report, signatures, log_path)
    return report
