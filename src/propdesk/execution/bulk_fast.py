"""The vectorized pre-pass of the bulk mark (``bulk_mark.mark_all_bulk``): every account valued in float64 with numpy,
and only the accounts it cannot *prove* go through the exact Decimal path.

Reads. Two binary COPYs of fixed-width rows (every column non-null: a sentinel stands for NULL), parsed with one
``np.frombuffer`` each: one row per live account (ids, row versions, the balances columns as integer cents, the few
rule-state fields the quiet check reads, as cents, epoch microseconds or day numbers) and one per position (the
account, the symbol's index in the catalogue, quantity and average price as float8). No per-row Python object is
built.

The float valuation. Per position ``u = (mark - avg) * qty * contract_size * rate`` and ``n = |qty| * contract_size
* mark * rate`` in float64, summed per account (``np.bincount``). Every float result carries an error bound far
above the real one: ``REL`` (1e-12, some 4,500 ulps) times the sum of the magnitudes that went into it. A value is
*proven* to round to ``c`` cents (half-even, as ``money``) when the float is farther than its bound from every
half-cent boundary: then the exact rational value rounds to the same cent, and ``money`` of the exact Decimal
computation (50 significant digits, no rounding before the cents) is that integer. Anything closer, a missing
price, an unknown symbol, cash or a stored value that is not whole cents, a magnitude past 2^50 cents, an equity
within the bound of the safety net, a zero equity (``money`` would keep the sign of a negative zero), a rise of the
high-water mark (its ledger row carries per-position evidence) goes to the exact path.

The quiet proof (tier 1 of ``bulk_mark.quiet_reason``), per distinct rulebook and phase, with strict comparisons:
no day boundary, deadline, weekend or scale-up within a margin (one second, one day for calendar days), equity (exact
cents) inside the day's range, at or under the peak, above every realtime floor (exact cents), the drawdown and the
warning level farther than their bound from their thresholds. An account it cannot prove goes to
``quiet_reason`` on the exact equity, which decides (tier 1, 2 or 3) as before.

Every persisted number is therefore the one the exact path computes: proven cents are integers equal to it, and
everything else is computed by the exact path itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg.rows import tuple_row

from ..domain.instruments import Catalogue
from ..domain.lifecycle import Status
from ..domain.quotes import Quote
from ..domain.rules.pretrade import weekend_holds

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

NULL = -(2**63)  # SQL NULL in an int8 column
NONC = NULL + 1  # a value that is not whole cents (or too large)
REL = 1e-12  # relative error bound of every float result (the real one is below 1e-15)
MAX_CENTS = float(2**50)  # floats hold every integer below 2^53: keep a margin
US = 1_000_000
HUNDRED = Decimal(100)
EPOCH_DAY0 = datetime(1970, 1, 1).date()


def _cents(x: str) -> str:
    return (
        f"CASE WHEN ({x}) IS NULL THEN {NULL} WHEN abs({x}) < 1e13 AND ({x}) = round({x}, 2)"
        f" THEN (({x}) * 100)::int8 ELSE {NONC} END"
    )


def _us(x: str) -> str:
    return f"coalesce((extract(epoch FROM nullif({x}, '')::timestamptz) * 1000000)::int8, {NULL})"


_SEND = {"S16": "uuid_send", ">i8": "int8send", ">i4": "int4send", ">f8": "float8send", "?": "boolsend"}


def _agg(cols: Sequence[tuple[str, str, str]], rest: str) -> str:
    """One row: each column the concatenation of its values' binary send form (every value non-null)."""
    return (
        "SELECT "
        + ", ".join(
            f"string_agg(coalesce({expr}, ''), ',')" if dt == "text" else f"string_agg({_SEND[dt]}({expr}), '')"
            for _n, expr, dt in cols
        )
        + rest
    )


