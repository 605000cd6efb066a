"""``propdesk bench pretrade``: the full pre-trade check of one order, in process.

Our path: ``domain.gates.check_order`` (every execution-policy gate; rulebooks do not exist yet) over an
in-memory ``AccountState`` holding 4 open positions and 3 resting orders, with the instrument, quote and
conversion-rate lookups a real submission does. The timed orders are all accepted, so every gate runs: a market
order opening a new symbol (reaches the open-positions gate), a limit order on a new symbol (reaches the
open-orders gate) and a market order adding to a position.

The limit: ``inline_check`` below, the same checks hand-coded inline over the same state (no rejection objects,
no messages, no helper calls), returning only the verdict code.

Latency: per-call ``perf_counter_ns`` samples (minus the timer's own median cost), batched into k interleaved
trials (path, limit, path, limit, ...). Cost per call for ``ratio_to_limit``: one timer around a whole batch,
divided by its calls, so the timer's cost does not flatter the ratio. ``correct``: on a sample of random orders
(valid and hostile: unknown symbols, bad lots and prices, stale/missing quotes, wrong-side SL/TP, reduce-only,
inactive accounts, disallowed directions and assets, limit breaches) the gate and the inline reference return
the same verdict, code for code.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..domain import gates as G
from ..domain.instruments import DEFAULT_CATALOGUE, AssetClass, Catalogue, Instrument, conversion_rate
from ..domain.lifecycle import Status
from ..domain.money import CTX, ZERO
from ..domain.orders import OrderRequest, OrderType, Side
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position, valuate
from ..domain.quotes import Quote
from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress

# Every gate check_order can run, in its order. ``rules_evaluated`` is their number.
GATES: tuple[str, ...] = (
    "account_status", "symbol_enabled", "asset_class_allowed", "quantity_lots", "order_prices",
    "quote_present", "quote_fresh", "conversion_rate", "reduce_only", "direction_allowed",
    "stop_loss_side", "take_profit_side", "order_notional", "max_open_positions", "max_open_orders",
    "equity_positive", "aggregate_notional", "leverage", "position_equity_pct", "margin",
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MIDS: dict[str, str] = {
    "EURUSD": "1.08000", "GBPUSD": "1.27000", "USDJPY": "150.000", "AUDUSD": "0.66000", "USDCAD": "1.36000",
    "USDCHF": "0.88000", "NZDUSD": "0.61000", "EURGBP": "0.85000", "EURJPY": "162.000", "GBPJPY": "190.500",
    "XAUUSD": "2350.00", "XAGUSD": "28.000", "WTIUSD": "78.00", "US500": "5200.00", "US100": "18200.00",
    "US30": "39000.00", "AAPL": "190.00", "MSFT": "420.00", "NVDA": "880.00", "AMZN": "180.00", "TSLA": "175.00",
    "BTCUSD": "65000.00",
    # ETHUSD deliberately has no quote: orders on it meet the missing-price gate.
}
STALE = {"TSLA"}  # its quote is 2 minutes old


def _quote(symbol: str, mid: str, inst: Instrument, now: datetime) -> Quote:
    m = Decimal(mid)
    half = inst.tick_size * 2
    ts = now - timedelta(seconds=120 if symbol in STALE else 1)
    return Quote(symbol, m - half, m + half, ts, 1, "bench")


def market(catalogue: Catalogue = DEFAULT_CATALOGUE, now: datetime = NOW
           ) -> tuple[dict[str, Quote], dict[str, Decimal | None]]:
    """Quotes by symbol and conversion rates into USD by quote currency."""
    quotes = {s: _quote(s, m, inst, now) for s, m in MIDS.items() if (inst := catalogue.get(s)) is not None}
    ccys = {i.quote_currency for i in catalogue}
    rates = {c: conversion_rate(c, "USD", lambda s: (q.mid if (q := quotes.get(s)) else None)) for c in ccys}
    return quotes, rates


def strict_policy() -> ExecutionPolicy:
    """The default execution policy with the optional aggregate-notional gate switched on as well."""
    return ExecutionPolicy(max_aggregate_notional=Decimal(200000))


def account_state(quotes: Mapping[str, Quote], rates: Mapping[str, Decimal | None], *,
                  policy: ExecutionPolicy | None = None, status: Status = Status.ACTIVE,
                  catalogue: Catalogue = DEFAULT_CATALOGUE) -> G.AccountState:
    """An active 100k account with 4 open positions and 3 resting orders, valued at ``quotes``."""
    policy = policy or strict_policy()
    d = Decimal
    positions = {
        "EURUSD": Position("EURUSD", d("0.20"), d("1.07500"), d("1.06000"), d("1.10000"), NOW),
        "XAUUSD": Position("XAUUSD", d("-0.05"), d("2362.50"), d("2400.00"), None, NOW),
        "US500": Position("US500", d("2.0"), d("5150.00"), None, d("5400.00"), NOW),
        "AAPL": Position("AAPL", d("40"), d("185.20"), d("170.00"), None, NOW),
    }
    insts = {s: catalogue.get(s) for s in positions}
    val = valuate(d("100250.00"), positions.values(), insts,  # type: ignore[arg-type]
                  quotes.get, lambda c: rates.get(c))
    notional = {m.symbol: m.notional for m in val.marks}
    resting = (
        G.RestingOrder("BTCUSD", Side.BUY, d("0.050"), d("62000.00"), d("3100.00")),
        G.RestingOrder("US100", Side.SELL, d("1.0"), d("18500.00"), d("18500.00")),
        G.RestingOrder("GBPUSD", Side.BUY, d("0.05"), d("1.25000"), d("6250.00")),
    )
    return G.AccountState(status, policy, d("100250.00"), val.equity, positions, notional, resting)


def timed_orders() -> list[OrderRequest]:
    """Accepted orders that between them reach every gate."""
    d = Decimal
    return [
        OrderRequest("GBPUSD", Side.BUY, d("0.10"), stop_loss=d("1.25000"), take_profit=d("1.30000")),
        OrderRequest("US100", Side.SELL, d("0.5"), OrderType.LIMIT, limit_price=d("18300.00"),
                     stop_loss=d("18600.00"), take_profit=d("18000.00")),
        OrderRequest("EURUSD", Side.BUY, d("0.05"), stop_loss=d("1.07000"), take_profit=d("1.09500")),
    ]


Check = Callable[[OrderRequest, G.AccountState], "str | None"]


def make_path(quotes: Mapping[str, Quote], rates: Mapping[str, Decimal | None], now: datetime,
              catalogue: Catalogue = DEFAULT_CATALOGUE) -> Check:
    """Our path: look up the instrument, quote and rate, then run every gate."""
    check_order, market_ctx, get_inst, get_quote, get_rate = (G.check_order, G.MarketContext, catalogue.get,
                                                               quotes.get, rates.get)

    def path(req: OrderRequest, state: G.AccountState) -> str | None:
        inst = get_inst(req.symbol)
        rej = check_order(req, state, inst, market_ctx(get_quote(req.symbol),
                                                       get_rate(inst.quote_currency) if inst else None, now))
        return rej.code if rej is not None else None

    return path


def make_inline(quotes: Mapping[str, Quote], rates: Mapping[str, Decimal | None], now: datetime,
                catalogue: Catalogue = DEFAULT_CATALOGUE) -> Check:
    """The limit: the same checks, hand-coded inline, returning just the verdict code."""
    get_inst, get_quote, get_rate = catalogue.get, quotes.get, rates.get
    divide = CTX.divide
    buy, market_t, limit_t, stop_t = Side.BUY, OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
    active = Status.ACTIVE
    hundred = Decimal(100)

    def inline(req: OrderRequest, st: G.AccountState) -> str | None:
        pol = st.policy
        if st.status is not active:
            return "account_not_active"
        sym = req.symbol
        inst = get_inst(sym)
        if inst is None or not inst.enabled:
            return "unknown_symbol"
        if inst.asset_class not in pol.allowed_asset_classes:
            return "asset_not_allowed"
        q = req.quantity
        if q <= 0 or q < inst.min_lot or q > inst.max_lot or q % inst.lot_step != 0:
            return "invalid_quantity"
        otype = req.order_type
        lp, sp, sl, tp = req.limit_price, req.stop_price, req.stop_loss, req.take_profit
        if (otype is limit_t and lp is None) or (otype is stop_t and sp is None):
            return "invalid_price"
        prec = inst.price_precision
        for v in (lp, sp, sl, tp):
            if v is not None:
                if v <= 0:
                    return "invalid_price"
                exp = v.as_tuple().exponent
                if -exp > prec:  # type: ignore[operator]
                    return "invalid_price"
        quote = get_quote(sym)
        if quote is None:
            return "missing_price"
        if (now - quote.ts).total_seconds() > pol.max_quote_age_seconds:
            return "stale_price"
        rate = get_rate(inst.quote_currency)
        if rate is None:
            return "missing_conversion_price"
        is_buy = req.side is buy
        cur = st.positions.get(sym)
        cur_q = cur.quantity if cur is not None else ZERO
        delta = q if is_buy else -q
        new_q = cur_q + delta
        same_way = cur_q == 0 or (cur_q > 0) == (delta > 0)
        opening = abs(delta) if same_way else max(ZERO, abs(delta) - abs(cur_q))
        if req.reduce_only and (same_way or abs(delta) > abs(cur_q)):
            return "no_position"
        if opening > 0 and ((is_buy and not pol.allow_long) or (not is_buy and not pol.allow_short)):
            return "direction_not_allowed"
        ref = (lp if otype is limit_t else sp) if otype is not market_t else (quote.ask if is_buy else quote.bid)
        assert ref is not None
        if is_buy:
            if sl is not None and sl >= ref:
                return "invalid_stop_loss"
            if tp is not None and tp <= ref:
                return "invalid_take_profit"
        else:
            if sl is not None and sl <= ref:
                return "invalid_stop_loss"
            if tp is not None and tp >= ref:
                return "invalid_take_profit"
        if opening == 0:
            return None
        csize = inst.contract_size
        order_notional = opening * csize * ref * rate
        if order_notional > pol.max_notional:
            return "notional_exceeded"
        # A limit/stop order the quote already crosses executes now: it is gated as a market order.
        if otype is limit_t:
            resting = not (quote.ask <= ref if is_buy else quote.bid >= ref)
        elif otype is stop_t:
            resting = not (quote.ask >= ref if is_buy else quote.bid <= ref)
        else:
            resting = False
        if cur_q == 0 and not resting:
            n = 0
            for p in st.positions.values():
                if p.quantity != 0:
                    n += 1
            if n >= pol.max_open_positions:
                return "max_open_positions"
        if resting and len(st.resting_orders) >= pol.max_open_orders:
            return "max_open_orders"
        equity = st.equity
        if equity <= 0:
            return "insufficient_margin"
        total = ZERO
        others = ZERO
        for s, n_ in st.position_notional.items():
            total += n_
            if s != sym:
                others += n_
        this_after = abs(new_q) * csize * ref * rate
        aggregate = others + this_after
        if pol.max_aggregate_notional is not None and aggregate > pol.max_aggregate_notional:
            return "aggregate_notional_exceeded"
        if divide(aggregate, equity) > pol.max_leverage:
            return "leverage_exceeded"
        if divide(this_after * hundred, equity) > pol.max_position_equity_pct:
            return "position_equity_exceeded"
        for o in st.resting_orders:
            total += o.notional
        if divide(order_notional, pol.max_leverage) > equity - divide(total, pol.max_leverage):
            return "insufficient_margin"
        return None

    return inline


# ---------------------------------------------------------------------------------------------- the sample
def _price_near(rng: random.Random, mid: Decimal, inst: Instrument, spread_pct: float) -> Decimal:
    """A price around ``mid``; usually at the instrument's precision, sometimes with one digit too many."""
    p = float(mid) * (1 + rng.uniform(-spread_pct, spread_pct))
    places = inst.price_precision + (1 if rng.random() < 0.05 else 0)
    return Decimal(f"{max(p, 10 ** -places):.{places}f}")


