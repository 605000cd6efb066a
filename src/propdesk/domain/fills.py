"""The fill simulator: the price a market execution gets from a quote, by slippage model."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from .money import CTX, price
from .orders import Side
from .policy import ExecutionPolicy, SlippageModel
from .quotes import Quote

BPS = Decimal(10000)


def random_bps(seed: int, key: str, low: Decimal, high: Decimal) -> Decimal:
    """A reproducible adverse slippage in [low, high] bps for one execution, from (seed, key).

    A hash rather than ``random.Random`` so the value is stable across Python versions and processes.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)
    return (low + (high - low) * u).quantize(Decimal("0.0001"))


def execution_price(side: Side, quote: Quote, policy: ExecutionPolicy, key: str) -> tuple[Decimal, Decimal]:
    """(fill price, slippage in bps applied) for a market execution of ``side`` against ``quote``.

    ``key`` identifies the execution (e.g. the order id) so ``random_bps`` is reproducible per order.
    """
    model = policy.slippage_model
    if model is SlippageModel.SPREAD:
        return (quote.ask if side is Side.BUY else quote.bid), Decimal(0)
    mid = quote.mid
    if model is SlippageModel.MID_PRICE:
        return price(mid), Decimal(0)
    bps = random_bps(policy.slippage_seed, key, policy.slippage_bps_min, policy.slippage_bps_max)
    factor = Decimal(1) + (bps / BPS) * side.sign
    return price(CTX.multiply(mid, factor)), bps


def fee_for(notional_account_ccy: Decimal, policy: ExecutionPolicy) -> Decimal:
    """Commission on a fill: ``fee_bps`` of its notional in the account currency (unrounded)."""
    return CTX.divide(CTX.multiply(abs(notional_account_ccy), policy.fee_bps), BPS)
