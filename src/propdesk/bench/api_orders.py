"""``propdesk bench api-orders``: the durable order intake of ``bench orders``, through HTTP.

Our path: ``POST /api/v1/prop/accounts/{id}/orders`` with a service bearer token and a fresh ``Idempotency-Key``
per order, sent by C client threads (one keep-alive ``httpx.Client`` each) to a real uvicorn server —
``propdesk serve --no-worker`` in a separate process, so the server does not share the clients' interpreter lock.
Each order pays what an API order pays: TCP and HTTP parsing, strict body validation, the token check, the
idempotency key's row (inserted and completed in the same transaction as the order), the order itself (gates,
fill, position, ledger) and the JSON answer.

The limit: ``bench orders``'s path, ``ExecutionService.submit_order`` in the bench process with the same C
clients on other accounts of the same database, measured in the same run. Trials are interleaved (path, limit,
path, limit, ...); figures are medians over the trials; ``ratio_to_limit`` is the path's cost per order (wall
time / orders) over the in-process path's cost per order (PERFORMANCE.md's target: <= 2).

``correct``: every HTTP order answered 201 with a fill, fills in the database == orders sent (HTTP and in
process, each on its own accounts), ``verify`` clean for every bench account, and replaying a sample of
idempotency keys returns the same order id without a second fill.

The server process reads its URL from its ``serving`` log line; it is always stopped (SIGTERM, then kill) and
the scratch database dropped, even when the run fails.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import BenchResult, ProgressFn, machine_info, median_of, no_progress
from .orders import (
    INSTRUMENTS,
    BenchAccount,
    Tally,
    _put_quotes,
    _QuoteRefresher,
    _run_clients,
    _server_facts,
    bench_database,
    bench_settings,
    client_params,
    count_fills,
    create_accounts,
    recompute_problems,
    submit_work,
    summary,
    trial_figures,
)

ORDERS_PATH = "/api/v1/prop/accounts/{id}/orders"
QUOTES_PATH = "/api/v1/prop/quotes"
SERVER_START_SECONDS = 60.0
SERVER_STOP_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 30.0
QUOTE_REFRESH_SECONDS = 5.0


class ServerError(RuntimeError):
    """The API server process could not be started (or died); the message carries its last log lines."""


@dataclass
class ApiServer:
    """A ``propdesk serve`` process: its URL and the tail of its stderr (kept for error messages)."""

    proc: subprocess.Popen[str]
    url: str
    tail: collections.deque[str]

    def log_tail(self, n: int = 20) -> str:
        return "".join(list(self.tail)[-n:])


def server_command() -> list[str]:
    """The server's command line (a hook for tests)."""
    return [sys.executable, "-m", "propdesk", "serve", "--port", "0", "--no-worker"]


def server_env(admin_url: str, settings: Any, pool: int) -> dict[str, str]:
    """The server's environment: ours, pointed at the bench database, every market open, JSON logs at INFO (the
    ``serving`` line is how we learn its URL) and a pool with a connection per client."""
    env = {k: v for k, v in os.environ.items() if k != "PROPDESK_DATABASE_URL"}
    env.update(
        {
            "DATABASE_URL": admin_url,
            "PROPDESK_DB_ROLE_PREFIX": settings.db_role_prefix,
            "PROPDESK_DEMO_ALWAYS_OPEN": "true",
            "PROPDESK_DB_POOL_SIZE": str(pool),
            "PROPDESK_LOG_JSON": "true",
            "PROPDESK_LOG_LEVEL": "INFO",
        }
    )
    return env


