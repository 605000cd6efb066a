"""One engine, two doors: every offline ``evaluate`` fixture replayed through the live service.

Each case of ``tests/fixtures/evaluate`` is evaluated offline (``propdesk.evaluation.evaluate``, the door with no
database) and replayed, on an account created on the same rulebook (the preset ``id@offer``) and started at the
offline phase start, through a live door of the execution service, with the ManualClock set to each event's
time (see ``two_doors_kit`` for how each event becomes a command). Both must give the same verdict, the same
breaches in the same order (rule, instant, value, limit, action) with the same evidence, and the same flags.

Which door replays which case (``DOORS``):

- ``check-trade`` (``POST /api/v1/risk/check-trade``) books the log's own P&L: profit, swap and commission. It
  replays every case without a price file exactly, money included (progress is compared too).
- ``order`` (orders, closes and quotes over the API) books fills at the log's prices with the policy's fees (0
  here): it replays every case whose log can be produced by fills. It is the only door for the price-file cases
  (floating equity from bars and ticks). A per-trade commission cannot be booked this way: such a case is
  compared with the offline output of its log without commission, after asserting that the offline verdict and
  breaches are the same with and without it (``reference``). Two cases cannot go through this door at all;
  ``NOT_THROUGH_ORDERS`` says why, and the check-trade door covers them.

Each replay runs with days rolled ``lazy`` (only by the commands themselves, as the offline driver rolls at its
next event) and ``eod`` (by the EOD endpoint at every day start, as in production; required for the price
cases, whose start-of-day equity is taken at the boundary price).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from two_doors_kit import CASES, Case, Replay, load_case

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "svc_two_doors_token_0123456789abcdef"
ADMIN_TOKEN = "adm_two_doors_token_0123456789abcdef"

# Why a case is not replayed through the order door (it is replayed exactly through check-trade instead).
NOT_THROUGH_ORDERS = {
    "fail_max_loss": (
        "the last trade's P&L is a `profit` override of -100.01 while its prices give -100.00 (at its logged 1 lot "
        "a 0.00001 EURUSD tick is worth 1.00): filled at the log's prices the account ends exactly at the 9,000 "
        "static floor, which is not a breach, so the replay would be `in_progress` instead of `failed`; the "
        "breach is that cent, and no fill price or fee of the order path books it."
    ),
    "flags_strict": (
        "its trades break pre-trade rules (no stop loss, 6 lots, outside the hours, on the weekend, hedging, "
        "inside a news blackout): an order door must reject them before they execute (`reject_order`, and the "
        "account's state would then differ from the log), while a log of trades that already happened turns "
        "each refusal into a flag, which is what check-trade does; the execution core also nets one position "
        "per symbol, so ticket 6 (a sell while holding a buy) would close ticket 5 instead of hedging it."
    ),
}


def _doors(name: str, case: dict[str, str]) -> list[str]:
    doors = [] if "prices" in case else ["check-trade"]
    if name not in NOT_THROUGH_ORDERS:
        doors.append("order")
    return doors


DOORS = {name: _doors(name, c) for name, c in CASES.items()}
REPLAYS = [
    pytest.param(name, door, rolls, id=f"{name}-{door}-{rolls}")
    for name in sorted(CASES)
    for door in DOORS[name]
    for rolls in (("eod",) if "prices" in CASES[name] else ("lazy", "eod"))
]

# Weekend holds the offline driver does not flag: it checks holds lazily at its next event, and in
# ``expire_inactivity`` that event comes after the expiry, which ends the evaluation before the check (the
# position, ticket 2, was held into the weekends of 7 and 14 March, before the expiry on 17 March). With the
# EOD roll at each day start the live door flags each weekend as it starts. (An offline-door gap, reported.)
OFFLINE_MISSES_WEEKEND_HOLDS = {
    ("expire_inactivity", "eod"): ["2026-03-07T00:00:00Z", "2026-03-14T00:00:00Z"],
}


# ---------------------------------------------------------------- fixtures: the platform and its API
@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    settings = Settings(
        database_url=db_url,
        db_role_prefix="pdtest",
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        db_pool_size=12,
        # The trade logs jump by whatever their fixture needs (an index 13% in a session): the sanity band,
        # which would hold such a quote for confirmation, is not what this equivalence is about.
        quote_band=False,
    )
    p = open_platform(settings, clock=clock, migrate=False, admin_url=db_url, configure_logs=False)
    yield p
    p.close()


@pytest.fixture
def app(platform: Any) -> Any:
    from propdesk.web.app import create_app

    return create_app(platform)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as c:
        yield c


@pytest.fixture
def admin(app: Any, client: TestClient) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


# ---------------------------------------------------------------- comparison
def reference(case: Case, door: str) -> dict[str, Any]:
    """What the live door must give: the offline output for the log it books.

    check-trade books the whole row (commission, swap, ``profit``): the offline output itself. The order door
    books fills at the log's prices with no fee: the offline output of the same log without its commissions and
    swaps, and only for logs whose ``profit`` overrides equal the P&L of their prices (asserted). Where a log has
    a commission (``pass_classic``, ``jpy_own_conversion``) its verdict and breaches must not depend on it:
    asserted here against the offline output with the commission."""
    offline = case.offline()
    if door == "check-trade":
        return offline
    for lt in case.trades:
        assert lt.profit_given is None or lt.profit_given == case.price_profit(lt), (
            f"#{lt.trade.ticket}: the profit override {lt.profit_given} is not the P&L of its prices"
        )
    twin = case.offline(fees=False)
    assert (twin["verdict"], twin["breaches"]) == (offline["verdict"], offline["breaches"]), (
        "the verdict depends on the commission: the order door cannot replay this case"
    )
    return twin


def _explain(replay: Replay) -> str:
    return "replay:\n  " + "\n  ".join(replay.log)


def _rule_at(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["rule"], f["at"]) for f in items]


@pytest.mark.parametrize(("name", "door", "rolls"), REPLAYS)
def test_the_live_door_gives_the_offline_verdict_breaches_and_evidence(
    name: str, door: str, rolls: str, platform: Any, client: TestClient, admin: TestClient, clock: Any
) -> None:
    case = load_case(name)
    expected = reference(case, door)
    replay = Replay(platform, client, admin, clock, case, door, rolls)

    live = replay.run()

    why = _explain(replay)
    assert live["verdict"] == expected["verdict"], why
    assert live["trades"] == expected["metrics"]["trades"], why  # both doors stopped at the same event
    if expected["verdict"] == "passed":
        assert [p["rule"] for p in live["passes"]] == ["profit_target"], why
    # Breaches: every one, in order, with all of its evidence (start-of-day and peak equity included: the price
    # cases mark at the same prices in both doors, see two_doors_kit).
    assert live["breaches"] == expected["breaches"], why
    assert live["progress"] == expected["progress"], why
    # Warnings come from the equity points a door sees. Without a price file both doors see the same ones: the
    # balance at every open, close and day start. With one, the offline door marks a trade's own open and close
    # at the worst price of the bar around it, while the live door fills it at the log's price: the points differ,
    # so warnings are compared only without a price file (the price cases expect none offline either).
    if "prices" not in CASES[name]:
        assert live["warnings"] == expected["warnings"], why
    # Flags: the pre-trade rules, detectors and holding rules, each with its instant and evidence.
    missed = OFFLINE_MISSES_WEEKEND_HOLDS.get((name, rolls))
    if missed is None:
        assert live["flags"] == expected["flags"], why
    else:
        assert _rule_at(live["flags"]) == _rule_at(expected["flags"]) + [("weekend_trading", at) for at in missed]


# ---------------------------------------------------------------- the replay plan itself
def test_every_fixture_is_replayed_through_at_least_one_live_door() -> None:
    assert all(DOORS[name] for name in CASES)
    assert {name for name, doors in DOORS.items() if "order" not in doors} == set(NOT_THROUGH_ORDERS)
    # Price files need floating equity: only the order door marks positions at quotes.
    assert all(DOORS[name] == ["order"] for name, c in CASES.items() if "prices" in c)
    assert len({(n, d) for n, d, _r in (p.values for p in REPLAYS)}) == sum(len(d) for d in DOORS.values())
