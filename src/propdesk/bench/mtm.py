"""``bench mtm``: a durable mark of every account from PostgreSQL (``execution.bulk_mark.mark_all_bulk``).

Seeding: a few dozen *template* accounts are opened through the execution core itself (challenge accounts on a
preset rulebook and audition accounts, each with 1..P FX positions, JPY crosses included), then copied with COPY
as the engine role (the only role the engine-only triggers let write these tables) into ``accounts`` accounts: each
copy is a template's rows — account, balances, positions, orders, fills, ledger, rule state, daily stats — with
every id replaced (in columns and inside JSON), so the copies are exactly rows the core writes and ``verify``
recomputes them clean.

Trials, interleaved: the prices move (a small random walk), then *our path* marks every account
(``mark_all_bulk``: aggregated binary reads, the vectorized pre-pass, the exact Decimal path for what it cannot
prove, the rules tiers, one write statement, commit) and *the limit*
reads the same rows (the same account/balances/rule-state and positions queries, binary COPY, bytes not decoded)
and rewrites the same balances columns of every one of those accounts with one UPDATE and a commit.
``ratio_to_limit`` = median path seconds / median limit seconds.

``correct``: on a sample, the stored balances equal the exact per-account valuation (``snapshot``) at the final
quotes, the high-water mark is never under the equity, and ``verify`` (ledger fold == balances, including the
high-water mark and ledger_seq) is clean.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

from .common import BenchResult, ProgressFn, machine_info, median_of, no_progress
from .orders import _server_facts, bench_database, bench_settings

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "EURJPY", "GBPJPY", "AUDUSD", "USDCAD", "EURGBP")
MIDS = {
    "EURUSD": "1.10000",
    "GBPUSD": "1.30000",
    "USDJPY": "150.000",
    "EURJPY": "165.000",
    "GBPJPY": "195.000",
    "AUDUSD": "0.66000",
    "USDCAD": "1.36000",
    "EURGBP": "0.85000",
}
TABLES: tuple[tuple[str, str], ...] = (  # (table, the column naming the account)
    ("accounts", "id"),
    ("balances", "account_id"),
    ("orders", "account_id"),
    ("fills", "account_id"),
    ("positions", "account_id"),
    ("ledger", "account_id"),
    ("rule_states", "account_id"),
    ("daily_stats", "account_id"),
)
NS = uuid.UUID("5b0f3e52-6a55-4c1e-9c7e-9d0b2f1d2a10")


def _put_quotes(platform: Any, mids: dict[str, Decimal]) -> None:
    from ..domain.quotes import Quote

    now = platform.clock.now()
    for symbol, mid in mids.items():
        inst = platform.catalogue.get(symbol)
        m = mid.quantize(inst.tick_size)
        platform.quotes.put(Quote(symbol, m - inst.tick_size, m + inst.tick_size, now, 0, "bench"))


def _templates(ex: Any, rng: random.Random, n: int, per_account: int) -> list[uuid.UUID]:
    from ..domain.lifecycle import Mode
    from ..domain.orders import OrderRequest, Side
    from ..domain.policy import ExecutionPolicy
    from ..execution.service import CreateAccount
    from ..rulebooks import load_rulebook

    book = load_rulebook("classic-2step@100k")
    out = []
    for i in range(n):
        pol = ExecutionPolicy(
            starting_balance=book.starting_balance,
            max_leverage=Decimal(100),
            max_notional=Decimal(10) ** 9,
            max_position_equity_pct=Decimal(100000),
        )
        if i % 4 == 3:
            cmd = CreateAccount(owner_id=f"mtm-t{i}", mode=Mode.AUDITION, phase="bench", policy=pol, start=True)
        else:
            cmd = CreateAccount(
                owner_id=f"mtm-t{i}",
                policy=pol,
                rulebook=book.to_json(),
                rulebook_id=book.id,
                rulebook_version=book.version,
                start=True,
            )
        row, _ = ex.create_account(cmd)
        for symbol in rng.sample(SYMBOLS, rng.randint(1, per_account)):
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            res = ex.submit_order(row["id"], OrderRequest(symbol, side, Decimal(rng.choice(["0.1", "0.2", "0.5"]))))
            if not res.accepted:
                raise RuntimeError(f"template order refused: {res.rejection}")
        out.append(row["id"])
    return out


def _clone(db: Any, templates: list[uuid.UUID], copies: int, progress: ProgressFn) -> list[uuid.UUID]:
    """``copies`` accounts copied from the templates in turn (COPY as the engine role); returns their ids."""
    import json

    from psycopg.types.json import Jsonb

    rows: dict[str, tuple[list[str], dict[uuid.UUID, list[tuple[Any, ...]]]]] = {}
    ids_of: dict[uuid.UUID, set[uuid.UUID]] = {t: {t} for t in templates}
    with db.read() as c:
        for table, col in TABLES:
            # The ledger in chain order: its trigger takes each account's rows only in ``seq`` order.
            order = f" ORDER BY {col}, seq" if table == "ledger" else ""
            cur = c.execute(f"SELECT * FROM {table} WHERE {col} = ANY(%s){order}", (templates,))
            names = [d.name for d in cur.description if not (table == "ledger" and d.name == "id")]
            per: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
            for r in cur.fetchall():
                per.setdefault(r[col], []).append(tuple(r[n] for n in names))
                for n in names:
                    if isinstance(r[n], uuid.UUID):
                        ids_of[r[col]].add(r[n])
            rows[table] = (names, per)
    out: list[uuid.UUID] = []
    with db.tx() as c:
        c.execute("SET LOCAL synchronous_commit = on")
        for table, _col in TABLES:
            names, per = rows[table]
            cols = ", ".join(names)
            # COPY cannot write a table under row-level security: COPY into a scratch copy, then one INSERT.
            c.execute(f"CREATE TEMP TABLE seed_{table} ON COMMIT DROP AS SELECT {cols} FROM {table} LIMIT 0")
            with c.cursor().copy(f"COPY seed_{table} ({cols}) FROM STDIN") as cp:
                for j in range(copies):
                    t = templates[j % len(templates)]
                    mapping = {u: uuid.uuid5(NS, f"{u}:{j}") for u in ids_of[t]}
                    text_map = [(str(a), str(b)) for a, b in mapping.items()]
                    if table == "accounts":
                        out.append(mapping[t])
                    for r in per.get(t, []):
                        vals: list[Any] = []
                        for v in r:
                            if isinstance(v, uuid.UUID):
                                v = mapping.get(v, v)
                            elif isinstance(v, (dict, list)):
                                s = json.dumps(v)
                                for a, b in text_map:
                                    s = s.replace(a, b)
                                v = Jsonb(json.loads(s))
                            vals.append(v)
                        cp.write_row(vals)
            order = " ORDER BY account_id, seq" if table == "ledger" else ""
            c.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM seed_{table}{order}")
            progress(f"mtm: seeded {table}", 0.02)
    return out


def _limit(db: Any, ids_filter: None = None) -> tuple[float, int]:
    """The bare physical work of a durable mark, nothing else: the same rows read in one REPEATABLE READ snapshot
    (the path's account/balances/rule-state and positions queries, as binary COPY, the bytes not even decoded),
    then one UPDATE of the same balances columns of every one of those accounts, and a commit. No valuation, no
    locks, no rules, no ledger: anything our path does beyond this is its overhead."""
    from ..domain.lifecycle import MARKED
    from ..execution.bulk_mark import _ACCOUNTS, _POSITIONS

    t0 = time.perf_counter()
    params = {"statuses": [s.value for s in MARKED], "ids": None}
    n = 0
    with db.read() as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for q in (_ACCOUNTS, _POSITIONS):
            with c.cursor().copy(f"COPY ({q.format(only='')}) TO STDOUT (FORMAT BINARY)", params) as cp:
                for _chunk in cp:
                    n += 1
    with db.tx() as c:
        cur = c.execute(
            "UPDATE balances b SET equity = b.equity, unrealized_pnl = b.unrealized_pnl, margin_used = b.margin_used,"
            " high_watermark = b.high_watermark, ledger_seq = b.ledger_seq, marked_at = now(), updated_at = now()"
            " FROM accounts a WHERE a.id = b.account_id AND a.status = ANY(%(statuses)s)"
            " AND EXISTS (SELECT 1 FROM positions p WHERE p.account_id = a.id)",
            params,
        )
        rows = cur.rowcount
    return time.perf_counter() - t0, rows


def run(
    settings: Any,
    *,
    accounts: int = 20_000,
    positions_per_account: int = 5,
    seed: int = 42,
    trials: int = 5,
    templates: int = 40,
    progress: ProgressFn = no_progress,
) -> BenchResult:
    """Seed, run interleaved trials of the bulk mark and its limit, check a sample; return the result."""
    from ..bootstrap import open_platform
    from ..execution.bulk_mark import mark_all_bulk
    from ..workers.reconcile import verify

    if accounts < 1 or trials < 1 or positions_per_account < 1:
        raise ValueError("--accounts, --trials and --positions-per-account must be at least 1")
    rng = random.Random(seed)
    params: dict[str, Any] = {
        "accounts": accounts,
        "positions_per_account": positions_per_account,
        "seed": seed,
        "trials": trials,
        "templates": min(templates, accounts),
    }
    problems: list[str] = []
    with bench_database(settings) as (admin_url, kind):
        b_settings, _pool = bench_settings(settings, 2)
        params["database"] = kind
        facts = _server_facts(admin_url)
        platform = open_platform(b_settings, admin_url=admin_url, migrate=True, configure_logs=False)
        try:
            ex = platform.execution
            mids = {s: Decimal(m) for s, m in MIDS.items()}
            _put_quotes(platform, mids)
            tmpl = _templates(ex, rng, min(templates, accounts), positions_per_account)
            progress("mtm: templates opened", 0.05)
            clones = _clone(platform.db, tmpl, max(0, accounts - len(tmpl)), progress)
            all_ids = tmpl + clones
            with platform.db.read() as c:
                counted = c.execute("SELECT count(*) AS n FROM positions").fetchone()
            params["positions"] = int(counted["n"]) if counted else 0
            path: list[dict[str, float]] = []
            limit: list[dict[str, float]] = []
            totals = {"ledger_rows": 0, "rule_states": 0, "candidates": 0, "skipped": 0}
            tiers: dict[str, int] = {}
            statements = 0
            for t in range(trials + 1):  # trial 0 warms up (caches, plans), not counted
                for s in mids:
                    mids[s] = mids[s] * (1 + Decimal(rng.randint(-8, 8)) / 10000)
                _put_quotes(platform, mids)
                res = mark_all_bulk(platform.db, platform.clock, platform.catalogue, platform.quotes)
                lim_s, lim_n = _limit(platform.db)
                last_cands = {c["account_id"] for c in res["candidates"]} | set(res["skipped"])
                if t == 0:
                    continue
                path.append({"seconds": res["seconds"], "throughput_per_s": res["accounts"] / res["seconds"]})
                limit.append({"seconds": lim_s, "throughput_per_s": lim_n / lim_s})
                statements = res["statements"]
                for k, n in res["tiers"].items():
                    tiers[k] = tiers.get(k, 0) + n
                for k in totals:
                    v = res[k]
                    totals[k] += len(v) if isinstance(v, list) else int(v)
                progress(f"mtm: trial {t}/{trials}", 0.8 / trials)
            # Correctness on a sample: exact valuation, high-water mark, ledger fold.
            sample = rng.sample(all_ids, min(200, len(all_ids)))
            with platform.db.read() as c:
                stored = {
                    r["account_id"]: r
                    for r in c.execute(
                        "SELECT b.*, a.status FROM balances b JOIN accounts a ON a.id = b.account_id"
                        " WHERE account_id = ANY(%s)",
                        (sample,),
                    ).fetchall()
                }
            cands: set[uuid.UUID] = set()
            for acc in sample:
                snap = ex.snapshot(acc)
                b = stored[acc]
                if b["status"] != "active" or acc in last_cands:
                    cands.add(acc)  # handed to the exact path (not run by the bench) or decided by it
                    continue
                if (
                    b["equity"] != snap["balance"]["equity"]
                    or b["margin_used"] != snap["balance"]["margin_used"]
                    or b["unrealized_pnl"] != snap["balance"]["unrealized_pnl"]
                ):
                    problems.append(f"{acc}: stored {b['equity']} != exact {snap['balance']['equity']}")
                if b["high_watermark"] < b["equity"]:
                    problems.append(f"{acc}: high-water mark under equity")
            report = verify(ex, sample)
            if not report.clean:
                problems.append(f"verify: {report.to_json()['mismatches'][:2]} {report.to_json()['failures'][:2]}")
            if len(cands) > len(sample) // 2:
                problems.append(f"{len(cands)} of {len(sample)} sampled accounts were candidates: nothing checked")
            correct = not problems
        finally:
            platform.close()
    path_s = statistics.median(t["seconds"] for t in path)
    limit_s = statistics.median(t["seconds"] for t in limit)
    metrics = {
        "throughput_per_s": round(median_of(path, "throughput_per_s"), 1),
        "seconds": round(path_s, 4),
        "statements": statements,
        "accounts_marked": accounts,
        "sampled": len(sample),
        **{f"{k}_total": v for k, v in totals.items()},
        "tiers_total": tiers,  # quiet (proven by the pre-pass or the exact path), tier2, candidate
    }
    lim = {
        "throughput_per_s": round(median_of(limit, "throughput_per_s"), 1),
        "seconds": round(limit_s, 4),
        "statements": 3,
    }
    return BenchResult(
        "mtm", params, metrics, lim, round(path_s / limit_s, 3), correct, machine_info(postgres=facts), problems
    )
