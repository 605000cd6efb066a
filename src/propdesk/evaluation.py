"""Offline evaluation: a trade log (and optional prices) against a rulebook, with no database.

The same rule code as the live service (``domain.rules``) and the same position math drive it; this module
only reads files and turns rows into events. Input and output follow RULES.md: exit status 0 whatever the
verdict, a one-line error naming the row and column for bad input, and one compact JSON line with ``--json``.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .domain.instruments import DEFAULT_CATALOGUE, Catalogue, Instrument
from .domain.money import CTX, ZERO, fmt, money
from .domain.rules.engine import Decision, Evaluator, Trade, iso
from .domain.rules.pretrade import (
    CalendarEvent,
    OpenPosition,
    OrderCheck,
    check_order,
    stop_loss_risk,
    weekend_holds,
)
from .domain.rules.rulebook import Rulebook

TRADE_COLUMNS = [
    "ticket",
    "symbol",
    "side",
    "lots",
    "open_time",
    "open_price",
    "close_time",
    "close_price",
    "sl",
    "tp",
    "commission",
    "swap",
    "profit",
]
# Columns that may be left out of the header altogether (RULES.md: they "may be empty"); the rest are required.
OPTIONAL_COLUMNS = ("sl", "tp", "commission", "swap", "profit")
MAX_TRADES = 1_000_000


class InputError(ValueError):
    """Bad input: the message names the file, the row and the column."""


def _parse_time(v: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{where}: {v!r} is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise InputError(f"{where}: {v!r} has no UTC offset (times must carry an offset)")
    if not 1970 <= t.year <= 2200:
        raise InputError(f"{where}: {v!r} is out of range")
    return t.astimezone(UTC)


def _parse_dec(v: str, where: str, *, positive: bool = False, optional: bool = False) -> Decimal | None:
    v = (v or "").strip()
    if not v:
        if optional:
            return None
        raise InputError(f"{where}: is required")
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise InputError(f"{where}: {v!r} is not a number") from None
    if not d.is_finite() or abs(d) >= Decimal("1e15"):
        raise InputError(f"{where}: {v!r} is not a finite number in range")
    if positive and d <= 0:
        raise InputError(f"{where}: must be greater than 0")
    return d


@dataclass
class LogTrade:
    row: int
    trade: Trade
    inst: Instrument
    commission: Decimal
    swap: Decimal
    profit_given: Decimal | None
    net: Decimal | None = None
    news_deduct: bool = False
    source: str = ""  # the trade log's path, for error messages


def _read_text(path: Path) -> str:
    """A UTF-8 input file's text (a BOM is dropped); InputError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: is not UTF-8 text") from None


