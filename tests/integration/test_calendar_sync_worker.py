"""The economic-calendar sync worker against the fake Finnhub server on loopback: cycles, idempotency,
provider failures and the backoff, a refused key, clean stops, the command, ``serve`` wiring and ``/healthz``."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.finnhub_server import FakeFinnhub
from tests.integration.test_cli import one_json_line, run_cli, serve_process
from tests.web_kit import open_test_platform, web_client

from propdesk.workers.calendar_sync import HEARTBEAT_NAME, CalendarSyncWorker, retry_delay

pytestmark = pytest.mark.integration

KEY = "good-key"
HOURS = 3600.0


@pytest.fixture
def fake() -> Iterator[FakeFinnhub]:
    """The fake Finnhub with three rows around the test clock's Monday 2026-03-02: yesterday, in three days,
    and three weeks out (beyond the worker's two weeks ahead)."""
    with FakeFinnhub(token=KEY) as server:
        server.events += [
            server.row("2026-03-01 22:00:00", "CN", "Caixin Manufacturing PMI", "medium"),
            server.row("2026-03-05 13:30:00", "US", "Non-Farm Payrolls", "high"),
            server.row("2026-03-23 09:00:00", "DE", "Ifo Business Climate", "medium"),
        ]
        yield server


@pytest.fixture
def platform(db_url: str, clock: Any, fake: FakeFinnhub) -> Iterator[Any]:
    """A platform with a Finnhub key configured and pointed at the fake."""
    p = open_test_platform(db_url, clock, finnhub_api_key=KEY, finnhub_base_url=fake.base_url)
    yield p
    p.close()


def heartbeat(platform: Any) -> dict[str, Any]:
    with platform.db.read() as c:
        row = c.execute("SELECT beat_at, details FROM worker_heartbeats WHERE name = %s", (HEARTBEAT_NAME,)).fetchone()
    assert row is not None, "the worker never beat"
    return {"beat_at": row["beat_at"], **row["details"]}


def titles(platform: Any) -> list[str]:
    with platform.db.read() as c:
        rows = c.execute("SELECT title FROM economic_events WHERE source = 'finnhub' ORDER BY at").fetchall()
    return [r["title"] for r in rows]


# ------------------------------------------------------------------------------------------ one cycle
def test_a_cycle_imports_yesterday_to_two_weeks_ahead_and_heartbeats_the_counts(
    platform: Any, fake: FakeFinnhub
) -> None:
    result = CalendarSyncWorker(platform).run_once()
    assert result.ok and (result.inserted, result.updated, result.unchanged) == (2, 0, 0)
    # The range comes from the injected clock (2026-03-02), not the wall clock.
    assert fake.requests[-1]["query"]["from"] == "2026-03-01" and fake.requests[-1]["query"]["to"] == "2026-03-16"
    assert fake.requests[-1]["query"]["token"] == KEY
    assert titles(platform) == ["Caixin Manufacturing PMI", "Non-Farm Payrolls"]
    beat = heartbeat(platform)
    assert beat["beat_at"] == platform.clock.now()
    assert (beat["inserted"], beat["updated"], beat["unchanged"], beat["error"], beat["ok"]) == (2, 0, 0, None, True)
    assert beat["range"] == {"from": "2026-03-01", "to": "2026-03-16"}
    assert beat["interval_s"] == 6 * HOURS and beat["next_in_s"] == 6 * HOURS and beat["pid"] == os.getpid()


def test_a_second_cycle_is_idempotent_and_a_changed_impact_is_an_update(platform: Any, fake: FakeFinnhub) -> None:
    worker = CalendarSyncWorker(platform)
    assert worker.run_once().inserted == 2
    again = worker.run_once()
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    fake.events[0]["impact"] = "high"  # the provider revised an event: the row changes in place
    platform.clock.advance(hours=6)
    third = worker.run_once()
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 1)
    assert len(titles(platform)) == 2
    beat = heartbeat(platform)
    assert (beat["cycle"], beat["updated"], beat["unchanged"]) == (3, 1, 1)


def test_the_worker_refuses_to_start_without_a_key_or_with_a_bad_cadence(
    db_url: str, clock: Any, platform: Any
) -> None:
    keyless = open_test_platform(db_url, clock)
    try:
        with pytest.raises(ValueError, match="PROPDESK_FINNHUB_API_KEY"):
            CalendarSyncWorker(keyless)
    finally:
        keyless.close()
    with pytest.raises(ValueError, match="interval_s"):
        CalendarSyncWorker(platform, interval_s=0)
    with pytest.raises(ValueError, match="days_back"):
        CalendarSyncWorker(platform, days_back=-1)


