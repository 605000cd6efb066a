"""The risk book against the exact per-account path (Decimal, the domain's own functions).

- Equivalence (hypothesis): random portfolios over several symbols including JPY crosses and EUR accounts, random
  rulebooks (every max_loss mode, locks, daily-loss anchors/bases/actions, touch rules, warnings, targets), random
  price paths fed one quote at a time and in windows (with duplicates and out-of-order quotes): every trigger and
  breach the exact path finds is among the book's candidates. For single quotes every extra candidate is
  explained (the exact equity within a cent or two of one of the account's levels, or a notice already given).
- ``apply_account`` after random changes leaves the book equal to one rebuilt from scratch.
- Kernels: bounds, protective hits, conversion.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propdesk.domain.instruments import DEFAULT_CATALOGUE
from propdesk.domain.money import money
from propdesk.domain.orders import OrderType, Side
from propdesk.domain.positions import Position
from propdesk.domain.quotes import Quote
from propdesk.domain.rules.engine import Evaluator
from propdesk.domain.rules.rulebook import parse_rulebook
from propdesk.engine import kernels as K
from propdesk.engine.book import KIND_NAMES, Candidates, Kind, RiskBook
from propdesk.engine.reference import ExactAccount, exact_valuation
from propdesk.engine.spec import AccountSpec, OpenOrder, RuleState, allowance

D = Decimal
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
START = {
    "EURUSD": D("1.10000"),
    "GBPUSD": D("1.27000"),
    "USDJPY": D("150.000"),
    "EURJPY": D("165.000"),
    "GBPJPY": D("190.500"),
    "EURGBP": D("0.86000"),
    "XAUUSD": D("2000.00"),
}
SYMBOLS = sorted(START)
HARD = {"max_daily_loss", "max_loss", "safety_net"}
EQUITY_KINDS = {
    "max_daily_loss",
    "max_loss",
    "safety_net",
    "profit_target",
    "drawdown_warning:max_daily_loss",
    "drawdown_warning:max_loss",
}


def prec(symbol: str) -> int:
    i = DEFAULT_CATALOGUE.get(symbol)
    assert i is not None
    return i.price_precision


def on_grid(symbol: str, px: Decimal) -> Decimal:
    return px.quantize(D(1).scaleb(-prec(symbol)))


def quote(symbol: str, mid: Decimal, spread_ticks: int, t: datetime) -> Quote:
    tick = D(1).scaleb(-prec(symbol))
    bid = on_grid(symbol, mid)
    return Quote(symbol, bid, bid + tick * spread_ticks, t)


# ---------------------------------------------------------------- strategies
@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        dl: dict[str, Any] = {
            "base": draw(st.sampled_from(["initial_balance", "day_anchor"])),
            "anchor": draw(
                st.sampled_from(
                    [
                        "start_of_day_balance",
                        "start_of_day_equity",
                        "start_of_day_max_balance_equity",
                        "initial_balance",
                    ]
                )
            ),
            "include_floating": draw(st.booleans()) or draw(st.booleans()),
            "evaluation": draw(st.sampled_from(["realtime", "realtime", "end_of_day"])),
            "action": draw(st.sampled_from(["fail", "pause_day"])),
            "breach_on_touch": draw(st.booleans()),
        }
        if draw(st.booleans()):
            dl["pct"] = str(draw(st.integers(1, 6)))
        else:
            dl["amount"] = str(draw(st.integers(500, 6000)))
        out["max_daily_loss"] = dl
    if draw(st.booleans()) or not out:
        ml: dict[str, Any] = {
            "mode": draw(st.sampled_from(["static", "eod_trailing", "intraday_trailing", "closed_balance_trailing"])),
            "evaluation": draw(st.sampled_from(["realtime", "realtime", "end_of_day"])),
            "breach_on_touch": draw(st.booleans()),
        }
        if draw(st.booleans()):
            ml["pct"] = str(draw(st.integers(2, 10)))
        else:
            ml["amount"] = f"{draw(st.integers(1000, 10000))}.{draw(st.integers(0, 99)):02d}"
        lock = draw(st.sampled_from([None, "offset", "at"]))
        if lock == "offset":
            ml["lock_at_offset"] = str(draw(st.integers(-500, 1500)))
        elif lock == "at":
            ml["lock_at"] = str(draw(st.integers(99000, 101500)))
        out["max_loss"] = ml
    if draw(st.booleans()):
        out["drawdown_warning"] = {"used_pct": str(draw(st.integers(30, 95)))}
    target = draw(st.sampled_from([None, "pct", "amount"]))
    if target == "pct":
        out["profit_target"] = {"pct": str(draw(st.integers(1, 8))), "require_flat": draw(st.booleans())}
    elif target == "amount":
        out["profit_target"] = {"amount": str(draw(st.integers(500, 6000)))}
    return out


@st.composite
def accounts(draw: st.DrawFn) -> dict[str, Any]:
    syms = draw(st.lists(st.sampled_from(SYMBOLS), min_size=0, max_size=4, unique=True))
    positions = []
    for s in syms:
        lots = D(draw(st.integers(1, 500))) / D(100)
        if s == "XAUUSD":
            lots = lots * 4
        qty = lots if draw(st.booleans()) else -lots
        avg = on_grid(s, START[s] * (1 + D(draw(st.integers(-150, 150))) / D(10000)))
        sl = tp = None
        if draw(st.booleans()):
            dist = START[s] * D(draw(st.integers(5, 200))) / D(10000)
            sl = on_grid(s, START[s] - dist if qty > 0 else START[s] + dist)
        if draw(st.booleans()):
            dist = START[s] * D(draw(st.integers(5, 200))) / D(10000)
            tp = on_grid(s, START[s] + dist if qty > 0 else START[s] - dist)
        positions.append(Position(s, qty, avg, sl, tp))
    orders = []
    for _ in range(draw(st.integers(0, 2))):
        s = draw(st.sampled_from(SYMBOLS))
        px = on_grid(s, START[s] * (1 + D(draw(st.integers(-200, 200))) / D(10000)))
        orders.append(
            OpenOrder(
                uuid.uuid4(),
                s,
                draw(st.sampled_from([Side.BUY, Side.SELL])),
                draw(st.sampled_from([OrderType.LIMIT, OrderType.STOP])),
                px,
            )
        )
    return {
        "currency": draw(st.sampled_from(["USD", "USD", "EUR"])),
        "status": draw(st.sampled_from(["active", "active", "active", "day_paused", "paused"])),
        "cash": D(100000) + D(draw(st.integers(-300000, 300000))) / D(100),
        "positions": tuple(positions),
        "orders": tuple(orders),
        "liq_pct": D(draw(st.sampled_from([50, 10, 5, 3, 2]))),
        "rules": draw(st.one_of(st.none(), rules())),
    }


@st.composite
def paths(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Steps (symbol, move in 1/10000 of the price, spread in ticks); a move of 0 repeats a quote."""
    return draw(
        st.lists(
            st.tuples(st.sampled_from(SYMBOLS), st.integers(-120, 120), st.integers(0, 30)), min_size=1, max_size=25
        )
    )


