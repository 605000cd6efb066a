"""``propdesk bench pretrade``: the full pre-trade check of one order as the live core runs it, in process.

Our path, as ``ExecutionService._submit`` runs it for a client order on a challenge account:
1. ``domain.gates.check_order``: every execution-policy gate, over an in-memory ``AccountState`` (4 open
   positions, 3 resting orders) with the instrument, quote and conversion-rate lookups a real submission does;
2. when the gates accept, ``RulesBridge.pretrade``'s work without the database: build the ``OrderCheck`` from
   the account state (notional and risk at the stop in the account currency, open positions with their marks,
   open orders, whether it reduces a position, the calendar events around now: the in-memory equivalent of its
   ``economic_events`` query), then ``domain.rules.pretrade.check_order`` with the rules of the strictest shipped
   preset (``strict-risk@100k``: all ten pre-trade rules enabled) and its trading calendar.
The verdict is the gate's rejection code, or the ids of the rules whose decisions reject (empty: accepted).
The writes around it (violations, rule state) are the ``orders`` scenario's business, not this one's.

The timed orders are all accepted, so every gate and every rule runs: a market order opening a new symbol
(reaches the open-positions gate and rule), a limit order on a new symbol (open-orders gate and rule) and a
market order adding to a position (lot and hedging rules on a held symbol); calendar events sit inside the news
window of the timed moment but for other currencies or a lower impact, so the news rule compares them.

The limit: ``make_inline`` below, the same gates and rules hand-coded inline over the same state and calendar
(no rejection or decision objects, no messages, no helper calls; thresholds read from the rulebook once),
returning only the violated gate code / rule ids.

Latency: per-call ``perf_counter_ns`` samples (minus the timer's own median cost), batched into k interleaved
trials (path, limit, path, limit, ...). Cost per call for ``ratio_to_limit``: one timer around a whole batch,
divided by its calls, so the timer's cost does not flatter the ratio. ``correct``: on a sample of random orders
(valid and hostile: unknown symbols, bad lots and prices, stale/missing quotes, wrong-side SL/TP, reduce-only,
missing stops, oversize lots, hedges, inactive accounts, disallowed directions and assets, limit breaches), at
random moments of a calendar week (inside and outside trading hours, weekends, news windows, a BST day) and on
account variants, the path and the inline reference agree on accept/reject and on the set of violated gate
codes / rule ids.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

from ..domain import gates as G
from ..domain.instruments import DEFAULT_CATALOGUE, AssetClass, Catalogue, Instrument, conversion_rate
from ..domain.lifecycle import Status
from ..domain.money import CTX, ZERO
from ..domain.orders import OrderPurpose, OrderRequest, OrderType, Side
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position, valuate
from ..domain.quotes import Quote
from ..domain.rules import pretrade as R
from ..domain.rules.calendar import TradingCalendar
from ..domain.rules.engine import Evaluator
from ..domain.rules.pretrade import CalendarEvent, OpenPosition, OrderCheck
from ..domain.rules.schema import PRETRADE_RULES
from ..rulebooks import load_rulebook
from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress

# Every gate check_order can run, in its order.
GATES: tuple[str, ...] = (
    "account_status",
    "symbol_enabled",
    "asset_class_allowed",
    "quantity_lots",
    "order_prices",
    "quote_present",
    "quote_fresh",
    "conversion_rate",
    "reduce_only",
    "direction_allowed",
    "stop_loss_side",
    "take_profit_side",
    "order_notional",
    "max_open_positions",
    "max_open_orders",
    "equity_positive",
    "aggregate_notional",
    "leverage",
    "position_equity_pct",
    "margin",
)
# The strictest shipped preset (every pre-trade rule enabled), as a 100k account gets it.
PRESET = "strict-risk@100k"

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 in London (GMT)
MIDS: dict[str, str] = {
    "EURUSD": "1.08000",
    "GBPUSD": "1.27000",
    "USDJPY": "150.000",
    "AUDUSD": "0.66000",
    "USDCAD": "1.36000",
    "USDCHF": "0.88000",
    "NZDUSD": "0.61000",
    "EURGBP": "0.85000",
    "EURJPY": "162.000",
    "GBPJPY": "190.500",
    "XAUUSD": "2350.00",
    "XAGUSD": "28.000",
    "WTIUSD": "78.00",
    "US500": "5200.00",
    "US100": "18200.00",
    "US30": "39000.00",
    "AAPL": "190.00",
    "MSFT": "420.00",
    "NVDA": "880.00",
    "AMZN": "180.00",
    "TSLA": "175.00",
    "BTCUSD": "65000.00",
    # ETHUSD deliberately has no quote: orders on it meet the missing-price gate.
}
STALE = {"TSLA"}  # its quote is 2 minutes old


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def calendar() -> tuple[CalendarEvent, ...]:
    """The economic calendar the news rule reads, sorted by time (the ``economic_events`` table, in memory)."""
    return tuple(
        sorted(
            (
                CalendarEvent(_utc("2026-03-02 09:45"), "USD", "medium", "ISM services PMI", "US"),
                CalendarEvent(_utc("2026-03-02 10:15"), "JPY", "high", "BoJ governor speech", "JP"),
                CalendarEvent(_utc("2026-03-03 15:00"), "USD", "low", "Redbook index", "US"),
                CalendarEvent(_utc("2026-03-04 07:30"), "GBP", "high", "BoE governor testimony", "GB"),
                CalendarEvent(_utc("2026-03-05 13:15"), "EUR", "high", "ECB rate decision", "EU"),
                CalendarEvent(_utc("2026-03-05 13:30"), "USD", "low", "Initial jobless claims", "US"),
                CalendarEvent(_utc("2026-03-06 13:30"), "USD", "high", "Non-farm payrolls", "US"),
                CalendarEvent(_utc("2026-04-06 06:15"), "CAD", "high", "BoC business outlook", "CA"),
            ),
            key=lambda e: e.at,
        )
    )


def moments() -> list[tuple[str, datetime]]:
    """When the sampled orders are sent (UTC; the preset trades Mon-Fri 07:00-21:00 Europe/London)."""
    return [
        ("mon 10:00, in hours, JPY news and USD medium in the window (the timed moment)", NOW),
        ("mon 06:59:59, before the session", _utc("2026-03-02 06:59:59")),
        ("tue 07:00, the session opens", _utc("2026-03-03 07:00")),
        ("tue 21:00, the session has closed", _utc("2026-03-03 21:00")),
        ("wed 07:00, the BoE window opens", _utc("2026-03-04 07:00")),
        ("thu 13:15, the ECB decision", _utc("2026-03-05 13:15")),
        ("thu 13:45, the ECB window's last instant", _utc("2026-03-05 13:45")),
        ("fri 12:59:59, a second before the NFP window", _utc("2026-03-06 12:59:59")),
        ("fri 13:30, non-farm payrolls", _utc("2026-03-06 13:30")),
        ("fri 22:30, after the session", _utc("2026-03-06 22:30")),
        ("sat 11:00, weekend", _utc("2026-03-07 11:00")),
        ("sun 23:30, weekend", _utc("2026-03-08 23:30")),
        ("mon 06:30 UTC = 07:30 BST, in hours in London, BoC window", _utc("2026-04-06 06:30")),
        ("mon 20:30 UTC = 21:30 BST, out of hours in London", _utc("2026-04-06 20:30")),
    ]


def _quote(symbol: str, mid: str, inst: Instrument, now: datetime) -> Quote:
    m = Decimal(mid)
    half = inst.tick_size * 2
    ts = now - timedelta(seconds=120 if symbol in STALE else 1)
    return Quote(symbol, m - half, m + half, ts, 1, "bench")


def market(
    catalogue: Catalogue = DEFAULT_CATALOGUE, now: datetime = NOW
) -> tuple[dict[str, Quote], dict[str, Decimal | None]]:
    """Quotes by symbol (as fresh as ``now``) and conversion rates into USD by quote currency."""
    quotes = {s: _quote(s, m, inst, now) for s, m in MIDS.items() if (inst := catalogue.get(s)) is not None}
    ccys = {i.quote_currency for i in catalogue}
    rates = {c: conversion_rate(c, "USD", lambda s: q.mid if (q := quotes.get(s)) else None) for c in ccys}
    return quotes, rates


def strict_policy() -> ExecutionPolicy:
    """The default execution policy with the optional aggregate-notional gate switched on as well."""
    return ExecutionPolicy(max_aggregate_notional=Decimal(200000))


def firm_policy() -> ExecutionPolicy:
    """A wide execution envelope (the demo plans' kind): the rulebook's limits bite before the gates'."""
    return ExecutionPolicy(
        max_notional=Decimal(2000000),
        max_leverage=Decimal(50),
        max_position_equity_pct=Decimal(5000),
        max_open_positions=10,
        max_open_orders=20,
    )


def load_rules(preset: str = PRESET) -> tuple[dict[str, dict[str, Any]], TradingCalendar]:
    """The rules and trading calendar the live core's evaluator holds for an account on ``preset``."""
    book = load_rulebook(preset)
    ev = Evaluator(book, book.phases[0].id)
    return ev.rules, ev.cal


def account_state(
    quotes: Mapping[str, Quote],
    rates: Mapping[str, Decimal | None],
    *,
    policy: ExecutionPolicy | None = None,
    status: Status = Status.ACTIVE,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> G.AccountState:
    """An active 100k account with 4 open positions and 3 resting orders, valued at ``quotes``: a book the
    strict rulebook could have let through (every position within its lot, risk and leverage limits)."""
    policy = policy or strict_policy()
    d = Decimal
    positions = {
        "EURUSD": Position("EURUSD", d("0.20"), d("1.07500"), d("1.06000"), d("1.10000"), NOW),
        "XAUUSD": Position("XAUUSD", d("-0.05"), d("2362.50"), d("2400.00"), None, NOW),
        "US500": Position("US500", d("2.0"), d("5150.00"), None, d("5400.00"), NOW),
        "AAPL": Position("AAPL", d("4"), d("185.20"), d("170.00"), None, NOW),
    }
    insts = {s: catalogue.get(s) for s in positions}
    val = valuate(
        d("100250.00"),
        positions.values(),
        insts,  # type: ignore[arg-type]
        quotes.get,
        lambda c: rates.get(c),
    )
    notional = {m.symbol: m.notional for m in val.marks}
    resting = (
        G.RestingOrder("BTCUSD", Side.BUY, d("0.050"), d("62000.00"), d("3100.00")),
        G.RestingOrder("US100", Side.SELL, d("1.0"), d("18500.00"), d("18500.00")),
        G.RestingOrder("GBPUSD", Side.BUY, d("0.05"), d("1.25000"), d("6250.00")),
    )
    return G.AccountState(status, policy, d("100250.00"), val.equity, positions, notional, resting)


def timed_orders() -> list[OrderRequest]:
    """Accepted orders that between them reach every gate and every rule."""
    d = Decimal
    return [
        OrderRequest("GBPUSD", Side.BUY, d("0.10"), stop_loss=d("1.25000"), take_profit=d("1.30000")),
        OrderRequest(
            "US100",
            Side.SELL,
            d("0.5"),
            OrderType.LIMIT,
            limit_price=d("18300.00"),
            stop_loss=d("18600.00"),
            take_profit=d("18000.00"),
        ),
        OrderRequest("EURUSD", Side.BUY, d("0.05"), stop_loss=d("1.07000"), take_profit=d("1.09500")),
    ]


Verdict = Sequence[str]
"""The violated gate code (one) or rule ids (any number); empty when the order is accepted."""
Check = Callable[[OrderRequest, G.AccountState], Verdict]


def make_path(
    rules: dict[str, dict[str, Any]],
    cal: TradingCalendar,
    quotes: Mapping[str, Quote],
    rates: Mapping[str, Decimal | None],
    events: Sequence[CalendarEvent],
    now: datetime,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> Check:
    """Our path: ``ExecutionService._submit``'s checks: the gates, then ``RulesBridge.pretrade`` without I/O."""
    gate, market_ctx, pretrade = G.check_order, G.MarketContext, R.check_order
    get_inst, get_quote, get_rate = catalogue.get, quotes.get, rates.get
    allowed = frozenset({Status.ACTIVE})  # _submit's default for client orders
    buy, market_t, client = Side.BUY, OrderType.MARKET, OrderPurpose.CLIENT
    multiply = CTX.multiply
    news = rules.get("news_trading")
    events = tuple(sorted(events, key=lambda e: e.at))
    event_ats = [e.at for e in events]
    after = timedelta(minutes=news["minutes_after"] if news else 0)
    before = timedelta(minutes=news["minutes_before"] if news else 0)

    def events_around(t: datetime) -> tuple[CalendarEvent, ...]:
        # RulesBridge._events (SELECT ... FROM economic_events WHERE at BETWEEN t - after AND t + before), from
        # the calendar in memory, by time
        if news is None:
            return ()
        return events[bisect_left(event_ats, t - after) : bisect_right(event_ats, t + before)]

    def path(req: OrderRequest, st: G.AccountState) -> Verdict:
        # ExecutionService._market + _submit
        inst = get_inst(req.symbol)
        quote = get_quote(req.symbol) if inst is not None else None
        rate = get_rate(inst.quote_currency) if inst is not None else None
        rej = gate(req, st, inst, market_ctx(quote, rate, now), allowed_statuses=allowed)
        if rej is not None:
            return (rej.code,)
        if req.purpose is not client:
            return ()
        assert inst is not None and quote is not None and rate is not None
        px = quote.ask if req.side is buy else quote.bid
        # RulesBridge.pretrade
        cur = st.positions.get(req.symbol)
        delta = req.quantity if req.side is buy else -req.quantity
        reduces = cur is not None and (cur.quantity > 0) != (delta > 0) and abs(delta) <= abs(cur.quantity)
        entry = req.trigger_price if req.order_type is not market_t else px
        assert entry is not None
        notional = multiply(inst.contract_value(req.quantity, entry), rate)
        risk = None
        if req.stop_loss is not None:
            risk = multiply(inst.contract_value(req.quantity, abs(entry - req.stop_loss)), rate)
        marks = st.position_notional
        positions = tuple(
            OpenPosition(s, "buy" if p.quantity > 0 else "sell", abs(p.quantity), marks.get(s, ZERO))
            for s, p in st.positions.items()
        )
        check = OrderCheck(
            now,
            req.symbol,
            inst.asset_class.value,
            req.side.value,
            req.quantity,
            entry,
            notional,
            st.equity,
            req.stop_loss,
            risk,
            positions,
            len(st.resting_orders),
            req.order_type is not market_t,
            reduces,
            (inst.base_currency, inst.quote_currency),
            events_around(now),
        )
        return tuple(d.rule for d in pretrade(rules, cal, check) if d.kind == "reject")

    return path


def make_inline(
    rules: dict[str, dict[str, Any]],
    cal: TradingCalendar,
    quotes: Mapping[str, Quote],
    rates: Mapping[str, Decimal | None],
    events: Sequence[CalendarEvent],
    now: datetime,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> Check:
    """The limit: the same gates and rules, hand-coded inline, returning just the violated codes / rule ids."""
    missing = [r for r in PRETRADE_RULES if r not in rules]
    if missing:
        raise ValueError(f"the inline reference is written for every pre-trade rule; missing: {missing}")
    get_inst, get_quote, get_rate = catalogue.get, quotes.get, rates.get
    divide, mul = CTX.divide, CTX.multiply
    buy, market_t, limit_t, stop_t = Side.BUY, OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
    active, client = Status.ACTIVE, OrderPurpose.CLIENT
    hundred = Decimal(100)

    # The rulebook's thresholds, read once.
    news = rules["news_trading"]
    news_rejects = news["action"] == "reject_order"  # otherwise the news rule only flags
    impacts = {"high": ("high",), "medium": ("high", "medium"), "low": ("high", "medium", "low")}[news["impact"]]
    before, after = timedelta(minutes=news["minutes_before"]), timedelta(minutes=news["minutes_after"])
    hot = tuple(
        (e.at - before, e.at + after, e.currency.upper(), e.country.upper()) for e in events if e.impact in impacts
    )
    lot = rules["max_lot_size"]
    per_order, per_symbol = lot.get("per_order"), lot.get("per_symbol")
    max_positions = rules["max_open_positions"]["count"]
    max_orders = rules["max_open_orders"]["count"]
    max_ratio = rules["max_leverage"]["ratio"]
    mn = rules["max_notional"]
    max_amount, max_aggregate = mn.get("amount"), mn.get("aggregate")
    risk_rule = rules["max_risk_per_trade"]
    risk_pct, require_sl = risk_rule["pct"], risk_rule["require_stop_loss"]
    tz = cal.tz
    days = R.DAY_NAMES
    hours: list[list[tuple[dtime, dtime | None]]] = [[] for _ in range(7)]  # by local weekday: [start, end)
    for w in rules["trading_hours"]["windows"]:
        start = dtime.fromisoformat(w["start"])
        end = dtime(23, 59, 59, 999999) if w["end"] == "24:00" else dtime.fromisoformat(w["end"])
        for day in w["days"]:
            i = days.index(day)
            if start < end:
                hours[i].append((start, end))
            else:  # wraps midnight
                hours[i].append((start, None))
                hours[(i + 1) % 7].append((dtime(0), end))
    wk = rules["weekend_trading"]
    weekend_orders, weekend_exempt = wk["new_orders"], frozenset(wk["exempt_asset_classes"])
    hedging_allowed = rules["hedging"]["allowed"]  # (across_accounts: this state has no other accounts)

    def inline(req: OrderRequest, st: G.AccountState) -> Verdict:
        # ---- the gates
        pol = st.policy
        if st.status is not active:
            return ("account_not_active",)
        sym = req.symbol
        inst = get_inst(sym)
        if inst is None or not inst.enabled:
            return ("unknown_symbol",)
        if inst.asset_class not in pol.allowed_asset_classes:
            return ("asset_not_allowed",)
        q = req.quantity
        if q <= 0 or q < inst.min_lot or q > inst.max_lot or q % inst.lot_step != 0:
            return ("invalid_quantity",)
        otype = req.order_type
        lp, sp, sl, tp = req.limit_price, req.stop_price, req.stop_loss, req.take_profit
        if (otype is limit_t and lp is None) or (otype is stop_t and sp is None):
            return ("invalid_price",)
        prec = inst.price_precision
        for v in (lp, sp, sl, tp):
            if v is not None:
                if v <= 0:
                    return ("invalid_price",)
                exp = v.as_tuple().exponent
                if -exp > prec:  # type: ignore[operator]
                    return ("invalid_price",)
        quote = get_quote(sym)
        if quote is None:
            return ("missing_price",)
        if (now - quote.ts).total_seconds() > pol.max_quote_age_seconds:
            return ("stale_price",)
        rate = get_rate(inst.quote_currency)
        if rate is None:
            return ("missing_conversion_price",)
        is_buy = req.side is buy
        positions = st.positions
        cur = positions.get(sym)
        cur_q = cur.quantity if cur is not None else ZERO
        delta = q if is_buy else -q
        new_q = cur_q + delta
        same_way = cur_q == 0 or (cur_q > 0) == (delta > 0)
        opening = abs(delta) if same_way else max(ZERO, abs(delta) - abs(cur_q))
        if req.reduce_only and (same_way or abs(delta) > abs(cur_q)):
            return ("no_position",)
        if opening > 0 and ((is_buy and not pol.allow_long) or (not is_buy and not pol.allow_short)):
            return ("direction_not_allowed",)
        ref = (lp if otype is limit_t else sp) if otype is not market_t else (quote.ask if is_buy else quote.bid)
        assert ref is not None
        if is_buy:
            if sl is not None and sl >= ref:
                return ("invalid_stop_loss",)
            if tp is not None and tp <= ref:
                return ("invalid_take_profit",)
        else:
            if sl is not None and sl <= ref:
                return ("invalid_stop_loss",)
            if tp is not None and tp >= ref:
                return ("invalid_take_profit",)
        csize = inst.contract_size
        resting = otype is not market_t
        open_orders = len(st.resting_orders)
        pn = st.position_notional
        equity = st.equity
        notional = mul(mul(mul(q, csize), ref), rate)  # the whole order (the rules' notional)
        if opening > 0:
            order_notional = notional if opening == q else mul(mul(mul(opening, csize), ref), rate)
            if order_notional > pol.max_notional:
                return ("notional_exceeded",)
            # A limit/stop order the quote already crosses executes now: it is gated as a market order.
            if otype is limit_t:
                rests = not (quote.ask <= ref if is_buy else quote.bid >= ref)
            elif otype is stop_t:
                rests = not (quote.ask >= ref if is_buy else quote.bid <= ref)
            else:
                rests = False
            if cur_q == 0 and not rests:
                n = 0
                for p in positions.values():
                    if p.quantity != 0:
                        n += 1
                if n >= pol.max_open_positions:
                    return ("max_open_positions",)
            if rests and open_orders >= pol.max_open_orders:
                return ("max_open_orders",)
            if equity <= 0:
                return ("insufficient_margin",)
            total = ZERO
            others = ZERO
            for s, n_ in pn.items():
                total += n_
                if s != sym:
                    others += n_
            this_after = mul(mul(mul(abs(new_q), csize), ref), rate)
            aggregate = others + this_after
            if pol.max_aggregate_notional is not None and aggregate > pol.max_aggregate_notional:
                return ("aggregate_notional_exceeded",)
            if divide(aggregate, equity) > pol.max_leverage:
                return ("leverage_exceeded",)
            if divide(this_after * hundred, equity) > pol.max_position_equity_pct:
                return ("position_equity_exceeded",)
            for o in st.resting_orders:
                total += o.notional
            if divide(order_notional, pol.max_leverage) > equity - divide(total, pol.max_leverage):
                return ("insufficient_margin",)
        if req.purpose is not client:
            return ()

        # ---- the rulebook's pre-trade rules
        out: list[str] = []
        base, quoted = inst.base_currency, inst.quote_currency
        for lo, hi, ccy, country in hot:
            if lo <= now <= hi and (ccy in (base, quoted) or (country and country in (base, quoted))):
                if news_rejects:
                    out.append("news_trading")
                break
        if cur is not None and (cur_q > 0) != (delta > 0) and abs(delta) <= abs(cur_q):
            return out  # only reduces a position: the news rule alone applies
        if per_order is not None and q > per_order:
            out.append("max_lot_size")
        if per_symbol is not None and (abs(cur_q) if cur is not None else ZERO) + q > per_symbol:
            out.append("max_lot_size")
        if not resting and sym not in positions and len(positions) + 1 > max_positions:
            out.append("max_open_positions")
        if resting and open_orders + 1 > max_orders:
            out.append("max_open_orders")
        agg = ZERO
        for s in positions:
            agg += pn.get(s, ZERO)
        agg += notional
        if equity > 0 and agg / equity > max_ratio:
            out.append("max_leverage")
        if (max_amount is not None and notional > max_amount) or (max_aggregate is not None and agg > max_aggregate):
            out.append("max_notional")
        if sl is None:
            if require_sl:
                out.append("max_risk_per_trade")
        elif mul(mul(mul(q, csize), abs(ref - sl)), rate) > risk_pct * equity / hundred:
            out.append("max_risk_per_trade")
        local = now.astimezone(tz)
        wd = local.weekday()
        t = local.time()
        for start, end in hours[wd]:
            if start <= t and (end is None or t < end):
                break
        else:
            out.append("trading_hours")
        if not weekend_orders and wd >= 5 and inst.asset_class not in weekend_exempt:
            out.append("weekend_trading")
        if not hedging_allowed and cur is not None and (cur_q <= 0 if is_buy else cur_q > 0):
            out.append("hedging")
        return out

    return inline


# ---------------------------------------------------------------------------------------------- the sample
def _price_near(rng: random.Random, mid: Decimal, inst: Instrument, spread_pct: float) -> Decimal:
    """A price around ``mid``; usually at the instrument's precision, sometimes with one digit too many."""
    p = float(mid) * (1 + rng.uniform(-spread_pct, spread_pct))
    places = inst.price_precision + (1 if rng.random() < 0.05 else 0)
    return Decimal(f"{max(p, 10**-places):.{places}f}")


def random_order(rng: random.Random, catalogue: Catalogue = DEFAULT_CATALOGUE) -> OrderRequest:
    symbols = [*catalogue.symbols(), "ETHUSD", "eurusd", "FOO", "EURUSD ", "ЕURUSD"]
    sym = rng.choice(symbols)
    inst = catalogue.get(sym) or catalogue.get("EURUSD")
    assert inst is not None
    mid = Decimal(MIDS.get(sym, MIDS["EURUSD"] if inst.symbol == "EURUSD" else "3400.00"))
    r = rng.random()
    if r < 0.75:
        steps = rng.choice([1, 1, 2, 5, 10, 20, 50, 100, 300, 600, 1000])
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
    sl = None
    if rng.random() < 0.7:  # a stop loss on the protective side, 0.05%-3% away (or, rarely, the wrong side)
        away = rng.uniform(0.0005, 0.03) * (1 if rng.random() < 0.9 else -1)
        sl = _price_near(rng, mid * Decimal(1 - away if side is Side.BUY else 1 + away), inst, 0.0)
    tp = None
    if rng.random() < 0.5:  # a take profit on the far side, 0.05%-3% away (or, sometimes, the wrong side)
        away = rng.uniform(0.0005, 0.03) * (1 if rng.random() < 0.85 else -1)
        tp = _price_near(rng, mid * Decimal(1 + away if side is Side.BUY else 1 - away), inst, 0.0)
    if rng.random() < 0.02:
        sl = Decimal(-1)
    return OrderRequest(sym, side, qty, otype, lp, sp, sl, tp, reduce_only=rng.random() < 0.1)


def state_variants(quotes: Mapping[str, Quote], rates: Mapping[str, Decimal | None]) -> list[G.AccountState]:
    """The timed state plus variants that make the other gates answer (inactive, long-only, short-only,
    FX-only, tight limits, a full book, an account at or below zero equity) and, under a wide execution
    envelope, the rulebook's own limits (open positions and orders, leverage, notional, risk on a small equity)."""
    base = account_state(quotes, rates)
    pol = base.policy
    full = replace(base, resting_orders=base.resting_orders * 4)
    extra = {"GBPUSD": Position("GBPUSD", Decimal("0.10"), Decimal("1.26000"), None, None, NOW)}
    many = replace(
        base,
        positions={**base.positions, **extra},
        position_notional={**base.position_notional, "GBPUSD": Decimal("12700")},
    )
    firm = replace(base, policy=firm_policy())
    return [
        base,
        base,
        base,
        replace(base, status=Status.PAUSED),
        replace(base, policy=replace(pol, allow_short=False)),
        replace(base, policy=replace(pol, allow_long=False)),
        replace(base, policy=replace(pol, allowed_asset_classes=(AssetClass.FOREX, AssetClass.METAL))),
        replace(base, policy=replace(pol, max_notional=Decimal(5000), max_aggregate_notional=None)),
        replace(base, policy=replace(pol, max_leverage=Decimal(1), max_aggregate_notional=None)),
        replace(base, policy=replace(pol, max_position_equity_pct=Decimal(5))),
        replace(base, equity=Decimal("30000")),
        replace(base, equity=Decimal("-10")),
        full,
        many,
        firm,
        firm,
        firm,
        firm,
        firm,
        firm,
        replace(full, policy=firm.policy),
        replace(many, policy=firm.policy),
        replace(firm, equity=Decimal("30000")),
        replace(firm, equity=Decimal("10000")),  # the rulebook's 30x leverage binds before the envelope's 50x
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


@dataclass(frozen=True)
class Scene:
    """One moment of the calendar week: the market as fresh as it, our path and the limit at it."""

    label: str
    now: datetime
    path: Check
    inline: Check


def scenes(
    rules: dict[str, dict[str, Any]],
    cal: TradingCalendar,
    events: Sequence[CalendarEvent],
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> list[Scene]:
    out = []
    for label, now in moments():
        quotes, rates = market(catalogue, now)
        out.append(
            Scene(
                label,
                now,
                make_path(rules, cal, quotes, rates, events, now, catalogue),
                make_inline(rules, cal, quotes, rates, events, now, catalogue),
            )
        )
    return out


def run(
    *, calls: int = 20000, trials: int = 5, sample: int = 5000, seed: int = 42, progress: ProgressFn = no_progress
) -> BenchResult:
    """Measure the path and the limit, interleaved over ``trials``; check verdicts on ``sample`` random orders."""
    rules, cal = load_rules()
    enabled = [r for r in PRETRADE_RULES if r in rules]
    problems: list[str] = []
    if len(enabled) != len(PRETRADE_RULES):
        problems.append(
            f"setup: {PRESET} does not enable every pre-trade rule: {sorted(set(PRETRADE_RULES) - set(enabled))}"
        )
    events = calendar()
    quotes, rates = market()
    state = account_state(quotes, rates)
    all_scenes = scenes(rules, cal, events)
    timed = all_scenes[0]
    assert timed.now == NOW
    path, inline = timed.path, timed.inline
    work = [(o, state) for o in timed_orders()]

    for req, st in work:
        got, ref = path(req, st), inline(req, st)
        if got or ref:
            problems.append(
                f"setup: timed order {req.symbol} {req.order_type.value} must pass every gate and rule: "
                f"path={list(got)}, inline={list(ref)}"
            )

    # Correctness on a random sample (also warms both up).
    rng = random.Random(seed)
    variants = state_variants(quotes, rates)
    mismatches = 0
    accepted = 0
    by_gate: dict[str, int] = {}
    by_rule: dict[str, int] = dict.fromkeys(PRETRADE_RULES, 0)
    rule_rejected = 0
    for i in range(sample):
        req = random_order(rng)
        vi = rng.randrange(len(variants))
        st = variants[vi]
        sc = rng.choice(all_scenes)
        got, ref = sc.path(req, st), sc.inline(req, st)
        got_set = frozenset(got)
        if got_set != frozenset(ref):
            mismatches += 1
            if len(problems) < 10:
                problems.append(
                    f"verdicts differ for {req} at {sc.label} ({sc.now.isoformat()}) on account "
                    f"variant {vi}: path={sorted(got_set)}, inline={sorted(set(ref))}"
                )
        if not got_set:
            accepted += 1
        elif got_set <= by_rule.keys():
            rule_rejected += 1
            for r in got_set:
                by_rule[r] += 1
        else:
            for c in got_set:
                by_gate[c] = by_gate.get(c, 0) + 1
        if i % 500 == 499:
            progress("pretrade: checking verdicts", 500 / sample * 0.2)

    overhead = _timer_overhead_ns()
    path_trials: list[dict[str, float]] = []
    limit_trials: list[dict[str, float]] = []
    for _ in range(trials):
        for fn, sink in ((path, path_trials), (inline, limit_trials)):
            gc.collect()
            samples = _per_call(fn, work, calls, overhead)
            per_call = _batch_ns_per_call(fn, work, calls)
            sink.append({**latency_summary(samples), "ns_per_call": per_call})
        progress("pretrade: timing", 0.8 / trials)

    def summary(ts: list[dict[str, float]]) -> dict[str, Any]:
        per_call = median_of(ts, "ns_per_call")
        return {
            "latency_us_p50": median_of(ts, "latency_us_p50"),
            "latency_us_p99": median_of(ts, "latency_us_p99"),
            "latency_us_max": median_of(ts, "latency_us_max"),
            "throughput_per_s": round(1e9 / per_call, 1) if per_call else 0.0,
        }

    metrics = {
        **summary(path_trials),
        "rules_evaluated": len(GATES) + len(enabled),
        "gates_evaluated": len(GATES),
        "pretrade_rules_evaluated": len(enabled),
        "sample_orders": sample,
        "sample_accepted": accepted,
        "sample_gate_rejections": sample - accepted - rule_rejected,
        "sample_rule_rejections": rule_rejected,
        "sample_rejection_codes": len(by_gate) + sum(1 for n in by_rule.values() if n),
        "sample_rules_violated": sum(1 for n in by_rule.values() if n),
        "sample_violations_by_rule": by_rule,
        "verdict_mismatches": mismatches,
        "timer_overhead_ns": overhead,
    }
    limit = summary(limit_trials)
    ratio = median_of(path_trials, "ns_per_call") / median_of(limit_trials, "ns_per_call")
    correct = mismatches == 0 and not any(p.startswith("setup") for p in problems)
    return BenchResult(
        "pretrade",
        {
            "calls": calls,
            "trials": trials,
            "sample": sample,
            "seed": seed,
            "preset": PRESET,
            "phase": "phase_1",
            "timezone": cal.tz.key,
            "open_positions": len(state.positions),
            "resting_orders": len(state.resting_orders),
            "calendar_events": len(events),
            "moments": len(all_scenes),
            "account_variants": len(variants),
            "timed_orders": len(work),
            "policy": "execution gates: default policy + max_aggregate_notional 200000 (timed); wider envelopes in "
            "the sample",
            "gates": list(GATES),
            "pretrade_rules": enabled,
        },
        metrics,
        limit,
        round(ratio, 3),
        correct,
        machine_info(),
        problems,
    )
