"""Rate limits shared by every API process (``PgRateLimits``, ``rate_limit_hits``, migration 0007).

Two limiter instances on one database stand for two API processes behind a load balancer: they count into one
window, with the same semantics as the in-memory store (sliding on the injected clock, refused attempts not
counted, ``0/...`` off, ``Retry-After`` in whole seconds >= 1). Keys are stored as SHA-256, concurrent checks of
one key cannot overshoot the limit, the sweep bounds the table, and an unreachable database is a 503, not a 500.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from tests.web_kit import PASSWORD, csrf_headers, make_user, open_test_platform, web_client

from propdesk.api.errors import ApiError
from propdesk.clock import ManualClock
from propdesk.db.database import Database, role_url
from propdesk.web.ratelimit import Limit, PgRateLimits, RateLimits

pytestmark = pytest.mark.integration

PREFIX = "pdtest"


@pytest.fixture
def processes(db_url: str) -> Iterator[tuple[Database, Database]]:
    """Two engine pools on the same database: what two API processes hold."""
    a, b = Database(db_url, PREFIX, pool_size=8), Database(db_url, PREFIX, pool_size=8)
    yield a, b
    a.close()
    b.close()


def rows(db_url: str) -> list[tuple[str, bytes, Any]]:
    with psycopg.connect(db_url) as conn:
        return [
            (r[0], bytes(r[1]), r[2])
            for r in conn.execute("SELECT bucket, key_hash, at FROM rate_limit_hits ORDER BY at").fetchall()
        ]


# ---------------------------------------------------------------- one window for every process
def test_two_processes_on_one_database_share_one_window(processes: Any, clock: ManualClock) -> None:
    a, b = (PgRateLimits(db, clock, {"b": Limit(3, 60)}) for db in processes)
    assert [a.check("b", "k"), b.check("b", "k"), a.check("b", "k")] == [None, None, None]
    assert b.check("b", "k") == 60  # the third attempt was counted by the other process
    assert a.check("b", "k") == 60
    assert b.check("b", "other") is None  # keys are independent
    b.reset()  # a reset is seen by every process
    assert a.check("b", "k") is None


def test_the_window_slides_on_the_injected_clock(processes: Any, clock: ManualClock) -> None:
    a, b = (PgRateLimits(db, clock, {"b": Limit(3, 60)}) for db in processes)
    assert [a.check("b", "k") for _ in range(3)] == [None, None, None]
    assert b.check("b", "k") == 60
    clock.advance(45)
    assert b.check("b", "k") == 15
    clock.advance(14.5)
    assert a.check("b", "k") == 1  # half a second left is still a whole second to wait
    clock.advance(0.5)
    assert b.check("b", "k") is None  # the first attempt left the window


def test_refused_attempts_are_not_counted(processes: Any, clock: ManualClock, db_url: str) -> None:
    a, b = (PgRateLimits(db, clock, {"b": Limit(1, 10)}) for db in processes)
    assert a.check("b", "k") is None
    for i in range(20):
        assert (a if i % 2 else b).check("b", "k") == 10
    assert len(rows(db_url)) == 1
    clock.advance(10)
    assert b.check("b", "k") is None


def test_a_zero_limit_turns_a_bucket_off_and_writes_nothing(processes: Any, clock: ManualClock, db_url: str) -> None:
    limits = PgRateLimits(processes[0], clock, {"b": Limit.parse("0/60")})
    assert all(limits.check("b", "k") is None for _ in range(50))
    assert rows(db_url) == []


def test_both_stores_give_the_same_answers(processes: Any, clock: ManualClock) -> None:
    shared = PgRateLimits(processes[0], clock, {"b": Limit(4, 30)})
    memory = RateLimits(clock, {"b": Limit(4, 30)})
    for step in [0, 1, 2, 7, 0, 0, 9, 3, 11, 0, 29, 1, 0, 30]:
        clock.advance(step)
        for key in ("x", "y"):
            assert shared.check("b", key) == memory.check("b", key)


# ---------------------------------------------------------------- storage
def test_keys_are_stored_hashed_never_in_clear(processes: Any, clock: ManualClock, db_url: str) -> None:
    limits = PgRateLimits(processes[0], clock, {"login_email": Limit(5, 60), "login_ip": Limit(5, 60)})
    limits.check("login_email", "victim@example.com")
    limits.check("login_ip", "203.0.113.7")
    stored = rows(db_url)
    assert {(bucket, key) for bucket, key, _ in stored} == {
        ("login_email", hashlib.sha256(b"victim@example.com").digest()),
        ("login_ip", hashlib.sha256(b"203.0.113.7").digest()),
    }
    assert all(at == clock.now() for _, _, at in stored)  # the injected clock's time, not the server's
    with psycopg.connect(db_url) as conn:
        dump = conn.execute("SELECT string_agg(r::text, ' ') FROM rate_limit_hits r").fetchone()
    assert dump is not None and "victim" not in dump[0] and "203.0.113" not in dump[0]


def test_the_table_is_unlogged_and_only_the_engine_role_may_touch_it(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        persistence, rls, force = conn.execute(
            "SELECT relpersistence, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'rate_limit_hits'"
        ).fetchone() or (None, None, None)
    assert (persistence, rls, force) == ("u", True, True)
    with (
        psycopg.connect(role_url(db_url, f"{PREFIX}_app")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT count(*) FROM rate_limit_hits")


def test_a_key_that_plain_utf8_refuses_is_still_limited(processes: Any, clock: ManualClock) -> None:
    limits = PgRateLimits(processes[0], clock, {"b": Limit(1, 60)})
    assert limits.check("b", "a\ud800@example.com") is None  # a lone surrogate, as a JSON body may carry
    assert limits.check("b", "a\ud800@example.com") == 60


# ---------------------------------------------------------------- concurrency
def run_together(n: int, work: Any, timeout: float = 60) -> list[BaseException]:
    """Run ``work(i)`` for i in 0..n-1 on n threads released at once; returns what they raised."""
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def attempt(i: int) -> None:
        try:
            start.wait(timeout=10)
            work(i)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return errors


def test_concurrent_checks_of_one_key_allow_exactly_the_count(processes: Any, clock: ManualClock, db_url: str) -> None:
    limiters = [PgRateLimits(db, clock, {"b": Limit(3, 60)}) for db in processes]
    answers: list[int | None] = []
    assert run_together(8, lambda i: answers.append(limiters[i % 2].check("b", "same-key"))) == []
    assert sorted(answers, key=lambda a: a or 0) == [None] * 3 + [60] * 5
    assert len(rows(db_url)) == 3


def test_checks_racing_sweeps_on_every_check_all_get_an_answer(processes: Any, clock: ManualClock, db_url: str) -> None:
    limiters = [PgRateLimits(db, clock, {"b": Limit(50, 10)}, sweep_every=1) for db in processes]
    for i in range(200):  # old rows of the very keys being checked: what a sweep and a check both delete
        limiters[0].check("b", f"k{i % 4}")
    clock.advance(11)

    def attempt(i: int) -> None:
        for _ in range(10):
            assert limiters[i % 2].check("b", f"k{i % 4}") is None

    assert run_together(8, attempt) == []
    assert len(rows(db_url)) == 80


class DeadlockOnce:
    """The engine pool of ``db``, whose first transaction is chosen as a deadlock victim."""

    def __init__(self, db: Database):
        self.db = db
        self.failed = False

    @contextmanager
    def tx(self) -> Iterator[Any]:
        with self.db.tx() as c:
            if not self.failed:
                self.failed = True
                raise psycopg.errors.DeadlockDetected("deadlock detected")
            yield c


def test_a_check_chosen_as_deadlock_victim_runs_again(processes: Any, clock: ManualClock, db_url: str) -> None:
    flaky = DeadlockOnce(processes[0])
    limits = PgRateLimits(flaky, clock, {"b": Limit(1, 60)})  # type: ignore[arg-type]
    assert limits.check("b", "k") is None and flaky.failed
    assert len(rows(db_url)) == 1


# ---------------------------------------------------------------- the sweep
def test_the_sweep_removes_expired_rows_of_other_keys(processes: Any, clock: ManualClock, db_url: str) -> None:
    limits = PgRateLimits(processes[0], clock, {"short": Limit(5, 10), "long": Limit(5, 100)}, sweep_every=10**9)
    for i in range(30):
        limits.check("short", f"ip-{i}")  # keys that are never tried again
    limits.check("long", "kept")
    clock.advance(50)
    limits.check("short", "fresh")
    assert limits.sweep() == 0  # nothing is older than the longest window (100 s) yet
    clock.advance(60)
    assert limits.sweep() == 31  # the 30 abandoned keys and "kept" (110 s old); "fresh" (60 s) stays
    assert [bucket for bucket, _, _ in rows(db_url)] == ["short"]


def test_the_sweep_runs_every_so_many_checks(processes: Any, clock: ManualClock, db_url: str) -> None:
    limits = PgRateLimits(processes[0], clock, {"b": Limit(5, 10)}, sweep_every=3)
    for i in range(5):
        limits.check("b", f"old-{i}")
    clock.advance(11)
    for i in range(3):  # within any three checks one sweeps
        limits.check("b", f"new-{i}")
    assert len(rows(db_url)) == 3


# ---------------------------------------------------------------- an unreachable database
class Unreachable:
    """A pool that can never hand out a connection (a server that is down), answering within a second."""

    def __init__(self) -> None:
        self.engine_pool: ConnectionPool[Any] = ConnectionPool(
            "host=127.0.0.1 port=9 user=nobody dbname=none connect_timeout=1",
            min_size=1,
            max_size=1,
            timeout=1,
            open=True,
            reconnect_timeout=1,
        )

    def tx(self) -> Any:
        return Database.tx(self)  # type: ignore[arg-type]

    def close(self) -> None:
        self.engine_pool.close(timeout=0)


def test_an_unreachable_database_is_a_503_with_retry_after_not_a_500(clock: ManualClock) -> None:
    dead = Unreachable()
    try:
        limits = PgRateLimits(dead, clock, {"b": Limit(3, 60)})  # type: ignore[arg-type]
        with pytest.raises(ApiError) as refused:
            limits.check("b", "k")
        assert refused.value.http_status == 503 and refused.value.code == "unavailable"
        assert int(refused.value.headers["Retry-After"]) >= 1
    finally:
        dead.close()


def test_login_while_the_limit_store_is_down_answers_503_in_the_error_envelope(db_url: str, clock: ManualClock) -> None:
    p = open_test_platform(db_url, clock)
    dead = Unreachable()
    try:
        p.ratelimits = PgRateLimits(dead, clock, p.ratelimits.limits)  # type: ignore[arg-type]
        with web_client(p, headers=csrf_headers(p)) as web:
            r = web.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable" and int(r.headers["Retry-After"]) >= 1
        assert "Traceback" not in r.text
    finally:
        dead.close()
        p.close()


# ---------------------------------------------------------------- over HTTP: two app instances
def test_two_app_instances_on_one_database_share_the_login_limit(db_url: str, clock: ManualClock) -> None:
    first = open_test_platform(db_url, clock, rate_login_ip="3/60")
    second = open_test_platform(db_url, clock, rate_login_ip="3/60")
    try:
        assert isinstance(first.ratelimits, PgRateLimits)  # postgres is the default store
        make_user(first, "t@example.com")
        with web_client(first, headers=csrf_headers(first)) as a, web_client(second, headers=csrf_headers(second)) as b:
            for _ in range(3):
                r = a.post("/api/v1/auth/login", json={"email": "t@example.com", "password": "Wrong-password-1"})
                assert r.status_code == 401
            clock.advance(20)
            r = b.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited" and r.headers["Retry-After"] == "40"
            clock.advance(timedelta(seconds=40).total_seconds())
            assert (
                b.post("/api/v1/auth/login", json={"email": "t@example.com", "password": PASSWORD}).status_code == 200
            )
    finally:
        second.close()
        first.close()