# ---------------------------------------------------------------- building both sides
def build(raw: dict[str, Any], quotes: dict[str, Quote]) -> tuple[AccountSpec, ExactAccount]:
    aid = uuid.uuid4()
    rules_raw = raw["rules"]
    state = None
    ev = None
    phase_rules = None
    key = None
    if rules_raw is not None:
        book = parse_rulebook(
            {
                "id": "t",
                "version": 1,
                "name": "t",
                "currency": raw["currency"],
                "starting_balance": "100000",
                "timezone": "UTC",
                "rules": rules_raw,
                "phases": [{"id": "phase_1"}],
            }
        )
        phase_rules = book.phase("phase_1").rules
        key = book.digest() if hasattr(book, "digest") else None
        ev = Evaluator(book, "phase_1", initial_balance=D(100000))
        pre = AccountSpec(aid, raw["currency"], raw["status"], raw["cash"], raw["positions"])
        eq0 = money(exact_valuation(pre, DEFAULT_CATALOGUE, quotes).equity)
        ev.begin(T0, raw["cash"], eq0)
        state = RuleState.of(ev.s)
    liq = D(100000) * (D(100) - raw["liq_pct"]) / D(100)
    spec = AccountSpec(
        aid, raw["currency"], raw["status"], raw["cash"], raw["positions"], raw["orders"], liq, phase_rules, key, state
    )
    ref = ExactAccount(spec, DEFAULT_CATALOGUE, copy.deepcopy(ev) if ev is not None else None)
    return spec, ref


