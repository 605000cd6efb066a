"""Rulebooks and plans are validated on load with precise errors (file, key, reason); offers apply overrides."""

from __future__ import annotations

import copy
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from propdesk.domain.rules.rulebook import parse_rulebook
from propdesk.domain.rules.schema import RULES, RulebookError
from propdesk.rulebooks import load_file, load_rulebook, parse_text, preset_ids, presets

D = Decimal

MINIMAL: dict[str, Any] = {
    "id": "plan",
    "starting_balance": "100000",
    "timezone": "Europe/Prague",
    "rules": {"max_daily_loss": {"pct": 5}, "max_loss": {"pct": 10}},
    "phases": [{"id": "phase_1", "rules": {"profit_target": {"pct": 10}}}, {"id": "funded"}],
    "offers": [{"id": "10k", "starting_balance": "10000", "price": "99"}],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with ``value`` set at the dotted ``path`` (list indices as numbers); ``...`` deletes the key."""
    data = copy.deepcopy(MINIMAL)
    node: Any = data
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


def error_of(data: Any) -> RulebookError:
    with pytest.raises(RulebookError) as exc:
        parse_rulebook(data, where="plans/acme.yaml")
    return exc.value


# ---------------------------------------------------------------- presets and offers
def test_the_shipped_presets_cover_the_five_families_and_an_express_plan() -> None:
    assert preset_ids() == [
        "classic-2step",
        "daily-anchor-max",
        "express-2step",
        "futures-trailing",
        "one-step-eod",
        "strict-risk",
    ]


@pytest.mark.parametrize("preset_id", preset_ids())
def test_every_preset_parses_and_every_offer_gives_a_valid_book(preset_id: str) -> None:
    rb = load_rulebook(preset_id)

    assert rb.id == preset_id
    assert len(rb.offers) >= 2
    for offer in rb.offers:
        ob = rb.for_offer(offer.id)
        assert ob.starting_balance == offer.starting_balance
        assert ob.offers == ()
        assert [p.id for p in ob.phases] == [p.id for p in rb.phases]
        assert load_rulebook(f"{preset_id}@{offer.id}") == ob


def test_presets_returns_every_preset_validated() -> None:
    assert [b.id for b in presets()] == preset_ids()


def test_offer_overrides_replace_the_amounts_of_the_default_rules() -> None:
    rb = load_rulebook("futures-trailing").for_offer("100k")
    p1 = rb.phase("phase_1")

    assert rb.starting_balance == D(100000)
    assert p1.rules["max_loss"]["amount"] == D(3000)
    assert p1.rules["max_loss"]["mode"] == "intraday_trailing"  # the rest of the rule is kept
    assert p1.rules["max_loss"]["lock_at_offset"] == D(0)
    assert p1.rules["max_daily_loss"]["amount"] == D(2000)
    assert p1.rules["profit_target"]["amount"] == D(6000)  # an override wins over the phase's own setting
    assert rb.phase("funded").rules["max_loss"]["amount"] == D(3000)


def test_percent_parameters_scale_with_the_offer_starting_balance() -> None:
    small = load_rulebook("classic-2step@10k")

    assert small.starting_balance == D(10000)
    assert small.phase("phase_1").rules["max_daily_loss"]["pct"] == D(5)


def test_an_override_with_pct_replaces_a_default_amount() -> None:
    data = with_("offers.0.overrides", {"max_loss": {"amount": "800"}})
    rb = parse_rulebook(data).for_offer("10k")

    assert rb.phase("phase_1").rules["max_loss"] == {
        "amount": D(800),
        "mode": "static",
        "evaluation": "realtime",
        "breach_on_touch": False,
    }


def test_phase_rules_are_merged_over_the_defaults_key_by_key() -> None:
    data = with_("phases.0.rules.max_daily_loss", {"action": "pause_day"})
    rules = parse_rulebook(data).phase("phase_1").rules

    assert rules["max_daily_loss"]["pct"] == D(5)
    assert rules["max_daily_loss"]["action"] == "pause_day"
    assert rules["max_daily_loss"]["anchor"] == "start_of_day_balance"  # defaults filled in


def test_defaults_of_every_parameter_follow_rules_md() -> None:
    rules = (
        parse_rulebook(
            with_(
                "rules",
                {
                    "profit_target": {"pct": 10},
                    "min_profitable_days": {"days": 3},
                    "max_daily_loss": {"pct": 5},
                    "max_loss": {"pct": 10},
                    "consistency": {"max_share_pct": 40},
                    "max_risk_per_trade": {},
                    "weekend_trading": {},
                    "hedging": {},
                    "ea_detection": {},
                    "drawdown_warning": {},
                },
            )
        )
        .phase("funded")
        .rules
    )

    assert rules["profit_target"] == {"pct": D(10), "measure": "balance", "require_flat": True}
    assert rules["min_profitable_days"]["threshold_pct"] == D(0)
    assert rules["max_daily_loss"] == {
        "pct": D(5),
        "base": "initial_balance",
        "anchor": "start_of_day_balance",
        "include_floating": True,
        "evaluation": "realtime",
        "action": "fail",
        "breach_on_touch": False,
    }
    assert rules["max_loss"]["mode"] == "static"
    assert rules["consistency"] == {
        "mode": "best_day",
        "max_share_pct": D(40),
        "denominator": "total_profit",
        "applies_to": "pass",
        "action": "block",
        "strict": False,
    }
    assert rules["max_risk_per_trade"] == {"pct": D(2), "require_stop_loss": True}
    assert rules["weekend_trading"] == {"new_orders": False, "hold_positions": True, "exempt_asset_classes": ["crypto"]}
    assert rules["hedging"] == {"allowed": True, "across_accounts": False}
    assert rules["ea_detection"]["min_orders"] == 20
    assert rules["ea_detection"]["action"] == "flag"
    assert rules["drawdown_warning"] == {"used_pct": D(80)}


def test_the_rulebook_fields_are_parsed() -> None:
    rb = parse_rulebook(with_("day_starts_at", "17:00"))

    assert (rb.timezone, rb.day_starts_at, rb.currency) == ("Europe/Prague", time(17), "USD")
    assert rb.phase().id == "phase_1"
    assert rb.next_phase("phase_1") == rb.phase("funded")
    assert rb.phase("funded").is_funded


# ---------------------------------------------------------------- precise errors
@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        ("rules.max_drawdown", {"pct": 5}, "rules.max_drawdown", "unknown rule"),
        ("rules.max_loss", {"pct": 10, "trailing": True}, "rules.max_loss.trailing", "unknown parameter"),
        ("rules.max_loss", {"pct": 10, "mode": "trailing"}, "rules.max_loss.mode", "must be one of"),
        ("rules.max_daily_loss", {"pct": 5, "anchor": "equity"}, "rules.max_daily_loss.anchor", "must be one of"),
        ("rules.max_daily_loss", {"pct": 5, "amount": "5000"}, "rules.max_daily_loss", "exactly one of pct or amount"),
        ("rules.max_daily_loss", {"anchor": "start_of_day_equity"}, "rules.max_daily_loss", "exactly one of pct or"),
        ("phases.0.rules.profit_target", {}, "phases[0].rules.profit_target", "exactly one of pct or amount"),
        (
            "rules.consistency",
            {"mode": "per_trade", "max_share_pct": 50, "action": "block"},
            "rules.consistency.action",
            "per_trade consistency takes flag or fail",
        ),
        ("rules.consistency", {"mode": "per_trade", "max_share_pct": 50}, "rules.consistency.action", "per_trade"),
        ("rules.consistency", {"mode": "best_day"}, "rules.consistency.max_share_pct", "is required"),
        ("timezone", "Europe/Praha", "timezone", "unknown IANA timezone"),
        ("timezone", "CEST+2", "timezone", "unknown IANA timezone"),
        ("day_starts_at", "24:00", "day_starts_at", "HH:MM"),
        ("day_starts_at", "7:00", "day_starts_at", "HH:MM"),
        ("starting_balance", ..., "starting_balance", "is required"),
        ("starting_balance", "-5", "starting_balance", "greater than 0"),
        ("phases.1.id", "phase_1", "phases[1].id", "duplicate phase id 'phase_1'"),
        ("rules.max_loss", {"pct": 10, "lock_at": "100000", "lock_at_offset": "0"}, "rules.max_loss", "not both"),
        ("rules.max_lot_size", {}, "rules.max_lot_size", "per_order and/or per_symbol"),
        ("rules.max_risk_per_trade", {"pct": "two"}, "rules.max_risk_per_trade.pct", "not a number"),
        (
            "rules.max_daily_loss",
            {"pct": 5, "include_floating": "yes"},
            "rules.max_daily_loss.include_floating",
            "must be true or false",
        ),
        (
            "rules.trading_hours",
            {"windows": [{"days": ["mon"], "start": "25:00", "end": "10:00"}]},
            "rules.trading_hours.windows[0].start",
            "HH:MM",
        ),
        (
            "rules.weekend_trading",
            {"exempt_asset_classes": ["crypto", "bonds"]},
            "rules.weekend_trading.exempt_asset_classes",
            "must be a list of",
        ),
        ("offers.0.overrides", {"max_drawdown": {"amount": 1}}, "offers[0].overrides.max_drawdown", "unknown rule"),
        ("offers.0.overrides", {"max_loss": {"mode": "sideways"}}, "offers[0].overrides.max_loss.mode", "must be one"),
        ("offers.0.overrides", {"max_loss": {"floor": 1}}, "offers[0].overrides.max_loss.floor", "unknown parameter"),
        (
            "offers.0.overrides",
            {"max_loss": {"pct": 5, "amount": "500"}},
            "offers[0].overrides",
            "rules.max_loss: needs exactly one of pct or amount",
        ),
        ("phases.0.rules.max_loss", {"mode": "sideways"}, "phases[0].rules.max_loss.mode", "must be one of"),
        ("phases", [], "phases", "non-empty list"),
        ("colour", "blue", "colour", "unknown key"),
    ],
)
def test_an_invalid_plan_is_refused_naming_the_file_the_key_and_the_reason(
    path: str, value: Any, key: str, reason: str
) -> None:
    err = error_of(with_(path, value))

    assert err.key == key
    assert reason in err.reason
    assert err.where.startswith("plans/acme.yaml")
    assert str(err).startswith(f"{err.where}: {key}: ")


def test_a_phase_may_override_some_keys_of_a_default_rule_but_the_merged_rule_must_be_complete() -> None:
    data = with_("phases.0.rules.max_daily_loss", {"amount": "3000"})
    assert parse_rulebook(data).phase("phase_1").rules["max_daily_loss"]["amount"] == D(3000)

    err = error_of(with_("phases.0.rules.consistency", {"strict": True}))  # no default to complete it
    assert (err.key, err.reason) == ("phases[0].rules.consistency.max_share_pct", "is required")


def test_every_rule_id_of_rules_md_is_known_to_the_schema() -> None:
    assert set(RULES) == {
        "profit_target", "min_trading_days", "min_profitable_days", "max_daily_loss", "max_loss",
        "max_trading_days", "inactivity", "consistency", "max_lot_size", "max_open_positions", "max_open_orders",
        "max_leverage", "max_notional", "max_risk_per_trade", "trading_hours", "weekend_trading", "news_trading",
        "hedging", "ea_detection", "revenge_trading", "tick_scalping", "drawdown_warning",
    }  # fmt: skip


def test_a_plan_file_error_names_the_path(tmp_path: Path) -> None:
    f = tmp_path / "acme.yaml"
    f.write_text("id: acme\nstarting_balance: '1000'\ntimezone: Mars/Olympus\nphases: [{id: p}]\n")

    with pytest.raises(RulebookError) as exc:
        load_file(f)

    assert (exc.value.where, exc.value.key) == (str(f), "timezone")


def test_yaml_and_json_plans_give_the_same_book() -> None:
    y = parse_text("id: a\nstarting_balance: '1000'\nphases: [{id: p, rules: {max_loss: {pct: 10}}}]\n", "a.yaml")
    j = parse_text(
        '{"id": "a", "starting_balance": "1000", "phases": [{"id": "p", "rules": {"max_loss": {"pct": 10}}}]}', "a.json"
    )

    assert y.phase("p").rules == j.phase("p").rules


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(RulebookError) as exc:
        parse_text("id: a\nrules: [\n", "broken.yaml")

    assert exc.value.where == "broken.yaml"
    assert exc.value.key.startswith("line ")


def test_an_override_of_a_phase_rule_stays_in_that_phase() -> None:
    # futures-trailing@100k overrides the phase-1 profit target; the funded phase must not gain a target (it would
    # stop being a funded phase).
    rb = load_rulebook("futures-trailing@100k")

    assert rb.phase("funded").is_funded
    assert "profit_target" not in rb.phase("funded").rules
    assert rb.phase("phase_1").rules["profit_target"]["amount"] == D(6000)


def test_an_override_may_add_a_rule_the_plan_does_not_set_and_may_swap_the_lock_kind() -> None:
    data = with_("offers.0.overrides", {"max_lot_size": {"per_order": 2}})
    data["rules"]["max_loss"] = {"pct": 10, "mode": "intraday_trailing", "lock_at_offset": "0"}
    data["offers"][0]["overrides"]["max_loss"] = {"lock_at": "10500"}
    rb = parse_rulebook(data).for_offer("10k")

    for phase in rb.phases:
        assert phase.rules["max_lot_size"] == {"per_order": D(2)}
        assert phase.rules["max_loss"]["lock_at"] == D(10500)
        assert "lock_at_offset" not in phase.rules["max_loss"]
