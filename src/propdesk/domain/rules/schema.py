"""Rule ids, parameter keys, types and defaults: the vocabulary of RULES.md as data.

``validate_rule(rule_id, params, where)`` returns the normalized parameters (defaults filled in, decimals as
``Decimal``) or raises ``RulebookError`` naming the file, the key and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


class RulebookError(ValueError):
    """A rulebook or plan file is invalid: ``where`` (file), ``key`` (dotted path) and ``reason``."""

    def __init__(self, where: str, key: str, reason: str):
        super().__init__(f"{where}: {key}: {reason}")
        self.where = where
        self.key = key
        self.reason = reason


Check = Callable[[Any, str, str], Any]
_MISSING = object()


@dataclass(frozen=True)
class P:
    """One parameter: a converter/validator and a default (``_MISSING`` = no default, optional)."""

    check: Check
    default: Any = _MISSING


def dec(*, min_value: Decimal | None = Decimal(0), max_value: Decimal | None = None, positive: bool = False) -> Check:
    def c(v: Any, where: str, key: str) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (int, float, str, Decimal)):
            raise RulebookError(where, key, "must be a number")
        try:
            d = Decimal(str(v)) if not isinstance(v, Decimal) else v
        except InvalidOperation:
            raise RulebookError(where, key, f"{v!r} is not a number") from None
        if not d.is_finite():
            raise RulebookError(where, key, "must be finite")
        if positive and d <= 0:
            raise RulebookError(where, key, "must be greater than 0")
        if min_value is not None and d < min_value:
            raise RulebookError(where, key, f"must be at least {min_value}")
        if max_value is not None and d > max_value:
            raise RulebookError(where, key, f"must be at most {max_value}")
        return d

    return c


def integer(*, min_value: int = 0, max_value: int = 100_000) -> Check:
    def c(v: Any, where: str, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RulebookError(where, key, "must be an integer")
        if not min_value <= v <= max_value:
            raise RulebookError(where, key, f"must be between {min_value} and {max_value}")
        return v

    return c


def boolean(v: Any, where: str, key: str) -> bool:
    if not isinstance(v, bool):
        raise RulebookError(where, key, "must be true or false")
    return v


def enum(*values: str) -> Check:
    def c(v: Any, where: str, key: str) -> str:
        if v not in values:
            raise RulebookError(where, key, f"must be one of {', '.join(values)} (got {v!r})")
        return str(v)

    return c


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def hhmm(v: Any, where: str, key: str) -> str:
    if not isinstance(v, str) or not (_HHMM.match(v) or v == "24:00"):
        raise RulebookError(where, key, "must be a time HH:MM")
    return v


def windows(v: Any, where: str, key: str) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not v:
        raise RulebookError(where, key, "must be a non-empty list of {days, start, end}")
    out = []
    for i, w in enumerate(v):
        k = f"{key}[{i}]"
        if not isinstance(w, Mapping) or set(w) - {"days", "start", "end"}:
            raise RulebookError(where, k, "must be an object with days, start, end")
        days = w.get("days", list(DAYS[:5]))
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise RulebookError(where, f"{k}.days", f"must be a list of {', '.join(DAYS)}")
        start = hhmm(w.get("start"), where, f"{k}.start")
        end = hhmm(w.get("end"), where, f"{k}.end")
        if start == end:
            raise RulebookError(where, k, "start and end must differ")
        out.append({"days": list(days), "start": start, "end": end})
    return out


def str_list(*allowed: str) -> Check:
    def c(v: Any, where: str, key: str) -> list[str]:
        if not isinstance(v, list) or any(x not in allowed for x in v):
            raise RulebookError(where, key, f"must be a list of {', '.join(allowed)}")
        return [str(x) for x in v]

    return c


PCT = dec(min_value=Decimal(0), max_value=Decimal(100))
AMOUNT = dec(positive=True)
ASSET_CLASSES = ("forex", "metal", "energy", "index", "equity", "crypto")

RULES: dict[str, dict[str, P]] = {
    "profit_target": {
        "pct": P(dec(positive=True, max_value=Decimal(1000))),
        "amount": P(AMOUNT),
        "measure": P(enum("balance"), "balance"),
        "require_flat": P(boolean, True),
    },
    "min_trading_days": {"days": P(integer(min_value=0, max_value=3650))},
    "min_profitable_days": {"days": P(integer(min_value=0, max_value=3650)), "threshold_pct": P(PCT, Decimal(0))},
    "max_daily_loss": {
        "pct": P(dec(positive=True, max_value=Decimal(100))),
        "amount": P(AMOUNT),
        "base": P(enum("initial_balance", "day_anchor"), "initial_balance"),
        "anchor": P(
            enum("start_of_day_balance", "start_of_day_equity", "start_of_day_max_balance_equity", "initial_balance"),
            "start_of_day_balance",
        ),
        "include_floating": P(boolean, True),
        "evaluation": P(enum("realtime", "end_of_day"), "realtime"),
        "action": P(enum("fail", "pause_day"), "fail"),
        "breach_on_touch": P(boolean, False),
    },
    "max_loss": {
        "pct": P(dec(positive=True, max_value=Decimal(100))),
        "amount": P(AMOUNT),
        "mode": P(enum("static", "eod_trailing", "intraday_trailing", "closed_balance_trailing"), "static"),
        "evaluation": P(enum("realtime", "end_of_day"), "realtime"),
        "lock_at": P(AMOUNT),
        "lock_at_offset": P(dec(min_value=None)),
        "breach_on_touch": P(boolean, False),
    },
    "max_trading_days": {"days": P(integer(min_value=1, max_value=3650))},
    "inactivity": {"days": P(integer(min_value=1, max_value=3650))},
    "consistency": {
        "mode": P(enum("best_day", "per_trade"), "best_day"),
        "max_share_pct": P(dec(positive=True, max_value=Decimal(100))),
        "denominator": P(enum("total_profit", "sum_of_positive_days"), "total_profit"),
        "applies_to": P(enum("pass", "payout", "always"), "pass"),
        "action": P(enum("block", "flag", "fail"), "block"),
        "strict": P(boolean, False),
    },
    "max_lot_size": {"per_order": P(dec(positive=True)), "per_symbol": P(dec(positive=True))},
    "max_open_positions": {"count": P(integer(min_value=1, max_value=10000))},
    "max_open_orders": {"count": P(integer(min_value=1, max_value=10000))},
    "max_leverage": {"ratio": P(dec(positive=True, max_value=Decimal(10000)))},
    "max_notional": {"amount": P(AMOUNT), "aggregate": P(AMOUNT)},
    "max_risk_per_trade": {
        "pct": P(dec(positive=True, max_value=Decimal(100)), Decimal(2)),
        "require_stop_loss": P(boolean, True),
    },
    "trading_hours": {"windows": P(windows)},
    "weekend_trading": {
        "new_orders": P(boolean, False),
        "hold_positions": P(boolean, True),
        "exempt_asset_classes": P(str_list(*ASSET_CLASSES), ["crypto"]),
    },
    "news_trading": {
        "minutes_before": P(integer(min_value=0, max_value=1440), 2),
        "minutes_after": P(integer(min_value=0, max_value=1440), 2),
        "impact": P(enum("high", "medium", "low"), "high"),
        "scope": P(enum("open", "open_and_close"), "open"),
        "action": P(enum("reject_order", "flag", "deduct_profit"), "reject_order"),
    },
    "hedging": {"allowed": P(boolean, True), "across_accounts": P(boolean, False)},
    "ea_detection": {
        "min_orders": P(integer(min_value=3, max_value=100000), 20),
        "interval_cv_max": P(dec(min_value=Decimal(0)), Decimal("0.1")),
        "reaction_ms_min": P(integer(min_value=0, max_value=600000), 150),
        "action": P(enum("flag"), "flag"),
    },
    "revenge_trading": {
        "window_minutes": P(integer(min_value=1, max_value=1440), 15),
        "size_multiple": P(dec(positive=True), Decimal(2)),
    },
    "tick_scalping": {
        "min_hold_seconds": P(integer(min_value=1, max_value=86400), 60),
        "max_closes_per_minute": P(integer(min_value=1, max_value=10000), 10),
    },
    "drawdown_warning": {"used_pct": P(dec(positive=True, max_value=Decimal(100)), Decimal(80))},
}

ONE_OF_PCT_AMOUNT = ("profit_target", "max_daily_loss", "max_loss")
REQUIRED: dict[str, tuple[str, ...]] = {
    "min_trading_days": ("days",),
    "min_profitable_days": ("days",),
    "max_trading_days": ("days",),
    "inactivity": ("days",),
    "consistency": ("max_share_pct",),
    "max_open_positions": ("count",),
    "max_open_orders": ("count",),
    "max_leverage": ("ratio",),
    "trading_hours": ("windows",),
}

LIMIT_RULES = ("max_daily_loss", "max_loss")
PRETRADE_RULES = (
    "max_lot_size",
    "max_open_positions",
    "max_open_orders",
    "max_leverage",
    "max_notional",
    "max_risk_per_trade",
    "trading_hours",
    "weekend_trading",
    "news_trading",
    "hedging",
)
DETECTORS = ("ea_detection", "revenge_trading", "tick_scalping")


def validate_partial(rule_id: str, params: Any, where: str, prefix: str = "rules") -> dict[str, Any]:
    """Check the keys and values a phase or an offer override sets, without requiring a complete rule.

    The merged rule (defaults + phase + override) is validated as a whole by ``validate_rule`` afterwards.
    """
    key = f"{prefix}.{rule_id}"
    spec = RULES.get(rule_id)
    if spec is None:
        raise RulebookError(where, key, f"unknown rule (known: {', '.join(sorted(RULES))})")
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise RulebookError(where, key, "must be an object of parameters")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise RulebookError(where, f"{key}.{unknown[0]}", f"unknown parameter (known: {', '.join(spec)})")
    return {name: spec[name].check(v, where, f"{key}.{name}") for name, v in params.items()}


def validate_rule(rule_id: str, params: Any, where: str, prefix: str = "rules") -> dict[str, Any]:
    """Normalize one rule's parameters; raises ``RulebookError`` for unknown rules/keys and bad values."""
    key = f"{prefix}.{rule_id}"
    spec = RULES.get(rule_id)
    if spec is None:
        raise RulebookError(where, key, f"unknown rule (known: {', '.join(sorted(RULES))})")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise RulebookError(where, key, "must be an object of parameters")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise RulebookError(where, f"{key}.{unknown[0]}", f"unknown parameter (known: {', '.join(spec)})")
    out: dict[str, Any] = {}
    for name, p in spec.items():
        if name in params:
            out[name] = p.check(params[name], where, f"{key}.{name}")
        elif p.default is not _MISSING:
            out[name] = list(p.default) if isinstance(p.default, list) else p.default
    for name in REQUIRED.get(rule_id, ()):
        if name not in out:
            raise RulebookError(where, f"{key}.{name}", "is required")
    if rule_id in ONE_OF_PCT_AMOUNT and ("pct" in out) == ("amount" in out):
        raise RulebookError(where, key, "needs exactly one of pct or amount")
    if rule_id == "max_loss" and "lock_at" in out and "lock_at_offset" in out:
        raise RulebookError(where, key, "use lock_at or lock_at_offset, not both")
    if rule_id == "max_lot_size" and not out:
        raise RulebookError(where, key, "needs per_order and/or per_symbol")
    if rule_id == "max_notional" and not out:
        raise RulebookError(where, key, "needs amount and/or aggregate")
    if rule_id == "consistency" and out["mode"] == "per_trade" and out["action"] == "block":
        raise RulebookError(
            where,
            f"{key}.action",
            "per_trade consistency takes flag or fail (its first winning "
            "trade is always 100%, so block could never be satisfied)",
        )
    return out
