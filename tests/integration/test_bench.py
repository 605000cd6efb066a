"""``propdesk bench``: one JSON line in the contract's shape, with a correctness check that can fail.

Figures are never asserted (PERFORMANCE.md: benchmarks are commands, not timed tests); shapes and
correctness are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

CONTRACT_KEYS = {"scenario", "params", "metrics", "limit", "ratio_to_limit", "correct", "machine"}


def bench(*args: str, db_url: str, data_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(data_dir)})
    proc = subprocess.run(
        [sys.executable, "-m", "propdesk", "bench", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout: {proc.stdout!r}\nstderr: {proc.stderr[-4000:]}"
    return proc, json.loads(lines[0])


def test_bench_pretrade_prints_one_correct_json_line(db_url: str, tmp_path: Path) -> None:
    from propdesk.domain.rules.schema import PRETRADE_RULES

    proc, out = bench(
        "pretrade", "--calls", "2000", "--trials", "2", "--sample", "1500", db_url=db_url, data_dir=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert set(out) == CONTRACT_KEYS
    assert out["scenario"] == "pretrade" and out["correct"] is True
    p, m = out["params"], out["metrics"]
    # The full check: every execution gate, then every pre-trade rule of the strictest preset.
    assert p["preset"] == "strict-risk@100k"
    assert p["pretrade_rules"] == list(PRETRADE_RULES) and len(p["gates"]) == 20
    assert p["open_positions"] == 4 and p["resting_orders"] >= 1 and p["calendar_events"] >= 3
    assert m["rules_evaluated"] == len(p["gates"]) + len(p["pretrade_rules"]) >= 20
    assert m["verdict_mismatches"] == 0 and m["sample_orders"] == 1500
    # The sample exercises most rejection reasons, gates and rules, not just acceptances.
    assert m["sample_accepted"] > 0 and m["sample_gate_rejections"] > 0 and m["sample_rule_rejections"] > 0
    assert m["sample_rejection_codes"] >= 20
    assert m["sample_rules_violated"] >= 8
    assert 0 < m["latency_us_p50"] <= m["latency_us_p99"] <= m["latency_us_max"]
    assert {"latency_us_p50", "latency_us_p99", "throughput_per_s"} <= set(out["limit"])
    assert out["ratio_to_limit"] > 0
    assert out["machine"]["cpus"] >= 1


def test_bench_orders_prints_one_correct_json_line_and_leaves_no_scratch_database(
    db_url: str, pg_admin_url: str, tmp_path: Path
) -> None:
    proc, out = bench("orders", "--clients", "2", "--trials", "1", "--orders", "10", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(out) == CONTRACT_KEYS
    assert out["scenario"] == "orders" and out["correct"] is True
    m = out["metrics"]
    # 2 clients x (4 warm-up + 10 timed) orders, every one filled, every account recomputed clean.
    assert m["orders_sent"] == m["fills_total"] == 28
    assert m["accounts_verified"] == 2 and m["recompute_mismatches"] == 0
    assert 0 < m["latency_us_p50"] <= m["latency_us_p99"] <= m["latency_us_max"]
    assert out["limit"]["throughput_per_s"] > 0 and out["ratio_to_limit"] > 0
    assert out["params"]["database"] == "external" and out["params"]["clients"] == 2
    assert out["machine"]["postgres"]["fsync"] in ("on", "off")
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'propdesk_bench_%'").fetchall()
    assert left == []


def test_bench_orders_refuses_fewer_accounts_than_clients(db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(tmp_path)})
    proc = subprocess.run(
        [sys.executable, "-m", "propdesk", "bench", "orders", "--clients", "4", "--accounts", "2", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--accounts" in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------ the checks can fail
@pytest.mark.parametrize("forgotten", ["notional_exceeded", "max_risk_per_trade", "news_trading", "weekend_trading"])
def test_the_pretrade_check_catches_an_inline_reference_that_disagrees(
    monkeypatch: pytest.MonkeyPatch, forgotten: str
) -> None:
    """An inline reference that forgets one gate or one rule is caught by the verdict comparison."""
    from propdesk.bench import pretrade

    real = pretrade.make_inline

    def sloppy(*a: Any, **kw: Any) -> Any:
        inline = real(*a, **kw)
        return lambda req, st: [c for c in inline(req, st) if c != forgotten]

    monkeypatch.setattr(pretrade, "make_inline", sloppy)
    result = pretrade.run(calls=200, trials=1, sample=3000)
    assert result.correct is False
    assert result.metrics["verdict_mismatches"] > 0


def test_the_pretrade_check_catches_trading_hours_judged_in_the_wrong_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample holds a BST day: hours judged in UTC instead of Europe/London disagree."""
    from datetime import time

    from propdesk.bench import pretrade
    from propdesk.domain.rules.calendar import TradingCalendar

    real = pretrade.make_inline
    monkeypatch.setattr(
        pretrade, "make_inline", lambda rules, cal, *a, **kw: real(rules, TradingCalendar("UTC", time(0)), *a, **kw)
    )
    result = pretrade.run(calls=200, trials=1, sample=3000)
    assert result.correct is False and result.metrics["verdict_mismatches"] > 0


def test_the_pretrade_timed_orders_reach_every_gate_and_rule() -> None:
    """Each timed order passes every gate and every rule of the preset, so between them all of it runs
    (market-open, resting limit, increase); the path does consult the rulebook after the gates."""
    from dataclasses import replace

    from propdesk.bench import pretrade
    from propdesk.domain import gates as G
    from propdesk.domain.rules.schema import PRETRADE_RULES

    rules, cal = pretrade.load_rules()
    assert set(PRETRADE_RULES) <= set(rules)  # the strictest preset enables every pre-trade rule
    quotes, rates = pretrade.market()
    state = pretrade.account_state(quotes, rates)
    scenes = pretrade.scenes(rules, cal, pretrade.calendar())
    now = scenes[0]
    assert now.now == pretrade.NOW
    for req in pretrade.timed_orders():
        inst = pretrade.DEFAULT_CATALOGUE.get(req.symbol)
        assert inst is not None
        assert (
            G.check_order(
                req, state, inst, G.MarketContext(quotes[req.symbol], rates[inst.quote_currency], pretrade.NOW)
            )
            is None
        )
        assert list(now.path(req, state)) == [] and list(now.inline(req, state)) == []
        # The same order without its stop loss passes the gates but not the rulebook.
        bare = replace(req, stop_loss=None)
        assert list(now.path(bare, state)) == ["max_risk_per_trade"]
    kinds = {(r.order_type.value, r.symbol in state.positions) for r in pretrade.timed_orders()}
    assert kinds == {("market", False), ("limit", False), ("market", True)}
    assert len(state.positions) == 4 and len(state.resting_orders) == 3
    assert state.equity > Decimal(0)
    # On a Saturday the same orders meet the trading hours and the weekend rule.
    saturday = next(sc for sc in scenes if sc.now.weekday() == 5)
    market_order = pretrade.timed_orders()[0]
    assert set(saturday.path(market_order, state)) == {"trading_hours", "weekend_trading"}
    assert set(saturday.inline(market_order, state)) == {"trading_hours", "weekend_trading"}
