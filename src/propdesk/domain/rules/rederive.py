"""Re-deriving stored verdicts from their evidence alone.

Every breach the engine records carries the inputs that produced it. ``rederive`` recomputes the limit and
the verdict from those inputs with the rule's formula and says whether they agree with what was stored, so a
trader (or an auditor) can check any verdict without trusting the engine's state.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..money import money

HUNDRED = Decimal(100)


def _d(v: Any) -> Decimal | None:
    return Decimal(str(v)) if v is not None else None


def _breached(value: Decimal, floor: Decimal, touch: bool) -> bool:
    return value <= floor if touch else value < floor


def rederive(decision: dict[str, Any]) -> tuple[bool, str]:
    """(agrees, explanation) for one stored decision (``Decision.to_json()`` shape plus ``action``)."""
    rule = decision.get("rule")
    ev = decision.get("evidence") or {}
    value = _d(decision.get("value"))
    limit = _d(decision.get("limit"))
    if rule == "max_daily_loss":
        anchor = _d(ev.get("anchor_value"))
        if anchor is None or value is None or limit is None:
            return False, "evidence lacks anchor_value, value or limit"
        if ev.get("amount") is not None:
            floor = anchor - Decimal(str(ev["amount"]))
        else:
            pct = Decimal(str(ev["pct"]))
            initial = _d(ev.get("initial_balance"))
            if ev.get("base") != "day_anchor" and initial is None:
                return False, "evidence lacks initial_balance"
            base = anchor if ev.get("base") == "day_anchor" else initial
            assert base is not None
            floor = anchor - pct * base / HUNDRED
        # The stored limit is the floor rounded to cents; the verdict is judged against the floor itself.
        ok = money(floor) == money(limit) and _breached(value, floor, bool(ev.get("breach_on_touch")))
        return ok, f"floor = {anchor} - allowance = {floor}; value {value} vs {limit}"
    if rule == "max_loss":
        initial = _d(ev.get("initial_balance"))
        if initial is None or value is None or limit is None:
            return False, "evidence lacks initial_balance, value or limit"
        allowance = (
            Decimal(str(ev["amount"])) if ev.get("amount") is not None else Decimal(str(ev["pct"])) * initial / HUNDRED
        )
        mode = ev.get("mode")
        peak = {
            "static": initial,
            "eod_trailing": _d(ev.get("peak_eod_balance")),
            "intraday_trailing": _d(ev.get("peak_equity")),
            "closed_balance_trailing": _d(ev.get("peak_closed_balance")),
        }.get(str(mode), initial) or initial
        floor = max(initial, peak) - allowance
        lock = _d(ev.get("lock_at"))
        if lock is not None and (ev.get("locked") or floor >= lock):
            floor = lock
        ok = money(floor) == money(limit) and _breached(value, floor, bool(ev.get("breach_on_touch")))
        return ok, f"floor = {mode} peak {peak} - {allowance} = {floor}; value {value} vs {limit}"
    if rule == "consistency" and ev.get("mode") == "per_trade":
        profit, cum = _d(ev.get("profit")), _d(ev.get("cumulative_winning_profit"))
        mx = _d(ev.get("max_share_pct"))
        if profit is None or cum is None or mx is None or cum == 0:
            return False, "evidence lacks profit, cumulative_winning_profit or max_share_pct"
        share = profit * HUNDRED / cum
        bad = share >= mx if ev.get("strict") else share > mx
        return bad, f"share {share:.2f}% vs {mx}%"
    if rule == "consistency" and ev.get("mode") == "best_day":
        best, denom, mx = _d(ev.get("best_day_profit")), _d(ev.get("denominator_value")), _d(ev.get("max_share_pct"))
        if best is None or denom is None or mx is None:
            return False, "evidence lacks best_day_profit, denominator_value or max_share_pct"
        bad = denom <= 0 or best * HUNDRED / denom > mx
        return bad, f"best day {best} / {denom} vs {mx}%"
    if rule in ("max_trading_days", "inactivity"):
        return ev.get("deadline") is not None and decision.get("at") == ev.get("deadline"), "expiry at the deadline"
    if rule == "profit_target":
        prog = ev.get("progress") or {}
        met = all(bool(p.get("met")) for k, p in prog.items() if k != "consistency")
        return met, "every progress condition met"
    return True, "no formula to re-derive (flag or notice)"