def read_trades(path: Path, catalogue: Catalogue) -> list[LogTrade]:
    name = str(path)
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in TRADE_COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise InputError(
            f"{name}: row 1: missing column(s) {', '.join(missing)} (header required: {','.join(TRADE_COLUMNS)})"
        )
    out: list[LogTrade] = []
    tickets: set[str] = set()
    for i, raw in enumerate(reader, start=2):
        if len(out) >= MAX_TRADES:
            raise InputError(f"{name}: more than {MAX_TRADES} trades")
        row = {c: "" for c in OPTIONAL_COLUMNS}
        row.update({(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None})
        if raw.get(None):
            raise InputError(f"{name}: row {i}: more fields than the header")

        def w(col: str, _i: int = i) -> str:
            return f"{name}: row {_i}, column {col}"

        ticket = row["ticket"]
        if not ticket:
            raise InputError(f"{w('ticket')}: is required")
        if ticket in tickets:
            raise InputError(f"{w('ticket')}: duplicate ticket {ticket!r}")
        tickets.add(ticket)
        inst = catalogue.get(row["symbol"])
        if inst is None:
            raise InputError(f"{w('symbol')}: unknown symbol {row['symbol']!r}")
        side = row["side"].lower()
        if side not in ("buy", "sell"):
            raise InputError(f"{w('side')}: must be buy or sell (got {row['side']!r})")
        lots = _parse_dec(row["lots"], w("lots"), positive=True)
        open_time = _parse_time(row["open_time"], w("open_time"))
        open_price = _parse_dec(row["open_price"], w("open_price"), positive=True)
        close_time = _parse_time(row["close_time"], w("close_time")) if row["close_time"] else None
        close_price = _parse_dec(row["close_price"], w("close_price"), positive=True, optional=True)
        if (close_time is None) != (close_price is None):
            raise InputError(
                f"{w('close_time' if close_time is None else 'close_price')}: close_time and "
                "close_price must both be given or both be empty"
            )
        if close_time is not None and close_time < open_time:
            raise InputError(f"{w('close_time')}: is before open_time")
        assert lots is not None and open_price is not None
        t = Trade(
            ticket,
            inst.symbol,
            side,
            lots,
            open_time,
            open_price,
            inst.asset_class.value,
            close_time,
            close_price,
            _parse_dec(row["sl"], w("sl"), positive=True, optional=True),
            _parse_dec(row["tp"], w("tp"), positive=True, optional=True),
        )
        out.append(
            LogTrade(
                i,
                t,
                inst,
                _parse_dec(row["commission"], w("commission"), optional=True) or ZERO,
                _parse_dec(row["swap"], w("swap"), optional=True) or ZERO,
                _parse_dec(row["profit"], w("profit"), optional=True),
                source=name,
            )
        )
    if not out:
        raise InputError(f"{name}: row 2: the trade log has no trades")
    return out


@dataclass
class Series:
    """One symbol's prices: bars (open/high/low/close) or ticks (bid/ask), sorted by time."""

    kind: str
    times: list[datetime] = field(default_factory=list)
    rows: list[tuple[Decimal, ...]] = field(default_factory=list)

    def index_at(self, t: datetime) -> int:
        """Index of the last point at or before ``t`` (-1 when none)."""
        return bisect.bisect_right(self.times, t) - 1

    def last_price(self, t: datetime) -> Decimal | None:
        i = self.index_at(t)
        if i < 0:
            return None
        r = self.rows[i]
        return r[3] if self.kind == "bars" else (r[0] + r[1]) / 2

    def mark(self, t: datetime, long: bool, *, boundary: bool = False) -> Decimal | None:
        """Price to mark a position at ``t``: worst of the current bar (or bid/ask of the last tick).

        At a day boundary, bars give the open of the first bar at or after it, else the last known close.
        """
        if self.kind == "bars":
            if boundary:
                j = bisect.bisect_left(self.times, t)
                return self.rows[j][0] if j < len(self.times) else self.last_price(t)
            i = self.index_at(t)
            if i < 0:
                return None
            if not self._covers(i, t):
                return self.rows[i][3]
            _o, h, lo, _c = self.rows[i]
            return lo if long else h
        i = self.index_at(t)
        if i < 0:
            return None
        bid, ask = self.rows[i]
        return bid if long else ask

    def _covers(self, i: int, t: datetime) -> bool:
        """Does bar ``i`` span ``t``? A bar lasts until the next bar (the last one as long as the one before)."""
        start = self.times[i]
        if i + 1 < len(self.times):
            end = self.times[i + 1]
        elif i > 0:
            end = start + (start - self.times[i - 1])
        else:
            end = start + timedelta(minutes=1)
        return start <= t < end


def read_prices(path: Path) -> dict[str, Series]:
    name = str(path)
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if header[:6] == ["symbol", "timestamp", "open", "high", "low", "close"]:
        kind, cols = "bars", ["open", "high", "low", "close"]
    elif header[:4] == ["symbol", "timestamp", "bid", "ask"]:
        kind, cols = "ticks", ["bid", "ask"]
    else:
        raise InputError(
            f"{name}: row 1: header must be symbol,timestamp,open,high,low,close or symbol,timestamp,bid,ask"
        )
    series: dict[str, Series] = {}
    raw_points: dict[str, list[tuple[datetime, tuple[Decimal, ...]]]] = {}
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        sym = row["symbol"]
        if not sym:
            raise InputError(f"{name}: row {i}, column symbol: is required")
        t = _parse_time(row["timestamp"], f"{name}: row {i}, column timestamp")
        vals = tuple(_parse_dec(row[c], f"{name}: row {i}, column {c}", positive=True) or ZERO for c in cols)
        if kind == "bars":
            o, h, lo, c = vals
            if not (lo <= o <= h and lo <= c <= h):
                raise InputError(f"{name}: row {i}, column high: high/low do not contain open and close")
        elif vals[1] < vals[0]:
            raise InputError(f"{name}: row {i}, column ask: ask is below bid")
        raw_points.setdefault(sym, []).append((t, vals))
    for sym, pts in raw_points.items():
        pts.sort(key=lambda p: p[0])
        s = Series(kind)
        for t, vals in pts:
            if s.times and s.times[-1] == t:
                s.rows[-1] = vals  # a repeated timestamp: the later row wins
                continue
            s.times.append(t)
            s.rows.append(vals)
        series[sym] = s
    return series


def read_calendar(path: Path) -> list[CalendarEvent]:
    """Economic calendar CSV: ``time,currency,impact,title`` (time with offset; impact high|medium|low)."""
    name = str(path)
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    out = []
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        at = _parse_time(row.get("time", ""), f"{name}: row {i}, column time")
        impact = row.get("impact", "").lower()
        if impact not in ("high", "medium", "low"):
            raise InputError(f"{name}: row {i}, column impact: must be high, medium or low")
        out.append(CalendarEvent(at, row.get("currency", "").upper(), impact, row.get("title", "")))
    return out


class OfflineRun:
    """Drives an ``Evaluator`` through a trade log in time order."""

    def __init__(
        self,
        book: Rulebook,
        phase: str | None,
        trades: list[LogTrade],
        prices: dict[str, Series] | None,
        events: list[CalendarEvent] | None = None,
    ):
        self.book = book
        self.ev = Evaluator(book, phase)
        self.trades = trades
        self.prices = prices
        self.events = events or []
        self.ccy = book.currency
        self.open: dict[str, LogTrade] = {}
        self.balance = book.starting_balance
        self.breaches: list[Decision] = []
        self.warnings: list[Decision] = []
        self.flags: list[Decision] = []

    # -- valuation
    def _rate(
        self, quote_ccy: str, t: datetime, own: LogTrade | None = None, px: Decimal | None = None
    ) -> Decimal | None:
        if quote_ccy == self.ccy:
            return Decimal(1)
        if own is not None and px is not None:
            inst = own.inst
            if inst.base_currency == self.ccy and inst.quote_currency == quote_ccy:
                return CTX.divide(Decimal(1), px)
        if self.prices:
            direct = self.prices.get(quote_ccy + self.ccy)
            if direct is not None and (p := direct.last_price(t)) is not None:
                return p
            inverse = self.prices.get(self.ccy + quote_ccy)
            if inverse is not None and (p := inverse.last_price(t)) is not None:
                return CTX.divide(Decimal(1), p)
        return None

    def _floating(self, lt: LogTrade, t: datetime, boundary: bool = False) -> Decimal | None:
        if not self.prices or lt.trade.symbol not in self.prices:
            return None
        long = lt.trade.side == "buy"
        px = self.prices[lt.trade.symbol].mark(t, long, boundary=boundary)
        if px is None:
            return None
        diff = (px - lt.trade.open_price) * (1 if long else -1)
        quote_pnl = diff * lt.trade.lots * lt.inst.contract_size
        rate = self._rate(lt.inst.quote_currency, t, lt, px)
        if rate is None:
            return None
        return quote_pnl * rate

    def equity(self, t: datetime, boundary: bool = False) -> Decimal:
        eq = self.balance
        for lt in self.open.values():
            f = self._floating(lt, t, boundary)
            if f is not None:
                eq += f
        return eq

    def _value_at(self, b: datetime) -> tuple[Decimal, Decimal]:
        return self.balance, self.equity(b, boundary=True)

    # -- events
    def _emit(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            if d.kind == "breach":
                self.breaches.append(d)
            elif d.kind == "warning":
                self.warnings.append(d)
            elif d.kind in ("flag", "reject"):
                self.flags.append(d)

    def _net_profit(self, lt: LogTrade) -> Decimal:
        t = lt.trade
        if lt.profit_given is not None:
            gross = lt.profit_given
        else:
            assert t.close_price is not None and t.close_time is not None
            diff = (t.close_price - t.open_price) * (1 if t.side == "buy" else -1)
            quote_pnl = diff * t.lots * lt.inst.contract_size
            rate = self._rate(lt.inst.quote_currency, t.close_time, lt, t.close_price)
            if rate is None:
                raise InputError(
                    f"{lt.source}: row {lt.row}, column profit: {t.symbol} is quoted in {lt.inst.quote_currency} "
                    f"and no {lt.inst.quote_currency}/{self.ccy} price is known at {iso(t.close_time)}; "
                    f"give profit or a price file with a {lt.inst.quote_currency}/{self.ccy} pair"
                )
            gross = quote_pnl * rate
        return money(gross + lt.commission + lt.swap)

    def _pretrade(self, lt: LogTrade, t: datetime, closing: bool) -> None:
        tr = lt.trade
        rate = self._rate(lt.inst.quote_currency, t, lt, tr.open_price) or Decimal(1)
        notional = tr.lots * lt.inst.contract_size * tr.open_price * rate
        risk = stop_loss_risk(tr.open_price, tr.sl, tr.lots, lt.inst.contract_size, rate) if tr.sl is not None else None
        positions = tuple(
            OpenPosition(
                o.trade.symbol,
                o.trade.side,
                o.trade.lots,
                o.trade.lots
                * o.inst.contract_size
                * o.trade.open_price
                * (self._rate(o.inst.quote_currency, t, o, o.trade.open_price) or Decimal(1)),
            )
            for o in self.open.values()
            if o is not lt
        )
        check = OrderCheck(
            t,
            tr.symbol,
            lt.inst.asset_class.value,
            tr.side,
            tr.lots,
            tr.open_price,
            notional,
            self.equity(t),
            tr.sl,
            risk,
            positions,
            0,
            False,
            False,
            (lt.inst.base_currency, lt.inst.quote_currency),
            tuple(self.events),
            closing,
        )
        for d in check_order(self.ev.rules, self.ev.cal, check):
            ev = {**d.evidence, "ticket": tr.ticket}
            if d.rule == "news_trading" and d.action == "deduct_profit":
                lt.news_deduct = True
            self.flags.append(
                Decision(d.rule, "flag", "flag" if d.kind == "reject" else d.action, d.at, d.value, d.limit, ev)
            )

    def run(self) -> dict[str, Any]:
        events: list[tuple[datetime, int, int, Any]] = []
        for n, lt in enumerate(self.trades):
            events.append((lt.trade.open_time, 0, n, lt))
            if lt.trade.close_time is not None:
                events.append((lt.trade.close_time, 2, n, lt))
        if self.prices:
            for sym, s in self.prices.items():
                for t in s.times:
                    events.append((t, 1, 0, sym))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        first_open = min(lt.trade.open_time for lt in self.trades)
        ev = self.ev
        ev.begin(ev.cal.start_of(ev.cal.day_of(first_open)), self.balance, self.balance)
        held_symbols: set[str] = set()
        opened = 0  # trades evaluated (opened before the verdict): the ``trades`` metric
        last_t = ev.cal.start_of(ev.cal.day_of(first_open))
        for t, kind, _n, payload in events:
            if t < ev.cal.start_of(ev.cal.day_of(first_open)):
                continue  # prices before the phase starts only seed the marks
            self._emit(ev.advance(t, self._value_at))
            if ev.ended:
                break
            if t > last_t:
                held = [(o.trade.ticket, o.trade.symbol, o.inst.asset_class.value) for o in self.open.values()]
                self.flags.extend(weekend_holds(ev.rules, ev.cal, last_t, t, held))
                last_t = t
            if kind == 0:
                lt = payload
                self._pretrade(lt, t, closing=False)
                self.open[lt.trade.ticket] = lt
                opened += 1
                held_symbols.add(lt.trade.symbol)
                self._emit(ev.on_open(t, lt.trade, self.balance, self.equity(t)))
            elif kind == 1:
                if payload in held_symbols and self.open:
                    self._emit(ev.on_equity(t, self.balance, self.equity(t)))
            else:
                lt = payload
                ev_rules = ev.rules.get("news_trading")
                if ev_rules is not None and ev_rules["scope"] == "open_and_close":
                    self._pretrade(lt, t, closing=True)
                net = self._net_profit(lt)
                if lt.news_deduct and net > 0:
                    self.flags.append(
                        Decision(
                            "news_trading",
                            "flag",
                            "deduct_profit",
                            t,
                            net,
                            None,
                            {"ticket": lt.trade.ticket, "deducted": fmt(net)},
                        )
                    )
                    ev.s.deducted += net
                    net = ZERO
                lt.net = net
                lt.trade.profit = net
                self.balance += net
                del self.open[lt.trade.ticket]
                held_symbols = {o.trade.symbol for o in self.open.values()}
                self._emit(ev.on_close(t, lt.trade, self.balance, self.equity(t)))
            if ev.ended:
                break
            self._emit(ev.check_pass(t, len(self.open)))
            if ev.ended:
                break
        verdict = {"passed": "passed", "failed": "failed", "expired": "failed"}.get(ev.s.verdict or "", "in_progress")
        return {
            "verdict": verdict,
            "phase": ev.phase.id,
            "breaches": [d.to_json() for d in self.breaches],
            "progress": ev.progress(),
            "warnings": [{"rule": d.rule, "at": iso(d.at), "evidence": d.evidence} for d in self.warnings],
            "flags": [{"rule": d.rule, "at": iso(d.at), "evidence": d.evidence} for d in self.flags],
            "metrics": ev.metrics(opened),
            "floating_evaluated": bool(self.prices),
        }


def evaluate(
    book: Rulebook,
    trades_path: Path,
    *,
    phase: str | None = None,
    prices_path: Path | None = None,
    calendar_path: Path | None = None,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> dict[str, Any]:
    """Evaluate a trade log; raises ``InputError`` (row and column named) for bad input."""
    trades = read_trades(trades_path, catalogue)
    prices = read_prices(prices_path) if prices_path is not None else None
    events = read_calendar(calendar_path) if calendar_path is not None else None
    book.phase(phase)
    check_conversions(trades, prices, book.currency)
    return OfflineRun(book, phase, trades, prices, events).run()


def check_conversions(trades: list[LogTrade], prices: dict[str, Series] | None, ccy: str) -> None:
    """RULES.md: a closed trade in a symbol quoted in another currency needs ``profit`` or a conversion pair.

    Checked before the run, so a bad row is reported even when the evaluation would end before it closes.
    A pair whose base is the account currency (USDJPY on a USD account) converts at the trade's own price.
    """
    for lt in trades:
        inst = lt.inst
        if inst.quote_currency == ccy or lt.profit_given is not None or lt.trade.close_time is None:
            continue
        if inst.base_currency == ccy:
            continue
        pairs = (inst.quote_currency + ccy, ccy + inst.quote_currency)
        if prices is not None and any(p in prices for p in pairs):
            continue
        raise InputError(
            f"{lt.source}: row {lt.row}, column profit: {inst.symbol} is quoted in {inst.quote_currency}; "
            f"give profit or a price file with a {inst.quote_currency}/{ccy} pair ({' or '.join(pairs)})"
        )


def render_report(result: dict[str, Any], book: Rulebook) -> str:
    """The human-readable report (the default output)."""
    lines = [f"{book.name} ({book.id} v{book.version}), phase {result['phase']}: {result['verdict'].upper()}", ""]
    m = result["metrics"]
    lines.append(
        f"  trades {m['trades']}, trading days {m['trading_days']}, net profit {m['net_profit']} "
        f"({m['net_profit_pct']}%), win rate {m['win_rate_pct']}%, best day share {m['best_day_share_pct']}%, "
        f"max drawdown {m['max_drawdown_pct']}%"
    )
    lines.append("")
    lines.append("Progress:")
    for rule, p in result["progress"].items():
        lines.append(f"  {'✔' if p['met'] else '✘'} {rule}: {p['value']} / {p['target']}")
    if result["breaches"]:
        lines.append("")
        lines.append("Breaches:")
        for b in result["breaches"]:
            lines.append(f"  {b['at']} {b['rule']}: value {b['value']} vs limit {b['limit']} -> {b['action']}")
    for title, key in (("Warnings", "warnings"), ("Flags", "flags")):
        if result[key]:
            lines.append("")
            lines.append(f"{title}:")
            for f in result[key]:
                detail = f["evidence"].get("message") or ", ".join(
                    f"{k}={v}" for k, v in f["evidence"].items() if not isinstance(v, (dict, list))
                )
                lines.append(f"  {f['at']} {f['rule']}: {detail}")
    if not result["floating_evaluated"]:
        lines.append("")
        lines.append("Floating P&L was not evaluated (no price file): limits were checked on closed balance.")
    return "\n".join(lines)
