"""``propdesk bench quotes --json``: one correct JSON line in the contract's shape (figures never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONTRACT_KEYS = {"scenario", "params", "metrics", "limit", "ratio_to_limit", "correct", "machine"}


def test_bench_quotes_prints_one_correct_json_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env["PROPDESK_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "propdesk", "bench", "quotes", "--ticks", "3000", "--trials", "2", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout: {proc.stdout!r}\nstderr: {proc.stderr[-4000:]}"
    out = json.loads(lines[0])
    assert proc.returncode == 0, proc.stderr
    assert set(out) == CONTRACT_KEYS and out["scenario"] == "quotes" and out["correct"] is True
    m = out["metrics"]
    assert m["ticks_parsed"] > 0
    assert m["ticks_accepted"] + m["dropped_out_of_order"] + m["dropped_duplicate"] == m["ticks_parsed"]
    assert m["candle_mismatches"] == 0 and m["sample_minutes"] > 0
    assert m["ticks_per_s"] > 0 and out["limit"]["ticks_per_s"] > 0 and out["ratio_to_limit"] > 0
    assert 0 < m["latency_us_p50"] <= m["latency_us_p99"] <= m["latency_us_max"]
