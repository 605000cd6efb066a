"""Building the risk book from PostgreSQL with set-based reads: five statements whatever the number of accounts.

1. every marked account (``lifecycle.MARKED``) with its cash and the rule-state fields the book needs, extracted
   in SQL from ``rule_states.state->'engine'`` (``EngineState.to_json``); policies and rulebooks as md5 keys;
2. the distinct policies and 3. the distinct frozen rulebooks of those accounts (each parsed once);
4. their positions; 5. their open orders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from psycopg.rows import tuple_row

from ..domain.instruments import DEFAULT_CATALOGUE, Catalogue
from ..domain.lifecycle import MARKED
from ..domain.orders import OrderType, Side
from ..domain.policy import ExecutionPolicy
from ..domain.positions import Position
from ..domain.quotes import Quote
from ..domain.rules.rulebook import Rulebook, parse_rulebook
from .book import RiskBook
from .spec import AccountSpec, OpenOrder, RuleState

STATUSES = sorted(s.value for s in MARKED)

ACCOUNTS_SQL = """
SELECT a.id, a.status, a.mode, a.phase, md5(a.policy::text), md5(a.rulebook::text), b.cash,
       e->>'initial', e->>'daily_floor', e->>'daily_anchor', e->>'max_floor', e->>'max_locked', e->>'peak_equity',
       e->>'day_paused', e->>'verdict', e->>'day', e->'warned'
FROM accounts a
JOIN balances b ON b.account_id = a.id
LEFT JOIN LATERAL (SELECT rs.state->'engine' AS e FROM rule_states rs WHERE rs.account_id = a.id) r ON true
WHERE a.status = ANY(%s)
"""
POLICIES_SQL = "SELECT DISTINCT ON (md5(policy::text)) md5(policy::text), policy FROM accounts WHERE status = ANY(%s)"
RULEBOOKS_SQL = (
    "SELECT DISTINCT ON (md5(rulebook::text)) md5(rulebook::text), rulebook FROM accounts"
    " WHERE status = ANY(%s) AND mode = 'challenge' AND rulebook IS NOT NULL"
)
POSITIONS_SQL = """
SELECT p.account_id, p.symbol, p.quantity, p.avg_price, p.stop_loss, p.take_profit
FROM positions p JOIN accounts a ON a.id = p.account_id WHERE a.status = ANY(%s)
"""
ORDERS_SQL = """
SELECT o.account_id, o.id, o.symbol, o.side, o.order_type, o.limit_price, o.stop_price
FROM orders o JOIN accounts a ON a.id = o.account_id WHERE o.status = 'open' AND a.status = ANY(%s)
"""


def _dec(v: Any) -> Decimal | None:
    return Decimal(v) if v is not None else None


def read_specs(conn: Any, account_ids: Sequence[Any] | None = None) -> list[AccountSpec]:
    """Every marked account as an ``AccountSpec`` (rulebooks and policies parsed once per distinct body); with
    ``account_ids``, only those (an id missing from the answer is not marked any more, or does not exist)."""
    cur = conn.cursor(row_factory=tuple_row)
    if account_ids is None:
        only, aonly, args = "", "", (STATUSES,)
    else:
        ids = list(account_ids)
        only, aonly, args = " AND id = ANY(%s)", " AND a.id = ANY(%s)", (STATUSES, ids)  # type: ignore[assignment]
    accounts = cur.execute(ACCOUNTS_SQL + aonly, args).fetchall()
    policies = {k: ExecutionPolicy.from_json(p) for k, p in cur.execute(POLICIES_SQL + only, args).fetchall()}
    books: dict[str, Rulebook] = {
        k: parse_rulebook(rb, where=f"rulebook {k}") for k, rb in cur.execute(RULEBOOKS_SQL + only, args).fetchall()
    }
    positions: dict[Any, list[Position]] = {}
    for aid, sym, qty, avg, sl, tp in cur.execute(POSITIONS_SQL + aonly, args):
        positions.setdefault(aid, []).append(Position(sym, qty, avg, sl, tp))
    orders: dict[Any, list[OpenOrder]] = {}
    for aid, oid, sym, side, otype, limit_px, stop_px in cur.execute(ORDERS_SQL + aonly, args):
        if otype not in ("limit", "stop"):
            continue
        px = limit_px if otype == "limit" else stop_px
        orders.setdefault(aid, []).append(OpenOrder(oid, sym, Side(side), OrderType(otype), px))
    phase_rules: dict[tuple[str, str], Any] = {}
    out: list[AccountSpec] = []
    for (
        aid,
        status,
        mode,
        phase,
        pkey,
        rkey,
        cash,
        initial,
        dfloor,
        danchor,
        mfloor,
        mlocked,
        peak,
        paused,
        verdict,
        day,
        warned,
    ) in accounts:
        policy = policies[pkey]
        rules = None
        state = None
        key = None
        if mode == "challenge" and rkey in books and initial is not None:
            key = f"{rkey}:{phase}"
            rules = phase_rules.get((rkey, phase))
            if rules is None:
                rules = books[rkey].phase(phase).rules
                phase_rules[(rkey, phase)] = rules
            w = warned if isinstance(warned, list) else (json.loads(warned) if warned else [])
            state = RuleState.from_fields(
                Decimal(initial),
                _dec(dfloor),
                _dec(danchor),
                _dec(mfloor),
                mlocked in ("true", True),
                _dec(peak),
                paused in ("true", True),
                verdict,
                day,
                w,
            )
        pos = tuple(positions.get(aid, ()))
        out.append(
            AccountSpec(
                aid,
                policy.currency,
                status,
                cash,
                pos,
                tuple(orders.get(aid, ())),
                policy.liquidation_equity,
                rules,
                key,
                state,
            )
        )
    return out


def load(conn: Any, catalogue: Catalogue = DEFAULT_CATALOGUE, quotes: Iterable[Quote] = ()) -> RiskBook:
    """A book of every marked account, priced at ``quotes`` (the latest of each symbol) when given."""
    specs = read_specs(conn)
    book = RiskBook(catalogue, capacity=max(1024, len(specs)))
    for q in quotes:
        if q.symbol in book.sym_index:
            book.on_price(q.symbol, float(q.bid), float(q.ask))
    book.add_accounts(specs)
    return book
