"""External trade checks: PropDesk as the risk engine for firms that execute on another platform (MT5, cTrader).

A trade reported by ticket is checked against the account's rulebook with the same rule code: at its open the
pre-trade rules (a trade that already happened turns a refusal into a recorded violation), at its close its
P&L (profit, swap, commission) enters the ledger and the limits, progress and consistency rules run. The same
ticket and body replays the stored result; a ticket reported open and then closed is processed twice, once
per stage; any other change to a known ticket is a conflict.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from ..domain.errors import Conflict, InvalidInput
from ..domain.ledger import Category, Entry, EntryKind
from ..domain.lifecycle import TERMINAL
from ..domain.money import CTX, ZERO, fmt, money
from ..domain.rules.engine import Decision, Trade
from ..domain.rules.pretrade import OpenPosition, OrderCheck, check_order, stop_loss_risk
from .service import ExecutionService

OPEN_KEYS = ("ticket", "symbol", "side", "lots", "open_time", "open_price")
# How far another platform's clock may disagree with ours (as for quotes): a trade time beyond it in the future,
# or before the phase started, cannot belong to a trade of this phase that already happened.
MAX_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class ExternalTrade:
    ticket: str
    symbol: str
    side: str
    lots: Decimal
    open_time: datetime
    open_price: Decimal
    close_time: datetime | None = None
    close_price: Decimal | None = None
    sl: Decimal | None = None
    tp: Decimal | None = None
    commission: Decimal = Decimal(0)
    swap: Decimal = Decimal(0)
    profit: Decimal | None = None

    def body(self) -> dict[str, Any]:
        def v(x: Any) -> Any:
            if isinstance(x, Decimal):
                return fmt(x.normalize())
            if isinstance(x, datetime):
                return x.isoformat()
            return x

        return {k: v(getattr(self, k)) for k in self.__dataclass_fields__}

    def open_part(self) -> dict[str, Any]:
        b = self.body()
        return {k: b[k] for k in OPEN_KEYS}


def _hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ExternalTrades:
    """``check`` runs one reported trade through the account's rulebook."""

    def __init__(self, service: ExecutionService):
        self.svc = service

    def check(self, account_id: uuid.UUID, t: ExternalTrade, *, conn: Any | None = None) -> dict[str, Any]:
        svc = self.svc
        now = svc.clock.now()
        inst = svc.catalogue.get(t.symbol)
        if inst is None:
            raise InvalidInput(f"unknown symbol {t.symbol!r}", code="unknown_symbol")
        if t.close_time is not None and t.close_time < t.open_time:
            raise InvalidInput("close_time is before open_time", code="invalid_trade")
        if (t.close_time is None) != (t.close_price is None):
            raise InvalidInput("close_time and close_price go together", code="invalid_trade")
        for name, ts in (("open_time", t.open_time), ("close_time", t.close_time)):
            if ts is not None and ts > now + MAX_SKEW:
                raise InvalidInput(f"{name} is in the future", code="invalid_trade", details={"field": name})
        body = t.body()
        with svc._tx(conn) as c:
            ctx = svc._load(c, account_id)
            stored = c.execute(
                "SELECT * FROM external_trades WHERE account_id=%s AND ticket=%s", (account_id, t.ticket)
            ).fetchone()
            stage_open = stored is None
            if stored is not None:
                if stored["request_hash"] == _hash(body):
                    return {**stored["result"], "replayed": True}
                prev = stored["payload"]
                if (
                    prev.get("close_time") is not None
                    or t.close_time is None
                    or {k: prev.get(k) for k in OPEN_KEYS} != t.open_part()
                ):
                    raise Conflict(
                        f"ticket {t.ticket!r} was already reported with different data",
                        code="ticket_reused",
                        details={"ticket": t.ticket},
                    )
            ev = svc.rules.evaluator(c, ctx)
            if ev is None:
                raise Conflict(
                    "the account has no running rulebook (create it on a plan and start it)", code="no_rulebook"
                )
            if ctx.status in TERMINAL:
                raise Conflict(f"account is {ctx.status.value}", code="account_not_active")
            started = ctx.account.get("phase_started_at")
            if started is not None and t.open_time < started - MAX_SKEW:
                raise InvalidInput(
                    "open_time is before the phase started",
                    code="invalid_trade",
                    details={"field": "open_time", "phase_started_at": started.isoformat()},
                )

            def at(ts: datetime) -> datetime:
                """A trade's own time as the event time, never before what the engine has already seen nor after
                now (a late report still counts on the trading day the trade happened)."""
                last = ev.s.last_t
                when = min(ts, now)
                return max(when, last) if last is not None else when

            decisions: list[Decision] = []
            rate = svc._rate(inst.quote_currency, ctx.policy.currency) or (
                Decimal(1) if inst.quote_currency == ctx.policy.currency else None
            )
            if rate is None and (t.profit is None or stage_open):
                raise Conflict(
                    f"no quote converts {inst.quote_currency} into {ctx.policy.currency}",
                    code="missing_conversion_price",
                )
            balance = ctx.balance["cash"]
            equity = balance
            if stage_open and not ev.ended:
                assert rate is not None
                open_at = at(t.open_time)
                svc.rules.sync(c, ctx, open_at)
                notional = CTX.multiply(inst.contract_value(t.lots, t.open_price), rate)
                risk = stop_loss_risk(t.open_price, t.sl, t.lots, inst.contract_size, rate) if t.sl else None
                open_rows = c.execute(
                    "SELECT payload FROM external_trades WHERE account_id=%s AND payload->>'close_time' IS NULL",
                    (account_id,),
                ).fetchall()
                positions = tuple(
                    OpenPosition(r["payload"]["symbol"], r["payload"]["side"], Decimal(r["payload"]["lots"]), ZERO)
                    for r in open_rows
                )
                check = OrderCheck(
                    t.open_time,
                    t.symbol,
                    inst.asset_class.value,
                    t.side,
                    t.lots,
                    t.open_price,
                    notional,
                    equity,
                    t.sl,
                    risk,
                    positions,
                    0,
                    False,
                    False,
                    (inst.base_currency, inst.quote_currency),
                    tuple(svc.rules._events(c, ev.rules, t.open_time)),
                )
                for d in check_order(ev.rules, ev.cal, check):
                    decisions.append(
                        Decision(
                            d.rule,
                            "flag",
                            "flag" if d.kind == "reject" else d.action,
                            d.at,
                            d.value,
                            d.limit,
                            {**d.evidence, "ticket": t.ticket},
                        )
                    )
                decisions += ev.on_open(
                    open_at,
                    Trade(
                        t.ticket,
                        t.symbol,
                        t.side,
                        t.lots,
                        t.open_time,
                        t.open_price,
                        inst.asset_class.value,
                        sl=t.sl,
                        tp=t.tp,
                    ),
                    balance,
                    equity,
                )
            if t.close_time is not None and t.close_price is not None and not ev.ended:
                close_at = at(t.close_time)
                svc.rules.sync(c, ctx, close_at)
                if t.profit is not None:
                    gross = t.profit
                else:
                    assert rate is not None
                    diff = (t.close_price - t.open_price) * (1 if t.side == "buy" else -1)
                    gross = CTX.multiply(CTX.multiply(diff * t.lots, inst.contract_size), rate)
                pnl, fee = money(gross + t.swap), money(t.commission)
                entries = [Entry(EntryKind.EXTERNAL_TRADE, pnl, Category.PNL, {"ticket": t.ticket, **body})]
                if fee:
                    entries.append(
                        Entry(EntryKind.FEE, fee, Category.FEE, {"ticket": t.ticket, "commission": fmt(fee)})
                    )
                svc._append(c, ctx, entries, now)
                balance = ctx.balance["cash"]
                net = pnl + fee
                decisions += ev.on_close(
                    close_at,
                    Trade(
                        t.ticket,
                        t.symbol,
                        t.side,
                        t.lots,
                        t.open_time,
                        t.open_price,
                        inst.asset_class.value,
                        t.close_time,
                        t.close_price,
                        t.sl,
                        t.tp,
                        net,
                    ),
                    balance,
                    balance,
                )
                svc.rules.snapshot_winner(c, ctx, ev, t.ticket, net, close_at)
                open_left = c.execute(
                    "SELECT count(*) AS n FROM external_trades WHERE account_id=%s AND ticket<>%s"
                    " AND payload->>'close_time' IS NULL",
                    (account_id, t.ticket),
                ).fetchone()["n"]
                decisions += ev.check_pass(close_at, int(open_left))
            svc.rules._apply(c, ctx, ev, decisions, now)
            svc.rules.sync(c, ctx, now)
            status = svc._account_row(c, account_id)["status"]
            breach = any(d.kind == "breach" for d in decisions)
            warn = any(d.kind in ("flag", "warning", "reject") for d in decisions)
            result = {
                "ticket": t.ticket,
                "account_id": str(account_id),
                "stage": "open" if t.close_time is None else "close",
                "result": "breach" if breach else ("warning" if warn else "pass"),
                "violations": [{"kind": d.kind, **d.to_json(), "action": d.action} for d in decisions],
                "account_status": status,
                "balance": fmt(money(ctx.balance["cash"])),
                "verdict": ev.s.verdict,
                "replayed": False,
            }
            c.execute(
                "INSERT INTO external_trades (account_id, ticket, request_hash, payload, result, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (account_id, ticket) DO UPDATE SET"
                " request_hash=EXCLUDED.request_hash, payload=EXCLUDED.payload, result=EXCLUDED.result",
                (
                    account_id,
                    t.ticket,
                    _hash(body),
                    Jsonb(body),
                    Jsonb(json.loads(json.dumps(result, default=str))),
                    now,
                ),
            )
            return result
