"""Price to committed liquidation (part of ``propdesk bench tick``): a burst of breaches through ``RiskEngine``.

In a scratch PostgreSQL database (``bench_database``: on ``DATABASE_URL``'s server, else the embedded one) ``n``
accounts of 10,000 USD each hold 5 lots of EURUSD (550,000 EUR of exposure, a little more for some so exposures
differ). One price 1% lower puts every one of them under the safety net (50% drawdown). Measured per account:
from the moment the engine receives that price (``RiskEngine.on_quote``) until the account's liquidation
transaction committed (the execution core's ``process_triggers`` under the account lock: re-judged at the
triggering quote, every position closed, status ``liquidated``), through the engine's bounded pool (``workers``),
largest exposure first. ``correct``: every account liquidated exactly once (one liquidation fill each).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from .common import ProgressFn, no_progress, percentile

__all__ = ["committed_liquidations"]


def committed_liquidations(
    settings: Any, *, accounts: int = 200, workers: int = 4, progress: ProgressFn = no_progress
) -> tuple[dict[str, Any], list[str]]:
    """Returns (metrics, problems)."""
    from ..bootstrap import open_platform
    from ..domain.orders import OrderRequest, Side
    from ..domain.policy import ExecutionPolicy
    from ..domain.quotes import Quote
    from ..engine.live import RiskEngine
    from ..execution.service import CreateAccount
    from .orders import bench_database, bench_settings

    problems: list[str] = []
    with bench_database(settings) as (admin_url, kind):
        b_settings, _pool = bench_settings(settings, workers + 2)
        b_settings = b_settings.model_copy(update={"risk_engine": "off"})  # the bench builds its own engine
        platform = open_platform(b_settings, admin_url=admin_url, migrate=True, configure_logs=False)
        engine = None
        try:
            ex = platform.execution
            now = platform.clock.now()
            platform.quotes.put(Quote("EURUSD", Decimal("1.09990"), Decimal("1.10010"), now, 0, "bench"))
            policy = ExecutionPolicy(
                starting_balance=Decimal(10000),
                max_notional=Decimal(10) ** 9,
                max_position_equity_pct=Decimal(100000),
                max_leverage=Decimal(500),
                fee_bps=Decimal(0),
            )
            ids = []
            for i in range(accounts):
                acc, _ = ex.create_account(CreateAccount(owner_id=f"bench-liq-{i}", policy=policy, start=True))
                lots = Decimal(5) + Decimal(i % 10) / 10
                out = ex.submit_order(acc["id"], OrderRequest("EURUSD", Side.BUY, lots))
                if not out.accepted:
                    problems.append(f"liquidation sample: order refused: {out.rejection}")
                    break
                ids.append(acc["id"])
            progress("tick: liquidation sample opened", 0.02)
            latest = [q for q in (platform.quotes.latest(s) for s in platform.catalogue.symbols()) if q is not None]
            engine = RiskEngine.open(ex, platform.db, platform.catalogue, latest, workers=workers)
            crash = platform.quotes.put(
                Quote("EURUSD", Decimal("1.08890"), Decimal("1.08910"), platform.clock.now(), 0, "bench")
            )
            assert crash is not None
            t0 = time.perf_counter()
            res = engine.on_quote(crash)
            wall = time.perf_counter() - t0
            lat = sorted(engine.stats.price_to_committed)
            with platform.db.read() as c:
                row = c.execute(
                    "SELECT (SELECT count(*) FROM accounts WHERE id = ANY(%s) AND status = 'liquidated') AS accounts,"
                    " (SELECT count(*) FROM fills f JOIN orders o ON o.id = f.order_id"
                    "  WHERE f.account_id = ANY(%s) AND o.purpose = 'liquidation') AS fills",
                    (ids, ids),
                ).fetchone()
            liquidated, fills = (int(row["accounts"]), int(row["fills"])) if row is not None else (0, 0)
            if liquidated != len(ids) or fills != len(ids) or res["liquidations"] != len(ids):
                problems.append(
                    f"liquidation sample: {liquidated} of {len(ids)} liquidated, {fills} liquidation fills,"
                    f" engine reported {res['liquidations']}"
                )
            metrics = {
                "liquidation_accounts": len(ids),
                "liquidation_workers": workers,
                "liquidation_database": kind,
                "price_to_committed_ms_p50": round(percentile(lat, 50) * 1e3, 2) if lat else None,
                "price_to_committed_ms_p99": round(percentile(lat, 99) * 1e3, 2) if lat else None,
                "price_to_committed_ms_max": round(lat[-1] * 1e3, 2) if lat else None,
                "liquidation_burst_s": round(wall, 3),
                "liquidations_per_s": round(len(ids) / wall, 1) if wall else 0.0,
            }
            progress("tick: liquidation sample done", 0.03)
            return metrics, problems
        finally:
            if engine is not None:
                engine.close()
            platform.close()
