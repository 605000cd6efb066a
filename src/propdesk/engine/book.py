"""The risk book: the vectorized state of every live account, judged on every price.

Layout (every index is ``np.intp``):

- Positions live in *groups*, one per (symbol, side, conversion route): flat arrays of the owning account's slot,
  ``k = quantity x contract size`` (signed), ``ka = k x avg_price``, the current value in the account currency
  (``pv``) and the protective triggers (``lo``: fires when the mark is at or below it, a long's SL or a short's TP;
  ``hi``: at or above, a long's TP or a short's SL; +-inf when absent). Within a group every account appears at
  most once (netting), so ``equity[acct] += delta`` is exact. Removal swaps the last row in (always compact).
- A *route* converts one quote currency into one account currency (``conversion_rate``: the direct pair's mid,
  else 1/the inverse pair's mid rounded to 10 dp). Each symbol knows the groups it marks and the groups whose route
  it moves, so a USDJPY price reprices USDJPY positions and every JPY-quoted position of a USD account.
- Resting limit/stop orders per symbol in four ascending price arrays (buy limit, sell limit, buy stop, sell
  stop); a quote's crossings are two binary searches per array (``domain.orders.crosses``).
- Per account (slot, free-list reuse): cash, equity, the levels of every limit (``spec.levels``), the trailing
  high, notice flags, and two combined thresholds: equity below ``lo_thr`` (the highest of daily floor, max-loss
  floor, safety net, warning levels, each plus its margin) or at/above ``hi_thr`` (a new trailing high, the profit
  target) sends the account to the slow path, which classifies it (a handful of accounts per price).

``on_price`` returns ``Candidates``; ``on_prices`` takes a window of quotes and judges it at the worst (and best,
for trailing highs) bid/ask of each symbol inside it, so a dip inside a window is never missed. The book only
finds candidates: the execution core re-judges each under the account lock at the triggering quote.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from ..domain.instruments import DEFAULT_CATALOGUE, Catalogue
from ..domain.orders import OrderType, Side
from . import kernels as K
from .spec import INTRADAY, STATUS_CODES, AccountSpec, levels

F64 = npt.NDArray[np.float64]
IDX = npt.NDArray[np.intp]
INF = math.inf
NAN = math.nan


class Kind(IntEnum):
    SL = 0
    TP = 1
    ORDER = 2
    DAILY_LOSS = 3
    MAX_LOSS = 4
    SAFETY_NET = 5
    PROFIT_TARGET = 6
    WARNING_DAILY = 7
    WARNING_MAX = 8
    TRAILING_HIGH = 9


KIND_NAMES = {
    Kind.SL: "sl",
    Kind.TP: "tp",
    Kind.ORDER: "order",
    Kind.DAILY_LOSS: "max_daily_loss",
    Kind.MAX_LOSS: "max_loss",
    Kind.SAFETY_NET: "safety_net",
    Kind.PROFIT_TARGET: "profit_target",
    Kind.WARNING_DAILY: "drawdown_warning:max_daily_loss",
    Kind.WARNING_MAX: "drawdown_warning:max_loss",
    Kind.TRAILING_HIGH: "trailing_high",
}

# Notice flags (per account): a kind the float path found *certainly* true is not reported again until the account
# is applied anew (the execution core's decision arrives as a change event).
F_DAILY, F_MAX, F_SAFETY, F_WARN_D, F_WARN_M, F_TARGET, F_ENDED = 1, 2, 4, 8, 16, 32, 64


@dataclass(frozen=True)
class Candidate:
    account_id: Any
    kind: str
    symbol: str | None
    bid: float
    ask: float
    order_id: Any = None


@dataclass(frozen=True)
class Candidates:
    """What one price (or window) found, as parallel arrays. ``account``: book slots; ``symbol``: the symbol whose
    price triggered it; ``bid``/``ask``: the triggering quote (for a window: the one at the worst bid or ask of that
    symbol, ``quote`` its index in the window); ``ref``: the order id for ``Kind.ORDER`` (else None)."""

    account: IDX
    kind: npt.NDArray[np.int8]
    symbol: IDX
    bid: F64
    ask: F64
    quote: IDX
    ref: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return int(self.account.size)


def _empty_candidates() -> Candidates:
    return Candidates(
        np.empty(0, np.intp),
        np.empty(0, np.int8),
        np.empty(0, np.intp),
        np.empty(0),
        np.empty(0),
        np.empty(0, np.intp),
        np.empty(0, dtype=object),
    )


EMPTY = _empty_candidates()


class _Group:
    """The positions of one (symbol, side, route)."""

    __slots__ = (
        "acct",
        "dirty",
        "hi",
        "hi_rows",
        "hi_sorted",
        "k",
        "ka",
        "known",
        "lo",
        "lo_rows",
        "lo_sorted",
        "n",
        "pq",
        "pv",
        "route",
        "side",
        "sym",
    )

    def __init__(self, sym: int, side: int, route: int) -> None:
        self.sym, self.side, self.route = sym, side, route
        self.n = 0
        self.known = False
        cap = 8
        self.acct: IDX = np.zeros(cap, np.intp)
        self.k: F64 = np.zeros(cap)
        self.ka: F64 = np.zeros(cap)
        self.pv: F64 = np.zeros(cap)
        self.pq: F64 = np.zeros(cap)  # P&L in the quote currency (pv = pq x rate)
        self.lo: F64 = np.full(cap, -INF)
        self.hi: F64 = np.full(cap, INF)
        # protective triggers sorted (``reindex``); while ``dirty`` (rows changed since), a price scans them all
        self.dirty = True
        self.lo_sorted: F64 = np.empty(0)
        self.lo_rows: IDX = np.empty(0, np.intp)
        self.hi_sorted: F64 = np.empty(0)
        self.hi_rows: IDX = np.empty(0, np.intp)

    def reindex(self) -> None:
        n = self.n
        lo, hi = self.lo[:n], self.hi[:n]
        rows = np.flatnonzero(lo > -INF)
        o = np.argsort(lo[rows], kind="stable")
        self.lo_rows, self.lo_sorted = rows[o], lo[rows][o]
        rows = np.flatnonzero(hi < INF)
        o = np.argsort(hi[rows], kind="stable")
        self.hi_rows, self.hi_sorted = rows[o], hi[rows][o]
        self.dirty = False

    def protective_rows(self, mark_lo: float, mark_hi: float) -> IDX:
        """Rows whose lo trigger is at or above ``mark_lo`` or whose hi trigger is at or below ``mark_hi``."""
        n = self.n
        if self.dirty:
            out: IDX = np.flatnonzero((self.lo[:n] >= mark_lo) | (self.hi[:n] <= mark_hi))
            return out
        a = self.lo_rows[int(np.searchsorted(self.lo_sorted, mark_lo, side="left")) :]
        b = self.hi_rows[: int(np.searchsorted(self.hi_sorted, mark_hi, side="right"))]
        if not b.size:
            return a
        if not a.size:
            return b
        return np.union1d(a, b)

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = self.acct.size
        if need <= cap:
            return
        new = max(need, cap * 2)
        for name, fill in (("acct", 0), ("k", 0.0), ("ka", 0.0), ("pv", 0.0), ("pq", 0.0), ("lo", -INF), ("hi", INF)):
            old = getattr(self, name)
            arr = np.full(new, fill, dtype=old.dtype)
            arr[: self.n] = old[: self.n]
            setattr(self, name, arr)

    def append(self, acct: IDX, k: F64, ka: F64, pq: F64, pv: F64, lo: F64, hi: F64) -> None:
        m = acct.size
        self.reserve(m)
        s = slice(self.n, self.n + m)
        self.acct[s], self.k[s], self.ka[s], self.pv[s], self.lo[s], self.hi[s] = acct, k, ka, pv, lo, hi
        self.pq[s] = pq
        self.n += m
        self.dirty = True

    def remove_account(self, a: int) -> float:
        """Remove the account's row (swap with the last); returns the value it carried."""
        hit = np.flatnonzero(self.acct[: self.n] == a)
        if hit.size == 0:
            return 0.0
        i, last = int(hit[0]), self.n - 1
        v = float(self.pv[i])
        for arr in (self.acct, self.k, self.ka, self.pv, self.pq, self.lo, self.hi):
            arr[i] = arr[last]
        self.n = last
        self.dirty = True
        return v


