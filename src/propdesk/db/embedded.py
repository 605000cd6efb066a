"""Embedded PostgreSQL: a private server per data directory, for development, tests and single-box use.

We drive ``initdb`` / ``pg_ctl`` directly (not pgserver's Python API) so that start, reuse, port choice,
logging and shutdown are explicit and testable.  The server binaries come from :func:`find_binaries`.

Layout of a data directory ``D`` (created on first :meth:`EmbeddedPostgres.start`)::

    D/embedded.lock   flock(2) target serialising start/stop across threads and processes
    D/embedded.json   {"host", "port", "superuser", "password", "auth", "cluster_dir"?}  -- mode 0600: how to reach
                      the server (last port, the superuser's generated password) and the relocated cluster if any
    D/postgres.log    server log (appended across restarts)
    D/pgdata/         the PostgreSQL cluster (PGDATA), unless relocated (see below)

The server listens on TCP ``127.0.0.1`` only (unix sockets disabled) and every role authenticates with
``scram-sha-256``: another OS user of the machine can reach the port but cannot log in.  The superuser
``postgres`` gets a generated password at ``initdb``, kept in ``D/embedded.json`` (mode 0600, like the data
directory itself); the roles PropDesk creates get passwords derived from it (:func:`propdesk.db.database.role_url`).
A cluster made by an older version with ``trust`` is converted on its next start (a password is set, then
``pg_hba.conf`` is rewritten and reloaded).  Durability settings are the production ones
(``fsync``/``synchronous_commit``/``full_page_writes`` on).

Running as root
---------------
PostgreSQL refuses to run as root.  When the effective uid is 0 (CI containers), every PostgreSQL
program runs as an unprivileged system user instead: the owner of an existing cluster, or
``propdesk-pg`` (created with ``useradd --system`` if missing).  Privileges are dropped with
:mod:`subprocess`'s ``user=``/``group=``/``extra_groups=`` (setuid in the child; no dependency on
``runuser``/``su``/``setpriv`` or PAM).

That user must be able to reach the cluster and the binaries.  We *measure* this by running
``test -x`` / ``<bin> --version`` as that user, and never widen permissions of directories we did
not create (pgserver chmods every parent up to ``/``, which would e.g. open ``/root``):

* If the user cannot traverse to ``D`` (e.g. pytest's ``/tmp/pytest-of-root`` is 0700, or ``D`` is
  under ``/root``), the cluster is *relocated* to a fresh ``/tmp/propdesk-pg-<hash(D)>-<random>/pgdata``
  and that path is recorded in ``D/embedded.json`` (a warning is logged).  Lock, state and log stay in
  ``D``: the server writes its log through a file descriptor we open, so it needs no access to ``D``.
  Caveat: ``/tmp`` may be wiped at reboot.  For durable root deployments put ``D`` on a path the
  service user can traverse (e.g. ``/var/lib/propdesk``), so no relocation happens.  If a recorded
  relocated cluster has vanished we raise instead of silently creating an empty database.
* If the user cannot execute the binaries (e.g. a venv under ``/root``), they are copied once into a
  root-owned, read-only-for-others ``/tmp/propdesk-pg-bin-<fingerprint>`` (about 30 MB) and run from there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

__all__ = [
    "SERVICE_USER",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "find_binaries",
    "wait_ready",
]

_log = logging.getLogger(__name__)

#: System user that runs PostgreSQL when we are root.
SERVICE_USER = "propdesk-pg"
_SUPERUSER = "postgres"
_DATABASE = "postgres"
_HOST = "127.0.0.1"
_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")

_LOCK_FILE = "embedded.lock"
_STATE_FILE = "embedded.json"
_LOG_FILE = "postgres.log"
_CLUSTER_SUBDIR = "pgdata"
# Root-only relocation targets.  Deliberately not tempfile.gettempdir(): TMPDIR may point somewhere the
# service user cannot traverse, which is exactly what relocation must avoid.
_SHARED_TMP = Path("/tmp")  # noqa: S108 - see comment above; created securely via mkdtemp + ownership checks

# Appended to postgresql.conf right after initdb.  The port is not here: it is passed on every start
# because it may change when the previous one is taken.
_SERVER_SETTINGS = """
# --- propdesk embedded settings (written by propdesk.db.embedded) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
full_page_writes = on
"""

# Every connection, from any address, authenticates with a password (there are no unix sockets to match
# "local" lines, but they are written too, so enabling sockets later cannot reopen trust).
_HBA = """# written by propdesk.db.embedded: every role authenticates with scram-sha-256, loopback only
local   all  all                 scram-sha-256
host    all  all  127.0.0.1/32   scram-sha-256
host    all  all  ::1/128        scram-sha-256
"""
_AUTH = "scram-sha-256"

_LOCK_TIMEOUT_S = 180.0
_LOG_TAIL_BYTES = 6000


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be found, initialised, started or stopped."""


