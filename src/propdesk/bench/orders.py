"""``propdesk bench orders``: durable order intake with C concurrent clients.

Our path: ``ExecutionService.submit_order`` — account lock, gates, fill simulation, position math, order, fill,
position, ledger and balances rows — all in one PostgreSQL transaction, committed durably. Each client thread
owns its own account(s) and alternates a buy and a sell of one minimum lot (every order opens or closes a
position, so every order fills, and half of them realize P&L).

The limit: a one-row INSERT of a ledger row's width (a copy of a real ``fill`` ledger row, evidence and all) plus
COMMIT into a plain table, on the same connection pool, with the same C clients.

Trials are interleaved (path, limit, path, limit, ...); figures are medians over the trials; ``ratio_to_limit``
is the path's cost per order (wall time / orders) over the limit's cost per insert. ``correct``: every order
sent was filled (fills in the database == orders sent) and ``recompute`` of every bench account is clean.

With no ``DATABASE_URL`` it starts its own embedded PostgreSQL in a temporary directory (fsync and
synchronous_commit on, like production) and deletes it afterwards. With ``DATABASE_URL`` it creates a scratch
database ``propdesk_bench_<random>`` on that server and drops it afterwards; the server's own durability
settings are reported in ``machine``.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress

LIMIT_TABLE = "bench_limit_ledger"
# (symbol, minimum lot, mid): every order is one minimum lot, a few hundred to a few thousand USD of notional.
INSTRUMENTS: tuple[tuple[str, str, str], ...] = (
    ("EURUSD", "0.01", "1.08000"),
    ("GBPUSD", "0.01", "1.27000"),
    ("XAUUSD", "0.01", "2350.00"),
    ("US500", "0.1", "5200.00"),
    ("AAPL", "1", "190.00"),
    ("BTCUSD", "0.001", "65000.00"),
)


@contextmanager
def bench_database(settings: Any) -> Iterator[tuple[str, str]]:
    """Yield ``(admin_url, kind)`` of a scratch database that is removed afterwards."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if settings.database_url:
        server_url = settings.database_url
        name = f"propdesk_bench_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermissionError(
                f"the order benchmarks run in a scratch database on DATABASE_URL's server and needs "
                f"CREATEDB there (or unset DATABASE_URL to use an embedded server): {exc}"
            ) from exc
        params = conninfo_to_dict(server_url)
        params["dbname"] = name
        try:
            yield make_conninfo(**params), "external"  # type: ignore[arg-type]
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    from ..bootstrap import _ensure_database
    from ..db.embedded import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="propdesk-bench-"))
    tmp.chmod(0o711)  # our own directory: let the PostgreSQL service user (when we are root) traverse it
    server = EmbeddedPostgres(tmp / "pg")
    try:
        url = server.start()
        yield _ensure_database(url, "propdesk_bench"), "embedded"
    finally:
        try:
            server.destroy()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class BenchAccount:
    id: uuid.UUID
    symbol: str
    lot: Decimal
    long: bool = False  # does it hold the one-lot position now?


def _create_limit_table(admin_url: str, prefix: str) -> None:
    """The limit's table: the ledger's columns, a bigserial key, nothing else; writable by the engine role."""
    import psycopg

    from ..db.migrate import role_names

    owner, engine, _app = role_names(prefix)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'SET ROLE "{owner}"')
        conn.execute(f"DROP TABLE IF EXISTS {LIMIT_TABLE}")
        conn.execute(f"""CREATE TABLE {LIMIT_TABLE} (
            id bigserial PRIMARY KEY, account_id uuid NOT NULL, seq bigint NOT NULL, kind text NOT NULL,
            category text NOT NULL, amount numeric(28,10) NOT NULL, balance_after numeric(28,10) NOT NULL,
            equity_after numeric(28,10), order_id uuid, fill_id uuid, evidence jsonb NOT NULL,
            created_at timestamptz NOT NULL)""")
        # Same security posture as every other table (FORCE RLS, engine policy), so the limit pays what we pay.
        conn.execute(f"ALTER TABLE {LIMIT_TABLE} ENABLE ROW LEVEL SECURITY")
        conn.execute(f"ALTER TABLE {LIMIT_TABLE} FORCE ROW LEVEL SECURITY")
        conn.execute(f'CREATE POLICY engine_all ON {LIMIT_TABLE} TO "{engine}" USING (true) WITH CHECK (true)')
        conn.execute(f'GRANT SELECT, INSERT ON {LIMIT_TABLE} TO "{engine}"')
        conn.execute(f'GRANT USAGE ON SEQUENCE {LIMIT_TABLE}_id_seq TO "{engine}"')


