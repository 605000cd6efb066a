"""The economic-calendar sync worker: keep ``economic_events`` current from Finnhub, and say so in a heartbeat.

One cycle asks Finnhub for the days ``today - days_back .. today + days_ahead`` (``today`` from the injected
clock, UTC) through :meth:`EconomicCalendar.sync_finnhub` and upserts them (idempotent: an unchanged event is
counted, not rewritten), then upserts a row into ``worker_heartbeats`` (``name = 'calendar-sync'``) with the
cycle's ``inserted``/``updated``/``unchanged`` counts, the ``range`` and the ``error``. ``/healthz`` reports
the heartbeat's age and last error when a Finnhub key is configured.

The same class runs from ``propdesk worker calendar-sync`` (in the main thread, stopped by SIGTERM/SIGINT) and
inside ``propdesk serve`` / ``propdesk demo`` when ``PROPDESK_FINNHUB_API_KEY`` is set (a daemon thread, stopped
through its ``stop`` event).

Failures
    A failing cycle (HTTP 429 or 5xx, a refused key, the network, the database) is logged and heartbeated with
    its error; the loop goes on. The next try comes sooner than the normal cadence but backs off
    (:func:`retry_delay`: 60 s, 120 s, 240 s ... never more than the interval), so a short outage is bridged in
    a minute and a long one costs one request per interval. A 401/403 says the key was refused: retrying does
    not fix a wrong key, but a key re-enabled at the provider is picked up without a restart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import logs
from ..marketdata.calendar import CalendarError, EconomicCalendar
from .loop import Cycle, WorkerLoop

if TYPE_CHECKING:
    from ..bootstrap import Platform

HEARTBEAT_NAME = "calendar-sync"
RETRY_BASE_SECONDS = 60.0
KEY_REFUSED_STATUSES = (401, 403)


def retry_delay(interval_s: float, failures: int, base_s: float = RETRY_BASE_SECONDS) -> float:
    """Seconds from the end of a cycle to the next one after ``failures`` consecutive failed cycles: the
    interval when the last cycle succeeded (``failures == 0``), else ``base_s * 2 ** (failures - 1)`` capped at
    the interval (a worker on a short cadence never waits longer than it would have anyway)."""
    if interval_s <= 0 or base_s <= 0:
        raise ValueError("interval_s and base_s must be positive")
    if failures <= 0:
        return interval_s
    return min(interval_s, base_s * 2.0 ** min(failures - 1, 32))  # the exponent is capped: no float overflow


def describe_error(exc: BaseException) -> tuple[str, int | None]:
    """The heartbeat's error text for a failed cycle, and the provider's HTTP status if there was one."""
    status = exc.status_code if isinstance(exc, CalendarError) else None
    if status in KEY_REFUSED_STATUSES:
        text = f"Finnhub refused the API key (HTTP {status}): check PROPDESK_FINNHUB_API_KEY; provider said: {exc}"
    elif status == 429:
        text = f"Finnhub rate limit reached (HTTP 429), retrying later: {exc}"
    elif isinstance(exc, CalendarError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:1000], status


@dataclass
class CycleResult:
    """What one cycle did. ``error`` is set when the cycle failed (then nothing was written)."""

    cycle: int
    started_at: datetime
    range_from: date
    range_to: date
    duration_s: float = 0.0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    status_code: int | None = None
    failures: int = 0  # consecutive failed cycles, this one included
    next_in_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def key_refused(self) -> bool:
        return self.status_code in KEY_REFUSED_STATUSES

    def details(self) -> dict[str, Any]:
        """The heartbeat's ``details`` and the CLI's ``--json`` line."""
        return {
            "cycle": self.cycle,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_s * 1000, 3),
            "range": {"from": self.range_from.isoformat(), "to": self.range_to.isoformat()},
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "error": self.error,
            "status_code": self.status_code,
            "key_refused": self.key_refused,
            "consecutive_failures": self.failures,
            "next_in_s": round(self.next_in_s, 3),
            "ok": self.ok,
        }


class CalendarSyncWorker(WorkerLoop):
    """Syncs the economic calendar from Finnhub every ``interval_s`` seconds until ``stop`` is set.

    ``client`` (a ``finnhub.Client``) replaces the key from the settings; ``base_url`` replaces
    ``PROPDESK_FINNHUB_BASE_URL``. Without either a key or a client the worker cannot run (``ValueError``)."""

    def __init__(
        self,
        platform: Platform,
        *,
        interval_s: float | None = None,
        days_back: int = 1,
        days_ahead: int = 14,
        stop: threading.Event | None = None,
        client: Any = None,
        base_url: str | None = None,
        name: str = HEARTBEAT_NAME,
    ):
        settings = platform.settings
        if days_back < 0 or days_ahead < 0:
            raise ValueError("days_back and days_ahead must not be negative")
        self.source: Any = client if client is not None else settings.finnhub_api_key
        if not self.source:
            raise ValueError("the calendar sync worker needs a Finnhub API key: set PROPDESK_FINNHUB_API_KEY")
        super().__init__(
            platform,
            name=name,
            stop=stop,
            log=logs.get("propdesk.workers.calendar_sync"),
            interval_s=float(interval_s if interval_s is not None else settings.calendar_sync_hours * 3600),
            identity={"days_back": days_back, "days_ahead": days_ahead},
        )
        self.base_url = base_url if base_url is not None else settings.finnhub_base_url
        self.days_back = days_back
        self.days_ahead = days_ahead
        self.failures = 0
        self.last: CycleResult | None = None
        self._calendar = EconomicCalendar(platform.db, platform.clock, platform.catalogue)

    # ------------------------------------------------------------------ one cycle
    def run_once(self) -> CycleResult:
        """Run one cycle. Never raises for a failure inside the cycle: it is logged and heartbeated."""
        self.cycles += 1
        now = self.platform.clock.now()
        today = now.date()  # the clock is aware UTC, so this is the UTC day
        result = CycleResult(
            self.cycles, now, today - timedelta(days=self.days_back), today + timedelta(days=self.days_ahead)
        )
        started = time.perf_counter()
        try:
            counts = self._calendar.sync_finnhub(self.source, result.range_from, result.range_to, self.base_url)
            result.inserted, result.updated, result.unchanged = counts.inserted, counts.updated, counts.unchanged
        except Exception as exc:
            result.error, result.status_code = describe_error(exc)
            # A provider answer is expected now and then; anything else (a bug, the database) gets its trace.
            unexpected = not isinstance(exc, CalendarError)
            self._log.error(
                "calendar_sync_failed",
                cycle=result.cycle,
                error=result.error,
                status_code=result.status_code,
                key_refused=result.key_refused,
                exc_info=unexpected,
            )
        result.duration_s = time.perf_counter() - started
        self.failures = 0 if result.ok else self.failures + 1
        result.failures = self.failures
        result.next_in_s = retry_delay(self.interval_s, self.failures)
        if result.ok:
            self._log.info("calendar_sync", **result.details())
        self._beat(result)
        self.last = result
        return result

    def wait_after(self, result: Cycle) -> float:
        """Every ``interval_s`` after a success, sooner after a failure (``retry_delay``)."""
        return max(0.0, retry_delay(self.interval_s, self.failures) - result.duration_s)


def start_if_configured(platform: Platform) -> CalendarSyncWorker | None:
    """For ``serve`` and ``demo``: start the worker in a thread when a Finnhub key is configured, and log one
    line either way (so an operator can tell why the calendar is, or is not, kept current)."""
    log = logs.get("propdesk.workers.calendar_sync")
    settings = platform.settings
    if not settings.finnhub_api_key:
        log.info(
            "calendar_sync_disabled",
            reason="PROPDESK_FINNHUB_API_KEY is not set: the economic calendar is "
            "not synced automatically (import it with `propdesk calendar import|sync`)",
        )
        return None
    worker = CalendarSyncWorker(platform)
    log.info(
        "calendar_sync_enabled",
        interval_hours=settings.calendar_sync_hours,
        days_back=worker.days_back,
        days_ahead=worker.days_ahead,
        base_url=settings.finnhub_base_url or "https://finnhub.io/api/v1",
    )
    worker.start()
    return worker
