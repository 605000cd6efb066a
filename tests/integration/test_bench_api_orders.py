"""``propdesk bench api-orders``: orders over HTTP to a separate server process, against the in-process path.

Figures are never asserted (PERFORMANCE.md: benchmarks are commands, not timed tests); the contract's shape,
correctness (fills, recompute, idempotent replays) and the server's clean stop are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

CONTRACT_KEYS = {"scenario", "params", "metrics", "limit", "ratio_to_limit", "correct", "machine"}
LATENCY_KEYS = {"latency_us_p50", "latency_us_p99", "latency_us_max", "throughput_per_s"}


def bench_env(db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update(
        {"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(data_dir), **extra}
    )
    return env


def api_orders(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propdesk", "bench", "api-orders", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def scratch_databases(pg_admin_url: str) -> list[Any]:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        return conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'propdesk_bench_%'").fetchall()


def test_bench_api_orders_prints_one_correct_json_line_and_leaves_no_scratch_database(
    db_url: str, pg_admin_url: str, tmp_path: Path
) -> None:
    proc = api_orders("--clients", "2", "--trials", "2", "--orders", "10", env=bench_env(db_url, tmp_path))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout: {proc.stdout!r}\nstderr: {proc.stderr[-4000:]}"
    out = json.loads(lines[0])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(out) == CONTRACT_KEYS
    assert out["scenario"] == "api-orders" and out["correct"] is True
    m, lim, p = out["metrics"], out["limit"], out["params"]
    # 2 clients x (4 warm-up + 2 trials x 10) orders on each path, every one answered 201 with a fill.
    assert m["orders_sent"] == m["fills_total"] == 48 and m["http_errors"] == 0
    assert lim["orders_sent"] == lim["fills_total"] == 48
    # Both paths' accounts (2 + 2) recompute clean; 20 idempotency keys were replayed without a second fill.
    assert m["accounts_verified"] == 4 and m["recompute_mismatches"] == 0
    assert p["replays_checked"] == 20 and p["clients"] == 2 and p["database"] == "external"
    assert set(m) >= LATENCY_KEYS and set(lim) >= LATENCY_KEYS
    assert 0 < m["latency_us_p50"] <= m["latency_us_p99"] <= m["latency_us_max"]
    assert lim["throughput_per_s"] > 0 and out["ratio_to_limit"] > 0
    # Where the time goes: the server's CPU per order, the HTTP clients', the in-process path's.
    assert m["server_cpu_us_per_order"] > 0 and m["client_cpu_us_per_order"] > 0 and lim["cpu_us_per_order"] > 0
    assert out["machine"]["cpus"] >= 1 and len(out["machine"]["loadavg_at_start"]) == 3
    assert out["machine"]["postgres"]["fsync"] in ("on", "off")
    # httpx's per-request narration is silenced (it would be timed and flood stderr).
    assert "HTTP Request:" not in proc.stderr
    assert scratch_databases(pg_admin_url) == []


def test_bench_api_orders_whose_server_cannot_start_fails_clearly_with_exit_2(
    db_url: str, pg_admin_url: str, tmp_path: Path
) -> None:
    """The server binds PROPDESK_HOST: an address this machine does not have stops it at once; the bench says
    so with the server's own reason, prints no result, and still drops its scratch database."""
    proc = api_orders(
        "--clients", "1", "--trials", "1", "--orders", "1", env=bench_env(db_url, tmp_path, PROPDESK_HOST="203.0.113.7")
    )
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert proc.stdout == ""
    assert "the API server (propdesk serve --port 0 --no-worker) exited with code 2" in proc.stderr
    assert "cannot listen on 203.0.113.7" in proc.stderr
    assert scratch_databases(pg_admin_url) == []


def test_bench_api_orders_refuses_fewer_accounts_than_clients(db_url: str, tmp_path: Path) -> None:
    proc = api_orders("--clients", "4", "--accounts", "2", env=bench_env(db_url, tmp_path))
    assert proc.returncode == 2
    assert "--accounts" in proc.stderr
    assert proc.stdout == ""


def test_a_server_that_never_serves_is_reported_and_stopped(tmp_path: Path) -> None:
    """No ``serving`` line within the start timeout: a ServerError with its log lines, and the process is gone."""
    from propdesk.bench.api_orders import ServerError, api_server

    pid_file = tmp_path / "pid"
    script = (
        f"import os, sys, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "print('booting slowly', file=sys.stderr, flush=True); time.sleep(120)"
    )
    started = time.monotonic()
    with (
        pytest.raises(ServerError) as err,
        api_server(dict(os.environ), [sys.executable, "-c", script], start_timeout=1.5),
    ):
        pytest.fail("the server never served")
    assert time.monotonic() - started < 30
    assert "did not serve within 2 s" in str(err.value) and "booting slowly" in str(err.value)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
