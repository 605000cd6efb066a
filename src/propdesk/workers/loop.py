"""What every background worker shares: a cycle loop stopped through an Event, in a daemon thread (``serve``,
``demo``) or in the foreground (``propdesk worker ...``), and a heartbeat row per cycle in ``worker_heartbeats``
that ``/healthz`` reads. A worker says what one cycle is (``run_once``) and how long to wait after it."""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..bootstrap import Platform


class Cycle(Protocol):
    """The result of one cycle: how long it took and the heartbeat's ``details``."""

    duration_s: float

    def details(self) -> dict[str, Any]: ...


class WorkerLoop:
    """The loop, the thread and the heartbeat of a worker; subclasses implement ``run_once``."""

    def __init__(
        self,
        platform: Platform,
        *,
        name: str,
        interval_s: float,
        stop: threading.Event | None,
        log: Any,
        identity: dict[str, Any] | None = None,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.platform = platform
        self.name = name
        self.interval_s = float(interval_s)
        self.stop_event = stop or threading.Event()
        self.cycles = 0
        self._thread: threading.Thread | None = None
        self._log = log
        self._identity = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "interval_s": self.interval_s,
            **(identity or {}),
        }

    def run_once(self) -> Cycle:
        """One cycle. Must not raise for a failure inside the cycle: log it and heartbeat it."""
        raise NotImplementedError

    def wait_after(self, result: Cycle) -> float:
        """Seconds to wait after ``result`` before the next cycle: cycles start every ``interval_s`` (or at once
        after a slow one)."""
        return max(0.0, self.interval_s - result.duration_s)

    def _beat(self, result: Cycle) -> None:
        from psycopg.types.json import Jsonb

        details = {**result.details(), **self._identity}
        try:
            with self.platform.db.tx() as c:
                c.execute(
                    "INSERT INTO worker_heartbeats (name, beat_at, details) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET beat_at = EXCLUDED.beat_at, details = EXCLUDED.details",
                    (self.name, self.platform.clock.now(), Jsonb(details)),
                )
        except Exception as exc:  # the database may be down; the next cycle tries again
            self._log.error("heartbeat_failed", worker=self.name, error=f"{type(exc).__name__}: {exc}")

    def run(self) -> None:
        """Cycle until the stop event is set."""
        self._log.info("worker_started", worker=self.name, **self._identity)
        while not self.stop_event.is_set():
            result = self.run_once()
            self.stop_event.wait(self.wait_after(result))
        self._log.info("worker_stopped", worker=self.name, cycles=self.cycles)

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread (for ``serve`` and ``demo``)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._thread = threading.Thread(target=self.run, name=f"propdesk-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 30.0) -> None:
        """Ask the loop to stop and wait for the cycle in progress to finish."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