@dataclass(frozen=True)
class _Account:
    """An unprivileged OS account that PostgreSQL programs run as (only used when we are root)."""

    name: str
    uid: int
    gid: int


# ---------------------------------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------------------------------


def _has_server_programs(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) and (bin_dir / name).is_file() for name in _REQUIRED_PROGRAMS)


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return (-1,)


def _candidate_bin_dirs() -> Iterator[Path]:
    # 1. The pgserver wheel.  find_spec locates it without importing it: importing pgserver has side
    #    effects (creates a runtime dir + lock file, emits a warning when XDG_RUNTIME_DIR is unset).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        yield Path(spec.origin).parent / "pginstall" / "bin"
    # 2. A system installation, as reported by pg_config.
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(  # noqa: S603 - fixed argv, absolute path from which()
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            if result.returncode == 0 and result.stdout.strip():
                yield Path(result.stdout.strip())
    # 3. Debian/Ubuntu layout, newest major version first.
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent), reverse=True)
    # 4. initdb on PATH (following symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb).
    initdb = shutil.which("initdb")
    if initdb is not None:
        yield Path(initdb).resolve().parent


def find_binaries() -> Path:
    """Return the directory holding the PostgreSQL server programs (``initdb``, ``pg_ctl``, ``postgres``).

    Preference order: the ``pgserver`` wheel's bundled build, ``pg_config --bindir``, the highest
    ``/usr/lib/postgresql/*/bin``, then the directory of ``initdb`` on ``PATH``.

    Raises:
        EmbeddedPostgresError: if no candidate contains all three programs.
    """
    for candidate in _candidate_bin_dirs():
        if _has_server_programs(candidate):
            return candidate
    raise EmbeddedPostgresError(
        "No PostgreSQL server binaries found (looked for the pgserver wheel's pginstall/bin, "
        "`pg_config --bindir`, /usr/lib/postgresql/*/bin and `initdb` on PATH). "
        "Either set DATABASE_URL to use an existing PostgreSQL server, or install PostgreSQL "
        "(`pip install pgserver`, or e.g. `apt-get install postgresql`)."
    )


