"""Instruments: the catalogue of tradable symbols and the conversion of P&L into the account currency."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from .money import CTX, price


class AssetClass(StrEnum):
    FOREX = "forex"
    METAL = "metal"
    ENERGY = "energy"
    INDEX = "index"
    EQUITY = "equity"
    CRYPTO = "crypto"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable symbol. ``contract_size`` units of the base per lot; P&L accrues in ``quote_currency``."""

    symbol: str
    asset_class: AssetClass
    contract_size: Decimal
    tick_size: Decimal
    price_precision: int
    quote_currency: str
    base_currency: str
    min_lot: Decimal
    lot_step: Decimal
    max_lot: Decimal = Decimal(1000)
    enabled: bool = True
    description: str = ""

    def contract_value(self, lots: Decimal, px: Decimal) -> Decimal:
        """Notional value of ``lots`` at ``px`` in the quote currency."""
        return CTX.multiply(CTX.multiply(lots, self.contract_size), px)


def _fx(sym: str, precision: int = 5) -> Instrument:
    tick = Decimal(1).scaleb(-precision)
    return Instrument(
        sym,
        AssetClass.FOREX,
        Decimal(100000),
        tick,
        precision,
        sym[3:],
        sym[:3],
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal(100),
        True,
        f"{sym[:3]}/{sym[3:]}",
    )


def _make(
    sym: str,
    cls: AssetClass,
    contract: str,
    tick: str,
    prec: int,
    base: str,
    min_lot: str = "0.01",
    step: str = "0.01",
    max_lot: str = "100",
    desc: str = "",
) -> Instrument:
    return Instrument(
        sym,
        cls,
        Decimal(contract),
        Decimal(tick),
        prec,
        "USD",
        base,
        Decimal(min_lot),
        Decimal(step),
        Decimal(max_lot),
        True,
        desc,
    )


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    _fx("EURUSD"),
    _fx("GBPUSD"),
    _fx("USDJPY", 3),
    _fx("AUDUSD"),
    _fx("USDCAD"),
    _fx("USDCHF"),
    _fx("NZDUSD"),
    _fx("EURGBP"),
    _fx("EURJPY", 3),
    _fx("GBPJPY", 3),
    _make("XAUUSD", AssetClass.METAL, "100", "0.01", 2, "XAU", desc="Gold spot (100 oz per lot)"),
    _make("XAGUSD", AssetClass.METAL, "5000", "0.001", 3, "XAG", desc="Silver spot (5,000 oz per lot)"),
    _make("WTIUSD", AssetClass.ENERGY, "1000", "0.01", 2, "WTI", desc="WTI crude oil (1,000 bbl per lot)"),
    _make("US500", AssetClass.INDEX, "1", "0.01", 2, "US500", "0.1", "0.1", "500", "S&P 500 index CFD"),
    _make("US100", AssetClass.INDEX, "1", "0.01", 2, "US100", "0.1", "0.1", "500", "Nasdaq-100 index CFD"),
    _make("US30", AssetClass.INDEX, "1", "0.01", 2, "US30", "0.1", "0.1", "500", "Dow Jones index CFD"),
    _make("AAPL", AssetClass.EQUITY, "1", "0.01", 2, "AAPL", "1", "1", "10000", "Apple Inc."),
    _make("MSFT", AssetClass.EQUITY, "1", "0.01", 2, "MSFT", "1", "1", "10000", "Microsoft Corp."),
    _make("NVDA", AssetClass.EQUITY, "1", "0.01", 2, "NVDA", "1", "1", "10000", "NVIDIA Corp."),
    _make("AMZN", AssetClass.EQUITY, "1", "0.01", 2, "AMZN", "1", "1", "10000", "Amazon.com Inc."),
    _make("TSLA", AssetClass.EQUITY, "1", "0.01", 2, "TSLA", "1", "1", "10000", "Tesla Inc."),
    _make("BTCUSD", AssetClass.CRYPTO, "1", "0.01", 2, "BTC", "0.001", "0.001", "100", "Bitcoin"),
    _make("ETHUSD", AssetClass.CRYPTO, "1", "0.01", 2, "ETH", "0.01", "0.01", "1000", "Ether"),
)


class Catalogue:
    """An immutable symbol -> Instrument map with strict symbol normalisation."""

    def __init__(self, instruments: Iterable[Instrument]):
        self._by_symbol: dict[str, Instrument] = {i.symbol: i for i in instruments}

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def get(self, symbol: str) -> Instrument | None:
        """Exact lookup. Symbols are plain upper-case ASCII; look-alike Unicode and whitespace never match."""
        return self._by_symbol.get(symbol)

    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)


DEFAULT_CATALOGUE = Catalogue(DEFAULT_INSTRUMENTS)


def is_plain_symbol(symbol: str) -> bool:
    """A symbol is 1-16 characters of ASCII upper-case letters and digits, already NFC, no whitespace."""
    return (
        0 < len(symbol) <= 16
        and symbol.isascii()
        and symbol == unicodedata.normalize("NFKC", symbol)
        and all(c.isupper() or c.isdigit() for c in symbol)
    )


PriceLookup = Callable[[str], Decimal | None]
"""Returns the mid price of a symbol (for currency conversion), or None when there is no usable quote."""


def conversion_rate(from_ccy: str, to_ccy: str, mids: PriceLookup) -> Decimal | None:
    """Rate to multiply an amount in ``from_ccy`` by to get ``to_ccy``; None when no quote can convert it.

    Tries the direct pair (``FROMTO``: multiply) and the inverse pair (``TOFROM``: divide).
    """
    if from_ccy == to_ccy:
        return Decimal(1)
    direct = mids(from_ccy + to_ccy)
    if direct is not None and direct > 0:
        return direct
    inverse = mids(to_ccy + from_ccy)
    if inverse is not None and inverse > 0:
        return price(CTX.divide(Decimal(1), inverse))
    return None


def instruments_by_symbol(instruments: Iterable[Instrument]) -> Mapping[str, Instrument]:
    return {i.symbol: i for i in instruments}
