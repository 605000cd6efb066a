"""`propdesk cluster up --shards N`: the whole topology on one machine, as supervised subprocesses.

The supervisor resolves the database and the bus once (``DATABASE_URL``/``NATS_URL``, else the embedded servers
of the data directory, started here before any child), migrates and registers the bus, then starts:

- the API: ``propdesk serve --no-worker`` with ``PROPDESK_RISK_ENGINE=off`` (the shards run the risk engine);
- N risk shards: ``propdesk worker risk --shard I --shards N`` (metrics on ``--metrics-base-port + I`` if given);
- the outbox relay (``propdesk worker outbox-relay``) and the mark-to-market worker.

Every child gets the same ``DATABASE_URL``/``NATS_URL``. A child that exits is restarted after a backoff (1 s,
doubling up to 30 s; back to 1 s once it has run a minute). SIGTERM/SIGINT stop every child (SIGTERM, then SIGKILL
after a grace period) and then the embedded servers this process started. docs/DEPLOY.md shows the same
processes spread over several machines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from .common import _out, _run, _settings

cluster_app = typer.Typer(help="Run the whole topology locally (API, risk shards, workers).", no_args_is_help=True)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
GRACE_S = 15.0


@dataclass
class Child:
    """One supervised process: its name, command, environment and restart state."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_START_S
    restart_at: float | None = None
    log: Any = None

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
            self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started_at = time.monotonic()
        self.restart_at = None


@dataclass
class Supervisor:
    """Starts the children, restarts those that die (with backoff), stops them all on request."""

    children: list[Child]
    stop: threading.Event = field(default_factory=threading.Event)
    say: Any = None

    def _say(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    def start_all(self) -> None:
        for c in self.children:
            c.start()
            self._say(f"started {c.name} (pid {c.proc.pid if c.proc else '?'})")

    def poll(self) -> None:
        """One supervision step: notice exits, schedule and perform restarts."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                continue
            code = c.proc.poll()
            if code is None:
                if now - c.started_at >= HEALTHY_AFTER_S:
                    c.backoff_s = BACKOFF_START_S
                continue
            if c.restart_at is None:
                c.restart_at = now + c.backoff_s
                self._say(f"{c.name} exited with {code}; restarting in {c.backoff_s:.0f} s")
                c.backoff_s = min(BACKOFF_MAX_S, c.backoff_s * 2)
            elif now >= c.restart_at:
                c.restarts += 1
                c.start()
                self._say(f"restarted {c.name} (pid {c.proc.pid if c.proc else '?'}, restart {c.restarts})")

    def run(self, poll_s: float = 0.25) -> None:
        while not self.stop.is_set():
            self.poll()
            self.stop.wait(poll_s)

    def stop_all(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM every child, wait up to ``grace_s``, SIGKILL what is left."""
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait(5)
            self._say(f"stopped {c.name} ({c.proc.returncode})")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _nats_url(endpoint: Any) -> str:
    """The endpoint as one ``NATS_URL`` (credentials in it, for the children's environment only)."""
    from urllib.parse import quote, urlsplit

    if not endpoint.user:
        return str(endpoint.url)
    p = urlsplit(endpoint.url)
    return f"{p.scheme}://{quote(endpoint.user, safe='')}:{quote(endpoint.password or '', safe='')}@{p.netloc}"


def plan(
    shards: int, *, api_host: str, api_port: int, metrics_base_port: int | None, env: dict[str, str]
) -> list[Child]:
    """The children of a cluster of ``shards`` shards (commands and environments)."""
    py = [sys.executable, "-m", "propdesk"]
    api_env = {**env, "PROPDESK_RISK_ENGINE": "off"}
    children = [Child("api", [*py, "serve", "--no-worker", "--host", api_host, "--port", str(api_port)], api_env)]
    for i in range(shards):
        argv = [*py, "worker", "risk", "--shard", str(i), "--shards", str(shards), "--wait", "60"]
        if metrics_base_port is not None:
            argv += ["--metrics-port", str(metrics_base_port + i)]
        children.append(Child(f"risk-shard-{i}-of-{shards}", argv, dict(env)))
    children.append(Child("outbox-relay", [*py, "worker", "outbox-relay"], dict(env)))
    children.append(Child("mark-to-market", [*py, "worker", "mark-to-market"], dict(env)))
    return children


@cluster_app.command("up")
def up(
    shards: Annotated[int, typer.Option("--shards", min=1, max=256, help="How many risk shards to run.")] = 1,
    api_port: Annotated[int, typer.Option("--api-port", min=0, max=65535, help="API port; 0 picks a free one.")] = 0,
    api_host: Annotated[str, typer.Option("--api-host", help="API interface.")] = "127.0.0.1",
    metrics_base_port: Annotated[
        int | None, typer.Option("--metrics-base-port", help="Shard I serves /metrics on this port + I.")
    ] = None,
    logs_dir: Annotated[
        str | None, typer.Option("--logs", help="Write each child's output to <dir>/<name>.log (default: inherit).")
    ] = None,
) -> None:
    """Start the API, N risk shards, the outbox relay and the mark-to-market worker, supervise them (restart
    what dies, with backoff) until SIGTERM/Ctrl-C, then stop them all."""

    def body() -> int:
        from pathlib import Path

        from ..bootstrap import open_platform, resolve_database
        from ..bus.embedded import EmbeddedNats

        settings = _settings()
        admin_url, embedded_pg = resolve_database(settings)
        embedded_nats = None
        try:
            if settings.nats_url:
                nats_url = settings.nats_url
            else:
                embedded_nats = EmbeddedNats(settings.data_dir.resolve() / "nats")
                nats_url = _nats_url(embedded_nats.start())
            # Migrate and register the bus once, before any child (children would race each other doing it).
            once = settings.model_copy(update={"database_url": admin_url, "nats_url": nats_url, "risk_engine": "off"})
            open_platform(once, admin_url=admin_url, configure_logs=True).close()
            # Only the shards judge prices against accounts: no process runs the in-process engine.
            env = {**os.environ, "DATABASE_URL": admin_url, "NATS_URL": nats_url, "PROPDESK_RISK_ENGINE": "off"}
            env.pop("PROPDESK_DATABASE_URL", None)
            env.pop("PROPDESK_NATS_URL", None)
            port = api_port or _free_port(api_host)
            children = plan(shards, api_host=api_host, api_port=port, metrics_base_port=metrics_base_port, env=env)
            if logs_dir:
                Path(logs_dir).mkdir(parents=True, exist_ok=True)
                for c in children:
                    c.log = open(Path(logs_dir) / f"{c.name}.log", "ab")  # noqa: SIM115  (closed at the end)
            sup = Supervisor(children, say=lambda t: sys.stderr.write(f"cluster: {t}\n"))

            def on_signal(signum: int, _frame: Any) -> None:
                sys.stderr.write(f"cluster: {signal.Signals(signum).name}, stopping\n")
                sup.stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            sup.start_all()
            _out(f"API: http://{api_host}:{port}")
            sys.stdout.flush()
            try:
                sup.run()
            finally:
                sup.stop_all()
                for c in children:
                    if c.log is not None:
                        c.log.close()
        finally:
            if embedded_nats is not None:
                embedded_nats.release()
            if embedded_pg is not None:
                embedded_pg.__exit__(None, None, None)
        return 0

    _run(body)