class _Orders:
    """Resting orders of one symbol and one (side, type): ascending prices, sorted lazily after changes."""

    __slots__ = ("acct", "dirty", "n", "oid", "price")

    def __init__(self) -> None:
        self.n = 0
        self.dirty = False
        self.price: F64 = np.zeros(4)
        self.acct: IDX = np.zeros(4, np.intp)
        self.oid: npt.NDArray[np.object_] = np.empty(4, dtype=object)

    def add(self, price: float, acct: int, oid: Any) -> None:
        if self.n == self.price.size:
            cap = self.n * 2
            self.price = np.resize(self.price, cap)
            self.acct = np.resize(self.acct, cap)
            oids = np.empty(cap, dtype=object)
            oids[: self.n] = self.oid[: self.n]
            self.oid = oids
        self.price[self.n], self.acct[self.n], self.oid[self.n] = price, acct, oid
        self.n += 1
        self.dirty = True

    def remove_account(self, a: int) -> None:
        keep = self.acct[: self.n] != a
        if keep.all():
            return
        m = int(keep.sum())
        self.price[:m] = self.price[: self.n][keep]
        self.acct[:m] = self.acct[: self.n][keep]
        self.oid[:m] = self.oid[: self.n][keep]
        self.oid[m : self.n] = None
        self.n = m

    def sorted(self) -> tuple[F64, IDX, npt.NDArray[np.object_]]:
        if self.dirty:
            o = np.argsort(self.price[: self.n], kind="stable")
            self.price[: self.n] = self.price[: self.n][o]
            self.acct[: self.n] = self.acct[: self.n][o]
            self.oid[: self.n] = self.oid[: self.n][o]
            self.dirty = False
        return self.price[: self.n], self.acct[: self.n], self.oid[: self.n]


BUY_LIMIT, SELL_LIMIT, BUY_STOP, SELL_STOP = 0, 1, 2, 3
_ACCOUNT_ARRAYS: dict[str, tuple[Any, float | int | bool]] = {
    "cash": (np.float64, 0.0),
    "eq": (np.float64, 0.0),
    "nmiss": (np.int32, 0),
    "npos": (np.int32, 0),
    "status": (np.int8, -1),
    "rb": (np.int32, -1),
    "daily": (np.float64, NAN),
    "warn_d": (np.float64, NAN),
    "max_floor": (np.float64, NAN),
    "max_rt": (np.bool_, False),
    "allowance": (np.float64, 0.0),
    "warn_frac": (np.float64, NAN),
    "mode": (np.int8, 0),
    "lock": (np.float64, NAN),
    "locked": (np.bool_, False),
    "peak": (np.float64, NAN),
    "target": (np.float64, NAN),
    "safety": (np.float64, NAN),
    "live": (np.bool_, False),
    "daily_pause": (np.bool_, False),
    "flags": (np.uint8, 0),
    "lo_thr": (np.float64, -INF),
    "hi_thr": (np.float64, INF),
}


