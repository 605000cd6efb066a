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


def _pool_ok(api: Api, pool: Any) -> dict[str, Any]:
    """Can this pool hand out a working connection now? (Each pool that serves requests is checked.)"""
    try:
        with api.platform.db.connection(pool) as c:
            c.execute("SELECT 1")
            c.rollback()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    stats = pool.get_stats()
    return {"ok": True, "size": stats.get("pool_size"), "available": stats.get("pool_available")}


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


def risk_shards_check(beats: list[Any], now: Any, stale_after_s: float) -> dict[str, Any]:
    """The ``risk_shards`` check from the ``risk-shard-I-of-N`` heartbeats (the deployment's N is the one of the
    latest heartbeat; older deployments' rows are ignored): ok when every shard 0..N-1 beat recently, its lag is
    under its alert level, its circuit breaker is closed and it holds its lease."""
    shards = int((beats[0]["details"] or {}).get("shards") or 0)
    current = {
        int(b["details"].get("shard", -1)): b for b in beats if int((b["details"] or {}).get("shards") or 0) == shards
    }
    out: dict[str, Any] = {"shards": shards, "items": []}
    problems: list[str] = []
    for i in range(shards):
        b = current.get(i)
        if b is None:
            problems.append(f"shard {i}: no heartbeat")
            out["items"].append({"shard": i, "ok": False, "reason": "no heartbeat"})
            continue
        d = b["details"] or {}
        age = (now - b["beat_at"]).total_seconds()
        lag = float(d.get("lag_s") or 0.0)
        alert = float(d.get("lag_alert_s") or 5.0)
        reasons = []
        if age > stale_after_s:
            reasons.append("heartbeat is stale")
        if lag > alert:
            reasons.append(f"lag {lag:.1f} s")
        if d.get("breaker") == "open":
            reasons.append("circuit breaker open")
        if d.get("error"):
            reasons.append(str(d["error"])[:200])
        out["items"].append(
            {
                "shard": i,
                "ok": not reasons,
                "age_seconds": round(age, 3),
                "lag_s": lag,
                "breaker": d.get("breaker"),
                "pending": d.get("pending"),
                "quotes_per_s": d.get("quotes_per_s"),
                **({"reason": "; ".join(reasons)} if reasons else {}),
            }
        )
        problems += [f"shard {i}: {r}" for r in reasons]
    out["ok"] = not problems and shards > 0
    if problems:
        out["reason"] = "; ".join(problems)[:1000]
    return out


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
            with platform.db.connection() as c:
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
                shard_beats = c.execute(
                    "SELECT name, beat_at, details FROM worker_heartbeats WHERE name LIKE 'risk-shard-%%'"
                    " ORDER BY beat_at DESC"
                ).fetchall()
                c.rollback()
        except Exception as exc:
            api.log.warning("healthz_database_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            return json_response(
                {
                    "status": "down",
                    "time": now,
                    "checks": {"database": {"ok": False, "error": type(exc).__name__, **platform.db.health.state()}},
                },
                503,
                {"Retry-After": "2"},
            )
        db_ms = round((time.perf_counter() - started) * 1000, 3)
        pools = {
            name: _pool_ok(api, pool)
            for name, pool in (("app", platform.db.app_pool), ("commands", api.commands.pool))
            if pool is not None
        }
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
            "database": {
                "ok": all(p["ok"] for p in pools.values()),
                "latency_ms": db_ms,
                "pools": {"engine": {"ok": True}, **pools},
            },
            "migrations": {"ok": current == HEAD, "current": current, "head": HEAD},
            "mark_to_market_worker": worker,
        }
        if platform.settings.finnhub_api_key:
            # Counted like the other checks: a stale or failing sync makes the status "degraded" (still 200; only
            # an unreachable database is 503), since the news rule then works from an outdated calendar.
            checks["calendar_sync_worker"] = calendar_check(
                calendar_beat, now, platform.settings.calendar_sync_hours * 3600, stale_after
            )
        if shard_beats:  # a sharded deployment (propdesk worker risk): every shard current and not lagging
            checks["risk_shards"] = risk_shards_check(shard_beats, now, stale_after)
            if not checks["risk_shards"]["ok"]:
                api.log.error("healthz_risk_shards_degraded", reason=checks["risk_shards"].get("reason"))
        if platform.bus is not None:  # cut off from the price bus: every price is stale, orders are refused
            checks["price_bus"] = platform.bus.health()
        status = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
        return json_response({"status": status, "time": now, "checks": checks})

    @router.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text exposition: requests, order latency, gate rejections, mark-to-market cycles."""
        return Response(platform.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
