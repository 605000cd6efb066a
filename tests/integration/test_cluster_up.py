"""`propdesk cluster up --shards 2`: starts the API, two shards and the workers, restarts a child that dies, and
stops everything cleanly on SIGTERM (a bounded smoke test on the test database and bus)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _beats(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        return {r["name"]: r["details"] for r in c.execute("SELECT name, details FROM worker_heartbeats")}


def _until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_cluster_up_starts_supervises_and_stops(db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPDESK_", "PG"))}
    env.update({"DATABASE_URL": db_url, "PROPDESK_DB_ROLE_PREFIX": "pdtest", "PROPDESK_DATA_DIR": str(tmp_path)})
    port, metrics = _free_port(), _free_port()
    logs = tmp_path / "logs"
    argv = [sys.executable, "-m", "propdesk", "cluster", "up", "--shards", "2", "--api-port", str(port)]
    argv += ["--metrics-base-port", str(metrics), "--logs", str(logs)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"API: http://127.0.0.1:{port}", line

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    doc = r.read().decode()
            except OSError:
                return False
            names = set(_beats(db_url))
            return '"risk_shards"' in doc and {"risk-shard-0-of-2", "risk-shard-1-of-2", "outbox-relay"} <= names

        _until(healthy, 120, "the API and both shards")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            assert b"propdesk_risk_breaker_open" in r.read()

        # A shard that dies is restarted by the supervisor.
        pid = _beats(db_url)["risk-shard-1-of-2"]["pid"]
        os.kill(pid, signal.SIGKILL)
        _until(lambda: _beats(db_url)["risk-shard-1-of-2"]["pid"] != pid, 90, "the shard's restart")

        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "restarted risk-shard-1-of-2" in err
    for name in ("api", "risk-shard-0-of-2", "risk-shard-1-of-2", "outbox-relay", "mark-to-market"):
        assert f"stopped {name}" in err
    leftovers = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True)
    assert leftovers.returncode == 1 and leftovers.stdout.strip() == "", leftovers  # no child left behind
