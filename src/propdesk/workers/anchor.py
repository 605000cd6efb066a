"""Anchoring the hash chains: sign the heads of the chains that moved, on a cadence (see ``propdesk.db.chain``).

The mark-to-market worker calls ``ChainAnchorer.maybe_anchor(now)`` every cycle; it anchors when
``interval_s`` has passed since its last anchor (the window in which a rewrite by someone holding the database
goes undetected). The key lives outside the database: ``PROPDESK_ANCHOR_KEY`` or ``<data_dir>/chain-anchor.key``
(generated on first use, mode 0600); each anchor's id and signature are appended to
``<data_dir>/chain-anchors.log`` after its commit, which ``verify`` checks when present.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ..db.chain import LOG_FILE, Anchor, anchor, anchor_key, append_anchor_log

DEFAULT_INTERVAL_S = 300.0


def anchor_chains(db: Any, data_dir: Path, now: datetime) -> Anchor | None:
    """Write one anchor (in its own engine transaction) and log it; None when no chain moved."""
    key = anchor_key(data_dir)
    assert key is not None
    with db.tx() as c:
        written = anchor(c, key, now)
    if written is not None:
        append_anchor_log(data_dir / LOG_FILE, written)
    return written


class ChainAnchorer:
    """Anchors at most once per ``interval_s`` by the caller's clock. A failure to anchor propagates (the
    worker's cycle logs and counts it) and is retried on the next call, since ``last_at`` only moves on success."""

    def __init__(self, db: Any, data_dir: Path, *, interval_s: float = DEFAULT_INTERVAL_S):
        self.db = db
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.last_at: datetime | None = None

    def maybe_anchor(self, now: datetime) -> Anchor | None:
        if self.last_at is not None and (now - self.last_at).total_seconds() < self.interval_s:
            return None
        written = anchor_chains(self.db, self.data_dir, now)
        self.last_at = now
        return written
