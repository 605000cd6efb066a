"""A worker that talks to the bus: its own asyncio loop on a daemon thread, its own NATS connection, and one
idempotent close whatever way the worker ends (``run`` returning, ``stop``, an error). The outbox relay and the
risk shards are such workers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .loop import WorkerLoop


class BusWorkerLoop(WorkerLoop):
    """``WorkerLoop`` plus the event loop a bus client runs on. Subclasses set ``self._client`` (a ``BusClient``)
    when they connect, call ``_call(coro)`` from their cycles, and add their own release to ``_release``."""

    def _start_bus_loop(self, thread_name: str) -> None:
        self._client: Any = None
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)
        self._loop_thread.start()
        self._close_lock = threading.Lock()

    def _call(self, coro: Any, timeout_s: float = 60.0) -> Any:
        """Run ``coro`` on the worker's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.close()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self.close()

    def _release(self) -> None:
        """What else the worker lets go of after its connection and loop (a lease); nothing by default."""

    def close(self) -> None:
        """Close the connection, stop the loop, then ``_release`` (idempotent; never raises)."""
        with self._close_lock:
            if self._loop.is_closed():
                return
            if self._client is not None:
                try:
                    self._call(self._client.close(), 10)
                except Exception as exc:  # closing must never raise
                    self._log.warning(f"{self.name}_close_failed", error=repr(exc))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
            self._loop.close()
            self._release()