def _server_facts(admin_url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        facts = {}
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_sync_method",
            "commit_delay",
        ):
            row = conn.execute(f"SHOW {name}").fetchone()
            facts[name] = row[0] if row else None
    return facts


def _put_quotes(platform: Any) -> None:
    from ..domain.quotes import Quote

    now = platform.clock.now()
    for symbol, _lot, mid in INSTRUMENTS:
        inst = platform.catalogue.get(symbol)
        m = Decimal(mid)
        platform.quotes.put(Quote(symbol, m - inst.tick_size, m + inst.tick_size, now, 0, "bench"))


class _QuoteRefresher:
    """Keeps the bench quotes fresh (the gates refuse quotes older than 60 s) during long runs: ``refresh()``
    every ``every_s`` seconds (default: put them into this process's quote store). A failed refresh is recorded in
    ``problems`` (the orders would then be refused as stale, and the run is not correct)."""

    def __init__(
        self,
        platform: Any,
        every_s: float = 5.0,
        *,
        refresh: Any = None,
        problems: list[str] | None = None,
        name: str = "bench-quotes",
    ):
        self.refresh = refresh or (lambda: _put_quotes(platform))
        self.every_s = every_s
        self.problems = problems if problems is not None else []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.refresh()
            except Exception as exc:
                self.problems.append(f"quote refresh: {type(exc).__name__}: {exc}")

    def __enter__(self) -> _QuoteRefresher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _run_clients(n_clients: int, work: Any) -> tuple[float, list[int], list[str]]:
    """Start ``n_clients`` threads running ``work(client_index, latencies, problems)`` behind a barrier;
    returns (wall seconds from release to the last finish, all latencies in ns, problems)."""
    barrier = threading.Barrier(n_clients + 1)
    lat: list[list[int]] = [[] for _ in range(n_clients)]
    problems: list[str] = []

    def runner(i: int) -> None:
        barrier.wait()
        try:
            work(i, lat[i], problems)
        except Exception as exc:  # a crashed client is a wrong result, not a hang
            problems.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=runner, args=(i,), name=f"bench-client-{i}") for i in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return wall, [x for per in lat for x in per], problems