def conversion_symbols(spec: AccountSpec) -> set[str]:
    out = {p.symbol for p in spec.positions} | {o.symbol for o in spec.orders}
    for p in spec.positions:
        qc = DEFAULT_CATALOGUE.get(p.symbol).quote_currency  # type: ignore[union-attr]
        out |= {qc + spec.currency, spec.currency + qc}
    return out


def moved_by(spec: AccountSpec, kind: str, ref: Any, sym: str) -> bool:
    if kind in ("sl", "tp"):
        return bool(ref == sym)
    if kind == "order":
        return any(o.order_id == ref and o.symbol == sym for o in spec.orders)
    return True


def keys(book: RiskBook, found: Candidates) -> set[tuple[Any, str, Any]]:
    out: set[tuple[Any, str, Any]] = set()
    for c in book.candidates(found):
        kind = c.kind
        ref = c.symbol if kind in ("sl", "tp") else (c.order_id if kind == "order" else None)
        out.add((c.account_id, kind, ref))
    return out


def levels_of(ref: ExactAccount) -> list[Decimal]:
    """Every money level of the account the exact path compares equity with (for explaining extras)."""
    spec = ref.spec
    out: list[Decimal] = []
    if spec.liquidation_equity is not None:
        out.append(spec.liquidation_equity)
    ev = ref.evaluator
    if ev is not None and spec.rules is not None:
        s = ev.s
        for v in (s.daily_floor, s.max_floor):
            if v is not None:
                out.append(v)
        dw = spec.rules.get("drawdown_warning")
        if dw is not None:
            u = D(dw["used_pct"])
            if s.daily_anchor is not None and s.daily_floor is not None:
                out.append(s.daily_anchor - u * (s.daily_anchor - s.daily_floor) / 100)
            if s.max_floor is not None and "max_loss" in spec.rules:
                a = allowance(spec.rules, "max_loss", s.initial)
                out.append(s.max_floor + a - u * a / 100)
        if "profit_target" in spec.rules:
            out.append(s.initial + allowance(spec.rules, "profit_target", s.initial))
    return out


def explained(ref: ExactAccount, kind: str, quotes: dict[str, Quote], seen: set[tuple[Any, str]]) -> bool:
    if kind == "trailing_high":
        # Not a decision: the book asks the core to record a new intraday high (the stored peak a later dip is
        # judged against); only accounts on an intraday trailing maximum loss get it.
        rules = ref.spec.rules or {}
        return (rules.get("max_loss") or {}).get("mode") == "intraday_trailing"
    if kind not in EQUITY_KINDS:
        return False
    if ref.ended or (ref.spec.account_id, kind) in seen:
        return True
    st = ref.spec.state
    if (
        kind == "profit_target"
        and ref.spec.rules is not None
        and st is not None
        and ref.spec.cash >= st.initial + allowance(ref.spec.rules, "profit_target", st.initial)
    ):
        return True  # the balance reached the target: the core judges the other pass conditions
    val = exact_valuation(ref.spec, DEFAULT_CATALOGUE, quotes)
    if kind == "safety_net" and ref.spec.liquidation_equity is not None:
        return abs(val.equity - ref.spec.liquidation_equity) <= D("0.02")
    return any(abs(val.equity - lv) <= D("0.03") for lv in levels_of(ref))


