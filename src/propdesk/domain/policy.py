"""Execution policy: the account's frozen safety envelope (fees, slippage, assets, leverage, limits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any

from .instruments import AssetClass
from .money import fmt, parse_decimal

#: The range each numeric policy key may take: wide enough for every real firm, narrow enough that no fill price,
#: fee or limit computed from it can go negative or overflow the NUMERIC(28,10) columns (a 100% slippage would
#: make a sell fill at a price of zero or less; a fee of 10^20 bps would overflow the ledger).
BOUNDS: dict[str, tuple[Decimal, Decimal]] = {
    "starting_balance": (Decimal("0.01"), Decimal(10) ** 12),
    "max_leverage": (Decimal("0.01"), Decimal(10_000)),
    "max_notional": (Decimal(0), Decimal(10) ** 13),
    "max_aggregate_notional": (Decimal(0), Decimal(10) ** 13),
    "max_position_equity_pct": (Decimal(0), Decimal(100_000_000)),
    "fee_bps": (Decimal(0), Decimal(1000)),
    "slippage_bps_min": (Decimal(0), Decimal(1000)),
    "slippage_bps_max": (Decimal(0), Decimal(1000)),
    "auto_liquidation_drawdown_pct": (Decimal(0), Decimal(100)),
}
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "max_open_positions": (0, 10_000),
    "max_open_orders": (0, 10_000),
    "slippage_seed": (0, 2**31 - 1),
    "max_quote_age_seconds": (1, 365 * 86_400),
}


class SlippageModel(StrEnum):
    MID_PRICE = "mid_price"  # fill at the mid
    SPREAD = "spread"  # buy at the ask, sell at the bid
    RANDOM_BPS = "random_bps"  # mid moved 1-3 bps against the order, seeded for reproducibility


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    """Frozen onto an account at creation; later policy changes never reach running accounts."""

    starting_balance: Decimal = Decimal(100000)
    currency: str = "USD"
    max_leverage: Decimal = Decimal(5)
    max_notional: Decimal = Decimal(50000)
    max_aggregate_notional: Decimal | None = None  # defaults to max_leverage x equity when None
    max_position_equity_pct: Decimal = Decimal(50)
    max_open_positions: int = 5
    max_open_orders: int = 10
    allow_long: bool = True
    allow_short: bool = True
    allowed_asset_classes: tuple[AssetClass, ...] = tuple(AssetClass)
    fee_bps: Decimal = Decimal(10)
    slippage_model: SlippageModel = SlippageModel.MID_PRICE
    slippage_seed: int = 0
    slippage_bps_min: Decimal = Decimal(1)
    slippage_bps_max: Decimal = Decimal(3)
    auto_liquidation_drawdown_pct: Decimal = Decimal(50)
    max_quote_age_seconds: int = 60

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, Decimal):
                out[k] = fmt(v)
            elif isinstance(v, tuple):
                out[k] = [str(x) for x in v]
            elif isinstance(v, StrEnum):
                out[k] = v.value
            else:
                out[k] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionPolicy:
        """Build a policy from JSON; unknown keys and bad values raise ``ValueError`` with the key named."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown execution policy keys: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            default = getattr(cls(), key)
            if value is None and key == "max_aggregate_notional":
                kwargs[key] = None
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key}: must be true or false")
                kwargs[key] = value
            elif isinstance(default, int) and not isinstance(default, bool):
                low, high = INT_BOUNDS.get(key, (0, 1_000_000))
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    raise ValueError(f"{key}: must be an integer between {low} and {high}")
                kwargs[key] = value
            elif key == "slippage_model":
                kwargs[key] = SlippageModel(value)
            elif key == "allowed_asset_classes":
                if not isinstance(value, list):
                    raise ValueError(f"{key}: must be a list")
                kwargs[key] = tuple(AssetClass(v) for v in value)
            elif key == "currency":
                if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isupper():
                    raise ValueError(f"{key}: must be a 3-letter upper-case currency code")
                kwargs[key] = value
            else:
                d = parse_decimal(value, field=key)
                if d < 0:
                    raise ValueError(f"{key}: must not be negative")
                d_low, d_high = BOUNDS.get(key, (Decimal(0), Decimal(10) ** 13))
                if not d_low <= d <= d_high:
                    raise ValueError(f"{key}: must be between {fmt(d_low)} and {fmt(d_high)}")
                kwargs[key] = d
        policy = cls(**kwargs)
        policy.validate()
        return policy

    def validate(self) -> None:
        for key, (low, high) in BOUNDS.items():
            value = getattr(self, key)
            if value is not None and not low <= value <= high:
                raise ValueError(f"{key}: must be between {fmt(low)} and {fmt(high)}")
        if self.starting_balance <= 0:
            raise ValueError("starting_balance: must be positive")
        if self.max_leverage <= 0:
            raise ValueError("max_leverage: must be positive")
        if not Decimal(0) <= self.auto_liquidation_drawdown_pct <= Decimal(100):
            raise ValueError("auto_liquidation_drawdown_pct: must be between 0 and 100")
        if self.slippage_bps_min > self.slippage_bps_max:
            raise ValueError("slippage_bps_min: must not exceed slippage_bps_max")

    @property
    def liquidation_equity(self) -> Decimal:
        """Equity at or below which the safety net liquidates the account."""
        return self.starting_balance * (Decimal(100) - self.auto_liquidation_drawdown_pct) / Decimal(100)


DEFAULT_POLICY = ExecutionPolicy()