def random_order(rng: random.Random, catalogue: Catalogue = DEFAULT_CATALOGUE) -> OrderRequest:
    symbols = [*catalogue.symbols(), "ETHUSD", "eurusd", "FOO", "EURUSD ", "ЕURUSD"]
    sym = rng.choice(symbols)
    inst = catalogue.get(sym) or catalogue.get("EURUSD")
    assert inst is not None
    mid = Decimal(MIDS.get(sym, MIDS["EURUSD"] if inst.symbol == "EURUSD" else "3400.00"))
    r = rng.random()
    if r < 0.75:
        steps = rng.choice([1, 1, 2, 5, 10, 20, 50, 100, 300, 1000])
        qty = inst.lot_step * steps
        if qty < inst.min_lot:
            qty = inst.min_lot
    elif r < 0.85:
        qty = inst.lot_step / 2  # off the lot step (and below the minimum)
    elif r < 0.92:
        qty = inst.max_lot + inst.lot_step
    else:
        qty = rng.choice([Decimal(0), Decimal(-1), inst.min_lot])
    side = rng.choice([Side.BUY, Side.SELL])
    otype = rng.choices([OrderType.MARKET, OrderType.LIMIT, OrderType.STOP], [6, 3, 1])[0]
    lp = sp = None
    if otype is OrderType.LIMIT and rng.random() > 0.03:
        lp = _price_near(rng, mid, inst, 0.01)
    if otype is OrderType.STOP and rng.random() > 0.03:
        sp = _price_near(rng, mid, inst, 0.01)
    sl = _price_near(rng, mid, inst, 0.03) if rng.random() < 0.5 else None
    tp = _price_near(rng, mid, inst, 0.03) if rng.random() < 0.5 else None
    if rng.random() < 0.02:
        sl = Decimal(-1)
    return OrderRequest(sym, side, qty, otype, lp, sp, sl, tp, reduce_only=rng.random() < 0.1)


