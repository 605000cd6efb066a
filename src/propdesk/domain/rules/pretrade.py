"""Pre-trade rules: what an order must satisfy before it executes.

``check_order`` returns decisions of kind ``reject`` (the order must not execute, with the computed numbers)
or ``flag`` (it may execute, but is recorded for review: news with action ``flag``/``deduct_profit``).
Offline, a trade that already happened turns every ``reject`` into a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..money import ZERO, fmt, money
from .calendar import TradingCalendar
from .engine import Decision, iso

HUNDRED = Decimal(100)
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
IMPACTS = {"high": ("high",), "medium": ("high", "medium"), "low": ("high", "medium", "low")}
END_OF_DAY = time(23, 59, 59, 999999)


@dataclass(frozen=True)
class OpenPosition:
    symbol: str
    side: str  # buy | sell
    lots: Decimal
    notional: Decimal  # account currency


@dataclass(frozen=True)
class CalendarEvent:
    at: datetime
    currency: str
    impact: str
    title: str = ""
    country: str = ""


@dataclass(frozen=True)
class OrderCheck:
    """One proposed order with the account context the rules need (all money in the account currency)."""

    at: datetime
    symbol: str
    asset_class: str
    side: str
    lots: Decimal
    price: Decimal
    notional: Decimal
    equity: Decimal
    sl: Decimal | None = None
    risk: Decimal | None = None  # loss at the stop loss; None without one
    positions: tuple[OpenPosition, ...] = ()
    open_orders: int = 0
    resting: bool = False  # a limit/stop order that will rest
    reduces: bool = False  # only reduces an existing position (closing is always allowed)
    currencies: tuple[str, ...] = ()  # the instrument's currencies / countries for the news window
    events: tuple[CalendarEvent, ...] = ()
    closing: bool = False  # a close (news scope open_and_close)
    other_account_sides: tuple[str, ...] = field(default=())  # the trader's other accounts' sides in symbol
    netting: bool = False  # the account nets positions: an opposite order reduces or flips, never hedges


def _reject(rule: str, at: datetime, value: Decimal | None, limit: Decimal | None, message: str, **ev: Any) -> Decision:
    return Decision(rule, "reject", "reject_order", at, value, limit, {"message": message, **ev})


def _share_of(part: Decimal, whole: Decimal) -> str:
    return f"{fmt((part * HUNDRED / whole).quantize(Decimal('0.01')))}%" if whole > 0 else "all"


def in_windows(cal: TradingCalendar, at: datetime, windows: list[dict[str, Any]]) -> bool:
    """Is ``at`` inside any ``{days, start, end}`` window (rulebook timezone; end may wrap past midnight)?"""
    return _in_local_windows(cal.local(at), windows)


@lru_cache(maxsize=256)
def _window_times(start: str, end: str) -> tuple[time, time]:
    """A window's parsed [start, end) (``24:00`` is the last instant of the day); parsed once per text."""
    return time.fromisoformat(start), END_OF_DAY if end == "24:00" else time.fromisoformat(end)


def _in_local_windows(local: datetime, windows: list[dict[str, Any]]) -> bool:
    weekday = local.weekday()
    day = DAY_NAMES[weekday]
    prev_day = DAY_NAMES[weekday - 1]  # Monday's previous day is DAY_NAMES[-1], Sunday
    now = local.time()  # naive: the wall-clock time in the rulebook timezone
    for w in windows:
        start, end = _window_times(w["start"], w["end"])
        if start < end:
            if day in w["days"] and start <= now < end:
                return True
        else:  # wraps midnight: [start, 24:00) on the day, [00:00, end) on the next
            if day in w["days"] and now >= start:
                return True
            if prev_day in w["days"] and now < end:
                return True
    return False


@lru_cache(maxsize=64)
def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def news_hits(order: OrderCheck, p: dict[str, Any]) -> list[CalendarEvent]:
    """Events of the rule's impact whose window [t - before, t + after] holds the order time."""
    impacts = IMPACTS[p["impact"]]
    before, after = _minutes(p["minutes_before"]), _minutes(p["minutes_after"])
    out: list[CalendarEvent] = []
    if not order.events:
        return out
    keys = set(map(str.upper, order.currencies))
    at = order.at
    for e in order.events:
        if (
            e.impact in impacts
            and (e.currency.upper() in keys or (e.country and e.country.upper() in keys))
            and e.at - before <= at <= e.at + after
        ):
            out.append(e)
    return out