# ---------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST, ...) from the caller's shell must not redirect our programs.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _run(
    argv: Sequence[str | Path],
    account: _Account | None,
    *,
    timeout: float,
    log_file: Any = None,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as ``account`` when given; output is captured unless ``log_file``.

    ``log_file`` is for ``pg_ctl start``: the postmaster inherits stdout/stderr and keeps them open, so
    capturing them through pipes would hang; a file works and needs no permission for ``account``.
    """
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs.update(user=account.uid, group=account.gid, extra_groups=[])
    if log_file is not None:
        kwargs.update(stdout=log_file, stderr=subprocess.STDOUT)
    else:
        kwargs.update(capture_output=True)
    try:
        return subprocess.run(  # noqa: S603 - argv built from absolute paths and our own constants
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            text=True,
            # "/" because the caller's cwd (e.g. /root) may be unreadable for the service account,
            # which makes initdb/postgres fail to resolve relative paths.
            cwd="/",
            env=_clean_env(),
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedPostgresError(f"{Path(str(argv[0])).name} timed out after {timeout:.0f}s: {argv}") from exc
    except OSError as exc:
        raise EmbeddedPostgresError(f"could not run {argv[0]}: {exc}") from exc


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return ((result.stdout or "") + (result.stderr or "")).strip()


def _make_url(port: int, password: str | None = None) -> str:
    # Generated passwords are URL-safe (token_urlsafe), so they need no quoting inside the URL.
    auth = f"{_SUPERUSER}:{password}" if password else _SUPERUSER
    return f"postgresql://{auth}@{_HOST}:{port}/{_DATABASE}"


def _hba_trusts(cluster: Path) -> bool:
    """Does the cluster's pg_hba.conf still let anyone in with ``trust`` (a cluster made before scram)?"""
    try:
        lines = (cluster / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[-1:] == ["trust"] for line in lines if line.strip() and not line.lstrip().startswith("#"))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the postmaster uses, so a port whose old connections sit in TIME_WAIT after a
        # restart still counts as free (otherwise a restart would needlessly change port).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _tail(path: Path, offset: int = 0) -> str:
    """Last few KB of ``path`` from ``offset`` on (empty if missing)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _read_postmaster_pid(cluster: Path) -> list[str]:
    try:
        return (cluster / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def wait_ready(url: str, timeout_s: float = 30) -> None:
    """Block until a psycopg connection to ``url`` succeeds.

    Raises:
        EmbeddedPostgresError: if no connection succeeded within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # libpq treats connect_timeout < 2 as 2; keep each attempt short so the deadline holds.
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(f"PostgreSQL at {url} not ready after {timeout_s:g}s: {exc}") from exc
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------
# Root support
# ---------------------------------------------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def _account_for_uid(uid: int, fallback_gid: int) -> _Account:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return _Account(name=str(uid), uid=uid, gid=fallback_gid)
    return _Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _ensure_service_user() -> _Account:
    """Return the ``propdesk-pg`` account, creating it with ``useradd --system`` if missing."""
    useradd = shutil.which("useradd") or ("/usr/sbin/useradd" if Path("/usr/sbin/useradd").exists() else None)
    last_error = ""
    for _attempt in range(5):
        try:
            entry = pwd.getpwnam(SERVICE_USER)
            return _Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
        except KeyError:
            pass
        if useradd is None:
            break
        _log.info("creating system user %s to run PostgreSQL (it refuses to run as root)", SERVICE_USER)
        result = _run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "propdesk embedded PostgreSQL",
                SERVICE_USER,
            ],
            None,
            timeout=30,
        )
        # A concurrent process may have created it, or hold the /etc/passwd lock: re-check and retry.
        last_error = _output(result)
        time.sleep(0.2)
    raise EmbeddedPostgresError(
        f"Running as root: PostgreSQL refuses to run as root and the system user {SERVICE_USER!r} "
        f"could not be created ({'useradd not found' if useradd is None else last_error}). Create it, "
        "run as a non-root user, or set DATABASE_URL to use an existing PostgreSQL server."
    )


def _succeeds(argv: Sequence[str | Path], account: _Account) -> bool:
    """Whether ``argv`` runs and exits 0 as ``account`` (exec permission errors count as failure)."""
    try:
        return _run(argv, account, timeout=30).returncode == 0
    except EmbeddedPostgresError:
        return False


def _can_traverse(account: _Account, directory: Path) -> bool:
    # Measured as the account itself: access(2) accounts for every parent, ACLs and mount options.
    return _succeeds(["/bin/sh", "-c", 'test -d "$1" && test -x "$1"', "sh", directory], account)


_usable_bin_dirs: dict[tuple[Path, int], Path] = {}
_usable_bin_dirs_lock = threading.Lock()


def _bin_dir_for(bin_dir: Path, account: _Account | None) -> Path:
    """``bin_dir`` if ``account`` can run its programs, else an accessible copy of the installation."""
    if account is None:
        return bin_dir
    key = (bin_dir, account.uid)
    with _usable_bin_dirs_lock:
        cached = _usable_bin_dirs.get(key)
        if cached is not None:
            return cached
        usable = bin_dir
        # --version loads each program with its shared libraries, so it proves the whole path works.
        if not all(_succeeds([bin_dir / name, "--version"], account) for name in _REQUIRED_PROGRAMS):
            usable = _accessible_copy(bin_dir)
            _log.warning(
                "PostgreSQL binaries in %s are not usable by %s; running a copy from %s", bin_dir, account.name, usable
            )
        _usable_bin_dirs[key] = usable
        return usable