def state_variants(quotes: Mapping[str, Quote], rates: Mapping[str, Decimal | None]) -> list[G.AccountState]:
    """The timed state plus variants that make the other gates answer: inactive, long-only, short-only,
    FX-only, tight limits, a full book, an account at (or below) zero equity."""
    base = account_state(quotes, rates)
    pol = base.policy
    full = replace(base, resting_orders=base.resting_orders * 4)
    extra = {"GBPUSD": Position("GBPUSD", Decimal("0.10"), Decimal("1.26000"), None, None, NOW)}
    many = account_state(quotes, rates)
    many = replace(many, positions={**many.positions, **extra},
                   position_notional={**many.position_notional, "GBPUSD": Decimal("12700")})
    return [
        base, base, base,
        replace(base, status=Status.PAUSED),
        replace(base, policy=replace(pol, allow_short=False)),
        replace(base, policy=replace(pol, allow_long=False)),
        replace(base, policy=replace(pol, allowed_asset_classes=(AssetClass.FOREX, AssetClass.METAL))),
        replace(base, policy=replace(pol, max_notional=Decimal(5000), max_aggregate_notional=None)),
        replace(base, policy=replace(pol, max_leverage=Decimal(1), max_aggregate_notional=None)),
        replace(base, policy=replace(pol, max_position_equity_pct=Decimal(5))),
        replace(base, equity=Decimal("30000")),
        replace(base, equity=Decimal("-10")),
        full, many,
    ]


