"""``bench bus`` at a tiny size: two real processes on the session's nats-server; correctness only (no timing)."""

from __future__ import annotations

import pytest

from propdesk.bench.bus import check_arrivals, make_quotes, run

pytestmark = pytest.mark.integration


def test_bench_bus_runs_two_processes_and_checks_every_quote(nats_url: str) -> None:
    result = run(quotes=300, rate=2000, trials=1, timeout_s=30)
    assert result.correct, result.problems
    out = result.to_json()
    assert out["scenario"] == "bus" and out["ratio_to_limit"] > 0
    assert {"latency_us_p50", "latency_us_p99", "throughput_per_s"} <= set(out["metrics"])


def test_the_check_finds_a_missing_a_reordered_and_an_altered_quote() -> None:
    qs = make_quotes(8)
    rows = [(0, q.symbol, str(q.bid), str(q.ask), q.ts) for q in qs]
    assert check_arrivals(qs, rows) == []
    assert check_arrivals(qs, rows[:-1])
    eur = [i for i, r in enumerate(rows) if r[1] == qs[0].symbol]
    swapped = list(rows)
    swapped[eur[0]], swapped[eur[1]] = swapped[eur[1]], swapped[eur[0]]
    assert check_arrivals(qs, swapped)
    altered = list(rows)
    altered[0] = (0, qs[0].symbol, str(qs[0].bid) + "1", str(qs[0].ask), qs[0].ts)
    assert check_arrivals(qs, altered)