class Tally:
    """A count of units sent, shared by the client threads."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def add(self, k: int = 1) -> None:
        with self._lock:
            self.n += k


def bench_settings(settings: Any, clients: int) -> tuple[Any, int]:
    """The settings of a bench platform and its pool size (one connection per client, plus room)."""
    pool = max(settings.db_pool_size, clients + 2)
    # Every market counts as open (the demo setting): the bench times the order path on the wall clock, so a
    # weekend or the NYSE's closed hours must not turn its orders into market_closed refusals.
    return settings.model_copy(update={"db_pool_size": pool, "demo_always_open": True}), pool


def create_accounts(ex: Any, rng: random.Random, n: int, owner_prefix: str = "bench") -> list[BenchAccount]:
    """``n`` started audition accounts, each trading one symbol drawn from ``INSTRUMENTS`` with ``rng``."""
    from ..domain.lifecycle import Mode
    from ..execution.service import CreateAccount

    out: list[BenchAccount] = []
    for i in range(n):
        symbol, lot, _mid = INSTRUMENTS[rng.randrange(len(INSTRUMENTS))]
        row, _ = ex.create_account(
            CreateAccount(owner_id=f"{owner_prefix}-{i:05d}", mode=Mode.AUDITION, phase="bench", start=True)
        )
        out.append(BenchAccount(row["id"], symbol, Decimal(lot)))
    return out


def submit_work(ex: Any, owned: list[list[BenchAccount]], n: int, sent: Tally) -> Any:
    """A client's work for ``_run_clients``: ``n`` orders through ``ExecutionService.submit_order`` on its own
    accounts in turn, each a buy when flat and a sell when long (so every order fills)."""
    from ..domain.orders import OrderRequest, Side

    def work(ci: int, lat: list[int], problems: list[str]) -> None:
        mine = owned[ci]
        ns = time.perf_counter_ns
        for k in range(n):
            acc = mine[k % len(mine)]
            req = OrderRequest(acc.symbol, Side.SELL if acc.long else Side.BUY, acc.lot)
            t0 = ns()
            out = ex.submit_order(acc.id, req)
            lat.append(ns() - t0)
            sent.add()
            if out.fill is None:
                problems.append(
                    f"order on {acc.id} not filled: {out.rejection.code if out.rejection else out.order['status']}"
                )
            else:
                acc.long = not acc.long

    return work


def trial_figures(wall: float, lat: list[int]) -> dict[str, float]:
    """One trial's latency percentiles, throughput and cost per unit (microseconds of wall time)."""
    count = len(lat)
    return {
        **latency_summary(lat),
        "throughput_per_s": count / wall if wall else 0.0,
        "us_per_unit": wall / count * 1e6 if count else 0.0,
    }


