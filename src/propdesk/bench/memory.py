"""``propdesk bench memory``: resident memory of a risk book beyond its numpy arrays, per account.

The book of ``bench tick`` (A synthetic accounts x P positions, the same ``RiskBook`` class the risk worker runs)
is built in this process from a generator of accounts (no list of them is kept). The path's figure is the growth of
the resident set (``/proc/self/statm``) while building it, after a full collection; the limit is the bytes held
in the book's numpy arrays alone (``RiskBook.arrays_nbytes``). ``rss_bytes_per_account`` is what the book costs
beyond its arrays (Python objects per account: its id, the id -> slot map, the list of its position groups).
``ratio_to_limit`` is the whole growth over the arrays alone. ``correct``: every account and position is in the
book and its equity equals cash plus the positions' values recomputed from the arrays (``resync``).
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np

from .common import BenchResult, ProgressFn, machine_info, no_progress
from .tick import build_book, price_stream

TARGET_BYTES_PER_ACCOUNT = 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(
    *, accounts: int = 100_000, positions_per_account: int = 5, seed: int = 42, progress: ProgressFn = no_progress
) -> BenchResult:
    _stream, start, label = price_stream(16, seed)
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    book, _refs = build_book(accounts, positions_per_account, start, seed, 0)
    build_s = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    progress("memory: built", 0.8)
    arrays = book.arrays_nbytes()
    grown = after - before
    beyond = max(0, grown - arrays)
    per_account = beyond / max(1, accounts)
    eq_before = book.eq[: book._n].copy()
    book.resync()
    drift = float(np.max(np.abs(book.eq[: book._n] - eq_before))) if book._n else 0.0
    problems: list[str] = []
    if len(book) != accounts:
        problems.append(f"book holds {len(book)} accounts, expected {accounts}")
    want = accounts * min(positions_per_account, 7)
    if book.positions != want:
        problems.append(f"book holds {book.positions} positions, expected {want}")
    if drift > 1e-6:
        problems.append(f"equity differs from a recompute by {drift}")
    if per_account > TARGET_BYTES_PER_ACCOUNT:
        problems.append(f"{per_account:.0f} bytes per account beyond the arrays > {TARGET_BYTES_PER_ACCOUNT}")
    metrics = {
        "rss_bytes_per_account": round(per_account, 1),
        "rss_growth_bytes": grown,
        "arrays_bytes": arrays,
        "arrays_bytes_per_account": round(arrays / max(1, accounts), 1),
        "positions": book.positions,
        "build_s": round(build_s, 2),
        "equity_drift": drift,
    }
    limit = {"rss_bytes_per_account": round(arrays / max(1, accounts), 1)}
    progress("memory: checked", 0.2)
    return BenchResult(
        "memory",
        {"accounts": accounts, "positions_per_account": positions_per_account, "seed": seed, "data": label},
        metrics,
        limit,
        round(grown / arrays, 3) if arrays else 0.0,
        not problems,
        machine_info(),
        problems,
    )