# One value per live account holding positions, each column as its values' binary forms (non-null, fixed width).
ACCOUNT_COLS: tuple[tuple[str, str, str], ...] = (
    ("id", "a.id", "S16"),
    ("ax", "a.xmin::text::int8", ">i8"),
    ("status", "coalesce(array_position(%(statuses)s::text[], a.status::text), 0)::int4", ">i4"),
    ("bx", "b.xmin::text::int8", ">i8"),
    ("seq", "b.ledger_seq", ">i8"),
    ("cash", _cents("b.cash"), ">i8"),
    ("eq0", _cents("b.equity"), ">i8"),
    ("ur0", _cents("b.unrealized_pnl"), ">i8"),
    ("mg0", _cents("b.margin_used"), ">i8"),
    ("hwm0", _cents("b.high_watermark"), ">i8"),
    ("rx", "coalesce(r.xmin::text::int8, -1)", ">i8"),
    ("verdict", "v.verdict IS NOT NULL", "?"),
    ("paused", "coalesce(v.day_paused #>> '{{}}' = 'true', false)", "?"),  # (braces: str.format)
    ("last_t", _us("v.last_t"), ">i8"),
    ("start_day", "coalesce(nullif(v.start_day, '')::date - date '1970-01-01', -2147483648)::int4", ">i4"),
    ("started_at", _us("v.started_at"), ">i8"),
    ("last_open_at", _us("v.last_open_at"), ">i8"),
    ("cycle_started_at", _us("r.state->'extras'->>'cycle_started_at'"), ">i8"),
    ("day_high", _cents("v.day_high_equity"), ">i8"),
    ("day_low", _cents("v.day_low_equity"), ">i8"),
    ("peak", _cents("v.peak_equity"), ">i8"),
    ("daily_floor", _cents("v.daily_floor"), ">i8"),
    ("daily_anchor", _cents("v.daily_anchor"), ">i8"),
    ("max_floor", _cents("v.max_floor"), ">i8"),
    ("initial", _cents("v.initial"), ">i8"),
    ("max_dd", "coalesce(v.max_dd_pct::float8, 'NaN'::float8)", ">f8"),
    ("max_dd_text", "v.max_dd_pct::text", "text"),  # a drawdown equal to the deepest one is decided exactly
)
# The engine's fields are taken from its JSON once per row (``jsonb_to_record``), not one lookup per field.
FAST_ACCOUNTS = _agg(
    ACCOUNT_COLS,
    """
FROM accounts a JOIN balances b ON b.account_id = a.id
LEFT JOIN rule_states r ON r.account_id = a.id AND a.mode = 'challenge' AND a.rulebook IS NOT NULL
LEFT JOIN LATERAL jsonb_to_record(r.state->'engine') AS v(
  verdict jsonb, day_paused jsonb, last_t text, start_day text, started_at text, last_open_at text,
  day_high_equity numeric, day_low_equity numeric, peak_equity numeric, daily_floor numeric, daily_anchor numeric,
  max_floor numeric, initial numeric, max_dd_pct numeric) ON true
WHERE a.status = ANY(%(statuses)s) AND EXISTS (SELECT 1 FROM positions p WHERE p.account_id = a.id) {only}
""",
)
SCALE_DIGITS = 10
SCALE = 10**SCALE_DIGITS  # quantities and average prices are read exactly, as integers of 1e-10 (numeric(28,10))


def _scaled(x: str) -> str:
    return f"CASE WHEN abs({x}) < 900000000 THEN ({x} * {SCALE})::int8 ELSE {NULL} END"


POSITION_COLS: tuple[tuple[str, str, str], ...] = (
    ("id", "p.account_id", "S16"),
    ("sym", "coalesce(array_position(%(symbols)s::text[], p.symbol), 0)::int4", ">i4"),
    ("qty", _scaled("p.quantity"), ">i8"),
    ("avg", _scaled("p.avg_price"), ">i8"),
)
FAST_POSITIONS = _agg(
    POSITION_COLS,
    " FROM positions p JOIN accounts a ON a.id = p.account_id WHERE a.status = ANY(%(statuses)s) {only}",
)


