"""``bench tick`` and ``bench memory`` at tiny sizes: their results are correct (never a timing assertion).

``tick`` checks every trigger and breach of a sample of accounts against the slow exact path (Decimal) and counts
false candidates; ``memory`` checks the book holds every account and position and its equity equals a recompute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from propdesk.bench import memory, tick

pytestmark = pytest.mark.integration


def test_bench_tick_is_correct_at_a_tiny_size() -> None:
    result = tick.run(accounts=400, positions_per_account=5, ticks=300, trials=1, sample=25, seed=7)
    assert result.correct, result.problems
    assert result.scenario == "tick"
    assert result.metrics["sample_accounts"] == 25
    assert result.metrics["positions"] == 400 * 5
    assert set(result.to_json()) == {"scenario", "params", "metrics", "limit", "ratio_to_limit", "correct", "machine"}


def test_bench_tick_generates_prices_when_the_shared_data_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tick, "shared_market_dir", lambda: None)
    result = tick.run(accounts=200, positions_per_account=3, ticks=150, trials=1, sample=10, seed=3)
    assert result.correct, result.problems
    assert result.params["data"].startswith("generated")


def test_bench_memory_is_correct_at_a_tiny_size() -> None:
    result = memory.run(accounts=2000, positions_per_account=5)
    assert result.scenario == "memory"
    assert result.metrics["positions"] == 2000 * 5
    assert result.metrics["equity_drift"] <= 1e-6


def test_bench_tick_measures_price_to_committed_liquidation(db_url: str) -> None:
    from propdesk.settings import Settings

    settings = Settings(database_url=db_url, db_role_prefix="pdtest")
    result = tick.run(
        settings, accounts=200, positions_per_account=3, ticks=100, trials=1, sample=10, seed=3, liquidations=12
    )
    assert result.correct, result.problems
    m = result.metrics
    assert m["liquidation_accounts"] == 12
    assert (
        m["price_to_committed_ms_p50"] is not None and m["price_to_committed_ms_p99"] >= m["price_to_committed_ms_p50"]
    )


def test_bench_tick_and_memory_are_propdesk_commands(db_url: str, tmp_path: Path) -> None:
    import json

    from tests.integration.test_cli import run_cli

    tick_run = run_cli(
        *("bench", "tick", "--accounts", "200", "--positions-per-account", "3", "--ticks", "60", "--trials", "1"),
        *("--sample", "8", "--liquidations", "4", "--workers", "2", "--json"),
        db_url=db_url,
        data_dir=tmp_path,
    )
    assert tick_run.returncode == 0, tick_run.stderr[-3000:]
    out = json.loads(tick_run.stdout.splitlines()[-1])
    assert out["scenario"] == "tick" and out["correct"] is True
    assert out["metrics"]["liquidation_accounts"] == 4 and out["metrics"]["price_to_committed_ms_p99"] > 0
    mem = run_cli("bench", "memory", "--accounts", "5000", "--json", db_url=db_url, data_dir=tmp_path)
    assert mem.returncode == 0, mem.stderr[-3000:]
    assert json.loads(mem.stdout.splitlines()[-1])["scenario"] == "memory"