def stop_loss_risk(
    entry: Decimal, stop: Decimal, lots: Decimal, contract_size: Decimal, rate: Decimal = Decimal(1)
) -> Decimal:
    """RULES.md: risk = |entry - stop| x size x contract value, converted to the account currency at ``rate``."""
    return abs(entry - stop) * lots * contract_size * rate


def weekend_holds(
    rules: dict[str, dict[str, Any]],
    cal: TradingCalendar,
    after: datetime,
    until: datetime,
    positions: list[tuple[str, str, str]],
) -> list[Decision]:
    """``weekend_trading`` with ``hold_positions: false``: a flag for every (ticket, symbol, asset class) still
    open when a weekend starts (Saturday 00:00 in the rulebook timezone) in ``(after, until]``.

    Exempt asset classes (24/7 instruments such as crypto) may be held.
    """
    wk = rules.get("weekend_trading")
    if wk is None or wk["hold_positions"] or not positions or until <= after:
        return []
    out: list[Decision] = []
    d = cal.local(after).date()
    d += timedelta(days=(5 - d.weekday()) % 7)  # the Saturday of after's week (or after's own day)
    while True:
        start = datetime.combine(d, time(0), tzinfo=cal.tz).astimezone(UTC)
        if start > until:
            break
        if start > after:
            for ticket, symbol, asset_class in positions:
                if asset_class in wk["exempt_asset_classes"]:
                    continue
                out.append(
                    Decision(
                        "weekend_trading",
                        "flag",
                        "flag",
                        start,
                        None,
                        None,
                        {
                            "message": f"{symbol} was held into the weekend",
                            "ticket": ticket,
                            "symbol": symbol,
                            "weekend_start": iso(start),
                            "hold_positions": False,
                        },
                    )
                )
        d += timedelta(days=7)
    return out


