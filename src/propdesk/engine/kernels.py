"""Pure numpy kernels of the risk book: no I/O, no Python objects per position, ``np.intp`` indexes.

A position's floating P&L in the account currency is ``(mark * k - ka) * rate`` where ``k = quantity x contract
size`` (signed), ``ka = k x avg_price``, ``mark`` the bid (long) or ask (short) and ``rate`` the conversion of its
quote currency into the account currency (``domain.positions.valuate`` computes the same in Decimal).

The float pre-filter folds its margin into the thresholds (``margin``): a threshold ``F`` is checked as
``equity < F + margin(F)``, so the float path over-reports inside a band of about a cent and never misses a breach
the exact (Decimal, cent-rounded) path finds. Price comparisons (SL/TP, resting orders) need no margin: rounding a
Decimal to the nearest float is monotone, so ``bid <= sl`` in Decimal implies it in float.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

MIN_MARGIN = 0.01
REL_MARGIN = 1e-9


def margin(level: float | F64) -> float | F64:
    """The pre-filter margin around a money level: max(0.01, 1e-9 x |level|) in the account currency."""
    if isinstance(level, np.ndarray):
        return np.maximum(MIN_MARGIN, REL_MARGIN * np.abs(level))
    return max(MIN_MARGIN, REL_MARGIN * abs(level))


def values(mark: float, rate: float, k: F64, ka: F64) -> F64:
    """Floating P&L in the account currency of positions sharing one mark price and one conversion rate."""
    out: F64 = (mark * k - ka) * rate
    return out


def reprice_into(mark: float, rate: float, k: F64, ka: F64, pv: F64, acct: IDX, equity: F64) -> None:
    """Reprice positions in place and add the change of each to its account's equity.

    ``acct`` must hold each account at most once (netting: one position per account and symbol), so a fancy
    ``+=`` is exact; use ``accumulate`` otherwise.
    """
    new = values(mark, rate, k, ka)
    delta = new - pv
    pv[:] = new
    equity.put(acct, equity.take(acct) + delta)


def reprice_check(
    mark: float | None,
    rate: float,
    k: F64,
    ka: F64,
    pq: F64,
    pv: F64,
    acct: IDX,
    equity: F64,
    lo_thr: F64,
    hi_thr: F64,
    buf: F64,
) -> IDX:
    """The hot kernel: reprice in place, add each change to its account's equity and return the accounts whose
    equity is now below their low threshold or at/above their high one.

    ``pq`` holds each position's P&L in its quote currency: a new mark recomputes it (``mark * k - ka``); a new
    conversion rate alone (``mark`` None: a USDJPY price for a EURJPY position) only rescales it. ``take``/``put``
    rather than fancy indexing (several times faster for gathers); ``acct`` holds each account at most once. A
    pre-filter only: the caller classifies the returned accounts on their final equity.
    """
    n = k.size
    if mark is not None:
        np.multiply(k, mark, out=pq)
        pq -= ka
    new = buf[0, :n]
    np.multiply(pq, rate, out=new)
    d = buf[1, :n]
    np.subtract(new, pv, out=d)
    pv[:] = new
    e = equity.take(acct)
    e += d
    equity.put(acct, e)
    m = (e < lo_thr.take(acct)) | (e >= hi_thr.take(acct))
    out: IDX = acct[m]
    return out


def accumulate(equity: F64, acct: IDX, delta: F64) -> None:
    """``equity[acct] += delta`` with repeated accounts (a bincount over the touched accounts only)."""
    if acct.size == 0:
        return
    np.add.at(equity, acct, delta)


def value_bounds(mark_lo: float, mark_hi: float, rate_lo: float, rate_hi: float, k: F64, ka: F64) -> tuple[F64, F64]:
    """Lowest and highest value over a window where the mark stayed in [mark_lo, mark_hi] and the rate in
    [rate_lo, rate_hi]. The value is bilinear in (mark, rate), so its extremes are at the box's corners."""
    a = mark_lo * k - ka
    b = mark_hi * k - ka
    c1, c2, c3, c4 = a * rate_lo, a * rate_hi, b * rate_lo, b * rate_hi
    lo: F64 = np.minimum(np.minimum(c1, c2), np.minimum(c3, c4))
    hi: F64 = np.maximum(np.maximum(c1, c2), np.maximum(c3, c4))
    return lo, hi


def protective_hits(mark_lo: float, mark_hi: float, lo_trig: F64, hi_trig: F64) -> tuple[BOOL, BOOL]:
    """Which positions' protective levels a mark in [mark_lo, mark_hi] reaches.

    Per position ``lo_trig`` fires when its mark is at or below it (a long's SL, a short's TP) and ``hi_trig``
    when at or above (a long's TP, a short's SL); absent levels are -inf/+inf (``domain.orders.protective_trigger``).
    """
    lo: BOOL = mark_lo <= lo_trig
    hi: BOOL = mark_hi >= hi_trig
    return lo, hi


def at_or_above(sorted_prices: F64, level: float) -> slice:
    """Slice of an ascending array holding the prices >= level."""
    return slice(int(np.searchsorted(sorted_prices, level, side="left")), sorted_prices.size)


def at_or_below(sorted_prices: F64, level: float) -> slice:
    """Slice of an ascending array holding the prices <= level."""
    return slice(0, int(np.searchsorted(sorted_prices, level, side="right")))


def below(equity: F64, thresholds: F64) -> BOOL:
    out: BOOL = equity < thresholds
    return out


def conversion(direct_mid: float, inverse_mid: float) -> float:
    """``domain.instruments.conversion_rate`` on floats: the direct pair's mid, else 1 / the inverse pair's mid
    rounded to 10 decimals (``money.price``), else NaN (no rate: the account is not judged)."""
    if direct_mid > 0:  # NaN compares false
        return direct_mid
    if inverse_mid > 0:
        return round(1.0 / inverse_mid, 10)
    return math.nan


def trailing_floor(peak: F64, allowance: F64, floor: F64, lock: F64, locked: BOOL) -> tuple[F64, BOOL]:
    """The intraday trailing floor after a new high (``Evaluator._raise_floor`` on floats, conservatively).

    The exact path rounds the peak and the candidate to cents; this one does not, so its floor is at most half a
    cent under the exact floor (inside the margin). It locks a cent early, which only raises its floor (more
    candidates, never fewer).
    """
    cand = peak - allowance
    lock_now = ~locked & ~np.isnan(lock) & (cand + MIN_MARGIN >= lock)
    new_floor = np.where(locked, floor, np.maximum(floor, cand))
    new_floor = np.where(lock_now, np.maximum(np.nan_to_num(lock, nan=-np.inf), floor), new_floor)
    return new_floor, locked | lock_now