@contextmanager
def api_server(
    env: dict[str, str], command: list[str] | None = None, start_timeout: float = SERVER_START_SECONDS
) -> Iterator[ApiServer]:
    """Start the server process, wait for its ``serving`` line, yield it; stop it (SIGTERM, then kill) after.

    A thread keeps draining its stderr (the API logs every request): a full pipe would stall the server."""
    proc = subprocess.Popen(  # noqa: S603 - our argv
        command or server_command(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=200)
    found: list[str] = []
    ready, closed = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            if not found and '"serving"' in line:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "serving" and event.get("url"):
                    found.append(str(event["url"]))
                    ready.set()
        closed.set()  # the process closed its stderr: it is exiting
        ready.set()

    reader = threading.Thread(target=read, name="bench-server-log", daemon=True)
    reader.start()
    try:
        ready.wait(start_timeout)
        if not found:
            if closed.is_set():  # its stderr closed a moment before it exits: wait for the exit code
                try:
                    proc.wait(SERVER_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
            code = proc.poll()
            why = f"exited with code {code}" if code is not None else f"did not serve within {start_timeout:.0f} s"
            shown = " ".join(command or ["propdesk", *server_command()[3:]])
            raise ServerError(
                f"the API server ({shown}) {why}; its last log lines:\n{''.join(list(tail)[-20:])}".rstrip()
            )
        yield ApiServer(proc, found[0], tail)
    finally:
        stop_process(proc)
        reader.join(timeout=5)


def stop_process(proc: subprocess.Popen[str], timeout: float = SERVER_STOP_SECONDS) -> None:
    """SIGTERM, wait, then SIGKILL: the server never outlives the bench."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _quote_batch(platform: Any) -> list[dict[str, str]]:
    """One fresh quote per bench symbol (mid +- one tick, as ``orders``'s in-process quotes)."""
    from decimal import Decimal

    now = platform.clock.now().isoformat()
    out = []
    for symbol, _lot, mid in INSTRUMENTS:
        inst = platform.catalogue.get(symbol)
        m = Decimal(mid)
        out.append({"symbol": symbol, "bid": str(m - inst.tick_size), "ask": str(m + inst.tick_size), "ts": now})
    return out


def post_quotes(http: Any, platform: Any) -> None:
    """Fresh quotes into the server's quote store (the gates refuse quotes older than 60 s)."""
    r = http.post(QUOTES_PATH, json=_quote_batch(platform))
    if r.status_code != 200:
        raise ServerError(f"POST {QUOTES_PATH} answered {r.status_code}: {r.text[:500]}")


@dataclass
class SentOrder:
    """An HTTP order as sent, to replay its idempotency key afterwards."""

    account_id: uuid.UUID
    key: str
    body: dict[str, str]
    order_id: str


def http_work(
    https: list[Any], owned: list[list[BenchAccount]], n: int, sent: Tally, errors: Tally, record: list[SentOrder]
) -> Any:
    """A client's work: ``n`` orders over its own keep-alive connection, each with a fresh idempotency key;
    anything but 201 with a fill is an HTTP error (and a problem)."""

    def work(ci: int, lat: list[int], problems: list[str]) -> None:
        http, mine = https[ci], owned[ci]
        ns = time.perf_counter_ns
        for k in range(n):
            acc = mine[k % len(mine)]
            body = {"symbol": acc.symbol, "side": "sell" if acc.long else "buy", "quantity": str(acc.lot)}
            key = uuid.uuid4().hex
            path = ORDERS_PATH.format(id=acc.id)
            t0 = ns()
            try:
                r = http.post(path, json=body, headers={"Idempotency-Key": key})
            except Exception as exc:  # the transport failed: count it, and stop this client (the server is sick)
                lat.append(ns() - t0)
                sent.add()
                errors.add()
                problems.append(f"order on {acc.id}: {type(exc).__name__}: {exc}")
                return
            lat.append(ns() - t0)
            sent.add()
            out = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != 201 or not out.get("fill"):
                errors.add()
                problems.append(f"order on {acc.id} answered {r.status_code}: {r.text[:300]}")
                continue
            acc.long = not acc.long
            record.append(SentOrder(acc.id, key, body, str(out["order"]["id"])))

    return work


def check_replays(http: Any, sample: list[SentOrder]) -> list[str]:
    """Replaying a key with its body must answer the same order id (and be marked a replay)."""
    problems = []
    for s in sample:
        r = http.post(ORDERS_PATH.format(id=s.account_id), json=s.body, headers={"Idempotency-Key": s.key})
        got = r.json().get("order", {}).get("id") if r.status_code == 201 else None
        if r.status_code != 201 or got != s.order_id or r.headers.get("idempotent-replayed") != "true":
            problems.append(
                f"replay of key {s.key} answered {r.status_code} order {got} "
                f"(first: {s.order_id}; replayed header {r.headers.get('idempotent-replayed')!r})"
            )
    return problems


def run(
    settings: Any,
    *,
    accounts: int | None = None,
    clients: int = 8,
    seed: int = 42,
    trials: int = 5,
    orders_per_client: int = 100,
    warmup_per_client: int = 4,
    replays: int = 20,
    progress: ProgressFn = no_progress,
    command: list[str] | None = None,
) -> BenchResult:
    """Run the scenario end to end (database, server, accounts, trials, checks) and return the result."""
    import httpx

    from ..bootstrap import open_platform
    from ..identity.auth import Role
    from ..workers.reconcile import verify

    # httpx narrates every request at INFO: that would be timed as part of the path and flood stderr.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    n_accounts, params = client_params(accounts, clients, trials, orders_per_client, seed, warmup_per_client)
    params.update({"replays_checked": 0, "server": "propdesk serve --no-worker (separate process)"})
    rng = random.Random(seed)
    problems: list[str] = []
    # The machine is shared: the load before we add ours says how busy it was (``loadavg`` is taken at the end).
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with bench_database(settings) as (admin_url, kind):
        progress("api-orders: database ready", 0.05)
        b_settings, pool = bench_settings(settings, clients)
        params.update({"database": kind, "pool_size": pool})
        facts = _server_facts(admin_url)
        platform = open_platform(b_settings, admin_url=admin_url, migrate=True, configure_logs=False)
        https: list[httpx.Client] = []
        try:
            ex = platform.execution
            _put_quotes(platform)
            # HTTP accounts and in-process accounts: the same symbols' draw, each client owns some of each.
            http_accounts = create_accounts(ex, rng, n_accounts, "bench-http")
            local_accounts = create_accounts(ex, rng, n_accounts, "bench-local")
            http_owned = [http_accounts[c::clients] for c in range(clients)]
            local_owned = [local_accounts[c::clients] for c in range(clients)]
            token, _principal = platform.tokens.create(Role.SERVICE, "bench api-orders")
            with api_server(server_env(admin_url, settings, pool), command) as server:
                progress("api-orders: server up", 0.05)
                headers = {"Authorization": f"Bearer {token}"}
                # One client per thread, plus one for quotes and replays (a connection is not shared).
                https = [
                    httpx.Client(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
                    for _ in range(clients + 1)
                ]
                control = https[-1]
                post_quotes(control, platform)
                sent, local_sent, http_errors = Tally(), Tally(), Tally()
                record: list[SentOrder] = []

                # Warm-up (not timed): connections open, pools filled, code paths hot on both sides.
                _w, _l, warm = _run_clients(
                    clients, http_work(https, http_owned, warmup_per_client, sent, http_errors, record)
                )
                problems.extend(warm)
                _w, _l, warm = _run_clients(clients, submit_work(ex, local_owned, warmup_per_client, local_sent))
                problems.extend(warm)

                path_trials: list[dict[str, float]] = []
                limit_trials: list[dict[str, float]] = []
                with (
                    _QuoteRefresher(platform, problems=problems),
                    _QuoteRefresher(
                        platform,
                        QUOTE_REFRESH_SECONDS,
                        refresh=lambda: post_quotes(control, platform),
                        problems=problems,
                        name="bench-api-quotes",
                    ),
                ):
                    for t in range(trials):
                        _put_quotes(platform)
                        post_quotes(control, platform)
                        for name, work, sink in (
                            (
                                "path",
                                http_work(https, http_owned, orders_per_client, sent, http_errors, record),
                                path_trials,
                            ),
                            ("limit", submit_work(ex, local_owned, orders_per_client, local_sent), limit_trials),
                        ):
                            cpu0, server0 = time.process_time(), process_cpu_seconds(server.proc.pid)
                            wall, lat, probs = _run_clients(clients, work)
                            cpu1, server1 = time.process_time(), process_cpu_seconds(server.proc.pid)
                            problems.extend(probs)
                            figures = trial_figures(wall, lat)
                            n = max(len(lat), 1)
                            # Where the time goes: this process's CPU (HTTP clients, or the in-process path)
                            # and, for the HTTP trials, the server's (PostgreSQL's own is in neither).
                            figures["cpu_us_per_order"] = (cpu1 - cpu0) / n * 1e6
                            if name == "path" and server0 is not None and server1 is not None:
                                figures["server_cpu_us_per_order"] = (server1 - server0) / n * 1e6
                            sink.append(figures)
                            progress(f"api-orders: trial {t + 1}/{trials} ({name})", 0.7 / (2 * trials))

                # Idempotency: a sample of keys replayed answers the same orders and fills nothing new (the
                # fills count below would show a second fill).
                sample = rng.sample(record, min(replays, len(record)))
                problems.extend(check_replays(control, sample))
                params["replays_checked"] = len(sample)
                if server.proc.poll() is not None:
                    problems.append(
                        f"the API server exited during the run (code {server.proc.returncode}):\n{server.log_tail()}"
                    )

            # Correctness: every order filled once, and every account recomputes clean.
            http_ids = [a.id for a in http_accounts]
            local_ids = [a.id for a in local_accounts]
            fills_http, fills_local = count_fills(platform, http_ids), count_fills(platform, local_ids)
            report = verify(ex, http_ids + local_ids)
            progress("api-orders: verified", 0.15)
            if fills_http != sent.n:
                problems.append(f"fills on the HTTP accounts ({fills_http}) != orders sent over HTTP ({sent.n})")
            if fills_local != local_sent.n:
                problems.append(
                    f"fills on the in-process accounts ({fills_local}) != orders sent in process ({local_sent.n})"
                )
            problems.extend(recompute_problems(report))
            correct = http_errors.n == 0 and report.clean and not problems
        finally:
            for h in https:
                h.close()
            platform.close()

    path_cost = statistics.median(t["us_per_unit"] for t in path_trials)
    limit_cost = statistics.median(t["us_per_unit"] for t in limit_trials)
    metrics: dict[str, Any] = {
        **summary(path_trials),
        "orders_sent": sent.n,
        "fills_total": fills_http,
        "http_errors": http_errors.n,
        "accounts_verified": report.checked,
        "recompute_mismatches": len(report.mismatched),
        "client_cpu_us_per_order": round(median_of(path_trials, "cpu_us_per_order"), 1),
    }
    if all("server_cpu_us_per_order" in t for t in path_trials):
        metrics["server_cpu_us_per_order"] = round(median_of(path_trials, "server_cpu_us_per_order"), 1)
    limit: dict[str, Any] = {
        **summary(limit_trials),
        "orders_sent": local_sent.n,
        "fills_total": fills_local,
        "cpu_us_per_order": round(median_of(limit_trials, "cpu_us_per_order"), 1),
    }
    return BenchResult(
        "api-orders",
        params,
        metrics,
        limit,
        round(path_cost / limit_cost, 3),
        correct,
        machine_info(postgres=facts, loadavg_at_start=load_at_start),
        problems,
    )