def read_columns(
    c: Any, sql: str, params: Mapping[str, Any], cols: Sequence[tuple[str, str, str]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Run an aggregated binary read (``_agg``): every column as one numpy array (big-endian, no per-row object)."""
    row = c.cursor(binary=True, row_factory=tuple_row).execute(sql, params).fetchone()
    out: dict[str, np.ndarray[Any, Any]] = {}
    n = -1
    for (name, _expr, dt), v in zip(cols, row, strict=True):
        if dt == "text":
            arr = np.array(v.split(",") if v is not None else [], dtype=object)
        else:
            arr = np.frombuffer(v if v is not None else b"", dtype=dt)
        if n >= 0 and len(arr) != n:
            raise ValueError(f"aggregated read: column {name} has {len(arr)} values, expected {n}")
        n = len(arr)
        out[name] = arr
    return out


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


# ---------------------------------------------------------------------------------------------- the write
FAST_COLS = ("id", "seq", "bx", "rx", "eq_c", "ur_c", "mg_c", "hwm_c", "new_seq")


def binary_rows(ids: npt.NDArray[Any], cols: Sequence[I64]) -> bytes:
    """A binary COPY buffer of rows (uuid, int8, int8, ...), built in one pass with numpy."""
    spec: list[tuple[str, str]] = [("_n", ">i2"), ("_l0", ">i4"), ("id", "S16")]
    for i in range(len(cols)):
        spec += [(f"_l{i + 1}", ">i4"), (f"c{i}", ">i8")]
    out = np.empty(len(ids), dtype=np.dtype(spec))
    out["_n"] = 1 + len(cols)
    out["_l0"] = 16
    out["id"] = ids
    for i, col in enumerate(cols):
        out[f"_l{i + 1}"] = 8
        out[f"c{i}"] = col
    return _SIGNATURE + b"\x00" * 8 + out.tobytes() + b"\xff\xff"


# ---------------------------------------------------------------------------------------------- the pre-pass
@dataclass
class BookFacts:
    """What the quiet proof needs of one distinct rulebook and phase at ``now``."""

    rules: Mapping[str, Any]
    day_start_us: int
    today: int  # the trading day of now, days since 1970-01-01
    weekend: bool  # a weekend start in (day start, now]: every account of the book is judged exactly
    scaling_us: int | None  # the scale-up period, microseconds


def book_facts(rules: Mapping[str, Any], cal: Any, scaling: Mapping[str, Any] | None, now: datetime) -> BookFacts:
    day = cal.day_of(now)
    ds = cal.start_of(day)
    wk = rules.get("weekend_trading")
    weekend = bool(
        wk is not None
        and not wk["hold_positions"]
        and weekend_holds(dict(rules), cal, ds - timedelta(microseconds=1), now, [("", "", "")])
    )
    return BookFacts(
        rules,
        _epoch_us(ds),
        (day - EPOCH_DAY0).days,
        weekend,
        timedelta(days=scaling["every_days"]) // timedelta(microseconds=1) if scaling else None,
    )


def _epoch_us(t: datetime) -> int:
    return int(t.timestamp()) * US + t.microsecond


@dataclass
class Valued:
    """The float valuation of every account read (row order of the account columns)."""

    n: int
    proven: B  # equity, unrealized P&L and margin below are the exact cents
    bad: B  # a missing price or rate, an unknown symbol, a value the pre-pass cannot read: the exact path values it
    safe: B  # equity proven above the safety net
    eq_c: I64
    ur_c: I64
    mg_c: I64
    npos: I64
    # positions, matched to their account row; quantities and average prices as exact integers of 1e-10
    row: npt.NDArray[np.intp]
    sym: npt.NDArray[np.intp]
    qty: I64
    avg: I64


def value(
    acc: Mapping[str, np.ndarray[Any, Any]],
    pos: Mapping[str, np.ndarray[Any, Any]],
    catalogue_symbols: Sequence[str],
    catalogue: Catalogue,
    quote: Callable[[str], Quote | None],
    rate: Callable[[str, str], Decimal | None],
    policy_of: Sequence[Any],
    pol_idx: npt.NDArray[np.intp],
) -> Valued:
    """Value every account in float and prove its cents where the error bound allows (module docstring)."""
    ids = acc["id"]
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pids = pos["id"]
    at = np.minimum(np.searchsorted(sorted_ids, pids), max(n - 1, 0))
    hit = sorted_ids[at] == pids
    row = order[at][hit].astype(np.intp)
    sym = pos["sym"][hit].astype(np.intp) - 1  # -1: a symbol the catalogue does not know
    qty_i = pos["qty"][hit].astype(np.int64)
    avg_i = pos["avg"][hit].astype(np.int64)
    qty = qty_i / float(SCALE)
    avg = avg_i / float(SCALE)

    # Per symbol: bid, ask, contract size; per (account currency, symbol): the conversion rate (NaN: missing).
    k = len(catalogue_symbols)
    bid = np.full(k + 1, np.nan)
    ask = np.full(k + 1, np.nan)
    cs = np.full(k + 1, np.nan)
    ccys = sorted({p.currency for p in policy_of})
    rates = np.full((len(ccys), k + 1), np.nan)
    for s in np.unique(sym[sym >= 0]).tolist():
        symbol = catalogue_symbols[s]
        inst = catalogue.get(symbol)
        q = quote(symbol)
        if inst is None or q is None:
            continue
        bid[s], ask[s], cs[s] = float(q.bid), float(q.ask), float(inst.contract_size)
        for ci, ccy in enumerate(ccys):
            rt = rate(inst.quote_currency, ccy)
            if rt is not None:
                rates[ci, s] = float(rt)
    pol_ccy = np.array([ccys.index(p.currency) for p in policy_of], dtype=np.intp)
    pol_lev = np.array([float(p.max_leverage) for p in policy_of], dtype=np.float64)
    pol_liq = np.array([float(p.liquidation_equity) for p in policy_of], dtype=np.float64)

    symk = np.where(sym >= 0, sym, k)
    mark = np.where(qty > 0, bid[symk], ask[symk])
    r = rates[pol_ccy[pol_idx][row], symk]
    size = np.abs(qty) * cs[symk]
    u = (mark - avg) * qty * cs[symk] * r
    notional = size * mark * r
    mag = (np.abs(mark) + np.abs(avg)) * size * np.abs(r)
    bad_pos = (sym < 0) | (qty_i == NULL) | (avg_i == NULL) | ~np.isfinite(u) | ~np.isfinite(notional)
    bad = np.bincount(row, weights=bad_pos.astype(np.float64), minlength=n) > 0
    ok_pos = ~bad_pos
    usum = np.bincount(row[ok_pos], weights=u[ok_pos], minlength=n)
    nsum = np.bincount(row[ok_pos], weights=notional[ok_pos], minlength=n)
    smag = np.bincount(row[ok_pos], weights=mag[ok_pos], minlength=n)
    npos = np.bincount(row, minlength=n).astype(np.int64)

    cash = acc["cash"].astype(np.int64)
    bad |= (cash <= NONC) | (acc["hwm0"].astype(np.int64) <= NONC) | (npos == 0)
    cash_f = np.where(bad, 0.0, cash.astype(np.float64))

    def proven_cents(x: Any, tol: Any) -> tuple[I64, B]:
        fl = np.floor(x)
        frac = x - fl
        ok = np.isfinite(x) & (np.abs(x) < MAX_CENTS) & (np.abs(frac - 0.5) > tol)
        c = np.where(ok, fl + (frac > 0.5), 0.0).astype(np.int64)
        return c, ok

    tol_s = REL * (smag * 100.0 + np.abs(cash_f)) + 1e-9
    eq_f = cash_f + usum * 100.0
    eq_c, ok_e = proven_cents(eq_f, tol_s)
    ur_c, ok_u = proven_cents(usum * 100.0, tol_s)
    m_f = nsum * 100.0 / pol_lev[pol_idx]
    mg_c, ok_m = proven_cents(m_f, REL * m_f + 1e-9)
    liq = pol_liq[pol_idx] * 100.0
    safe = eq_f - tol_s > liq + REL * np.abs(liq)
    proven = ~bad & ok_e & ok_u & ok_m & (eq_c != 0)
    return Valued(n, proven, bad, safe, eq_c, ur_c, mg_c, npos, row, sym, qty_i, avg_i)


@dataclass
class Judged:
    fast: B  # proven and quiet: its row is written from the integer cents, nothing else to do
    exact: B  # the exact path decides (valuation or rules)
    hwm_c: I64
    changed: B


def judge(
    acc: Mapping[str, np.ndarray[Any, Any]],
    v: Valued,
    book_idx: npt.NDArray[np.intp],
    books: Sequence[BookFacts],
    statuses: Sequence[str],
    now: datetime,
) -> Judged:
    """Which accounts are proven quiet (tier 1 of ``bulk_mark.quiet_reason``), on the proven cents."""
    eq_c = v.eq_c
    hwm0 = acc["hwm0"].astype(np.int64)
    hwm_c = np.maximum(hwm0, eq_c)
    rises = eq_c > hwm0
    changed = (eq_c != acc["eq0"]) | (v.ur_c != acc["ur0"]) | (v.mg_c != acc["mg0"]) | rises
    exact = ~(v.proven & v.safe) | rises
    rx = acc["rx"]
    verdict = acc["verdict"]
    ruled = (rx >= 0) & (book_idx >= 0)
    quiet = ~ruled | verdict
    st = acc["status"].astype(np.int64)
    paused_code = statuses.index(Status.DAY_PAUSED.value) + 1 if Status.DAY_PAUSED.value in statuses else -1
    active_code = statuses.index(Status.ACTIVE.value) + 1 if Status.ACTIVE.value in statuses else -1
    now_us = _epoch_us(now)
    cash = acc["cash"].astype(np.int64)
    for b, bk in enumerate(books):
        sel = np.nonzero(ruled & ~verdict & (book_idx == b))[0]
        if not len(sel) or bk.weekend:
            continue

        def col(name: str, sel: Any = sel) -> I64:
            out: I64 = acc[name][sel].astype(np.int64)
            return out

        e = eq_c[sel]
        cash_s = cash[sel]
        last_t = col("last_t")
        ok = (st[sel] != paused_code) & (last_t != NULL) & (last_t >= bk.day_start_us + US)
        rules = bk.rules
        if "max_trading_days" in rules:
            sd = col("start_day")
            ok &= (sd == -(2**31)) | (sd + int(rules["max_trading_days"]["days"]) >= bk.today + 2)
        if "inactivity" in rules:
            started, last_open = col("started_at"), col("last_open_at")
            lo = np.where(last_open != NULL, last_open, started)
            span = timedelta(hours=24 * rules["inactivity"]["days"]) // timedelta(microseconds=1)
            ok &= (started == NULL) | ((lo != NULL) & (lo + span > now_us + US))
        if bk.scaling_us is not None:
            cs_at = col("cycle_started_at")
            ok &= (st[sel] != active_code) | (cs_at == NULL) | (cs_at + bk.scaling_us > now_us + US)
        dh, dlo, pk, ini = col("day_high"), col("day_low"), col("peak"), col("initial")
        for c in (dh, dlo, pk, ini):
            ok &= c > NONC
        dd_max = acc["max_dd"][sel].astype(np.float64)
        ok &= ~np.isnan(dd_max)
        ok &= (dlo <= e) & (e <= dh) & (e <= pk)
        pk_f = pk.astype(np.float64)
        e_f = e.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            dd = (pk_f - e_f) * 100.0 / pk_f
        tol_dd = REL * (np.abs(dd_max) + 1.0)
        sure = (pk <= 0) | (dd < dd_max - tol_dd) | ((pk == e) & (dd_max >= 0))
        tie = ok & ~sure & (dd <= dd_max + tol_dd)
        if tie.any():  # a drawdown equal to the deepest recorded (the same prices again): decide it exactly
            texts = acc["max_dd_text"][sel]
            for j in np.nonzero(tie)[0].tolist():
                peak = Decimal(int(pk[j])).scaleb(-2)
                dd_exact = (peak - Decimal(int(e[j])).scaleb(-2)) * HUNDRED / peak
                sure[j] = bool(texts[j]) and not dd_exact > Decimal(texts[j])
        ok &= sure
        paused = acc["paused"][sel]
        dl = rules.get("max_daily_loss")
        ml = rules.get("max_loss")
        df, mf, da = col("daily_floor"), col("max_floor"), col("daily_anchor")
        ok &= (df != NONC) & (mf != NONC) & (da != NONC)
        if dl is not None:
            val = e if dl["include_floating"] else cash_s
            ok &= (df == NULL) | paused | (val > df)
        if ml is not None:
            ok &= (mf == NULL) | (e > mf)
        dw = rules.get("drawdown_warning")
        if dw is not None:
            used_pct = float(dw["used_pct"])
            if dl is not None:
                v_f = (e if dl["include_floating"] else cash_s).astype(np.float64)
                top, floor = da.astype(np.float64), df.astype(np.float64)
                room = top - floor
                with np.errstate(divide="ignore", invalid="ignore"):
                    w = (top - v_f) * 100.0 / room
                ok &= (df == NULL) | (da == NULL) | paused | (room <= 0) | (w < used_pct - REL * (abs(used_pct) + 1))
            if ml is not None:
                if "amount" in ml:
                    allow = np.full(len(sel), float(ml["amount"]) * 100.0)
                else:
                    allow = float(ml["pct"]) * ini.astype(np.float64) / 100.0
                top = mf.astype(np.float64) + allow
                tol_a = REL * (np.abs(top) + np.abs(allow)) + 1e-9
                with np.errstate(divide="ignore", invalid="ignore"):
                    w = (top - e_f) * 100.0 / allow
                    tol_w = 1e-9 * (abs(used_pct) + 1) + REL * (np.abs(top) + np.abs(e_f)) * 100.0 / np.abs(allow)
                ok &= (mf == NULL) | (allow < -tol_a) | ((allow > tol_a) & (w < used_pct - tol_w))
        quiet[sel] = ok
    exact |= ~quiet
    return Judged(~exact, exact, hwm_c, changed)
