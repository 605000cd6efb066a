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


# ---------------------------------------------------------------------------------------------------------
# Authentication: scram-sha-256 for every role, a generated superuser password kept 0600
# ---------------------------------------------------------------------------------------------------------


def _without_password(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params.pop("password", None)
    return make_conninfo(**params)  # type: ignore[arg-type]


def test_embedded_server_refuses_a_login_without_the_password(make_pg: MakePg) -> None:
    pg = make_pg("auth")
    url = pg.start()

    assert urlsplit(url).password, "the URL handed out carries the generated password"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_without_password(url), connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(url.replace(urlsplit(url).password or "", "wrong-password"), connect_timeout=5).close()
    assert _scalar(url, "SHOW password_encryption") == "scram-sha-256"
    assert _scalar(url, "SHOW listen_addresses") == "127.0.0.1"


def test_state_file_keeps_the_superuser_password_readable_only_by_its_owner(make_pg: MakePg) -> None:
    import json
    import stat

    pg = make_pg("state")
    url = pg.start()
    state_file = pg.data_dir / "embedded.json"
    state = json.loads(state_file.read_text())

    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert state["host"] == "127.0.0.1"
    assert state["superuser"] == "postgres"
    assert state["auth"] == "scram-sha-256"
    assert state["port"] == urlsplit(url).port
    assert state["password"] == urlsplit(url).password


def test_restart_keeps_the_same_password(make_pg: MakePg) -> None:
    pg = make_pg("restart")
    first = pg.start()
    pg.stop()

    assert pg.start() == first


def test_engine_and_app_roles_log_in_only_with_their_derived_passwords(make_pg: MakePg) -> None:
    from propdesk.db.database import role_url
    from propdesk.db.migrate import ensure_roles

    pg = make_pg("roles")
    url = pg.start()
    ensure_roles(url, "pdauth")

    for role in ("pdauth_engine", "pdauth_app"):
        assert _scalar(role_url(url, role), "SELECT current_user") == role
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(role_url(url, role)), connect_timeout=5).close()


def test_a_trust_cluster_from_an_older_version_is_converted_to_scram_on_start(make_pg: MakePg) -> None:
    import json

    pg = make_pg("legacy")
    url = pg.start()
    # Make it what an older PropDesk left behind: trust everywhere and no password in the state file.
    with psycopg.connect(url, autocommit=True) as conn:
        (pg.cluster_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        conn.execute("SELECT pg_reload_conf()")
    state_file = pg.data_dir / "embedded.json"
    state = json.loads(state_file.read_text())
    del state["password"]
    state_file.write_text(json.dumps(state))
    pg.stop()
    wait_for_trust = EmbeddedPostgres(pg.data_dir)

    converted = wait_for_trust.start()

    assert urlsplit(converted).password
    assert "trust" not in (pg.cluster_dir / "pg_hba.conf").read_text().split()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_without_password(converted), connect_timeout=5).close()
    assert _scalar(converted, "SELECT 1") == 1
