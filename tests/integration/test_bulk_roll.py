"""The set-based day roll decides exactly what rolling every account on every cycle decides.

Twin accounts on every shipped preset walk through six weeks (day boundaries, weekends, expiries, inactivity): one
twin of each pair is rolled only through ``roll_all`` (which runs ``roll_day`` just for the accounts whose due time
has come), the other by ``roll_day`` at every step, as before. After every step their statuses, verdicts and days
must agree, and ``roll_all`` must have left the accounts with nothing due untouched.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.integration.test_rules_live import open_on, rows

from propdesk.domain.orders import OrderRequest, Side
from propdesk.domain.quotes import Quote
from propdesk.execution.bulk_roll import due_at
from propdesk.rulebooks import load_rulebook

pytestmark = pytest.mark.integration
D = Decimal
PRESETS = ["classic-2step", "daily-anchor-max", "express-2step", "futures-trailing", "one-step-eod", "strict-risk"]


def _verdicts(service: Any, acc: uuid.UUID) -> list[tuple[Any, ...]]:
    return [
        (v["rule"], v["kind"], v["action"], v["at"], v["value"], v["limit_value"])
        for v in rows(service.db, "SELECT * FROM violations WHERE account_id = %s ORDER BY id", acc)
    ]


def _days(service: Any, acc: uuid.UUID) -> list[tuple[Any, ...]]:
    return [
        (d["trading_day"], d["start_balance"], d["daily_floor"], d["max_floor"])
        for d in rows(service.db, "SELECT * FROM daily_stats WHERE account_id = %s ORDER BY trading_day", acc)
    ]


def _status(service: Any, acc: uuid.UUID) -> str:
    return str(rows(service.db, "SELECT status FROM accounts WHERE id = %s", acc)[0]["status"])


def test_rolling_only_the_due_accounts_gives_what_rolling_every_account_gives(
    service: Any, quotes: Any, clock: Any
) -> None:
    px = D("1.10000")
    quotes.put(Quote("EURUSD", px, px, clock.now()))
    pairs = []
    for i, preset in enumerate(PRESETS):
        book = load_rulebook(preset)
        bulk, each = open_on(service, book), open_on(service, book)
        if i % 2 == 0:  # half of them carry a position over the boundaries
            for acc in (bulk, each):
                service.submit_order(acc, OrderRequest("EURUSD", Side.BUY, D("0.5")))
        pairs.append((bulk, each))
    bulk_ids = {b for b, _ in pairs}
    steps = 0
    for step in range(6 * 7 * 24 // 5):
        clock.advance(5 * 3600)
        px += D("0.00030") if step % 7 < 4 else D("-0.00050")
        quotes.put(Quote("EURUSD", px, px, clock.now()))
        for _, each in pairs:
            service.roll_day(each)
        summary = service.roll_all()
        assert not summary["failed"], summary
        # roll_all also rolls the "each" twins when they are due; it must never roll a bulk twin with nothing due.
        for bulk, each in pairs:
            assert _status(service, bulk) == _status(service, each), (step, bulk)
            assert _verdicts(service, bulk) == _verdicts(service, each), (step, bulk)
            assert _days(service, bulk) == _days(service, each), (step, bulk)
        steps += 1
    assert steps > 100
    assert any(_status(service, b) != "active" for b in bulk_ids)  # the walk did end some phases


def test_nothing_is_due_between_boundaries_and_a_boundary_makes_the_account_due(
    service: Any, quotes: Any, clock: Any
) -> None:
    quotes.put(Quote("EURUSD", D("1.1"), D("1.1"), clock.now()))
    acc = open_on(service, load_rulebook("classic-2step"))
    first = service.roll_all()
    assert first["accounts"] == 1
    clock.advance(60)
    assert service.roll_all()["rolled"] == 0
    state = rows(service.db, "SELECT state FROM rule_states WHERE account_id = %s", acc)[0]["state"]
    from propdesk.domain.rules.engine import EngineState

    engine = EngineState.from_json(state["engine"])
    due = due_at(load_rulebook("classic-2step"), None, engine, state.get("extras") or {}, "active")
    assert due is not None and due > clock.now()
    clock.set(due + timedelta(seconds=1))
    assert service.roll_all()["rolled"] == 1