# ------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, "rate limit reached (HTTP 429)"),
        (500, "HTTP 500: Internal Server Error"),
        (503, "HTTP 503: Service Unavailable"),
    ],
)
def test_a_provider_error_is_a_failed_cycle_in_the_heartbeat_and_the_next_cycle_succeeds(
    platform: Any, fake: FakeFinnhub, status: int, expected: str
) -> None:
    worker = CalendarSyncWorker(platform)
    fake.fail_next(status)
    failed = worker.run_once()
    assert not failed.ok and failed.status_code == status and expected in (failed.error or "")
    assert not failed.key_refused
    beat = heartbeat(platform)
    assert beat["ok"] is False and expected in beat["error"] and beat["status_code"] == status
    assert beat["consecutive_failures"] == 1 and beat["next_in_s"] == 60.0  # retried in a minute, not 6 hours
    assert titles(platform) == []

    platform.clock.advance(60)
    recovered = worker.run_once()
    assert recovered.ok and recovered.inserted == 2
    beat = heartbeat(platform)
    assert beat["ok"] is True and beat["error"] is None and beat["consecutive_failures"] == 0
    assert beat["next_in_s"] == 6 * HOURS


def test_consecutive_failures_back_off_and_a_success_resets_the_schedule(platform: Any, fake: FakeFinnhub) -> None:
    worker = CalendarSyncWorker(platform)
    fake.fail_next(429, 429, 500)
    delays = [worker.run_once().next_in_s for _ in range(4)]
    assert delays == [60.0, 120.0, 240.0, 6 * HOURS]
    assert worker.failures == 0 and worker.last is not None and worker.last.inserted == 2


def test_a_refused_key_says_the_key_was_refused(db_url: str, clock: Any, fake: FakeFinnhub) -> None:
    p = open_test_platform(db_url, clock, finnhub_api_key="revoked-key", finnhub_base_url=fake.base_url)
    try:
        result = CalendarSyncWorker(p).run_once()
        assert result.status_code == 401 and result.key_refused
        assert result.error is not None and result.error.startswith("Finnhub refused the API key (HTTP 401)")
        assert "PROPDESK_FINNHUB_API_KEY" in result.error and "Invalid API key" in result.error
        beat = heartbeat(p)
        assert beat["key_refused"] is True and beat["ok"] is False and "refused the API key" in beat["error"]
        assert "revoked-key" not in json.dumps(beat, default=str)  # the key itself is never written down
    finally:
        p.close()


def test_an_unreachable_provider_is_a_failed_cycle_not_an_exception(platform: Any) -> None:
    closed = FakeFinnhub(token=KEY)  # bound, never served: connections are refused
    closed.start()
    url = closed.base_url
    closed.stop()
    result = CalendarSyncWorker(platform, base_url=url).run_once()
    assert not result.ok and result.status_code is None
    assert result.error is not None and "request failed" in result.error
    assert heartbeat(platform)["ok"] is False


def test_the_retry_delay_backs_off_from_a_minute_up_to_the_interval() -> None:
    six_hours = 6 * HOURS
    assert retry_delay(six_hours, 0) == six_hours
    assert [retry_delay(six_hours, n) for n in range(1, 10)] == [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360]
    assert retry_delay(six_hours, 10) == six_hours and retry_delay(six_hours, 10_000) == six_hours
    assert retry_delay(30, 1) == 30  # never later than the normal cadence
    assert retry_delay(six_hours, 2, base_s=5) == 10
    with pytest.raises(ValueError):
        retry_delay(0, 1)


