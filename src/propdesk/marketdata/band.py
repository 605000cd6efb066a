"""The quote sanity band: an absurd price is held, not accepted, until a second quote confirms it or an admin does.

A bad tick (a fat-fingered feed, a decimal shifted by a provider) would otherwise mark every holder of the symbol
at a nonsense price, liquidate accounts and fail challenges on it. So where quotes are accepted (``QuoteStore.put``,
before the bus carries them to every process), a quote whose mid moves more than its asset class's band from the
last accepted mid is *held*:

- the next quote that lies within a tenth of the band of the held one confirms it (the market really moved): it is
  accepted and the held one is dropped;
- an admin may accept the held quote with a reason (audited; ``POST /api/v1/admin/quotes/held/{symbol}/acceptance``);
- a quote back inside the band is accepted as usual and clears the held one.

No band applies across a market close (a weekend or a session break may gap by any amount), nor to a symbol's first
quote. Held quotes are written to the ``held_quotes`` table so an admin on any process sees and can accept them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..domain.instruments import AssetClass, Catalogue
from ..domain.quotes import Quote

__all__ = ["DEFAULT_BANDS_PCT", "BandVerdict", "QuoteBand"]

#: How far (in %) a mid may move from the last accepted mid, per asset class, before the quote is held.
DEFAULT_BANDS_PCT: dict[AssetClass, Decimal] = {
    AssetClass.FOREX: Decimal(5),
    AssetClass.METAL: Decimal(10),
    AssetClass.ENERGY: Decimal(15),
    AssetClass.INDEX: Decimal(10),
    AssetClass.EQUITY: Decimal(25),
    AssetClass.CRYPTO: Decimal(25),
}
CONFIRM_FRACTION = Decimal("0.1")  # a confirming quote lies within a tenth of the band of the held one


@dataclass(frozen=True, slots=True)
class BandVerdict:
    accept: bool
    reason: str  # "first", "in_band", "after_close", "confirmed", "out_of_band"
    deviation_pct: Decimal | None = None
    band_pct: Decimal | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "accept": self.accept,
            "reason": self.reason,
            "deviation_pct": str(self.deviation_pct) if self.deviation_pct is not None else None,
            "band_pct": str(self.band_pct) if self.band_pct is not None else None,
        }


def _move_pct(a: Decimal, b: Decimal) -> Decimal:
    return abs(a / b - 1) * 100 if b > 0 else Decimal(0)


class QuoteBand:
    """Judges a quote against the last accepted one of its symbol (pure; the store keeps the state).

    Args:
        catalogue: the instruments (asset class per symbol).
        sessions: a session calendar (``status(symbol, at)`` with ``next_close``); without one, a gap of more than
            ``gap_s`` seconds counts as a close.
        bands_pct: overrides of ``DEFAULT_BANDS_PCT``.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        sessions: Any | None = None,
        bands_pct: dict[AssetClass, Decimal] | None = None,
        *,
        gap_s: float = 3600.0,
    ) -> None:
        self.catalogue = catalogue
        self.sessions = sessions
        self.bands = {**DEFAULT_BANDS_PCT, **(bands_pct or {})}
        self.gap_s = gap_s

    def band_of(self, symbol: str) -> Decimal | None:
        inst = self.catalogue.get(symbol)
        return self.bands.get(inst.asset_class) if inst is not None else None

    def _closed_between(self, symbol: str, before: datetime, after: datetime) -> bool:
        if self.sessions is None:
            return (after - before).total_seconds() > self.gap_s
        try:
            status = self.sessions.status(symbol, before)
        except (KeyError, ValueError):
            return (after - before).total_seconds() > self.gap_s
        if not status.open:
            return True  # the last quote came while closed: the market opened since (or it is a closed-hours tick)
        return status.next_close is not None and status.next_close <= after

    def judge(self, quote: Quote, last: Quote | None, held: Quote | None) -> BandVerdict:
        """Accept ``quote`` or hold it, given the last accepted quote and the quote held for the symbol if any."""
        band = self.band_of(quote.symbol)
        if last is None or band is None:
            return BandVerdict(True, "first")
        if self._closed_between(quote.symbol, last.ts, quote.ts):
            return BandVerdict(True, "after_close", band_pct=band)
        deviation = _move_pct(quote.mid, last.mid)
        if deviation <= band:
            return BandVerdict(True, "in_band", deviation, band)
        if held is not None and quote.ts > held.ts and _move_pct(quote.mid, held.mid) <= band * CONFIRM_FRACTION:
            return BandVerdict(True, "confirmed", deviation, band)
        return BandVerdict(False, "out_of_band", deviation, band)