def _timer_overhead_ns(n: int = 20000) -> int:
    ns = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = ns()
        samples.append(ns() - t0)
    return int(statistics.median(samples))


def _per_call(fn: Check, calls: list[tuple[OrderRequest, G.AccountState]], n: int, overhead: int) -> list[int]:
    ns = time.perf_counter_ns
    out: list[int] = []
    m = len(calls)
    for i in range(n):
        req, st = calls[i % m]
        t0 = ns()
        fn(req, st)
        t1 = ns()
        out.append(max(0, t1 - t0 - overhead))
    return out


def _batch_ns_per_call(fn: Check, calls: list[tuple[OrderRequest, G.AccountState]], n: int) -> float:
    rounds = max(1, n // len(calls))
    ns = time.perf_counter_ns
    t0 = ns()
    for _ in range(rounds):
        for req, st in calls:
            fn(req, st)
    return (ns() - t0) / (rounds * len(calls))


def run(*, calls: int = 20000, trials: int = 5, sample: int = 5000, seed: int = 42,
        progress: ProgressFn = no_progress) -> BenchResult:
    """Measure the path and the limit, interleaved over ``trials``; check verdicts on ``sample`` random orders."""
    quotes, rates = market()
    state = account_state(quotes, rates)
    path = make_path(quotes, rates, NOW)
    inline = make_inline(quotes, rates, NOW)
    work = [(o, state) for o in timed_orders()]

    problems: list[str] = []
    for req, st in work:
        got, ref = path(req, st), inline(req, st)
        if got is not None or ref is not None:
            problems.append(f"timed order {req.symbol} {req.order_type.value} must pass every gate: "
                            f"gate={got}, inline={ref}")

    # Correctness on a random sample (also warms both up).
    rng = random.Random(seed)
    variants = state_variants(quotes, rates)
    mismatches = 0
    accepted = 0
    codes: dict[str, int] = {}
    for i in range(sample):
        req = random_order(rng)
        st = rng.choice(variants)
        got, ref = path(req, st), inline(req, st)
        if got != ref:
            mismatches += 1
            if len(problems) < 10:
                problems.append(f"verdicts differ for {req} on {st.status.value}: gate={got}, inline={ref}")
        if got is None:
            accepted += 1
        codes[got or "accepted"] = codes.get(got or "accepted", 0) + 1
        if i % 500 == 499:
            progress("pretrade: checking verdicts", 500 / sample * 0.2)

    overhead = _timer_overhead_ns()
    path_trials: list[dict[str, float]] = []
    limit_trials: list[dict[str, float]] = []
    was_enabled = gc.isenabled()
    for _ in range(trials):
        for fn, sink in ((path, path_trials), (inline, limit_trials)):
            gc.collect()
            samples = _per_call(fn, work, calls, overhead)
            per_call = _batch_ns_per_call(fn, work, calls)
            sink.append({**latency_summary(samples), "ns_per_call": per_call})
        progress("pretrade: timing", 0.8 / trials)
    if was_enabled:
        gc.enable()

    def summary(ts: list[dict[str, float]]) -> dict[str, Any]:
        per_call = median_of(ts, "ns_per_call")
        return {"latency_us_p50": median_of(ts, "latency_us_p50"), "latency_us_p99": median_of(ts, "latency_us_p99"),
                "latency_us_max": median_of(ts, "latency_us_max"),
                "throughput_per_s": round(1e9 / per_call, 1) if per_call else 0.0}

    metrics = {**summary(path_trials), "rules_evaluated": len(GATES),
               "sample_orders": sample, "sample_accepted": accepted, "sample_rejection_codes": len(codes) - 1,
               "verdict_mismatches": mismatches, "timer_overhead_ns": overhead}
    limit = summary(limit_trials)
    ratio = median_of(path_trials, "ns_per_call") / median_of(limit_trials, "ns_per_call")
    correct = mismatches == 0 and not any(p.startswith("timed") for p in problems)
    return BenchResult(
        "pretrade",
        {"calls": calls, "trials": trials, "sample": sample, "seed": seed, "open_positions": len(state.positions),
         "resting_orders": len(state.resting_orders), "timed_orders": len(work),
         "rules": "execution policy gates (no rulebook yet): default policy + max_aggregate_notional 200000",
         "gates": list(GATES)},
        metrics, limit, round(ratio, 3), correct, machine_info(), problems)
