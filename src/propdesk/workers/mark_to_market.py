"""The mark-to-market worker: reprice every open position on a cadence, and say so in a heartbeat.

One cycle refreshes the quote store from the database (other processes write quotes), asks the execution core
to mark every account that holds positions (``ExecutionService.mark_all``: one transaction per account; one
account's failure is recorded in the admin audit log and the rest go on), records the cycle time and failures
in the platform's metrics, and upserts a row into ``worker_heartbeats`` (``name = 'mark-to-market'``) with the
last cycle's figures. ``/healthz`` reports the heartbeat's age.

The same class runs from ``propdesk worker mark-to-market`` (in the main thread, stopped by SIGTERM/SIGINT)
and inside ``propdesk serve`` / ``propdesk demo`` (in a daemon thread, stopped through its ``stop`` event).
A failing cycle (say the database is restarting) is logged, counted and heartbeated; the loop goes on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import logs
from .loop import WorkerLoop

if TYPE_CHECKING:
    from ..bootstrap import Platform

HEARTBEAT_NAME = "mark-to-market"


@dataclass
class CycleResult:
    """What one cycle did. ``error`` is set when the cycle as a whole failed (no account was marked)."""

    cycle: int
    started_at: datetime
    duration_s: float = 0.0
    accounts: int = 0
    marked: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def details(self) -> dict[str, Any]:
        """The heartbeat's ``details`` and the CLI's ``--json`` line."""
        return {
            "cycle": self.cycle,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_s * 1000, 3),
            "accounts": self.accounts,
            "marked": self.marked,
            "failed": len(self.failed),
            "failures": self.failed[:20],
            "error": self.error,
            "ok": self.ok,
        }


#: Every this many cycles the in-process risk engine's book is rebuilt from PostgreSQL (drift bound).
RESYNC_EVERY = 12


class MarkToMarketWorker(WorkerLoop):
    """Marks every open position every ``interval_s`` seconds until ``stop`` is set."""

    def __init__(
        self,
        platform: Platform,
        *,
        interval_s: float | None = None,
        stop: threading.Event | None = None,
        name: str = HEARTBEAT_NAME,
    ):
        super().__init__(
            platform,
            name=name,
            stop=stop,
            log=logs.get("propdesk.workers.mark_to_market"),
            interval_s=float(interval_s if interval_s is not None else platform.settings.mtm_interval_seconds),
        )
        self.last: CycleResult | None = None
        from .anchor import ChainAnchorer

        # Tamper evidence: the heads of the hash chains that moved are signed on this cadence (docs/TAMPER_EVIDENCE.md).
        self.anchorer = ChainAnchorer(
            platform.db, platform.settings.data_dir, interval_s=platform.settings.anchor_interval_seconds
        )

    # ------------------------------------------------------------------ one cycle
    def run_once(self) -> CycleResult:
        """Run one cycle. Never raises for a failure inside the cycle: it is logged, counted and heartbeated."""
        self.cycles += 1
        p = self.platform
        result = CycleResult(self.cycles, p.clock.now())
        started = time.perf_counter()
        try:
            p.quotes.refresh()
            summary = p.execution.mark_all()
            result.accounts = int(summary.get("accounts", 0))
            result.marked = int(summary.get("marked", 0))
            result.failed = list(summary.get("failed", []))
            # Day boundaries are crossed on the same cadence: a day pause lifts and an expiry lands even on an
            # account with no open position (rolling is idempotent, so a separate eod worker may run too).
            rolled = p.execution.roll_all()
            result.failed += list(rolled.get("failed", []))
            engine = getattr(p.execution, "risk_engine", None)
            if engine is not None:
                # The in-process risk engine on the same cadence: changes committed between prices (a day roll, an
                # expiry) reach the book, and every RESYNC_EVERY cycles the book is rebuilt from PostgreSQL.
                if self.cycles % RESYNC_EVERY == 0:
                    engine.resync()
                engine.poll_outbox()
            self.anchorer.maybe_anchor(p.clock.now())
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:1000]
            self._log.error("mark_to_market_cycle_failed", cycle=result.cycle, error=result.error, exc_info=True)
        result.duration_s = time.perf_counter() - started
        m = p.metrics
        m.mtm_cycle_seconds.observe(result.duration_s)
        m.mtm_accounts.set(result.marked)
        # Account failures count one each; a cycle that failed as a whole counts once.
        failures = len(result.failed) + (1 if result.error else 0)
        if failures:
            m.mtm_failures.inc(failures)
        if result.failed:
            self._log.warning(
                "mark_to_market_account_failures",
                cycle=result.cycle,
                failed=len(result.failed),
                accounts=result.accounts,
                first=result.failed[0],
            )
        else:
            self._log.debug("mark_to_market_cycle", **result.details())
        self._beat(result)
        self.last = result
        return result


def read_heartbeat(platform: Platform, name: str = HEARTBEAT_NAME) -> dict[str, Any] | None:
    """The heartbeat row of worker ``name`` (``beat_at``, ``details``), or None if it never beat."""
    with platform.db.read() as c:
        row = c.execute("SELECT name, beat_at, details FROM worker_heartbeats WHERE name = %s", (name,)).fetchone()
    return dict(row) if row is not None else None