# ---------------------------------------------------------------- the equivalence property
@settings(max_examples=40, deadline=None)
@given(
    raws=st.lists(accounts(), min_size=1, max_size=8),
    steps=paths(),
    windows=st.lists(st.integers(1, 5), min_size=1, max_size=20),
    use_windows=st.booleans(),
    bulk=st.booleans(),
)
def test_the_book_finds_every_trigger_and_breach_the_exact_path_finds(
    raws: list[dict[str, Any]], steps: list[tuple[str, int, int]], windows: list[int], use_windows: bool, bulk: bool
) -> None:
    quotes = {s: quote(s, START[s], 2, T0) for s in SYMBOLS}
    book = RiskBook(DEFAULT_CATALOGUE, capacity=4)
    for q in quotes.values():
        book.on_price(q.symbol, float(q.bid), float(q.ask))
    built = [build(r, quotes) for r in raws]
    refs = {spec.account_id: ref for spec, ref in built}
    seen: set[tuple[Any, str]] = set()
    ended: set[Any] = set()  # accounts the exact path failed or liquidated (the core removes them from the book)
    missed: list[Any] = []
    extra_unexplained: list[Any] = []

    def compare(found: set[tuple[Any, str, Any]], exact: set[tuple[Any, str, Any]], single: bool) -> None:
        missed.extend(exact - found)
        if single:
            for aid, kind, r in found - exact:
                if not explained(refs[aid], kind, quotes, seen):
                    extra_unexplained.append((aid, kind, r))
        seen.update((aid, kind) for aid, kind, _ in exact)
        for aid, ref in refs.items():
            if (ref.terminated or any(a == aid and k in HARD for a, k, _ in exact)) and aid not in ended:
                ended.add(aid)
                book.remove_account(aid)  # the execution core's change event: failed / liquidated / flattened

    # the accounts enter the book (bulk or one by one) and are judged at once, as the exact path judges them
    t = T0
    exact0 = {(spec.account_id, k, r) for spec, ref in built for (k, r) in ref.judge(quotes, t)}
    if bulk:
        book.add_accounts(spec for spec, _ in built)
        slots = np.array([book.slot(s.account_id) for s, _ in built if s.marked], np.intp)
        found0 = keys(book, book.judge_accounts(slots)) if slots.size else set()
    else:
        found0 = set()
        for spec, _ in built:
            found0 |= keys(book, book.apply_account(spec))
    compare(found0, exact0, True)

    mids = dict(START)
    wi = 0
    i = 0
    while i < len(steps):
        n = windows[wi % len(windows)] if use_windows else 1
        wi += 1
        window = steps[i : i + n]
        i += n
        batch: list[tuple[str, float, float, float]] = []
        exact: set[tuple[Any, str, Any]] = set()
        ended_now = set(ended)
        for sym, move, spread in window:
            t += timedelta(seconds=1)
            mids[sym] = mids[sym] * (1 + D(move) / D(10000))
            q = quote(sym, mids[sym], spread, t)
            quotes[sym] = q
            batch.append((sym, float(q.bid), float(q.ask), t.timestamp()))
            for spec, ref in built:
                if sym in conversion_symbols(spec) and spec.account_id not in ended_now:
                    # SL/TP and orders of other symbols were judged when their own symbol's price came
                    found_now = {(spec.account_id, k, r) for k, r in ref.judge(quotes, t) if moved_by(spec, k, r, sym)}
                    exact |= found_now
                    if ref.terminated or any(k in HARD for _, k, _ in found_now):
                        ended_now.add(spec.account_id)
        if wi % 3 == 0:
            book.reindex()  # sorted protective triggers on some quotes, scans (changed groups) on others
        if len(batch) == 1:
            found = keys(book, book.on_price(*batch[0]))
            # a duplicate, and a quote older than the newest (a redelivery out of order): nothing new
            assert keys(book, book.on_price(*batch[0])) <= found | {k for k in found}
            dropped = book.dropped
            book.on_price(batch[0][0], batch[0][1] * 0.5, batch[0][2] * 0.5, batch[0][3] - 5)
            assert book.dropped == dropped + 1
        else:
            # the window arrives with a duplicate and an older quote (redelivered out of order) at its end
            stale = (batch[0][0], batch[0][1] * 0.5, batch[0][2] * 0.5, batch[0][3] - 100)
            found = keys(book, book.on_prices([*batch, batch[-1], stale]))
        compare(found, exact, len(batch) == 1)
    assert not missed, missed
    assert not extra_unexplained, extra_unexplained