def check_order(rules: dict[str, dict[str, Any]], cal: TradingCalendar, o: OrderCheck) -> list[Decision]:
    """Every enabled pre-trade rule for ``o``. Reducing/closing orders only meet the news rule."""
    out: list[Decision] = []
    news = rules.get("news_trading")
    if news is not None and (not o.closing or news["scope"] == "open_and_close"):
        hits = news_hits(o, news)
        if hits:
            ev = {
                "events": [
                    {"at": iso(e.at), "currency": e.currency, "impact": e.impact, "title": e.title} for e in hits
                ],
                "minutes_before": news["minutes_before"],
                "minutes_after": news["minutes_after"],
                "scope": news["scope"],
                "closing": o.closing,
            }
            if news["action"] == "reject_order":
                out.append(
                    _reject(
                        "news_trading",
                        o.at,
                        None,
                        None,
                        f"{o.symbol} is inside a news blackout ({hits[0].title or hits[0].currency})",
                        **ev,
                    )
                )
            else:
                out.append(Decision("news_trading", "flag", news["action"], o.at, None, None, ev))
    if o.reduces or o.closing:
        return out
    lot = rules.get("max_lot_size")
    if lot is not None:
        if "per_order" in lot and o.lots > lot["per_order"]:
            out.append(
                _reject(
                    "max_lot_size",
                    o.at,
                    o.lots,
                    lot["per_order"],
                    f"{fmt(o.lots)} lots exceeds the per-order limit of {fmt(lot['per_order'])}",
                    lots=fmt(o.lots),
                    per_order=fmt(lot["per_order"]),
                )
            )
        if "per_symbol" in lot:
            held = ZERO
            for p in o.positions:
                if p.symbol == o.symbol:
                    held += p.lots
            if held + o.lots > lot["per_symbol"]:
                out.append(
                    _reject(
                        "max_lot_size",
                        o.at,
                        held + o.lots,
                        lot["per_symbol"],
                        f"{fmt(held + o.lots)} open lots in {o.symbol} would exceed {fmt(lot['per_symbol'])}",
                        open_lots=fmt(held),
                        lots=fmt(o.lots),
                        per_symbol=fmt(lot["per_symbol"]),
                    )
                )
    mop = rules.get("max_open_positions")
    # A position is one symbol (the execution core nets per account and symbol); an offline log may hold
    # several tickets in one symbol, which count as that one position.
    if mop is not None and not o.resting:
        open_symbols = {p.symbol for p in o.positions}
        if o.symbol not in open_symbols and len(open_symbols) + 1 > mop["count"]:
            out.append(
                _reject(
                    "max_open_positions",
                    o.at,
                    Decimal(len(open_symbols) + 1),
                    Decimal(mop["count"]),
                    f"{len(open_symbols)} positions are open; the limit is {mop['count']}",
                    open_positions=len(open_symbols),
                    max_count=mop["count"],
                )
            )
    moo = rules.get("max_open_orders")
    if moo is not None and o.resting and o.open_orders + 1 > moo["count"]:
        out.append(
            _reject(
                "max_open_orders",
                o.at,
                Decimal(o.open_orders + 1),
                Decimal(moo["count"]),
                f"{o.open_orders} orders are open; the limit is {moo['count']}",
                open_orders=o.open_orders,
                max_count=moo["count"],
            )
        )
    aggregate = ZERO
    for p in o.positions:
        aggregate += p.notional
    aggregate += o.notional
    ml = rules.get("max_leverage")
    if ml is not None and o.equity > 0 and aggregate / o.equity > ml["ratio"]:
        lev = aggregate / o.equity
        out.append(
            _reject(
                "max_leverage",
                o.at,
                lev,
                ml["ratio"],
                f"leverage would be {lev:.2f}x, above {fmt(ml['ratio'])}x",
                aggregate_notional=fmt(money(aggregate)),
                equity=fmt(money(o.equity)),
            )
        )
    mn = rules.get("max_notional")
    if mn is not None:
        if "amount" in mn and o.notional > mn["amount"]:
            out.append(
                _reject(
                    "max_notional",
                    o.at,
                    o.notional,
                    mn["amount"],
                    f"order notional {fmt(money(o.notional))} exceeds {fmt(mn['amount'])}",
                    notional=fmt(money(o.notional)),
                )
            )
        if "aggregate" in mn and aggregate > mn["aggregate"]:
            out.append(
                _reject(
                    "max_notional",
                    o.at,
                    aggregate,
                    mn["aggregate"],
                    f"open notional would be {fmt(money(aggregate))}, above {fmt(mn['aggregate'])}",
                    aggregate_notional=fmt(money(aggregate)),
                )
            )
    risk = rules.get("max_risk_per_trade")
    if risk is not None:
        limit = risk["pct"] * o.equity / HUNDRED
        if o.sl is None or o.risk is None:
            if risk["require_stop_loss"]:
                out.append(
                    _reject(
                        "max_risk_per_trade",
                        o.at,
                        None,
                        money(limit),
                        "a stop loss is required on every order",
                        require_stop_loss=True,
                        max_risk=fmt(money(limit)),
                        pct=fmt(risk["pct"]),
                    )
                )
        elif o.risk > limit:
            out.append(
                _reject(
                    "max_risk_per_trade",
                    o.at,
                    o.risk,
                    limit,
                    f"risk at the stop loss is {fmt(money(o.risk))} "
                    f"({_share_of(o.risk, o.equity)} of equity), "
                    f"above {fmt(risk['pct'])}% ({fmt(money(limit))})",
                    risk=fmt(money(o.risk)),
                    max_risk=fmt(money(limit)),
                    pct=fmt(risk["pct"]),
                    equity=fmt(money(o.equity)),
                    entry=fmt(o.price),
                    stop_loss=fmt(o.sl),
                )
            )
    th = rules.get("trading_hours")
    wk = rules.get("weekend_trading")
    local = cal.local(o.at) if th is not None or wk is not None else o.at  # once for both rules
    if th is not None and not _in_local_windows(local, th["windows"]):
        out.append(
            _reject(
                "trading_hours",
                o.at,
                None,
                None,
                f"orders are allowed only inside the trading hours ({cal.tz.key})",
                local_time=local.isoformat(),
                windows=th["windows"],
            )
        )
    if (
        wk is not None
        and not wk["new_orders"]
        and o.asset_class not in wk["exempt_asset_classes"]
        and local.weekday() >= 5  # cal.is_weekend(o.at)
    ):
        out.append(
            _reject(
                "weekend_trading",
                o.at,
                None,
                None,
                "no new orders on the weekend",
                local_time=local.isoformat(),
                exempt_asset_classes=wk["exempt_asset_classes"],
            )
        )
    hd = rules.get("hedging")
    if hd is not None and not hd["allowed"]:
        opposite = "sell" if o.side == "buy" else "buy"
        same_account = False
        for p in () if o.netting else o.positions:
            if p.symbol == o.symbol and p.side == opposite:
                same_account = True
                break
        across = hd["across_accounts"] and opposite in o.other_account_sides
        if same_account or across:
            out.append(
                _reject(
                    "hedging",
                    o.at,
                    None,
                    None,
                    f"hedging {o.symbol} (holding {opposite} while opening {o.side}) is not allowed",
                    across_accounts=bool(across and not same_account),
                )
            )
    return out
