"""The slow exact reference the book is checked against: one account, Decimal, the domain's own functions.

``ExactAccount.judge(quotes, t)`` finds what the per-account path finds at one instant: resting orders crossed
(``crosses``, active accounts), SL/TP hit (``protective_trigger``), the safety net (``valuate`` equity at or below
the policy's ``liquidation_equity``), the rulebook's decisions on that equity (``Evaluator.on_equity`` on the
cent-rounded equity, as ``RulesBridge.on_equity`` feeds it: breaches and drawdown warnings) and the profit target
reached on equity (``money(equity) >= initial + target``, reported once) or the phase passed (``check_pass``, as
``RulesBridge.on_equity`` calls it). Keys are
``(kind, symbol or order id or None)`` with the kind names of ``book.KIND_NAMES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..domain.instruments import Catalogue, Instrument, conversion_rate
from ..domain.money import money
from ..domain.orders import OrderPurpose, OrderType, crosses, protective_trigger
from ..domain.positions import Valuation, valuate
from ..domain.quotes import Quote
from ..domain.rules.engine import Evaluator
from .spec import AccountSpec, allowance

Key = tuple[str, Any]


def exact_valuation(spec: AccountSpec, catalogue: Catalogue, quotes: Mapping[str, Quote]) -> Valuation:
    """``valuate`` as the execution service calls it (catalogue symbols' mids for conversion)."""

    def mid(symbol: str) -> Decimal | None:
        if catalogue.get(symbol) is None:
            return None
        q = quotes.get(symbol)
        return q.mid if q is not None else None

    insts: dict[str, Instrument] = {}
    for p in spec.positions:
        i = catalogue.get(p.symbol)
        assert i is not None
        insts[p.symbol] = i
    return valuate(spec.cash, spec.positions, insts, quotes.get, lambda qc: conversion_rate(qc, spec.currency, mid))


@dataclass
class ExactAccount:
    spec: AccountSpec
    catalogue: Catalogue
    evaluator: Evaluator | None = None
    target_seen: bool = False
    last: set[Key] = field(default_factory=set)

    liquidated: bool = False

    @property
    def ended(self) -> bool:
        return self.evaluator is not None and self.evaluator.ended

    @property
    def terminated(self) -> bool:
        """Failed, passed, expired (the rules) or liquidated (the safety net): the core removes the account."""
        return self.ended or self.liquidated

    def judge(self, quotes: Mapping[str, Quote], t: datetime) -> set[Key]:
        spec = self.spec
        out: set[Key] = set()
        if not spec.marked:
            return out
        if spec.status == "active":
            for o in spec.orders:
                q = quotes.get(o.symbol)
                if (
                    q is not None
                    and crosses(o.order_type, o.side, o.price, q.bid, q.ask)
                    and o.order_type in (OrderType.LIMIT, OrderType.STOP)
                ):
                    out.add(("order", o.order_id))
        for p in spec.positions:
            q = quotes.get(p.symbol)
            if q is None:
                continue
            hit = protective_trigger(p.quantity, p.stop_loss, p.take_profit, q.bid, q.ask)
            if hit is not None:
                out.add(("sl" if hit is OrderPurpose.STOP_LOSS else "tp", p.symbol))
        val = exact_valuation(spec, self.catalogue, quotes)
        if val.missing:
            self.last = out
            return out
        if spec.positions and spec.liquidation_equity is not None and val.equity <= spec.liquidation_equity:
            out.add(("safety_net", None))
            self.liquidated = True
        ev = self.evaluator
        if ev is not None and not ev.ended:
            decisions = ev.on_equity(t, spec.cash, money(val.equity))
            decisions += ev.check_pass(t, sum(1 for p in spec.positions if p.quantity != 0))
            for d in decisions:
                if d.kind == "breach":
                    out.add((d.rule, None))
                elif d.kind == "warning":
                    out.add((f"drawdown_warning:{d.evidence['limit']}", None))
                elif d.kind == "pass":
                    out.add(("profit_target", None))
        rules, st = spec.rules, spec.state
        if (
            rules is not None
            and st is not None
            and "profit_target" in rules
            and not self.target_seen
            and not st.ended
            and not (ev is not None and ev.ended)
        ):
            level = st.initial + allowance(rules, "profit_target", st.initial)
            if money(val.equity) >= level:
                self.target_seen = True
                out.add(("profit_target", None))
        self.last = out
        return out