def test_a_dip_inside_a_window_is_found_even_when_the_window_ends_higher() -> None:
    book = RiskBook(DEFAULT_CATALOGUE)
    book.on_price("EURUSD", 1.1, 1.1001)
    spec = AccountSpec(
        "a", "USD", "active", D(100000), (Position("EURUSD", D(10), D("1.10000")),), liquidation_equity=D(95000)
    )
    assert len(book.apply_account(spec)) == 0
    # 10 lots: 1,000,000 EUR; a dip to 1.094 loses 6,000 (equity 94,000 <= 95,000), then it recovers
    found = book.on_prices([("EURUSD", 1.099, 1.0991), ("EURUSD", 1.094, 1.0941), ("EURUSD", 1.1005, 1.1006)])
    kinds = {KIND_NAMES[Kind(int(k))] for k in found.kind}
    assert "safety_net" in kinds
    assert found.quote[list(found.kind).index(Kind.SAFETY_NET)] == 1  # the dip's quote is the evidence
    assert book.equity("a") == pytest.approx(100000 + 1_000_000 * 0.0005)


def test_a_usdjpy_price_moves_every_jpy_quoted_position_of_a_usd_account() -> None:
    book = RiskBook(DEFAULT_CATALOGUE)
    for s, b in (("USDJPY", 150.0), ("EURJPY", 165.0), ("GBPJPY", 190.0)):
        book.on_price(s, b, b)
    pos = (Position("EURJPY", D(2), D("160.000")), Position("GBPJPY", D(-1), D("191.000")))
    book.apply_account(AccountSpec("a", "USD", "active", D(100000), pos))
    before = book.equity("a")
    assert before == pytest.approx(100000 + (5 * 200000 + 1 * 100000) * round(1 / 150, 10), abs=1e-6)
    book.on_price("USDJPY", 120.0, 120.0)
    q = {s: Quote(s, D(str(b)), D(str(b)), T0) for s, b in (("USDJPY", 120), ("EURJPY", 165), ("GBPJPY", 190))}
    exact = exact_valuation(AccountSpec("a", "USD", "active", D(100000), pos), DEFAULT_CATALOGUE, q).equity
    assert book.equity("a") == pytest.approx(float(exact), abs=1e-6)


# ---------------------------------------------------------------- apply_account == rebuild
@settings(max_examples=40, deadline=None)
@given(
    raws=st.lists(accounts(), min_size=1, max_size=10),
    changes=st.lists(st.tuples(st.integers(0, 9), st.one_of(st.none(), accounts())), max_size=25),
)
def test_apply_account_keeps_the_book_equal_to_a_rebuild(
    raws: list[dict[str, Any]], changes: list[tuple[int, dict[str, Any] | None]]
) -> None:
    quotes = {s: quote(s, START[s], 2, T0) for s in SYMBOLS}
    book = RiskBook(DEFAULT_CATALOGUE, capacity=2)
    for q in quotes.values():
        book.on_price(q.symbol, float(q.bid), float(q.ask))
    specs = {}
    for r in raws:
        spec, _ = build(r, quotes)
        specs[spec.account_id] = spec
    book.add_accounts(specs.values())
    ids = list(specs)
    for i, raw in changes:
        aid = ids[i % len(ids)]
        if raw is None:
            book.remove_account(aid)
            specs.pop(aid, None)
            continue
        spec, _ = build(raw, quotes)
        spec = AccountSpec(
            aid,
            *[
                getattr(spec, f)
                for f in (
                    "currency",
                    "status",
                    "cash",
                    "positions",
                    "orders",
                    "liquidation_equity",
                    "rules",
                    "rulebook_key",
                    "state",
                )
            ],
        )
        book.apply_account(spec)
        specs[aid] = spec
    fresh = RiskBook(DEFAULT_CATALOGUE)
    for q in quotes.values():
        fresh.on_price(q.symbol, float(q.bid), float(q.ask))
    fresh.add_accounts(specs.values())
    assert len(book) == len(fresh) == sum(1 for s in specs.values() if s.marked)
    # both judged once at the same prices (apply_account judges as it applies; a bulk load does not)
    for b in (book, fresh):
        b.judge_accounts(np.array([b.slot(i) for i, s in specs.items() if s.marked], np.intp))
    assert book.positions == fresh.positions
    for aid, spec in specs.items():
        if not spec.marked:
            assert book.slot(aid) is None
            continue
        a, b = book.slot(aid), fresh.slot(aid)
        assert a is not None and b is not None
        assert book.equity(aid) == pytest.approx(fresh.equity(aid), abs=1e-6)
        exact = exact_valuation(spec, DEFAULT_CATALOGUE, quotes).equity
        assert book.equity(aid) == pytest.approx(float(exact), abs=1e-6)
        for name in ("lo_thr", "hi_thr", "cash", "daily", "max_floor", "safety", "target", "npos"):
            x, y = getattr(book, name)[a], getattr(fresh, name)[b]
            assert x == y or (np.isnan(x) and np.isnan(y)), name
        assert rows_of(book, a) == rows_of(fresh, b)