def _check_trusted_dir(path: Path) -> None:
    """Refuse a shared-/tmp directory that someone else could have planted or can modify."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise EmbeddedPostgresError(
            f"{path} exists but is not a root-owned directory writable only by root; remove it and retry"
        )


def _accessible_copy(bin_dir: Path) -> Path:
    """Copy the installation owning ``bin_dir`` to a root-owned, world-readable directory under /tmp."""
    install = bin_dir.parent
    pgserver_libs = install.parent.parent / "pgserver.libs"
    if pgserver_libs.is_dir():
        # pgserver wheel: initdb has RPATH $ORIGIN/../../../pgserver.libs, so keep that relative layout.
        top = install.parent.parent
        parts = [install / "bin", install / "lib", install / "share", pgserver_libs]
    else:
        # Relocatable builds find lib/ and share/ relative to bin/.
        top = install
        parts = [install / "bin", install / "lib", install / "share"]
    postgres_stat = (bin_dir / "postgres").stat()
    fingerprint = hashlib.sha256(f"{bin_dir}|{postgres_stat.st_size}|{postgres_stat.st_mtime_ns}".encode()).hexdigest()[
        :16
    ]
    target = _SHARED_TMP / f"propdesk-pg-bin-{fingerprint}"
    relative_bin = bin_dir.relative_to(top)
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=_SHARED_TMP))
        try:
            for part in parts:
                if part.exists():
                    shutil.copytree(part, staging / part.relative_to(top), symlinks=True)
            for root, _dirs, files in os.walk(staging):
                os.chmod(root, 0o755)  # noqa: S103 - binaries must be readable/executable by the service user
                for name in files:
                    file_path = os.path.join(root, name)
                    mode = os.lstat(file_path).st_mode
                    if stat.S_ISREG(mode):
                        os.chmod(file_path, 0o755 if mode & stat.S_IXUSR else 0o644)
            # Atomic publish: concurrent processes either see nothing or a complete copy.
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise EmbeddedPostgresError(f"could not copy PostgreSQL binaries to {target}: {exc}") from exc
    _check_trusted_dir(target)
    return target / relative_bin


# ---------------------------------------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------------------------------------


class EmbeddedPostgres:
    """A PostgreSQL server owned by one data directory, listening on ``127.0.0.1:<free port>``.

    Usage::

        with EmbeddedPostgres(Path(".propdesk/pg")) as pg:
            psycopg.connect(pg.url)

    :meth:`start` is idempotent across threads and processes: a server already running on the data
    directory is reused.  As a context manager, ``__exit__`` stops the server only if this handle started
    it, so a handle that merely reused a server never shuts it down under its owner; :meth:`stop` always
    stops.  See the module docstring for the directory layout and how running as root is handled.
    """

    def __init__(self, data_dir: Path, *, bin_dir: Path | None = None, startup_timeout_s: float = 60.0) -> None:
        """Describe (but do not start) the server for ``data_dir``.

        Args:
            data_dir: directory holding the cluster, lock, state and log; created on :meth:`start`.
            bin_dir: PostgreSQL ``bin`` directory; default :func:`find_binaries` (looked up lazily).
            startup_timeout_s: how long ``pg_ctl start`` and the readiness check may take.
        """
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._bin_dir = bin_dir
        self._startup_timeout_s = startup_timeout_s
        self._url: str | None = None
        self._owns_server = False

    # -- public surface --------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The data directory this handle manages."""
        return self._data_dir

    @property
    def log_file(self) -> Path:
        """The server log (appended across restarts)."""
        return self._data_dir / _LOG_FILE

    @property
    def cluster_dir(self) -> Path:
        """Where PGDATA lives: ``data_dir/pgdata``, or the relocated path when running as root."""
        return self._cluster_dir(self._read_state())

    @property
    def url(self) -> str:
        """libpq URL of the running server (superuser ``postgres``, database ``postgres``).

        Raises:
            EmbeddedPostgresError: if :meth:`start` has not succeeded on this handle.
        """
        if self._url is None:
            raise EmbeddedPostgresError(f"embedded PostgreSQL for {self._data_dir} is not started; call start()")
        return self._url

    def start(self) -> str:
        """Initialise the cluster if needed, start (or reuse) the server, wait until it accepts connections.

        Returns:
            The connection URL, e.g. ``postgresql://postgres@127.0.0.1:54321/postgres``.

        Raises:
            EmbeddedPostgresError: on any failure; startup failures include the tail of the server log.
        """
        self._data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._read_state()
            cluster = self._cluster_dir(state)
            relocated = cluster != self._data_dir / _CLUSTER_SUBDIR
            if relocated and not cluster.parent.exists():
                # Refuse rather than silently hand out a new, empty database.
                raise EmbeddedPostgresError(
                    f"the cluster for {self._data_dir} was relocated to {cluster}, which no longer exists "
                    f"(was /tmp cleaned?). Its data is lost; delete {self._data_dir / _STATE_FILE} "
                    "to initialise a new, empty cluster."
                )
            account = self._account(state)
            if (
                account is not None
                and not relocated
                and not cluster.exists()
                and not _can_traverse(account, self._data_dir)
            ):
                cluster = self._relocate(state)
            bin_dir = _bin_dir_for(self._resolve_bin_dir(), account)

            port = self._running_port(cluster, bin_dir, account)
            if port is not None:
                _log.info("reusing PostgreSQL already running for %s on port %d", self._data_dir, port)
                reused = True
            else:
                if not (cluster / "PG_VERSION").exists():
                    # The password is recorded before initdb, so a crash between the two never leaves a cluster
                    # whose superuser password nobody knows.
                    state = {**state, "password": state.get("password") or secrets.token_urlsafe(24)}
                    self._write_state(state)
                    self._initdb(cluster, bin_dir, account, state["password"])
                port = self._start_server(cluster, bin_dir, account, state)
                reused = False
            if _hba_trusts(cluster):
                state = self._convert_from_trust(cluster, port, state)
            password = state.get("password")
            url = _make_url(port, password if isinstance(password, str) else None)
            wait_ready(url, self._startup_timeout_s)
            # A handle that merely reused a server (started by someone else) never stops it on __exit__.
            self._owns_server = (self._owns_server and url == self._url) if reused else True
            self._write_state({**state, "port": port, "host": _HOST, "superuser": _SUPERUSER, "auth": _AUTH})
            self._url = url
            return url

    def stop(self) -> None:
        """Stop the server on this data directory (``pg_ctl stop -m fast``) and wait; no-op if not running.

        Raises:
            EmbeddedPostgresError: if the server is running and could not be stopped.
        """
        if not self._data_dir.is_dir():
            return
        with self._locked():
            self._stop_locked()

    def destroy(self) -> None:
        """Stop the server and delete all its data, including a relocated cluster (for tests and resets)."""
        if not self._data_dir.is_dir():
            return
        with self._locked():
            self._stop_locked()
            cluster = self._cluster_dir(self._read_state())
            if cluster != self._data_dir / _CLUSTER_SUBDIR:
                shutil.rmtree(cluster.parent, ignore_errors=True)  # the /tmp/propdesk-pg-* relocation dir
            shutil.rmtree(self._data_dir / _CLUSTER_SUBDIR, ignore_errors=True)
            for name in (_STATE_FILE, _LOG_FILE):
                (self._data_dir / name).unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedPostgres:
        """Start (or reuse) the server and return this handle."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server if this handle started it."""
        if self._owns_server:
            self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self._data_dir)!r}, url={self._url!r})"

    # -- internals --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock locks belong to the open file description, so a fresh open() per acquisition also
        # excludes other threads of this process, not just other processes.
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        with (self._data_dir / _LOCK_FILE).open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise EmbeddedPostgresError(
                            f"timed out waiting for {handle.name}: another process is starting/stopping "
                            "this PostgreSQL and did not finish"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self._data_dir / _STATE_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EmbeddedPostgresError(f"unreadable state file {self._data_dir / _STATE_FILE}: {exc}") from exc
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        # The state holds the superuser's password: created 0600 (never readable by others, not even briefly),
        # and replaced atomically so readers never see a half-written file.
        path = self._data_dir / _STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        path.chmod(0o600)

    def _convert_from_trust(self, cluster: Path, port: int, state: dict[str, Any]) -> dict[str, Any]:
        """Give a ``trust`` cluster (made before scram) a superuser password, then require scram of everyone."""
        password = state.get("password")
        if not isinstance(password, str) or not password:
            password = secrets.token_urlsafe(24)
        state = {**state, "password": password}
        self._write_state(state)  # first, so the password is never lost once set
        _log.warning("converting the PostgreSQL cluster in %s from trust to %s authentication", cluster, _AUTH)
        wait_ready(_make_url(port), self._startup_timeout_s)
        with psycopg.connect(_make_url(port), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"ALTER ROLE {_SUPERUSER} PASSWORD '{password}'")  # token_urlsafe: no quote to escape
            conn.execute("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
            (cluster / "pg_hba.conf").write_text(_HBA)
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous: wait until the password is required (a trust login is refused).
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(_make_url(port), connect_timeout=2, autocommit=True):
                    pass
            except psycopg.OperationalError:
                break
            time.sleep(0.05)
        return state

    def _cluster_dir(self, state: dict[str, Any]) -> Path:
        relocated = state.get("cluster_dir")
        return Path(relocated) if isinstance(relocated, str) else self._data_dir / _CLUSTER_SUBDIR

    def _resolve_bin_dir(self) -> Path:
        return self._bin_dir if self._bin_dir is not None else find_binaries()

    def _account(self, state: dict[str, Any]) -> _Account | None:
        """Who runs PostgreSQL programs: ourselves, or (as root) the cluster's owner / the service user."""
        if not _is_root():
            return None
        cluster = self._cluster_dir(state)
        with contextlib.suppress(FileNotFoundError):
            info = cluster.stat()
            if info.st_uid != 0:
                return _account_for_uid(info.st_uid, info.st_gid)
        return _ensure_service_user()

    def _relocate(self, state: dict[str, Any]) -> Path:
        digest = hashlib.sha256(str(self._data_dir).encode()).hexdigest()[:12]
        # mkdtemp: unpredictable name created with O_EXCL semantics, so nobody can pre-plant it in /tmp.
        base = Path(tempfile.mkdtemp(prefix=f"propdesk-pg-{digest}-", dir=_SHARED_TMP))
        base.chmod(0o711)  # the service user may traverse, nobody may list
        cluster = base / _CLUSTER_SUBDIR
        _log.warning(
            "service user cannot reach %s; placing the PostgreSQL cluster in %s (recorded in %s). "
            "/tmp may be cleared at reboot: use a data dir the service user can traverse for durable data.",
            self._data_dir,
            cluster,
            self._data_dir / _STATE_FILE,
        )
        state["cluster_dir"] = str(cluster)
        self._write_state(state)
        return cluster

    def _initdb(self, cluster: Path, bin_dir: Path, account: _Account | None, password: str) -> None:
        # Initialise into a scratch directory and rename: a crash mid-initdb never leaves a half-made
        # cluster that a later start() would mistake for a real one (PG_VERSION is written early).
        staging = cluster.with_name(cluster.name + ".initdb-tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if account is not None:
            os.chown(staging, account.uid, account.gid)
        _log.info("initialising PostgreSQL cluster in %s", cluster)
        # initdb reads the superuser's password from a file; it lives in a private directory of its own (the
        # staging directory must be empty) that the server's account can read, and is removed at once.
        pw_dir = Path(tempfile.mkdtemp(prefix="propdesk-pg-pw-", dir=_SHARED_TMP if account is not None else None))
        try:
            pw_file = pw_dir / "pw"
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            if account is not None:
                os.chown(pw_dir, account.uid, account.gid)
                os.chown(pw_file, account.uid, account.gid)
            result = _run(
                [
                    bin_dir / "initdb",
                    "-D",
                    staging,
                    "-U",
                    _SUPERUSER,
                    f"--auth={_AUTH}",
                    f"--pwfile={pw_file}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                account,
                timeout=300,
            )
        finally:
            shutil.rmtree(pw_dir, ignore_errors=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed for {cluster} (exit {result.returncode}):\n{_output(result)}")
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write(_SERVER_SETTINGS)
        (staging / "pg_hba.conf").write_text(_HBA)  # rewrites in place: the file keeps its owner
        try:
            os.rename(staging, cluster)  # replaces an empty directory, refuses a non-empty one
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedPostgresError(
                f"{cluster} exists but holds no PostgreSQL cluster (no PG_VERSION); move it away and retry"
            ) from exc

    def _running_port(self, cluster: Path, bin_dir: Path, account: _Account | None) -> int | None:
        """Port of a live server on ``cluster`` (started by anyone), else None."""
        if not (cluster / "postmaster.pid").exists():
            return None
        # pg_ctl status checks that the PID in postmaster.pid is alive; 3 means "not running" (stale
        # pid file after a crash -- the postmaster removes it on the next start).
        if _run([bin_dir / "pg_ctl", "status", "-D", cluster], account, timeout=30).returncode != 0:
            return None
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            lines = _read_postmaster_pid(cluster)
            # Line 4 is the port; it can be briefly missing while a server started elsewhere boots.
            if len(lines) >= 4 and lines[3].strip().isdigit():
                return int(lines[3])
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(f"a server is running on {cluster} but postmaster.pid has no port")
            time.sleep(0.05)

    def _start_server(self, cluster: Path, bin_dir: Path, account: _Account | None, state: dict[str, Any]) -> int:
        previous = state.get("port")
        port = previous if isinstance(previous, int) and _port_is_free(previous) else _pick_free_port()
        attempts = 3
        for attempt in range(1, attempts + 1):
            with self.log_file.open("ab") as log:
                banner = f"--- propdesk: starting PostgreSQL for {cluster} on {_HOST}:{port} at {time.ctime()} ---\n"
                log.write(banner.encode())
                log.flush()
                offset = log.tell()
                result = _run(
                    [
                        bin_dir / "pg_ctl",
                        "start",
                        "-D",
                        cluster,
                        "-w",
                        "-t",
                        str(int(self._startup_timeout_s)),
                        "-o",
                        f"-p {port}",
                    ],
                    account,
                    timeout=self._startup_timeout_s + 30,
                    log_file=log,
                )
            if result.returncode == 0:
                _log.info("PostgreSQL for %s listening on %s:%d", self._data_dir, _HOST, port)
                return port
            tail = _tail(self.log_file, offset)
            # Another process may grab the port between our probe and the postmaster's bind(): retry.
            if re.search(r"could not bind|Address already in use", tail) and attempt < attempts:
                _log.info("port %d was taken during startup, retrying with another", port)
                port = _pick_free_port()
                continue
            raise EmbeddedPostgresError(
                f"PostgreSQL failed to start (exit {result.returncode}; cluster {cluster}; "
                f"log {self.log_file}). Log tail:\n{tail}"
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _stop_locked(self) -> None:
        state = self._read_state()
        cluster = self._cluster_dir(state)
        self._url = None
        self._owns_server = False
        if not (cluster / "postmaster.pid").exists():
            return
        account = self._account(state)
        bin_dir = _bin_dir_for(self._resolve_bin_dir(), account)
        pg_ctl = bin_dir / "pg_ctl"
        result = _run([pg_ctl, "stop", "-D", cluster, "-m", "fast", "-w", "-t", "120"], account, timeout=150)
        if result.returncode == 0:
            _log.info("stopped PostgreSQL for %s", self._data_dir)
            return
        # A stale postmaster.pid (server crashed or was killed) makes pg_ctl stop fail harmlessly.
        if _run([pg_ctl, "status", "-D", cluster], account, timeout=30).returncode == 3:
            return
        raise EmbeddedPostgresError(
            f"could not stop PostgreSQL for {self._data_dir}: {_output(result)}\nLog tail:\n{_tail(self.log_file)}"
        )