class RiskBook:
    """Every live (marked) account of a shard, as arrays. See the module docstring."""

    cash: F64
    eq: F64
    nmiss: npt.NDArray[np.int32]
    npos: npt.NDArray[np.int32]
    status: npt.NDArray[np.int8]
    rb: npt.NDArray[np.int32]
    daily: F64
    warn_d: F64
    max_floor: F64
    max_rt: npt.NDArray[np.bool_]
    allowance: F64
    warn_frac: F64
    mode: npt.NDArray[np.int8]
    lock: F64
    locked: npt.NDArray[np.bool_]
    peak: F64
    target: F64
    safety: F64
    live: npt.NDArray[np.bool_]
    daily_pause: npt.NDArray[np.bool_]
    flags: npt.NDArray[np.uint8]
    lo_thr: F64
    hi_thr: F64

    def __init__(self, catalogue: Catalogue = DEFAULT_CATALOGUE, capacity: int = 1024) -> None:
        self.catalogue = catalogue
        self.symbols: list[str] = catalogue.symbols()
        self.sym_index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        ns = len(self.symbols)
        self.bid: F64 = np.full(ns, NAN)
        self.ask: F64 = np.full(ns, NAN)
        self.mid: F64 = np.full(ns, NAN)
        self.ts: F64 = np.full(ns, -INF)  # newest quote time per symbol (when callers pass one)
        self.dropped = 0  # quotes older than the symbol's newest, ignored
        self._cs = [float(catalogue.get(s).contract_size) for s in self.symbols]  # type: ignore[union-attr]
        self._qccy = [catalogue.get(s).quote_currency for s in self.symbols]  # type: ignore[union-attr]
        # routes: 0 is the identity (quote currency == account currency)
        self._routes: list[tuple[int, int]] = [(-1, -1)]
        self._route_of: dict[tuple[str, str], int] = {}
        self.rate: list[float] = [1.0]
        self._routes_by_sym: list[list[int]] = [[] for _ in range(ns)]
        self._groups: list[_Group] = []
        self._group_of: dict[tuple[int, int, int], int] = {}
        self._mark_groups: list[list[_Group]] = [[] for _ in range(ns)]
        self._rate_groups: list[list[_Group]] = [[] for _ in range(ns)]
        self._orders: list[list[_Orders]] = [[_Orders() for _ in range(4)] for _ in range(ns)]
        # accounts
        self._cap = 0
        self._n = 0  # high-water slot count
        self._free: list[int] = []
        self._ids: list[Any] = []
        self._slot: dict[Any, int] = {}
        # which groups hold an account's positions and which symbols its orders: bit masks per account (ids
        # below 64; above, a small dict), so the book keeps no Python object per account beyond its id
        self._gmask: npt.NDArray[np.uint64] = np.zeros(0, np.uint64)
        self._omask: npt.NDArray[np.uint64] = np.zeros(0, np.uint64)
        self._gmore: dict[int, set[int]] = {}
        self._omore: dict[int, set[int]] = {}
        self._rulebooks: list[Mapping[str, Any]] = []
        self._rb_index: dict[str, int] = {}
        self._order_refs: list[npt.NDArray[np.object_]] = []
        self._balance_checks: dict[int, tuple[Decimal, Decimal | None, bool, float] | None] = {}
        self._pending_refresh: list[IDX] = []
        self._buf: F64 = np.empty((2, 1024))
        self._grow(capacity)

    @classmethod
    def load(cls, conn: Any, catalogue: Catalogue = DEFAULT_CATALOGUE, quotes: Iterable[Any] = ()) -> RiskBook:
        """Every marked account from PostgreSQL in five set-based statements (``engine.load``), priced at
        ``quotes`` (domain ``Quote``s, the latest of each symbol)."""
        from .load import load

        return load(conn, catalogue, quotes)

    # ------------------------------------------------------------------ capacity and slots
    def _grow(self, cap: int) -> None:
        old = self._cap
        for name, (dt, fill) in _ACCOUNT_ARRAYS.items():
            arr = np.full(cap, fill, dtype=dt)
            if old:
                arr[:old] = getattr(self, name)[:old]
            setattr(self, name, arr)
        for name in ("_gmask", "_omask"):
            arr = np.zeros(cap, np.uint64)
            if old:
                arr[:old] = getattr(self, name)[:old]
            setattr(self, name, arr)
        self._cap = cap

    def _new_slot(self, account_id: Any) -> int:
        if self._free:
            a = self._free.pop()
            self._ids[a] = account_id
        else:
            a = self._n
            self._n += 1
            if a >= self._cap:
                self._grow(max(1024, self._cap * 2))
            self._ids.append(account_id)
        self._slot[account_id] = a
        return a

    def __len__(self) -> int:
        return len(self._slot)

    @staticmethod
    def _bits(mask: int, more: set[int] | None) -> list[int]:
        out = [i for i in range(64) if mask >> i & 1]
        if more:
            out.extend(sorted(more))
        return out

    def _groups_of(self, a: int) -> list[int]:
        return self._bits(int(self._gmask[a]), self._gmore.get(a))

    def _order_symbols_of(self, a: int) -> list[int]:
        return self._bits(int(self._omask[a]), self._omore.get(a))

    def _mark_groups_of(self, acct: IDX, gi: int) -> None:
        if gi < 64:
            self._gmask[acct] |= np.uint64(1 << gi)
        else:
            for a in acct.tolist():
                self._gmore.setdefault(a, set()).add(gi)

    def slot(self, account_id: Any) -> int | None:
        return self._slot.get(account_id)

    def account_id(self, slot: int) -> Any:
        return self._ids[slot]

    def exposure(self, account_id: Any) -> float:
        """The account's gross notional in its currency at the book's prices (|k| x mark x rate summed over its
        positions; 0.0 when unknown): the order in which a burst of candidates is executed."""
        a = self._slot.get(account_id)
        if a is None:
            return 0.0
        total = 0.0
        for gi in self._groups_of(a):
            g = self._groups[gi]
            mark, rt = self._mark(g), self.rate[g.route]
            if not (mark == mark and rt == rt):
                continue
            k = g.k[: g.n][g.acct[: g.n] == a]
            total += float(np.abs(k).sum()) * mark * rt
        return total

    def equity(self, account_id: Any) -> float | None:
        """Float equity in the account currency; None when unknown (a price or conversion is missing)."""
        a = self._slot.get(account_id)
        if a is None or self.nmiss[a] > 0:
            return None
        return float(self.eq[a])

    @property
    def positions(self) -> int:
        return sum(g.n for g in self._groups)

    # ------------------------------------------------------------------ routes and groups
    def _route(self, qccy: str, accy: str) -> int:
        if qccy == accy:
            return 0
        r = self._route_of.get((qccy, accy))
        if r is not None:
            return r
        direct = self.sym_index.get(qccy + accy, -1)
        inverse = self.sym_index.get(accy + qccy, -1)
        r = len(self._routes)
        self._routes.append((direct, inverse))
        self._route_of[(qccy, accy)] = r
        self.rate.append(self._route_rate(r))
        for s in {direct, inverse} - {-1}:
            self._routes_by_sym[s].append(r)
            for g in self._groups:
                if g.route == r and g.sym != s:
                    self._rate_groups[s].append(g)
        return r

    def _route_rate(self, r: int) -> float:
        if r == 0:
            return 1.0
        d, i = self._routes[r]
        return K.conversion(float(self.mid[d]) if d >= 0 else NAN, float(self.mid[i]) if i >= 0 else NAN)

    def _group(self, sym: int, side: int, route: int) -> _Group:
        key = (sym, side, route)
        gi = self._group_of.get(key)
        if gi is not None:
            return self._groups[gi]
        g = _Group(sym, side, route)
        self._group_of[key] = len(self._groups)
        self._groups.append(g)
        self._mark_groups[sym].append(g)
        d, i = self._routes[route]
        for s in {d, i} - {-1, sym}:
            self._rate_groups[s].append(g)
        return g

    def _mark(self, g: _Group) -> float:
        return float(self.bid[g.sym] if g.side > 0 else self.ask[g.sym])

    # ------------------------------------------------------------------ rulebooks
    def _rulebook(self, spec: AccountSpec) -> int:
        if spec.rules is None:
            return -1
        key = spec.rulebook_key or str(id(spec.rules))
        i = self._rb_index.get(key)
        if i is None:
            i = len(self._rulebooks)
            self._rulebooks.append(spec.rules)
            self._rb_index[key] = i
        return i

    @property
    def rulebooks(self) -> int:
        """How many distinct frozen rulebooks the book holds (once each, however many accounts share one)."""
        return len(self._rulebooks)

    # ------------------------------------------------------------------ thresholds
    def _kind_thresholds(self, fa: IDX) -> dict[Kind, F64]:
        """Per kind, equity below the threshold (above, for the profit target) makes a candidate; +-inf: off."""
        fl = self.flags[fa]
        live = self.live[fa] & ((fl & F_ENDED) == 0) & (self.nmiss[fa] == 0)
        known = self.nmiss[fa] == 0

        def lo(level: F64, ok: npt.NDArray[np.bool_]) -> F64:
            ok = ok & ~np.isnan(level)
            out: F64 = np.where(ok, level + K.margin(np.nan_to_num(level)), -INF)
            return out

        daily = self.daily[fa]
        mf = self.max_floor[fa]
        allow = self.allowance[fa]
        warn_m = mf + allow * self.warn_frac[fa]
        target = self.target[fa]
        tgt_ok = live & ~np.isnan(target) & ((fl & F_TARGET) == 0)
        return {
            Kind.DAILY_LOSS: lo(daily, live & ((fl & F_DAILY) == 0)),
            Kind.MAX_LOSS: lo(mf, live & self.max_rt[fa] & ((fl & F_MAX) == 0)),
            Kind.SAFETY_NET: lo(self.safety[fa], known & (self.npos[fa] > 0) & ((fl & F_SAFETY) == 0)),
            Kind.WARNING_DAILY: lo(self.warn_d[fa], live & ((fl & F_WARN_D) == 0)),
            Kind.WARNING_MAX: lo(warn_m, live & (allow > 0) & ((fl & F_WARN_M) == 0)),
            Kind.PROFIT_TARGET: np.where(tgt_ok, target - K.margin(np.nan_to_num(target)), INF),
        }

    def _refresh(self, fa: IDX) -> None:
        th = self._kind_thresholds(fa)
        lo = np.maximum.reduce(
            [th[k] for k in (Kind.DAILY_LOSS, Kind.MAX_LOSS, Kind.SAFETY_NET, Kind.WARNING_DAILY, Kind.WARNING_MAX)]
        )
        fl = self.flags[fa]
        trailing = (
            self.live[fa]
            & ((fl & F_ENDED) == 0)
            & (self.mode[fa] == INTRADAY)
            & ~self.locked[fa]
            & (self.nmiss[fa] == 0)
        )
        peak = np.where(trailing, self.peak[fa], INF)
        self.lo_thr[fa] = lo
        self.hi_thr[fa] = np.minimum(th[Kind.PROFIT_TARGET], peak)

    # ------------------------------------------------------------------ the slow path
    def _judge(
        self,
        fa: IDX,
        e_lo: F64,
        e_hi: F64,
        sym: IDX,
        bid: F64,
        ask: F64,
        quote: IDX,
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]],
        settle: bool = True,
    ) -> None:
        """Classify accounts ``fa`` whose equity was in [e_lo, e_hi]; update trailing highs and notice flags.

        ``settle``: the equity is one real state (a single quote), so a kind found beyond its margin is certain
        and is not reported again. A window's bounds combine its highest high with its lowest low, which may never
        have coexisted: a window reports, and never settles.
        """
        fl = self.flags[fa]
        trailing = (
            self.live[fa]
            & ((fl & F_ENDED) == 0)
            & (self.mode[fa] == INTRADAY)
            & ~self.locked[fa]
            & (self.nmiss[fa] == 0)
        )
        up = trailing & (e_hi > self.peak[fa])
        if up.any():
            ua = fa[up]
            self.peak[ua] = e_hi[up]
            floor, locked = K.trailing_floor(
                self.peak[ua], self.allowance[ua], self.max_floor[ua], self.lock[ua], self.locked[ua]
            )
            self.max_floor[ua], self.locked[ua] = floor, locked
            # A new high raises the intraday trailing floor: the execution core must record it now (the stored
            # peak is what it judges a later dip against), or a fall from a high it never saw would be missed.
            out.append((ua, Kind.TRAILING_HIGH, sym[up], bid[up], ask[up], quote[up]))
        th = self._kind_thresholds(fa)
        # Breaches first; notices only where no breach certainly ended the rules (or paused the day) at this event,
        # as ``Evaluator._limits`` gives warnings only after the breaches, and not once the phase ended.
        certain_end = np.zeros(fa.size, dtype=bool)
        for kind, bit in (
            (Kind.DAILY_LOSS, F_DAILY),
            (Kind.MAX_LOSS, F_MAX),
            (Kind.SAFETY_NET, F_SAFETY),
            (Kind.WARNING_DAILY, F_WARN_D),
            (Kind.WARNING_MAX, F_WARN_M),
        ):
            if kind == Kind.WARNING_DAILY and settle and certain_end.any():
                self.flags[fa[certain_end]] |= F_ENDED
            thr = th[kind]
            hit = e_lo < thr
            if kind in (Kind.WARNING_DAILY, Kind.WARNING_MAX):
                hit &= (self.flags[fa] & (F_ENDED | bit)) == 0
            if not hit.any():
                continue
            out.append((fa[hit], kind, sym[hit], bid[hit], ask[hit], quote[hit]))
            if not settle:
                continue
            level = thr - 2 * K.margin(np.nan_to_num(thr))  # the level minus its margin: certainly crossed
            sure = hit & (e_lo < level)
            self.flags[fa[sure]] |= bit
            if kind == Kind.MAX_LOSS:
                certain_end |= sure
            elif kind == Kind.DAILY_LOSS:
                pause = self.daily_pause[fa]
                certain_end |= sure & ~pause
                self.flags[fa[sure & pause]] |= F_WARN_D
        tgt = th[Kind.PROFIT_TARGET]
        hit = (e_hi >= tgt) & ((self.flags[fa] & F_ENDED) == 0)
        if hit.any():
            out.append((fa[hit], Kind.PROFIT_TARGET, sym[hit], bid[hit], ask[hit], quote[hit]))
            if settle:
                lvl = self.target[fa]
                sure = hit & (e_hi >= lvl + K.margin(np.nan_to_num(lvl)))
                self.flags[fa[sure]] |= F_TARGET
        self._refresh(fa)

    # ------------------------------------------------------------------ prices
    def index(self, symbol: str) -> int:
        return self.sym_index[symbol]

    def on_price(self, symbol: int | str, bid: float, ask: float, ts: float | None = None) -> Candidates:
        """One quote: reprice the symbol's positions and those whose conversion it moves, judge the accounts.

        With ``ts`` (any monotonic time, e.g. epoch seconds or a stream sequence), a quote older than the symbol's
        newest is dropped (counted in ``dropped``); a duplicate reprices to the same values.
        """
        s = symbol if isinstance(symbol, int) else self.sym_index[symbol]
        if ts is not None:
            if ts < self.ts[s]:
                self.dropped += 1
                return EMPTY
            self.ts[s] = ts
        self.bid[s], self.ask[s] = bid, ask
        self.mid[s] = (bid + ask) * 0.5
        rate = self.rate
        for r in self._routes_by_sym[s]:
            rate[r] = self._route_rate(r)
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]] = []
        flagged: list[IDX] = []
        eq, lo_thr, hi_thr = self.eq, self.lo_thr, self.hi_thr
        for g in self._mark_groups[s]:
            n = g.n
            if n == 0:
                continue
            mark, rt = (bid if g.side > 0 else ask), rate[g.route]
            if rt != rt:  # NaN: no conversion yet; keep the quote-currency P&L for when the rate comes
                g.pq[:n] = mark * g.k[:n] - g.ka[:n]
                continue
            if not g.known:
                self._now_known(g)
            if n > self._buf.shape[1]:
                self._buf = np.empty((2, 2 * n))
            f = K.reprice_check(
                mark, rt, g.k[:n], g.ka[:n], g.pq[:n], g.pv[:n], g.acct[:n], eq, lo_thr, hi_thr, self._buf
            )
            if f.size:
                flagged.append(f)
            hits = g.protective_rows(mark, mark)
            if hits.size:
                self._protective(g, hits, mark, mark, s, bid, ask, 0, out)
        for g in self._rate_groups[s]:
            n = g.n
            if n == 0:
                continue
            mark, rt = self._mark(g), rate[g.route]
            if not (rt == rt and mark == mark):
                continue
            if not g.known:
                self._now_known(g)
            if n > self._buf.shape[1]:
                self._buf = np.empty((2, 2 * n))
            # the rate alone moved: rescale the quote-currency P&L (valid wherever the mark is known)
            f = K.reprice_check(
                None, rt, g.k[:n], g.ka[:n], g.pq[:n], g.pv[:n], g.acct[:n], eq, lo_thr, hi_thr, self._buf
            )
            if f.size:
                flagged.append(f)
        self._cross_orders(s, bid, bid, ask, ask, bid, ask, 0, out)
        if flagged:
            # a pre-filter per group; classification on the final equity (an account may sit in several groups)
            fa = np.unique(np.concatenate(flagged)) if len(flagged) > 1 else flagged[0]
            e = self.eq[fa]
            keep = (e < self.lo_thr[fa]) | (e >= self.hi_thr[fa])
            if keep.any():
                fa, e = fa[keep], e[keep]
                nf = fa.size
                self._judge(
                    fa, e, e, np.full(nf, s, np.intp), np.full(nf, bid), np.full(nf, ask), np.zeros(nf, np.intp), out
                )
        return self._collect(out)

    def _now_known(self, g: _Group) -> None:
        """The group's mark and conversion are known for the first time: its accounts may be judged."""
        g.known = True
        acct = g.acct[: g.n]
        self.nmiss[acct] -= 1
        done = acct[self.nmiss[acct] == 0]
        if done.size:
            self._refresh_after_values(g, done)

    def _refresh_after_values(self, g: _Group, accts: IDX) -> None:
        # Values of the group are added by the caller's reprice; thresholds are refreshed once they are in.
        self._pending_refresh.append(accts)

    def _protective(
        self,
        g: _Group,
        hits: IDX,
        mark_lo: float,
        mark_hi: float,
        s: int,
        bid: float,
        ask: float,
        quote: int,
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]],
    ) -> None:
        lo_hit = g.lo[hits] >= mark_lo
        hi_hit = g.hi[hits] <= mark_hi
        long = g.side > 0
        for mask, kind in ((lo_hit, Kind.SL if long else Kind.TP), (hi_hit, Kind.TP if long else Kind.SL)):
            if mask.any():
                a = g.acct[hits[mask]]
                m = a.size
                out.append(
                    (a, kind, np.full(m, s, np.intp), np.full(m, bid), np.full(m, ask), np.full(m, quote, np.intp))
                )

    def _cross_orders(
        self,
        s: int,
        bid_lo: float,
        bid_hi: float,
        ask_lo: float,
        ask_hi: float,
        bid: float,
        ask: float,
        quote: int,
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]],
    ) -> None:
        books = self._orders[s]
        for which, ob in enumerate(books):
            if ob.n == 0:
                continue
            price, acct, oid = ob.sorted()
            if which == BUY_LIMIT:  # ask <= price
                sl = K.at_or_above(price, ask_lo)
            elif which == SELL_LIMIT:  # bid >= price
                sl = K.at_or_below(price, bid_hi)
            elif which == BUY_STOP:  # ask >= price
                sl = K.at_or_below(price, ask_hi)
            else:  # bid <= price
                sl = K.at_or_above(price, bid_lo)
            a = acct[sl]
            if a.size:
                m = a.size
                self._order_refs.append(oid[sl])
                out.append(
                    (a, -1, np.full(m, s, np.intp), np.full(m, bid), np.full(m, ask), np.full(m, quote, np.intp))
                )

    def _collect(self, out: list[tuple[IDX, int, IDX, F64, F64, IDX]]) -> Candidates:
        if self._pending_refresh:
            pend = np.unique(np.concatenate(self._pending_refresh))
            self._pending_refresh.clear()
            self._refresh(pend)
        refs = self._order_refs
        if not out:
            refs.clear()
            return EMPTY
        kinds = [np.full(o[0].size, Kind.ORDER if o[1] == -1 else o[1], np.int8) for o in out]
        ref_parts = []
        ri = 0
        for o in out:
            if o[1] == -1:
                ref_parts.append(refs[ri])
                ri += 1
            else:
                r = np.empty(o[0].size, dtype=object)
                ref_parts.append(r)
        refs.clear()
        return Candidates(
            np.concatenate([o[0] for o in out]),
            np.concatenate(kinds),
            np.concatenate([o[2] for o in out]),
            np.concatenate([o[3] for o in out]),
            np.concatenate([o[4] for o in out]),
            np.concatenate([o[5] for o in out]),
            np.concatenate(ref_parts),
        )

    def on_prices(self, batch: Sequence[tuple[Any, ...]]) -> Candidates:
        """A window of quotes ``(symbol, bid, ask[, ts])`` in arrival order, judged at once.

        Each symbol's bid and ask ranges over the window (plus its price before the window when another symbol
        moved first) bound every position's value; the sum of the lowest values bounds the account's lowest
        equity inside the window, the highest values its highest (trailing highs). SL/TP and resting orders are
        checked at the extreme bid/ask. A quote older than its symbol's newest (with ``ts``) is dropped; a
        duplicate changes nothing.
        """
        if not batch:
            return EMPTY
        if len(batch) == 1:
            one = batch[0]
            return self.on_price(one[0], one[1], one[2], one[3] if len(one) > 3 else None)
        win: dict[int, list[float]] = {}
        arg: dict[int, list[int]] = {}
        for qi, item in enumerate(batch):
            sym, b, a = item[0], item[1], item[2]
            s = sym if isinstance(sym, int) else self.sym_index[sym]
            if len(item) > 3 and item[3] is not None:
                if item[3] < self.ts[s]:
                    self.dropped += 1
                    continue
                self.ts[s] = item[3]
            w = win.get(s)
            if w is None:
                pb, pa = float(self.bid[s]), float(self.ask[s])
                w = [b, b, a, a, b, a]
                arg[s] = [qi, qi]  # index of the lowest bid, of the highest ask
                if qi > 0 and pb == pb and pa == pa:  # the price before the window stood until this quote
                    w[0], w[1], w[2], w[3] = min(b, pb), max(b, pb), min(a, pa), max(a, pa)
                win[s] = w
                continue
            if b < w[0]:
                w[0] = b
                arg[s][0] = qi
            w[1] = max(w[1], b)
            w[2] = min(w[2], a)
            if a > w[3]:
                w[3] = a
                arg[s][1] = qi
            w[4], w[5] = b, a
        # conversion ranges of the routes these symbols move
        mids_lo = {s: (w[0] + w[2]) * 0.5 for s, w in win.items()}
        mids_hi = {s: (w[1] + w[3]) * 0.5 for s, w in win.items()}
        for s, w in win.items():
            self.bid[s], self.ask[s] = w[4], w[5]
            self.mid[s] = (w[4] + w[5]) * 0.5
        rate_rng: dict[int, tuple[float, float]] = {}
        for s in win:
            for r in self._routes_by_sym[s]:
                self.rate[r] = self._route_rate(r)
                if r in rate_rng:
                    continue
                d, i = self._routes[r]
                if d >= 0 and self.mid[d] > 0:
                    rate_rng[r] = (mids_lo.get(d, float(self.mid[d])), mids_hi.get(d, float(self.mid[d])))
                elif i >= 0 and self.mid[i] > 0:
                    lo_m, hi_m = mids_lo.get(i, float(self.mid[i])), mids_hi.get(i, float(self.mid[i]))
                    rate_rng[r] = (round(1.0 / hi_m, 10), round(1.0 / lo_m, 10))
        groups: dict[int, tuple[_Group, int]] = {}
        for s in win:
            for g in self._mark_groups[s]:
                groups[id(g)] = (g, s)
            for g in self._rate_groups[s]:
                groups.setdefault(id(g), (g, s))
        cap = self._cap
        d_lo = np.zeros(cap)
        d_hi = np.zeros(cap)
        touched: list[IDX] = []
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]] = []
        # attribution of account-level candidates: the symbol (and its worst quote) of the last group seen
        attr_sym = np.full(cap, -1, np.intp)
        for g, cause in groups.values():
            n = g.n
            rt = self.rate[g.route]
            mark = self._mark(g)
            if n == 0 or not (rt == rt and mark == mark):
                continue
            if not g.known:
                self._now_known(g)
            w = win.get(g.sym)
            if w is not None:
                m_lo, m_hi = (w[0], w[1]) if g.side > 0 else (w[2], w[3])
            else:
                m_lo = m_hi = mark
            r_lo, r_hi = rate_rng.get(g.route, (rt, rt))
            acct = g.acct[:n]
            vlo, vhi = K.value_bounds(m_lo, m_hi, r_lo, r_hi, g.k[:n], g.ka[:n])
            g.pq[:n] = mark * g.k[:n] - g.ka[:n]
            new = g.pq[:n] * rt
            pv = g.pv[:n]
            d_lo[acct] += vlo - pv - (new - pv)
            d_hi[acct] += vhi - pv - (new - pv)
            self.eq[acct] += new - pv
            pv[:] = new
            touched.append(acct)
            attr_sym[acct] = cause
            if w is not None:
                hits = g.protective_rows(m_lo, m_hi)
                if hits.size:
                    qi = arg[g.sym][0] if g.side > 0 else arg[g.sym][1]
                    qb, qa = batch[qi][1], batch[qi][2]
                    self._protective(g, hits, m_lo, m_hi, g.sym, qb, qa, qi, out)
        for s, w in win.items():
            qb_i = arg[s][0]
            self._cross_orders(s, w[0], w[1], w[2], w[3], batch[qb_i][1], batch[qb_i][2], qb_i, out)
        if touched:
            ta = np.unique(np.concatenate(touched))
            e_fin = self.eq[ta]
            e_lo, e_hi = e_fin + d_lo[ta], e_fin + d_hi[ta]
            m = (e_lo < self.lo_thr[ta]) | (e_hi >= self.hi_thr[ta])
            if m.any():
                fa = ta[m]
                syms = attr_sym[fa]
                qidx = np.array([arg[int(x)][0] for x in syms], dtype=np.intp)
                bids = np.array([batch[int(q)][1] for q in qidx])
                asks = np.array([batch[int(q)][2] for q in qidx])
                self._judge(fa, e_lo[m], e_hi[m], syms, bids, asks, qidx, out, settle=False)
        return self._collect(out)

    # ------------------------------------------------------------------ accounts
    def apply_account(self, spec: AccountSpec) -> Candidates:
        """Replace one account's rows after a committed command; an unmarked status removes it.

        Returns the account's candidates judged at the book's current prices (a change may itself breach).
        """
        self._drop_rows(spec.account_id)
        if not spec.marked:
            self.remove_account(spec.account_id)
            return EMPTY
        a = self._slot.get(spec.account_id)
        if a is None:
            a = self._new_slot(spec.account_id)
        self._set_account(a, spec)
        self._add_positions(np.full(len(spec.positions), a, np.intp), spec)
        self._add_orders(a, spec)
        fa = np.array([a], np.intp)
        self._refresh(fa)
        return self.judge_accounts(fa)

    def add_accounts(self, specs: Iterable[AccountSpec]) -> int:
        """Bulk insert (at load): positions are grouped and appended per group at once. Returns the count."""
        rows: dict[tuple[int, int, int], tuple[array[int], array[float]]] = {}
        slots: list[int] = []
        for spec in specs:
            if not spec.marked:
                continue
            self._drop_rows(spec.account_id)
            a = self._slot.get(spec.account_id)
            if a is None:
                a = self._new_slot(spec.account_id)
            self._set_account(a, spec)
            slots.append(a)
            for p in spec.positions:
                if p.quantity == 0:
                    continue
                key, k, ka, lo, hi = self._position_row(spec.currency, p)
                r = rows.get(key)
                if r is None:
                    r = rows[key] = (array("q"), array("d"))
                r[0].append(a)
                r[1].extend((k, ka, lo, hi))
            self._add_orders(a, spec)
        for key, (ai, vals) in rows.items():
            g = self._group(*key)
            acct = np.frombuffer(ai, dtype=np.int64).astype(np.intp)
            v = np.frombuffer(vals, dtype=np.float64).reshape(-1, 4)
            self._fill_group(g, acct, v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(), v[:, 3].copy())
        fa = np.array(slots, np.intp)
        if fa.size:
            self._refresh(fa)
        return len(slots)

    def _position_row(self, currency: str, p: Any) -> tuple[tuple[int, int, int], float, float, float, float]:
        s = self.sym_index[p.symbol]
        side = 1 if p.quantity > 0 else -1
        route = self._route(self._qccy[s], currency)
        k = float(p.quantity) * self._cs[s]
        avg = float(p.avg_price)
        sl = float(p.stop_loss) if p.stop_loss is not None else NAN
        tp = float(p.take_profit) if p.take_profit is not None else NAN
        if side > 0:
            lo, hi = (sl if sl == sl else -INF), (tp if tp == tp else INF)
        else:
            lo, hi = (tp if tp == tp else -INF), (sl if sl == sl else INF)
        return (s, side, route), k, k * avg, lo, hi

    def _fill_group(self, g: _Group, acct: IDX, k: F64, ka: F64, lo: F64, hi: F64) -> None:
        mark, rt = self._mark(g), self.rate[g.route]
        pq: F64 = mark * k - ka if mark == mark else np.zeros(acct.size)
        if mark == mark and rt == rt:
            pv = pq * rt
            np.add.at(self.eq, acct, pv)
            g.known = True
        else:
            pv = np.zeros(acct.size)
            np.add.at(self.nmiss, acct, 1)
        g.append(acct, k, ka, pq, pv, lo, hi)
        self._mark_groups_of(acct, self._group_of[(g.sym, g.side, g.route)])

    def _set_account(self, a: int, spec: AccountSpec) -> None:
        lv = levels(spec)
        cash = float(spec.cash)
        self.cash[a] = cash
        self.eq[a] = cash
        self.nmiss[a] = 0
        self.npos[a] = sum(1 for p in spec.positions if p.quantity != 0)
        self.status[a] = STATUS_CODES.get(spec.status, -1)
        self.rb[a] = self._rulebook(spec)
        self.daily[a] = lv.daily
        self.warn_d[a] = NAN if lv.daily_on_balance or lv.warned_daily else lv.warn_daily
        self.max_floor[a] = lv.max_floor
        self.max_rt[a] = lv.max_realtime
        self.allowance[a] = lv.allowance
        self.warn_frac[a] = NAN if lv.warned_max else lv.warn_frac
        self.mode[a] = lv.mode
        self.lock[a] = lv.lock
        self.locked[a] = lv.locked
        self.peak[a] = lv.peak
        self.target[a] = lv.target
        self.safety[a] = lv.safety
        self.live[a] = lv.live
        self.daily_pause[a] = lv.daily_pause
        self.flags[a] = 0
        if lv.daily_on_balance:
            self._balance_checks[a] = (
                spec.cash,
                lv.daily_balance,
                lv.daily_touch,
                NAN if lv.warned_daily else lv.warn_daily,
            )
        else:
            self._balance_checks.pop(a, None)

    def _add_positions(self, acct: IDX, spec: AccountSpec) -> None:
        rows: dict[tuple[int, int, int], list[tuple[int, float, float, float, float]]] = {}
        for a, p in zip(acct.tolist(), spec.positions, strict=True):
            if p.quantity == 0:
                continue
            key, k, ka, lo, hi = self._position_row(spec.currency, p)
            rows.setdefault(key, []).append((a, k, ka, lo, hi))
        for key, rs in rows.items():
            g = self._group(*key)
            arr = np.array(rs, dtype=np.float64)
            self._fill_group(g, arr[:, 0].astype(np.intp), arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4])

    def _add_orders(self, a: int, spec: AccountSpec) -> None:
        if spec.status != "active":
            return  # resting orders fire only for active accounts (process_triggers)
        touched: list[int] = []
        for o in spec.orders:
            s = self.sym_index.get(o.symbol)
            if s is None or o.order_type not in (OrderType.LIMIT, OrderType.STOP):
                continue
            buy = o.side is Side.BUY
            which = (
                (BUY_LIMIT if buy else SELL_LIMIT)
                if o.order_type is OrderType.LIMIT
                else (BUY_STOP if buy else SELL_STOP)
            )
            self._orders[s][which].add(float(o.price), a, o.order_id)
            touched.append(s)
        for s in set(touched):
            if s < 64:
                self._omask[a] |= np.uint64(1 << s)
            else:
                self._omore.setdefault(a, set()).add(s)

    def _drop_rows(self, account_id: Any) -> None:
        a = self._slot.get(account_id)
        if a is None:
            return
        for gi in self._groups_of(a):
            self._groups[gi].remove_account(a)
        self._gmask[a] = 0
        self._gmore.pop(a, None)
        for s in self._order_symbols_of(a):
            for ob in self._orders[s]:
                ob.remove_account(a)
        self._omask[a] = 0
        self._omore.pop(a, None)

    def remove_account(self, account_id: Any) -> None:
        a = self._slot.get(account_id)
        if a is None:
            return
        self._drop_rows(account_id)
        del self._slot[account_id]
        self._ids[a] = None
        self._balance_checks.pop(a, None)
        for name, (_dt, fill) in _ACCOUNT_ARRAYS.items():
            getattr(self, name)[a] = fill
        self._free.append(a)

    def judge_accounts(self, fa: IDX) -> Candidates:
        """Judge accounts at the book's current prices (after a change): SL/TP, orders, limits, target."""
        out: list[tuple[IDX, int, IDX, F64, F64, IDX]] = []
        for a in fa.tolist():
            for gi in self._groups_of(a):
                g = self._groups[gi]
                mark = self._mark(g)
                if mark != mark:
                    continue
                i = np.flatnonzero(g.acct[: g.n] == a)
                hits = i[(g.lo[i] >= mark) | (g.hi[i] <= mark)]
                if hits.size:
                    self._protective(
                        g, hits, mark, mark, g.sym, float(self.bid[g.sym]), float(self.ask[g.sym]), -1, out
                    )
            for s in self._order_symbols_of(a):
                b, k = float(self.bid[s]), float(self.ask[s])
                if b != b:
                    continue
                for which, ob in enumerate(self._orders[s]):
                    price, acct, oid = ob.price[: ob.n], ob.acct[: ob.n], ob.oid[: ob.n]
                    mine = acct == a
                    if which == BUY_LIMIT:
                        hit = mine & (k <= price)
                    elif which == SELL_LIMIT:
                        hit = mine & (b >= price)
                    elif which == BUY_STOP:
                        hit = mine & (k >= price)
                    else:
                        hit = mine & (b <= price)
                    m = int(hit.sum())
                    if m:
                        self._order_refs.append(oid[hit])
                        out.append(
                            (
                                acct[hit],
                                -1,
                                np.full(m, s, np.intp),
                                np.full(m, b),
                                np.full(m, k),
                                np.full(m, -1, np.intp),
                            )
                        )
            bc = self._balance_checks.get(a)
            if bc is not None:
                cash, floor, touch, warn = bc
                one = np.array([a], np.intp)
                nan1 = np.array([NAN])
                if floor is not None and (cash <= floor if touch else cash < floor):
                    out.append((one, Kind.DAILY_LOSS, np.array([-1], np.intp), nan1, nan1, np.array([-1], np.intp)))
                elif warn == warn and float(cash) < warn + K.MIN_MARGIN:
                    out.append((one, Kind.WARNING_DAILY, np.array([-1], np.intp), nan1, nan1, np.array([-1], np.intp)))
            tgt = self.target[a]
            if tgt == tgt and self.live[a] and (self.flags[a] & F_ENDED) == 0 and self.cash[a] >= tgt:
                one = np.array([a], np.intp)
                nan1 = np.array([NAN])
                out.append((one, Kind.PROFIT_TARGET, np.array([-1], np.intp), nan1, nan1, np.array([-1], np.intp)))
        known = fa[self.nmiss[fa] == 0]
        if known.size:
            e = self.eq[known]
            m = (e < self.lo_thr[known]) | (e >= self.hi_thr[known])
            if m.any():
                ga = known[m]
                n = ga.size
                self._judge(
                    ga,
                    e[m],
                    e[m],
                    np.full(n, -1, np.intp),
                    np.full(n, NAN),
                    np.full(n, NAN),
                    np.full(n, -1, np.intp),
                    out,
                )
        return self._collect(out)

    # ------------------------------------------------------------------ maintenance
    def reindex(self) -> int:
        """Sort the protective triggers of every group changed since its last sort (call when idle, e.g. between
        windows): a sorted group finds its SL/TP hits by binary search, a changed one scans. Returns how many."""
        done = 0
        for g in self._groups:
            if g.dirty and g.n:
                g.reindex()
                done += 1
        return done

    def resync(self) -> None:
        """Recompute every value and equity from the arrays (bounds the drift of incremental float sums)."""
        n = self._n
        eq = self.cash[:n].copy()
        for g in self._groups:
            if g.n == 0 or not g.known:
                continue
            mark, rt = self._mark(g), self.rate[g.route]
            g.pq[: g.n] = mark * g.k[: g.n] - g.ka[: g.n]
            g.pv[: g.n] = g.pq[: g.n] * rt
            eq += np.bincount(g.acct[: g.n], weights=g.pv[: g.n], minlength=n)
        self.eq[:n] = eq
        for r in range(1, len(self._routes)):
            self.rate[r] = self._route_rate(r)

    def candidates(self, found: Candidates) -> list[Candidate]:
        """The candidates as records for the execution core (account ids, kind names, symbols)."""
        out = []
        for i in range(len(found)):
            s = int(found.symbol[i])
            out.append(
                Candidate(
                    self._ids[int(found.account[i])],
                    KIND_NAMES[Kind(int(found.kind[i]))],
                    self.symbols[s] if s >= 0 else None,
                    float(found.bid[i]),
                    float(found.ask[i]),
                    found.ref[i],
                )
            )
        return out

    def arrays_nbytes(self) -> int:
        """Bytes held in numpy arrays (accounts, groups, orders, prices)."""
        total = sum(getattr(self, name).nbytes for name in _ACCOUNT_ARRAYS)
        for g in self._groups:
            total += sum(x.nbytes for x in (g.acct, g.k, g.ka, g.pv, g.lo, g.hi))
        for books in self._orders:
            for ob in books:
                total += ob.price.nbytes + ob.acct.nbytes + ob.oid.nbytes
        return int(total + self.bid.nbytes * 3)
