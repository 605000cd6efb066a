"""``propdesk bench tick``: real prices into a risk book of A accounts x P positions vs a bare numpy kernel.

Our path: ``RiskBook.on_price`` per quote (the class the risk worker runs): reprice the symbol's positions and the
positions whose conversion it moves, per-account equity, SL/TP, resting orders, every limit (daily, max loss in
all modes, safety net, warnings, profit target, trailing highs) and the candidates handed to the execution core.
The limit: on identical arrays (the book's own groups), a bare reprice + ``np.bincount`` per account + one compare
of every account's equity with one floor.

Data: EURUSD ticks (HistData) and USDJPY ticks (TrueFX) from ``../shared/data/market`` when present, else a random
walk calibrated to EURUSD's per-tick volatility; the other symbols (GBPUSD, AUDUSD, XAUUSD) walk with the same
volatility and the crosses (EURJPY, GBPJPY) are the products of their legs. The synthetic accounts (mostly USD,
10% EUR) hold P distinct symbols each, with SL/TP and resting orders, on four frozen rulebooks (static, intraday
trailing with a lock, end-of-day trailing with a soft daily limit, none) and cash placed so that some of them
cross their floors during the replay.

``correct``: on a sample of accounts every trigger and breach the slow exact path finds (Decimal, ``valuate``,
``crosses``, ``protective_trigger``, ``Evaluator.on_equity``; ``engine.reference``) is among the book's candidates,
and false candidates (for the sample) are at most 1% of its candidates.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..domain.instruments import DEFAULT_CATALOGUE
from ..domain.money import money
from ..domain.orders import OrderType, Side
from ..domain.positions import Position
from ..domain.quotes import Quote
from ..domain.rules.engine import EngineState, Evaluator
from ..domain.rules.rulebook import Rulebook, parse_rulebook
from ..engine.book import Candidates, RiskBook
from ..engine.reference import ExactAccount
from ..engine.spec import AccountSpec, OpenOrder, RuleState
from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress
from .quotes import shared_market_dir

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "XAUUSD", "EURJPY", "GBPJPY")
CYCLE = ("EURUSD", "USDJPY", "EURUSD", "GBPUSD", "EURJPY", "EURUSD", "USDJPY", "AUDUSD", "EURUSD", "XAUUSD", "GBPJPY")
HARD = {"max_daily_loss", "max_loss", "safety_net"}
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
INITIAL = Decimal(100000)

RULEBOOKS: dict[str, dict[str, Any]] = {
    "static": {
        "max_daily_loss": {"pct": "5"},
        "max_loss": {"pct": "10"},
        "drawdown_warning": {"used_pct": "80"},
        "profit_target": {"pct": "10"},
    },
    "trailing": {
        "max_daily_loss": {"pct": "4", "base": "day_anchor", "anchor": "start_of_day_max_balance_equity"},
        "max_loss": {"pct": "6", "mode": "intraday_trailing", "lock_at_offset": "0"},
        "drawdown_warning": {"used_pct": "70"},
    },
    "eod": {
        "max_daily_loss": {"amount": "3000", "action": "pause_day", "breach_on_touch": True},
        "max_loss": {"amount": "8000", "mode": "eod_trailing"},
        "profit_target": {"amount": "6000"},
    },
}


def _book(kind: str) -> Rulebook:
    return parse_rulebook(
        {
            "id": f"bench-{kind}",
            "version": 1,
            "name": kind,
            "currency": "USD",
            "starting_balance": "100000",
            "timezone": "UTC",
            "rules": RULEBOOKS[kind],
            "phases": [{"id": "phase_1"}],
        },
        where=f"bench {kind}",
    )


# ---------------------------------------------------------------- prices
def _real(path: Path, symbol: str) -> list[tuple[float, float]]:
    from ..marketdata.providers.replay import ReplayProvider

    return [(float(q.bid), float(q.ask)) for q in ReplayProvider([path], symbol=symbol).quotes()]


def price_stream(ticks: int, seed: int) -> tuple[list[tuple[int, float, float]], dict[str, tuple[float, float]], str]:
    """(symbol index in the book's catalogue order, bid, ask) per tick; the starting quotes; the data label."""
    rng = np.random.default_rng(seed)
    base = shared_market_dir()
    eur: list[tuple[float, float]] = []
    jpy: list[tuple[float, float]] = []
    label = "generated random walk (no ../shared/data/market)"
    if base is not None:
        nt = base / "nautilus_trader"
        e, j = nt / "quote_tick_data.csv", nt / "truefx" / "usdjpy-ticks.csv"
        if e.is_file() and j.is_file():
            eur, jpy = _real(e, "EURUSD"), _real(j, "USDJPY")
            label = "shared: HistData EURUSD ticks + TrueFX USDJPY ticks; others calibrated walks, crosses derived"
    vol = 0.00004
    if len(eur) > 10:
        mids = np.array([(b + a) / 2 for b, a in eur])
        vol = float(np.std(np.diff(np.log(mids)))) or vol
    n_each = ticks + 1
    if not eur:
        eur = _walk(rng, 1.1, vol, 0.00012, 5, n_each)
    if not jpy:
        jpy = _walk(rng, 150.0, vol, 0.012, 3, n_each)
    walks = {
        "GBPUSD": _walk(rng, 1.27, vol, 0.00015, 5, n_each),
        "AUDUSD": _walk(rng, 0.66, vol, 0.0001, 5, n_each),
        "XAUUSD": _walk(rng, 2000.0, vol, 0.3, 2, n_each),
    }
    pos = {"EURUSD": 0, "USDJPY": 0, "GBPUSD": 0, "AUDUSD": 0, "XAUUSD": 0}
    src = {"EURUSD": eur, "USDJPY": jpy, **walks}
    idx = {s: i for i, s in enumerate(DEFAULT_CATALOGUE.symbols())}
    cur = {s: src[s][0] for s in src}

    def cross(a: str, b: str) -> tuple[float, float]:
        m = (sum(cur[a]) / 2) * (sum(cur[b]) / 2)
        return round(m - 0.004, 3), round(m + 0.004, 3)

    start = dict(cur)
    start["EURJPY"], start["GBPJPY"] = cross("EURUSD", "USDJPY"), cross("GBPUSD", "USDJPY")
    out: list[tuple[int, float, float]] = []
    for i in range(ticks):
        s = CYCLE[i % len(CYCLE)]
        if s in src:
            pos[s] = (pos[s] + 1) % len(src[s])
            cur[s] = src[s][pos[s]]
            b, a = cur[s]
        else:
            b, a = cross("EURUSD" if s == "EURJPY" else "GBPUSD", "USDJPY")
        out.append((idx[s], b, a))
    return out, start, label


def _walk(
    rng: np.random.Generator, start: float, vol: float, spread: float, prec: int, n: int
) -> list[tuple[float, float]]:
    mids = start * np.exp(np.cumsum(rng.normal(0, vol, n)))
    return [(round(float(m) - spread / 2, prec), round(float(m) + spread / 2, prec)) for m in mids]


# ---------------------------------------------------------------- accounts
@dataclass
class Synthetic:
    specs: list[AccountSpec] | None
    sample: dict[Any, ExactAccount]


def _state(kind: str, cash: Decimal, loss_today: Decimal, peak_gain: Decimal) -> EngineState:
    sod = cash + loss_today
    s = EngineState(
        initial=INITIAL,
        balance=cash,
        equity=cash,
        day=T0.date(),
        sod_balance=sod,
        sod_equity=sod,
        day_high_equity=sod,
        day_low_equity=cash,
        peak_equity=INITIAL,
        peak_closed_balance=INITIAL,
        peak_eod_balance=INITIAL,
        started_at=T0 - timedelta(days=3),
        start_day=date(2026, 2, 27),
        last_t=T0,
    )
    if kind == "static":
        s.daily_anchor, s.daily_floor = money(sod), money(sod - Decimal(5000))
        s.max_floor = money(INITIAL - Decimal(10000))
    elif kind == "trailing":
        s.daily_anchor = money(sod)
        s.daily_floor = money(sod - Decimal("0.04") * sod)
        s.peak_equity = INITIAL + peak_gain
        s.max_floor = money(min(s.peak_equity - Decimal(6000), INITIAL))
        s.max_locked = s.max_floor >= INITIAL
    elif kind == "eod":
        s.daily_anchor, s.daily_floor = money(sod), money(sod - Decimal(3000))
        s.peak_eod_balance = INITIAL + peak_gain
        s.max_floor = money(INITIAL + peak_gain - Decimal(8000))
    return s


def synthetic_specs(
    accounts: int, per_account: int, start: dict[str, tuple[float, float]], seed: int, sample: int
) -> Iterator[tuple[AccountSpec, EngineState | None, Rulebook | None]]:
    rng = np.random.default_rng(seed + 1)
    books = {k: _book(k) for k in RULEBOOKS}
    rules = {k: b.phase("phase_1").rules for k, b in books.items()}
    keys = {k: b.digest() for k, b in books.items()}
    kinds = ("static", "trailing", "eod", None)
    p = min(per_account, len(SYMBOLS))
    for i in range(accounts):
        kind = kinds[i % 4]
        ccy = "EUR" if i % 10 == 9 else "USD"
        syms = rng.choice(len(SYMBOLS), size=p, replace=False)
        positions = []
        for j in syms.tolist():
            s = SYMBOLS[j]
            b, a = start[s]
            mid = (b + a) / 2
            prec = DEFAULT_CATALOGUE.get(s).price_precision  # type: ignore[union-attr]
            lots = round(float(rng.uniform(0.05, 1.5)) * (0.05 if s == "XAUUSD" else 1), 2) or 0.01
            qty = Decimal(str(lots)) if rng.random() < 0.5 else -Decimal(str(lots))
            avg = Decimal(str(round(mid * (1 + rng.normal(0, 0.002)), prec)))
            sl = tp = None
            r = rng.random()
            if r < 0.002:  # a tight stop that the replay reaches
                sl = Decimal(str(round(mid * (1 - 0.0002) if qty > 0 else mid * (1 + 0.0002), prec)))
            elif r < 0.5:
                sl = Decimal(str(round(mid * (0.97 if qty > 0 else 1.03), prec)))
            if rng.random() < 0.4:
                tp = Decimal(str(round(mid * (1.03 if qty > 0 else 0.97), prec)))
            positions.append(Position(s, qty, avg, sl, tp))
        orders = []
        if rng.random() < 0.3:
            s = SYMBOLS[int(rng.integers(len(SYMBOLS)))]
            mid = sum(start[s]) / 2
            prec = DEFAULT_CATALOGUE.get(s).price_precision  # type: ignore[union-attr]
            far = rng.random() < 0.99
            px = Decimal(str(round(mid * (0.98 if far else 0.9999), prec)))
            orders.append(OpenOrder(f"o{i}", s, Side.BUY, OrderType.LIMIT, px))
        cash = INITIAL - Decimal(int(rng.uniform(0, 9000)))
        loss_today = Decimal(int(rng.uniform(0, 4500)))
        peak_gain = Decimal(int(rng.uniform(0, 7000)))
        st = _state(kind, cash, loss_today, peak_gain) if kind else None
        book = books[kind] if kind else None
        spec = AccountSpec(
            f"a{i}",
            ccy,
            "active",
            cash,
            tuple(positions),
            tuple(orders),
            INITIAL * Decimal("0.5") if i % 7 else INITIAL * Decimal("0.915"),
            rules[kind] if kind else None,
            keys[kind] if kind else None,
            RuleState.of(st) if st is not None else None,
        )
        yield spec, st, book


def build_book(
    accounts: int, per_account: int, start: dict[str, tuple[float, float]], seed: int, sample: int
) -> tuple[RiskBook, dict[Any, ExactAccount]]:
    book = RiskBook(DEFAULT_CATALOGUE, capacity=accounts)
    for s, (b, a) in start.items():
        book.on_price(s, b, a)
    step = max(1, accounts // max(1, sample))
    refs: dict[Any, ExactAccount] = {}

    def specs() -> Iterator[AccountSpec]:
        for i, (spec, st, rb) in enumerate(synthetic_specs(accounts, per_account, start, seed, sample)):
            if i % step == 0 and len(refs) < sample:
                ev = Evaluator(rb, "phase_1", EngineState.from_json(st.to_json())) if (rb and st) else None
                refs[spec.account_id] = ExactAccount(spec, DEFAULT_CATALOGUE, ev)
            yield spec

    book.add_accounts(specs())
    book.reindex()
    return book, refs


# ---------------------------------------------------------------- state snapshots (trials replay the same ticks)
def snapshot(book: RiskBook) -> dict[str, Any]:
    names = ("eq", "lo_thr", "hi_thr", "flags", "peak", "max_floor", "locked", "bid", "ask", "mid", "ts")
    return {
        "arrays": {n: getattr(book, n).copy() for n in names},
        "rate": list(book.rate),
        "pv": [g.pv[: g.n].copy() for g in book._groups],
        "pq": [g.pq[: g.n].copy() for g in book._groups],
    }


def restore(book: RiskBook, snap: dict[str, Any]) -> None:
    for n, arr in snap["arrays"].items():
        getattr(book, n)[:] = arr
    book.rate[:] = snap["rate"]
    for g, pv, pq in zip(book._groups, snap["pv"], snap["pq"], strict=True):
        g.pv[: g.n] = pv
        g.pq[: g.n] = pq


# ---------------------------------------------------------------- the limit
class Bare:
    """The physical limit on the book's own arrays: reprice, bincount per account, one compare with one floor."""

    def __init__(self, book: RiskBook) -> None:
        self.n = book._n
        self.eq = book.eq[: self.n].copy()
        self.floor = book.lo_thr[: self.n].copy()
        self.groups = [
            (g.sym, g.side, g.route, g.acct[: g.n].copy(), g.k[: g.n].copy(), g.ka[: g.n].copy(), g.pv[: g.n].copy())
            for g in book._groups
        ]
        self.by_sym: list[list[int]] = [[] for _ in book.symbols]
        for gi, g in enumerate(book._groups):
            self.by_sym[g.sym].append(gi)
            for s in set(book._routes[g.route]) - {-1, g.sym}:
                self.by_sym[s].append(gi)
        self.routes = list(book._routes)
        self.rate = list(book.rate)
        self.bid, self.ask = book.bid.copy(), book.ask.copy()

    def on_price(self, s: int, bid: float, ask: float) -> np.ndarray:
        self.bid[s], self.ask[s] = bid, ask
        mid = (bid + ask) * 0.5
        for r, (d, i) in enumerate(self.routes):
            if d == s:
                self.rate[r] = mid
            elif i == s:
                self.rate[r] = round(1.0 / mid, 10)
        n = self.n
        for gi in self.by_sym[s]:
            sym, side, route, acct, k, ka, pv = self.groups[gi]
            mark = self.bid[sym] if side > 0 else self.ask[sym]
            new = (mark * k - ka) * self.rate[route]
            self.eq += np.bincount(acct, new - pv, minlength=n)
            pv[:] = new
        return np.flatnonzero(self.eq < self.floor)


# ---------------------------------------------------------------- correctness on a sample
def check(
    book: RiskBook,
    refs: dict[Any, ExactAccount],
    stream: list[tuple[int, float, float]],
    start: dict[str, tuple[float, float]],
) -> tuple[int, int, int, list[str]]:
    """Replay once; judge the sample exactly after every quote. Returns (candidates, sample candidates,
    false sample candidates, problems). Hard breaches found exactly remove the account, as the core would."""
    quotes = {s: Quote(s, Decimal(repr(b)), Decimal(repr(a)), T0) for s, (b, a) in start.items()}
    symbols = book.symbols
    total = sample_total = false = 0
    problems: list[str] = []
    conv: dict[Any, set[str]] = {}
    for aid, ref in refs.items():
        sp = ref.spec
        c = {p.symbol for p in sp.positions} | {o.symbol for o in sp.orders}
        for p in sp.positions:
            qc = DEFAULT_CATALOGUE.get(p.symbol).quote_currency  # type: ignore[union-attr]
            c |= {qc + sp.currency, sp.currency + qc}
        conv[aid] = c
    live = set(refs)
    seen: set[tuple[Any, str]] = set()
    for n, (s, b, a) in enumerate(stream):
        t = T0 + timedelta(seconds=n + 1)
        sym = symbols[s]
        quotes[sym] = Quote(sym, Decimal(repr(b)), Decimal(repr(a)), t)
        found = book.on_price(s, b, a)
        total += len(found)
        got: dict[Any, set[tuple[str, Any]]] = {}
        for cand in book.candidates(_subset(found, book, live)):
            key = cand.symbol if cand.kind in ("sl", "tp") else (cand.order_id if cand.kind == "order" else None)
            got.setdefault(cand.account_id, set()).add((cand.kind, key))
        for aid in list(live):
            if sym not in conv[aid]:
                continue
            ex = refs[aid]
            exact = {
                (k, r)
                for k, r in ex.judge(quotes, t)
                if not (k in ("sl", "tp") and r != sym)
                and not (k == "order" and all(o.order_id != r or o.symbol != sym for o in ex.spec.orders))
            }
            mine = got.get(aid, set())
            sample_total += len(mine)
            for miss in exact - mine:
                if len(problems) < 10:
                    problems.append(f"tick {n}: account {aid} {miss} found by the exact path, not by the book")
            for extra in mine - exact:
                if (aid, extra[0]) not in seen:
                    false += 1
            seen.update((aid, k) for k, _ in exact)
            if ex.terminated or any(k in HARD for k, _ in exact):
                live.discard(aid)
                book.remove_account(aid)
    return total, sample_total, false, problems


def _subset(found: Candidates, book: RiskBook, ids: set[Any]) -> Candidates:
    if not len(found):
        return found
    slots = np.array([book.slot(i) for i in ids if book.slot(i) is not None], np.intp)
    m = np.isin(found.account, slots)
    return Candidates(
        found.account[m], found.kind[m], found.symbol[m], found.bid[m], found.ask[m], found.quote[m], found.ref[m]
    )


# ---------------------------------------------------------------- run
def run(
    settings: Any = None,
    *,
    accounts: int = 100_000,
    positions_per_account: int = 5,
    ticks: int = 2000,
    seed: int = 42,
    trials: int = 5,
    sample: int = 40,
    liquidations: int = 200,
    workers: int = 4,
    progress: ProgressFn = no_progress,
) -> BenchResult:
    """With ``settings`` (the CLI passes them) and ``liquidations`` > 0, also price to committed liquidation for a
    burst of that many breaching accounts in a scratch PostgreSQL database (``bench.liquidation``)."""
    stream, start, label = price_stream(ticks, seed)
    progress("tick: building the book", 0.0)
    t_build = time.perf_counter()
    book, refs = build_book(accounts, positions_per_account, start, seed, sample)
    build_s = time.perf_counter() - t_build
    progress("tick: built", 0.1)
    per_sym = [0] * len(book.symbols)
    for g in book._groups:
        per_sym[g.sym] += g.n
        for s in set(book._routes[g.route]) - {-1, g.sym}:
            per_sym[s] += g.n
    repriced = sum(per_sym[s] for s, _, _ in stream)
    snap = snapshot(book)
    bare_template = Bare(book)

    # timed trials, interleaved path / limit; each replays the same ticks from the same state
    path_trials: list[dict[str, float]] = []
    limit_trials: list[dict[str, float]] = []
    candidates = 0
    clock = time.perf_counter_ns
    for _ in range(trials):
        restore(book, snap)
        gc.collect()
        gc.disable()
        lat: list[int] = []
        found_n = 0
        on_price = book.on_price
        t0 = clock()
        for s, b, a in stream:
            q0 = clock()
            found = on_price(s, b, a)
            lat.append(clock() - q0)
            found_n += len(found)
        dt = clock() - t0
        gc.enable()
        candidates = found_n
        path_trials.append({**latency_summary(lat), "ns_per_tick": dt / len(stream)})
        bare = Bare.__new__(Bare)
        bare.__dict__.update(
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in bare_template.__dict__.items()}
        )
        bare.groups = [(a, b_, c, d, e, f, pv.copy()) for a, b_, c, d, e, f, pv in bare_template.groups]
        bare.rate = list(bare_template.rate)
        gc.collect()
        gc.disable()
        lat_l: list[int] = []
        bare_price = bare.on_price
        t0 = clock()
        for s, b, a in stream:
            q0 = clock()
            bare_price(s, b, a)
            lat_l.append(clock() - q0)
        dt = clock() - t0
        gc.enable()
        limit_trials.append({**latency_summary(lat_l), "ns_per_tick": dt / len(stream)})
        progress("tick: timing", 0.6 / trials)

    # correctness: once more from the same state, with the exact reference on the sample
    restore(book, snap)
    _total, sample_total, false, problems = check(book, refs, stream, start)
    progress("tick: checked", 0.3)
    p_ns, l_ns = median_of(path_trials, "ns_per_tick"), median_of(limit_trials, "ns_per_tick")
    per_tick = repriced / len(stream)
    metrics = {
        "latency_us_p50": median_of(path_trials, "latency_us_p50"),
        "latency_us_p99": median_of(path_trials, "latency_us_p99"),
        "latency_us_max": median_of(path_trials, "latency_us_max"),
        "throughput_per_s": round(1e9 / p_ns, 1) if p_ns else 0.0,
        "positions_per_s": round(per_tick * 1e9 / p_ns, 1) if p_ns else 0.0,
        "positions_per_tick": round(per_tick, 1),
        "candidates": candidates,
        "sample_accounts": len(refs),
        "sample_candidates": sample_total,
        "false_candidates": false,
        "positions": book.positions,
        "rulebooks": book.rulebooks,
        "build_s": round(build_s, 2),
    }
    limit = {
        "latency_us_p50": median_of(limit_trials, "latency_us_p50"),
        "latency_us_p99": median_of(limit_trials, "latency_us_p99"),
        "throughput_per_s": round(1e9 / l_ns, 1) if l_ns else 0.0,
        "positions_per_s": round(per_tick * 1e9 / l_ns, 1) if l_ns else 0.0,
        "ns_per_tick": l_ns,
    }
    if settings is not None and liquidations > 0:
        from .liquidation import committed_liquidations

        liq, liq_problems = committed_liquidations(settings, accounts=liquidations, workers=workers, progress=progress)
        metrics.update(liq)
        problems.extend(liq_problems)
    too_many_false = false > max(0.0, 0.01 * sample_total)
    if too_many_false:
        problems.append(f"false candidates {false} > 1% of {sample_total}")
    correct = not problems and len(refs) > 0
    return BenchResult(
        "tick",
        {
            "accounts": accounts,
            "positions_per_account": positions_per_account,
            "ticks": len(stream),
            "trials": trials,
            "seed": seed,
            "sample": sample,
            "liquidations": liquidations if settings is not None else 0,
            "data": label,
        },
        metrics,
        limit,
        round(p_ns / l_ns, 3) if l_ns else 0.0,
        correct,
        machine_info(),
        problems,
    )