# ------------------------------------------------------------------------------------------ the loop
def test_the_loop_goes_on_after_a_failed_cycle(platform: Any, fake: FakeFinnhub) -> None:
    fake.fail_next(500)
    worker = CalendarSyncWorker(platform, interval_s=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while worker.cycles < 3:
            assert time.monotonic() < deadline, "the loop stopped cycling"
            time.sleep(0.01)
    finally:
        worker.stop(5)
    assert worker.last is not None and worker.last.ok
    assert heartbeat(platform)["ok"] is True and titles(platform) != []


def test_the_worker_thread_stops_promptly_on_stop(platform: Any) -> None:
    worker = CalendarSyncWorker(platform, interval_s=6 * HOURS)
    thread = worker.start()
    deadline = time.monotonic() + 10
    while worker.cycles < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    worker.stop(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2  # did not sit out the six hours
    assert worker.cycles == 1


# ------------------------------------------------------------------------------------------ /healthz
def fresh_mark_to_market_beat(platform: Any) -> None:
    """A fresh mark-to-market heartbeat, so the overall status reflects the calendar check alone."""
    from psycopg.types.json import Jsonb

    with platform.db.tx() as c:
        c.execute(
            "INSERT INTO worker_heartbeats (name, beat_at, details) VALUES ('mark-to-market', %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET beat_at = EXCLUDED.beat_at",
            (platform.clock.now(), Jsonb({})),
        )


def health(platform: Any) -> dict[str, Any]:
    with web_client(platform) as c:
        r = c.get("/healthz")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_healthz_shows_the_calendar_check_only_when_a_key_is_configured(db_url: str, clock: Any) -> None:
    keyless = open_test_platform(db_url, clock)
    try:
        fresh_mark_to_market_beat(keyless)
        body = health(keyless)
        assert "calendar_sync_worker" not in body["checks"] and body["status"] == "ok"
    finally:
        keyless.close()


def test_healthz_reports_the_calendar_worker_fresh_failing_and_stale(platform: Any, fake: FakeFinnhub) -> None:
    fresh_mark_to_market_beat(platform)
    body = health(platform)
    check = body["checks"]["calendar_sync_worker"]
    assert check["ok"] is False and check["reason"] == "no heartbeat recorded" and body["status"] == "degraded"

    worker = CalendarSyncWorker(platform)
    worker.run_once()
    body = health(platform)
    check = body["checks"]["calendar_sync_worker"]
    assert body["status"] == "ok", body
    assert check["ok"] is True and check["age_seconds"] == 0.0 and check["details"]["inserted"] == 2
    assert check["stale_after_seconds"] == 2 * 6 * HOURS + 60  # two intervals plus the heartbeat margin

    fake.fail_next(429)
    platform.clock.advance(30)
    fresh_mark_to_market_beat(platform)
    worker.run_once()
    body = health(platform)
    check = body["checks"]["calendar_sync_worker"]
    assert check["ok"] is False and check["reason"].startswith("last sync failed: Finnhub rate limit reached")
    assert body["status"] == "degraded"  # like every other check; only an unreachable database is 503

    worker.run_once()
    platform.clock.advance(2 * 6 * HOURS + 61)
    fresh_mark_to_market_beat(platform)
    body = health(platform)
    check = body["checks"]["calendar_sync_worker"]
    assert check["ok"] is False and check["reason"] == "heartbeat is stale" and body["status"] == "degraded"


# ------------------------------------------------------------------------------------------ the command
def test_worker_calendar_sync_once_json_prints_one_line(db_url: str, tmp_path: Path, platform: Any) -> None:
    with FakeFinnhub(token="cli-key") as fake:
        today = datetime.now(UTC).date()  # the command runs on the system clock
        fake.events.append(fake.row(f"{today + timedelta(days=2)} 12:30:00", "US", "CPI m/m", "high"))
        fake.events.append(fake.row(f"{today + timedelta(days=40)} 12:30:00", "US", "Far away", "high"))
        env = {"PROPDESK_FINNHUB_API_KEY": "cli-key", "PROPDESK_FINNHUB_BASE_URL": fake.base_url}
        proc = run_cli("worker", "calendar-sync", "--once", "--json", db_url=db_url, data_dir=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        line = one_json_line(proc)
        assert (line["inserted"], line["ok"], line["error"]) == (1, True, None)
        assert line["range"] == {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=14))}

        env["PROPDESK_FINNHUB_API_KEY"] = "wrong"
        proc = run_cli("worker", "calendar-sync", "--once", "--json", db_url=db_url, data_dir=tmp_path, env=env)
        assert proc.returncode == 1
        line = one_json_line(proc)
        assert line["key_refused"] is True and "refused the API key" in line["error"]
    assert heartbeat(platform)["key_refused"] is True

    proc = run_cli("worker", "calendar-sync", "--once", db_url=db_url, data_dir=tmp_path)
    assert proc.returncode == 2 and "PROPDESK_FINNHUB_API_KEY" in proc.stderr and proc.stdout == ""


def test_serve_syncs_the_calendar_in_a_thread_when_a_key_is_configured(
    db_url: str, tmp_path: Path, platform: Any
) -> None:
    import httpx

    with FakeFinnhub(token="serve-key") as fake:
        fake.events.append(fake.row(f"{datetime.now(UTC).date()} 23:59:00", "JP", "Served event", "low"))
        proc, url, lines = serve_process(
            db_url,
            tmp_path,
            "--no-worker",
            env={"PROPDESK_FINNHUB_API_KEY": "serve-key", "PROPDESK_FINNHUB_BASE_URL": fake.base_url},
        )
        try:
            deadline = time.monotonic() + 60
            check: dict[str, Any] = {}
            while not check.get("ok"):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(lines[-40:])
                time.sleep(0.1)
                check = httpx.get(f"{url}/healthz", timeout=5).json()["checks"]["calendar_sync_worker"]
            assert check["details"]["inserted"] == 1 and check["details"]["pid"] == proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0, "".join(lines[-40:])
    assert any('"event": "calendar_sync_enabled"' in line for line in lines)
    assert any('"event": "worker_stopped"' in line and "calendar-sync" in line for line in lines)
    assert "Served event" in titles(platform)