def rows_of(book: RiskBook, a: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    pos = []
    for g in book._groups:
        for i in np.flatnonzero(g.acct[: g.n] == a):
            pos.append((g.sym, g.side, book._routes[g.route], g.k[i], g.ka[i], g.lo[i], g.hi[i]))
    orders = []
    for s, books in enumerate(book._orders):
        for w, ob in enumerate(books):
            for i in np.flatnonzero(ob.acct[: ob.n] == a):
                orders.append((s, w, ob.price[i], ob.oid[i]))
    return sorted(pos), sorted(orders, key=str)


# ---------------------------------------------------------------- kernels
def test_value_bounds_hold_every_value_inside_the_box() -> None:
    rng = np.random.default_rng(1)
    k = rng.normal(0, 1e5, 50)
    ka = k * rng.uniform(0.9, 1.1, 50)
    lo, hi = K.value_bounds(0.95, 1.05, 0.006, 0.007, k, ka)
    for m in np.linspace(0.95, 1.05, 7):
        for r in np.linspace(0.006, 0.007, 5):
            v = K.values(float(m), float(r), k, ka)
            assert (v >= lo - 1e-9).all() and (v <= hi + 1e-9).all()


def test_conversion_prefers_the_direct_pair_and_rounds_the_inverse_like_the_exact_path() -> None:
    assert K.conversion(1.1, 150.0) == 1.1
    assert K.conversion(float("nan"), 150.0) == round(1 / 150, 10)
    assert np.isnan(K.conversion(float("nan"), float("nan")))


def test_margin_is_a_cent_or_one_part_in_a_billion() -> None:
    assert K.margin(100000.0) == 0.01
    assert K.margin(1e9) == pytest.approx(1.0)


def test_the_book_holds_each_distinct_rulebook_once() -> None:
    quotes = {s: quote(s, START[s], 2, T0) for s in SYMBOLS}
    book = RiskBook(DEFAULT_CATALOGUE)
    raw = {
        "currency": "USD",
        "status": "active",
        "cash": D(100000),
        "positions": (),
        "orders": (),
        "liq_pct": D(50),
        "rules": {"max_loss": {"pct": "10"}},
    }
    specs = [build(raw, quotes)[0] for _ in range(20)]
    book.add_accounts(specs)
    assert len(book) == 20 and book.rulebooks == 1


def test_a_position_priced_before_its_conversion_is_valued_when_the_rate_arrives() -> None:
    book = RiskBook(DEFAULT_CATALOGUE)
    pos = (Position("EURJPY", D(1), D("160.000")),)
    book.apply_account(AccountSpec("a", "USD", "active", D(100000), pos))
    assert book.equity("a") is None  # no price, no conversion: not judged
    book.on_price("EURJPY", 165.0, 165.0)
    assert book.equity("a") is None  # a price but no USDJPY yet
    book.on_price("USDJPY", 150.0, 150.0)
    assert book.equity("a") == pytest.approx(100000 + 5 * 100000 * round(1 / 150, 10), abs=1e-6)
    book.on_price("USDJPY", 125.0, 125.0)
    assert book.equity("a") == pytest.approx(100000 + 5 * 100000 * round(1 / 125, 10), abs=1e-6)
