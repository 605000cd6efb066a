"""Integration tests for the embedded PostgreSQL manager.

They run real initdb/postgres processes (about 1-3 s per cluster), as root in CI and as a normal user
on laptops; as root the manager runs PostgreSQL as an unprivileged service user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from propdesk.db import embedded
from propdesk.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_binaries, wait_ready

pytestmark = pytest.mark.integration

MakePg = Callable[[str], EmbeddedPostgres]


@pytest.fixture
def make_pg(tmp_path: Path) -> Iterator[MakePg]:
    """Factory for managers on ``tmp_path/<name>``; every cluster is destroyed afterwards.

    destroy() also removes a cluster relocated to /tmp (root with an untraversable tmp_path), and no
    postgres process outlives the test even when it fails.
    """
    created: list[EmbeddedPostgres] = []

    def _make(name: str) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(tmp_path / name)
        created.append(pg)
        return pg

    yield _make
    for pg in created:
        pg.destroy()


def _scalar(url: str, sql: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_find_binaries_returns_a_directory_with_the_server_programs() -> None:
    bin_dir = find_binaries()

    for program in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bin_dir / program, os.X_OK), program


def test_missing_binaries_error_tells_the_user_to_set_database_url_or_install_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_candidate_bin_dirs", lambda: iter([tmp_path]))

    with pytest.raises(EmbeddedPostgresError, match="DATABASE_URL") as excinfo:
        find_binaries()

    assert "install PostgreSQL" in str(excinfo.value)


def test_started_server_answers_queries_with_production_durability_settings(make_pg: MakePg) -> None:
    pg = make_pg("pg")

    url = pg.start()

    assert url == pg.url
    parts = urlsplit(url)
    assert (parts.hostname, parts.username, parts.path) == ("127.0.0.1", "postgres", "/postgres")
    assert _scalar(url, "SELECT 1") == 1
    assert _scalar(url, "SHOW fsync") == "on"
    assert _scalar(url, "SHOW synchronous_commit") == "on"
    assert _scalar(url, "SHOW server_encoding") == "UTF8"
    assert _scalar(url, "SHOW max_connections") == "200"
    assert _scalar(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
    assert pg.log_file.is_file()


def test_start_is_idempotent_and_reuses_the_running_server(make_pg: MakePg) -> None:
    pg = make_pg("pg")
    url = pg.start()
    pid = _scalar(url, "SELECT pg_postmaster_start_time()")

    assert pg.start() == url
    # A second handle (as another process would) reuses the server instead of starting one.
    with EmbeddedPostgres(pg.data_dir) as other:
        assert other.url == url
    # ...and leaving its context does not stop a server it did not start.
    assert _scalar(url, "SELECT pg_postmaster_start_time()") == pid


def test_concurrent_starts_from_two_processes_initialise_the_data_dir_once(make_pg: MakePg) -> None:
    pg = make_pg("pg")
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from propdesk.db.embedded import EmbeddedPostgres
        sys.stdout.write(EmbeddedPostgres(Path(sys.argv[1])).start())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(pg.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=90) for proc in procs]

    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    urls = {out for out, _err in results}
    assert len(urls) == 1
    # The handle in this process sees the same server, and the log shows one cluster creation.
    assert pg.start() == urls.pop()
    assert pg.log_file.read_text().count("--- propdesk: starting PostgreSQL") == 1


def test_two_instances_with_different_data_dirs_run_side_by_side(make_pg: MakePg) -> None:
    first, second = make_pg("a"), make_pg("b")

    url_a, url_b = first.start(), second.start()

    assert urlsplit(url_a).port != urlsplit(url_b).port
    assert _scalar(url_a, "SELECT 1") == 1
    assert _scalar(url_b, "SELECT 1") == 1
    assert _scalar(url_a, "SHOW data_directory") != _scalar(url_b, "SHOW data_directory")


def test_data_persists_across_stop_and_start_on_the_same_port(make_pg: MakePg) -> None:
    pg = make_pg("pg")
    url = pg.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO accounts VALUES (1, 'alice')")

    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.url
    pg.stop()  # stopping a stopped server is a no-op

    assert pg.start() == url  # the recorded port is reused while free
    assert _scalar(url, "SELECT name FROM accounts WHERE id = 1") == "alice"


def test_context_manager_stops_the_server_it_started(make_pg: MakePg) -> None:
    pg = make_pg("pg")

    with pg:
        url = pg.url
        wait_ready(url, timeout_s=5)

    with pytest.raises(EmbeddedPostgresError):
        wait_ready(url, timeout_s=0.5)


def test_failed_start_raises_with_the_tail_of_the_server_log(make_pg: MakePg) -> None:
    pg = make_pg("pg")
    pg.start()
    pg.stop()
    with (pg.cluster_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_buffers = 'lots'\n")

    with pytest.raises(EmbeddedPostgresError, match="shared_buffers") as excinfo:
        pg.start()

    assert str(pg.log_file) in str(excinfo.value)