def summary(ts: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the trials of the contract's latency and throughput figures."""
    return {
        "latency_us_p50": median_of(ts, "latency_us_p50"),
        "latency_us_p99": median_of(ts, "latency_us_p99"),
        "latency_us_max": median_of(ts, "latency_us_max"),
        "throughput_per_s": round(median_of(ts, "throughput_per_s"), 1),
    }


def count_fills(platform: Any, ids: list[uuid.UUID]) -> int:
    with platform.db.read() as c:
        fills = c.execute("SELECT count(*) AS n FROM fills WHERE account_id = ANY(%s)", (ids,)).fetchone()
    return int(fills["n"]) if fills else -1


def recompute_problems(report: Any) -> list[str]:
    """Why ``verify`` was not clean (empty when it was)."""
    if report.clean:
        return []
    return [
        f"recompute: {len(report.mismatched)} mismatched, {len(report.errors)} errors: "
        f"{(report.mismatched + report.errors)[:3]}"
    ]


def client_params(
    accounts: int | None, clients: int, trials: int, orders_per_client: int, seed: int, warmup_per_client: int
) -> tuple[int, dict[str, Any]]:
    """The number of accounts (default: one per client) and the result's ``params``; ValueError for sizes that
    cannot run (each client owns at least one account)."""
    n_accounts = accounts if accounts is not None else clients
    if clients < 1 or trials < 1 or orders_per_client < 1:
        raise ValueError("--clients, --trials and --orders must be at least 1")
    if n_accounts < clients:
        raise ValueError("--accounts must be at least --clients (each client owns its accounts)")
    return n_accounts, {
        "accounts": n_accounts,
        "clients": clients,
        "orders_per_client": orders_per_client,
        "trials": trials,
        "seed": seed,
        "warmup_per_client": warmup_per_client,
    }


def run(
    settings: Any,
    *,
    accounts: int | None = None,
    clients: int = 8,
    seed: int = 42,
    trials: int = 5,
    orders_per_client: int = 100,
    warmup_per_client: int = 4,
    progress: ProgressFn = no_progress,
) -> BenchResult:
    """Run the scenario end to end (database, accounts, trials, checks) and return the result."""
    from ..bootstrap import open_platform
    from ..workers.reconcile import verify

    n_accounts, params = client_params(accounts, clients, trials, orders_per_client, seed, warmup_per_client)
    rng = random.Random(seed)
    with bench_database(settings) as (admin_url, kind):
        progress("orders: database ready", 0.05)
        b_settings, pool = bench_settings(settings, clients)
        params.update({"database": kind, "pool_size": pool})
        facts = _server_facts(admin_url)
        platform = open_platform(b_settings, admin_url=admin_url, migrate=True, configure_logs=False)
        try:
            _create_limit_table(admin_url, settings.db_role_prefix)
            ex = platform.execution
            _put_quotes(platform)
            bench = create_accounts(ex, rng, n_accounts)
            owned = [bench[c::clients] for c in range(clients)]
            sent = Tally()

            # Warm-up (not timed): pools filled, code paths hot, and a real fill ledger row for the limit.
            _wall, _lat, warm_problems = _run_clients(clients, submit_work(ex, owned, warmup_per_client, sent))
            with platform.db.read() as c:
                template = c.execute("SELECT * FROM ledger WHERE kind = 'fill' LIMIT 1").fetchone()
                width = c.execute("SELECT avg(pg_column_size(l.*))::int AS w FROM ledger l").fetchone()
            if template is None:
                raise RuntimeError(f"warm-up produced no fill: {warm_problems[:3]}")
            from psycopg.types.json import Jsonb

            insert = (
                f"INSERT INTO {LIMIT_TABLE} (account_id, seq, kind, category, amount, balance_after,"
                " equity_after, order_id, fill_id, evidence, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            )
            evidence = template["evidence"]
            db = platform.db
            limit_sent = Tally()

            def limit_work(n: int) -> Any:
                def work(ci: int, lat: list[int], problems: list[str]) -> None:
                    ns = time.perf_counter_ns
                    acc = owned[ci][0].id
                    for k in range(n):
                        args = (
                            acc,
                            k + 1,
                            template["kind"],
                            template["category"],
                            template["amount"],
                            template["balance_after"],
                            template["equity_after"],
                            uuid.uuid4(),
                            uuid.uuid4(),
                            Jsonb(evidence),
                            template["created_at"],
                        )
                        t0 = ns()
                        with db.tx() as c:
                            c.execute(insert, args)
                        lat.append(ns() - t0)
                        limit_sent.add()

                return work

            def path_work(n: int) -> Any:
                return submit_work(ex, owned, n, sent)

            path_trials: list[dict[str, float]] = []
            limit_trials: list[dict[str, float]] = []
            problems: list[str] = list(warm_problems)
            with _QuoteRefresher(platform, problems=problems):
                for t in range(trials):
                    _put_quotes(platform)
                    for name, make, sink in (("path", path_work, path_trials), ("limit", limit_work, limit_trials)):
                        wall, lat, probs = _run_clients(clients, make(orders_per_client))
                        problems.extend(probs)
                        sink.append(trial_figures(wall, lat))
                        progress(f"orders: trial {t + 1}/{trials} ({name})", 0.8 / (2 * trials))

            # Correctness: every order filled, and every account recomputes clean.
            ids = [a.id for a in bench]
            fills_total = count_fills(platform, ids)
            with platform.db.read() as c:
                limit_rows = c.execute(f"SELECT count(*) AS n FROM {LIMIT_TABLE}").fetchone()
            report = verify(ex, ids)
            progress("orders: verified", 0.15)
            if fills_total != sent.n:
                problems.append(f"fills in the database ({fills_total}) != orders sent ({sent.n})")
            problems.extend(recompute_problems(report))
            if limit_rows is None or int(limit_rows["n"]) != limit_sent.n:
                problems.append("limit rows in the table != inserts sent")
            correct = fills_total == sent.n and report.clean and not problems
        finally:
            platform.close()

    path_cost = statistics.median(t["us_per_unit"] for t in path_trials)
    limit_cost = statistics.median(t["us_per_unit"] for t in limit_trials)
    metrics: dict[str, Any] = {
        **summary(path_trials),
        "orders_sent": sent.n,
        "fills_total": fills_total,
        "accounts_verified": report.checked,
        "recompute_mismatches": len(report.mismatched),
        "ledger_row_bytes": int(width["w"]) if width and width["w"] else 0,
    }
    return BenchResult(
        "orders",
        params,
        metrics,
        summary(limit_trials),
        round(path_cost / limit_cost, 3),
        correct,
        machine_info(postgres=facts),
        problems,
    )
