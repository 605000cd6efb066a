"""Operations: ``/healthz`` and ``/metrics`` (both public)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from ...db.migrate import HEAD
from ..body import StrictJSONRoute
from ..context import Api
from ..render import json_response

HEARTBEAT = "mark-to-market"
CALENDAR_HEARTBEAT = "calendar-sync"
DB_TIMEOUT_SECONDS = 2.0


def calendar_check(beat: Any, now: Any, interval_s: float, margin_s: float) -> dict[str, Any]:
    """The ``calendar_sync_worker`` check: ok when the last heartbeat is younger than two intervals plus a
    margin (one missed cycle is tolerated) and the last cycle had no error. The interval is the one the worker
    recorded in its heartbeat (a ``--interval`` or a test may differ from the settings), else the settings'."""
    check: dict[str, Any] = {"name": CALENDAR_HEARTBEAT}
    if beat is None:
        check.update(
            ok=False,
            reason="no heartbeat recorded",
            age_seconds=None,
            last_beat_at=None,
            stale_after_seconds=round(2 * interval_s + margin_s, 3),
        )
        return check
    details = beat["details"] if isinstance(beat["details"], dict) else {}
    recorded = details.get("interval_s")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool) and recorded > 0:
        interval_s = float(recorded)
    stale_after = 2 * interval_s + margin_s
    age = (now - beat["beat_at"]).total_seconds()
    error = details.get("error")
    check.update(
        ok=age <= stale_after and not error,
        age_seconds=round(age, 3),
        last_beat_at=beat["beat_at"],
        stale_after_seconds=round(stale_after, 3),
        details=details,
    )
    if age > stale_after:
        check["reason"] = "heartbeat is stale"
    elif error:
        check["reason"] = f"last sync failed: {error}"
    return check


def build(api: Api) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, tags=["operations"])
    platform = api.platform

    @router.get("/healthz")
    def healthz() -> Response:
        """Database reachable, migrations current, mark-to-market worker heartbeat age (and, with a Finnhub key,
        the economic-calendar sync worker's).

        200 with ``status`` ``ok`` or ``degraded`` (and why), 503 ``down`` when the database cannot be reached.
        """
        now = platform.clock.now()
        started = time.perf_counter()
        try:
            with platform.db.engine_pool.connection(timeout=DB_TIMEOUT_SECONDS) as c:
                c.execute("SELECT set_config('statement_timeout', '2000', true)")
                version = c.execute("SELECT version_num FROM alembic_version").fetchone()
                beat = c.execute(
                    "SELECT beat_at, details FROM worker_heartbeats WHERE name=%s", (HEARTBEAT,)
                ).fetchone()
                # The calendar worker runs wherever a Finnhub key is configured (serve, demo, or its command).
                calendar_beat = (
                    None
                    if not platform.settings.finnhub_api_key
                    else c.execute(
                        "SELECT beat_at, details FROM worker_heartbeats WHERE name=%s", (CALENDAR_HEARTBEAT,)
                    ).fetchone()
                )
                c.rollback()
        except Exception as exc:
            api.log.warning("healthz_database_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            return json_response(
                {"status": "down", "time": now, "checks": {"database": {"ok": False, "error": type(exc).__name__}}}, 503
            )
        db_ms = round((time.perf_counter() - started) * 1000, 3)
        current = version["version_num"] if version else None
        stale_after = platform.settings.heartbeat_stale_seconds
        worker: dict[str, Any] = {"name": HEARTBEAT, "stale_after_seconds": stale_after}
        if beat is None:
            worker.update(ok=False, reason="no heartbeat recorded", age_seconds=None, last_beat_at=None)
        else:
            age = (now - beat["beat_at"]).total_seconds()
            worker.update(
                ok=age <= stale_after, age_seconds=round(age, 3), last_beat_at=beat["beat_at"], details=beat["details"]
            )
            if age > stale_after:
                worker["reason"] = "heartbeat is stale"
        checks: dict[str, dict[str, Any]] = {
            "database": {"ok": True, "latency_ms": db_ms},
            "migrations": {"ok": current == HEAD, "current": current, "head": HEAD},
            "mark_to_market_worker": worker,
        }
        if platform.settings.finnhub_api_key:
            # Counted like the other checks: a stale or failing sync makes the status "degraded" (still 200; only
            # an unreachable database is 503), since the news rule then works from an outdated calendar.
            checks["calendar_sync_worker"] = calendar_check(
                calendar_beat, now, platform.settings.calendar_sync_hours * 3600, stale_after
            )
        status = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
        return json_response({"status": status, "time": now, "checks": checks})

    @router.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition: requests, order latency, gate rejections, mark-to-market cycles."""
        return Response(platform.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
