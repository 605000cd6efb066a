"""Offline evaluation: trade logs (and price files and calendars) in, the RULES.md output out, no database.

The fixture cases in ``tests/fixtures/evaluate`` (see its README) are compared exactly with their stored output;
the other tests write small logs of their own.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rules_kit import book

from propdesk.evaluation import InputError, evaluate, render_report
from propdesk.rulebooks import load_rulebook

D = Decimal
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "evaluate"
CASES: dict[str, dict[str, str]] = json.loads((FIXTURES / "cases.json").read_text())
HEADER = "ticket,symbol,side,lots,open_time,open_price,close_time,close_price,sl,tp,commission,swap,profit\n"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
MONEY = re.compile(r"^-?\d+\.\d\d$")


def run_case(name: str) -> dict[str, Any]:
    c = CASES[name]
    return evaluate(
        load_rulebook(c["rulebook"]),
        FIXTURES / c["trades"],
        phase=c.get("phase"),
        prices_path=FIXTURES / c["prices"] if "prices" in c else None,
        calendar_path=FIXTURES / c["calendar"] if "calendar" in c else None,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def log(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    return write(tmp_path, "trades.csv", header + "".join(r + "\n" for r in rows))


CLASSIC = "classic-2step@10k"


# ---------------------------------------------------------------- the fixture cases
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_fixture_gives_exactly_its_stored_output(name: str) -> None:
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())

    assert run_case(name) == expected


def test_every_fixture_is_documented_in_the_readme() -> None:
    readme = (FIXTURES / "README.md").read_text()

    assert all(f"`{name}`" in readme for name in CASES)


def test_the_fixtures_cover_a_pass_each_limit_and_both_price_kinds() -> None:
    verdicts = {name: json.loads((FIXTURES / f"{name}.expected.json").read_text()) for name in CASES}
    rules = {(b["rule"], b["action"]) for v in verdicts.values() for b in v["breaches"]}

    assert {v["verdict"] for v in verdicts.values()} == {"passed", "failed", "in_progress"}
    assert {
        ("max_daily_loss", "fail"),
        ("max_daily_loss", "pause_day"),
        ("max_loss", "fail"),
        ("max_trading_days", "expire"),
        ("inactivity", "expire"),
    } <= rules
    kinds = {(FIXTURES / c["prices"]).read_text().split("\n")[0] for c in CASES.values() if "prices" in c}
    assert kinds == {"symbol,timestamp,open,high,low,close", "symbol,timestamp,bid,ask"}


def check_shape(out: dict[str, Any]) -> None:
    assert list(out) == [
        "verdict",
        "phase",
        "breaches",
        "progress",
        "warnings",
        "flags",
        "metrics",
        "floating_evaluated",
    ]
    assert out["verdict"] in ("passed", "failed", "in_progress")
    for b in out["breaches"]:
        assert list(b) == ["rule", "at", "value", "limit", "action", "evidence"]
        assert ISO_Z.match(b["at"])
        assert b["action"] in ("fail", "pause_day", "expire")
        for k in ("value", "limit"):
            assert b[k] is None or MONEY.match(b[k])
        assert isinstance(b["evidence"], dict)
    for p in out["progress"].values():
        assert list(p) == ["value", "target", "met"]
        assert isinstance(p["met"], bool)
    for w in out["warnings"] + out["flags"]:
        assert list(w) == ["rule", "at", "evidence"]
        assert ISO_Z.match(w["at"])
    m = out["metrics"]
    assert list(m) == [
        "trading_days",
        "net_profit",
        "net_profit_pct",
        "best_day_share_pct",
        "max_drawdown_pct",
        "win_rate_pct",
        "trades",
    ]
    assert isinstance(m["trading_days"], int)
    assert isinstance(m["trades"], int)
    for k in ("net_profit", "net_profit_pct", "best_day_share_pct", "max_drawdown_pct", "win_rate_pct"):
        assert MONEY.match(m[k]), (k, m[k])
    assert isinstance(out["floating_evaluated"], bool)
    line = json.dumps(out, separators=(",", ":"))
    assert "\n" not in line
    assert json.loads(line) == out


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_output_has_the_rules_md_structure(name: str) -> None:
    check_shape(run_case(name))


def test_breaches_are_chronological_and_several_at_one_instant_are_highest_floor_first() -> None:
    out = run_case("fail_both_floors")

    assert [(b["rule"], b["limit"], b["at"]) for b in out["breaches"]] == [
        ("max_daily_loss", "49600.00", "2026-03-12T15:00:00Z"),
        ("max_loss", "49500.00", "2026-03-12T15:00:00Z"),
    ]


# ---------------------------------------------------------------- floating P&L from price files
def test_without_a_price_file_only_closed_balance_is_checked(tmp_path: Path) -> None:
    out = evaluate(load_rulebook(CLASSIC), FIXTURES / "bars_floating_breach.trades.csv")

    assert (out["verdict"], out["breaches"], out["floating_evaluated"]) == ("in_progress", [], False)
    assert out["metrics"]["net_profit"] == "20.00"


def test_bars_mark_a_short_at_the_bar_high(tmp_path: Path) -> None:
    trades = log(tmp_path, "1,EURUSD,sell,1,2026-03-03T09:00:30Z,1.08000,2026-03-03T09:05:00Z,1.07980,,,,,")
    prices = write(
        tmp_path,
        "bars.csv",
        "symbol,timestamp,open,high,low,close\n"
        "EURUSD,2026-03-03T09:00:00Z,1.08000,1.08010,1.07990,1.08000\n"
        "EURUSD,2026-03-03T09:01:00Z,1.08000,1.08520,1.07000,1.07990\n"
        "EURUSD,2026-03-03T09:02:00Z,1.07990,1.08000,1.07980,1.07990\n",
    )

    out = evaluate(load_rulebook(CLASSIC), trades, prices_path=prices)

    [b] = out["breaches"]
    assert (b["at"], b["value"], b["limit"]) == ("2026-03-03T09:01:00Z", "9480.00", "9500.00")  # high 1.08520


def test_ticks_mark_a_long_at_the_bid(tmp_path: Path) -> None:
    trades = log(tmp_path, "1,EURUSD,buy,1,2026-03-03T09:00:00Z,1.08000,2026-03-03T09:10:00Z,1.08010,,,,,")
    ticks = "symbol,timestamp,bid,ask\nEURUSD,2026-03-03T09:00:00Z,1.08000,1.08005\n"
    ok = write(tmp_path, "ok.csv", ticks + "EURUSD,2026-03-03T09:05:00Z,1.07500,1.07520\n")  # bid: exactly -500
    bad = write(tmp_path, "bad.csv", ticks + "EURUSD,2026-03-03T09:05:00Z,1.07499,1.07600\n")

    assert evaluate(load_rulebook(CLASSIC), trades, prices_path=ok)["breaches"] == []
    [b] = evaluate(load_rulebook(CLASSIC), trades, prices_path=bad)["breaches"]
    assert (b["value"], b["limit"]) == ("9499.00", "9500.00")  # 1.07499 - 1.08000 = -0.00501 x 100,000


def test_start_of_day_equity_uses_the_open_of_the_first_bar_at_or_after_the_boundary(tmp_path: Path) -> None:
    rb = book({"max_daily_loss": {"pct": 5, "anchor": "start_of_day_equity"}}, start="10000", tz="Europe/Prague")
    trades = log(tmp_path, "1,EURUSD,buy,1,2026-03-03T20:00:00Z,1.08000,2026-03-04T09:00:00Z,1.07000,,,,,")
    prices = write(
        tmp_path,
        "bars.csv",
        "symbol,timestamp,open,high,low,close\n"
        "EURUSD,2026-03-03T20:00:00Z,1.08000,1.08000,1.07900,1.07900\n"
        "EURUSD,2026-03-03T23:30:00Z,1.07800,1.07800,1.07700,1.07700\n"
        "EURUSD,2026-03-04T08:00:00Z,1.07700,1.07700,1.07000,1.07000\n",
    )

    out = evaluate(rb, trades, prices_path=prices)

    # The boundary (2026-03-03T23:00Z) has no bar: the first bar after it opens at 1.07800, so the day's anchor is
    # 10,000 - 200 = 9,800 and its floor 9,300. The 08:00 bar's low (1.07000) gives 9,000 < 9,300.
    [b] = out["breaches"]
    assert b["evidence"]["start_of_day_equity"] == "9800.00"
    assert (b["at"], b["value"], b["limit"]) == ("2026-03-04T08:00:00Z", "9000.00", "9300.00")


# ---------------------------------------------------------------- currencies
def test_a_cross_quoted_in_jpy_converts_through_the_usdjpy_price_file(tmp_path: Path) -> None:
    trades = log(tmp_path, "1,EURJPY,buy,1,2026-03-03T09:00:00Z,162.000,2026-03-03T10:00:00Z,163.000,,,,,")
    prices = write(
        tmp_path,
        "fx.csv",
        "symbol,timestamp,open,high,low,close\n"
        "USDJPY,2026-03-03T08:00:00Z,150.000,150.100,149.900,150.000\n"
        "USDJPY,2026-03-03T09:59:00Z,150.000,160.100,149.900,160.000\n",
    )

    out = evaluate(load_rulebook(CLASSIC), trades, prices_path=prices)

    # 1.000 x 1 lot x 100,000 = 100,000 JPY at the last USDJPY known at the close (160.000): 625.00 USD.
    assert out["metrics"]["net_profit"] == "625.00"


def test_profit_given_in_the_log_is_authoritative(tmp_path: Path) -> None:
    trades = log(tmp_path, "1,EURJPY,buy,1,2026-03-03T09:00:00Z,162.000,2026-03-03T10:00:00Z,163.000,,,-7,-3,600")

    assert evaluate(load_rulebook(CLASSIC), trades)["metrics"]["net_profit"] == "590.00"  # commission and swap added


# ---------------------------------------------------------------- malformed input
OK = "1,EURUSD,buy,1,2026-03-03T09:00:00Z,1.08000,2026-03-03T10:00:00Z,1.08100,,,,,"


@pytest.mark.parametrize(
    ("rows", "header", "where"),
    [
        ([OK], HEADER.replace("lots,", ""), "row 1: missing column(s) lots"),
        ([OK], HEADER.replace(",close_time", ""), "row 1: missing column(s) close_time"),
        ([OK, OK.replace("1,", "2,", 1).replace("buy", "long")], HEADER, "row 3, column side"),
        ([OK.replace("2026-03-03T09:00:00Z", "2026-03-03T09:00:00")], HEADER, "row 2, column open_time"),
        ([OK.replace("2026-03-03T10:00:00Z", "2026-03-03 10:00")], HEADER, "row 2, column close_time"),
        ([OK.replace(",1,2026", ",one,2026")], HEADER, "row 2, column lots"),
        ([OK.replace(",1,2026", ",-1,2026")], HEADER, "row 2, column lots"),
        ([OK.replace("2026-03-03T10:00:00Z", "2026-03-03T08:00:00Z")], HEADER, "row 2, column close_time"),
        ([OK.replace("EURUSD", "EURUSDX")], HEADER, "row 2, column symbol"),
        ([OK.replace("1.08100", "")], HEADER, "row 2, column close_price"),
        ([OK.replace("1.08000", "abc")], HEADER, "row 2, column open_price"),
        ([OK, OK], HEADER, "row 3, column ticket"),  # a duplicate ticket
        (
            ["1,EURUSD,buy,1,2026-03-03T09:00:00Z,1.08,2026-03-03T10:00:00Z,1.081,,,abc,,"],
            HEADER,
            "row 2, column commission",
        ),
        (
            [OK, "2,EURJPY,buy,1,2026-03-03T11:00:00Z,162.000,2026-03-03T12:00:00Z,163.000,,,,,"],
            HEADER,
            "row 3, column profit",
        ),
    ],
)
def test_malformed_logs_are_refused_naming_the_row_and_column(
    tmp_path: Path, rows: list[str], header: str, where: str
) -> None:
    trades = log(tmp_path, *rows, header=header)

    with pytest.raises(InputError) as exc:
        evaluate(load_rulebook(CLASSIC), trades)

    assert str(exc.value).startswith(f"{trades}: {where}")
    assert "\n" not in str(exc.value)


def test_a_non_usd_quote_without_conversion_is_refused_even_when_the_evaluation_would_end_first(
    tmp_path: Path,
) -> None:
    trades = log(
        tmp_path,
        "1,EURUSD,buy,1,2026-03-03T09:00:00Z,1.08000,2026-03-03T10:00:00Z,1.07000,,,,,",
        "2,GBPJPY,buy,1,2026-03-05T09:00:00Z,190.000,2026-03-05T10:00:00Z,191.000,,,,,",
    )

    with pytest.raises(InputError, match=r"row 3, column profit: GBPJPY is quoted in JPY"):
        evaluate(load_rulebook(CLASSIC), trades)  # the -1,000 of trade 1 fails the account before trade 3


def test_bad_price_and_calendar_files_name_the_row_and_column(tmp_path: Path) -> None:
    trades = log(tmp_path, OK)
    bars = write(
        tmp_path, "bars.csv", "symbol,timestamp,open,high,low,close\nEURUSD,2026-03-03T09:00:00Z,1.08,1.07,1.09,1.08\n"
    )
    cal = write(tmp_path, "cal.csv", "time,currency,impact,title\n2026-03-03T09:00:00Z,USD,huge,NFP\n")

    with pytest.raises(InputError, match=r"bars.csv: row 2, column high"):
        evaluate(load_rulebook(CLASSIC), trades, prices_path=bars)
    with pytest.raises(InputError, match=r"cal.csv: row 2, column impact"):
        evaluate(load_rulebook(CLASSIC), trades, calendar_path=cal)


# ---------------------------------------------------------------- semantics through the log
def test_a_pass_blocked_by_best_day_consistency_is_in_progress_until_later_trades_release_it(tmp_path: Path) -> None:
    rows = (FIXTURES / "consistency_block_release.trades.csv").read_text().splitlines()
    trades = write(tmp_path, "first3.csv", "\n".join(rows[:4]) + "\n")

    out = evaluate(load_rulebook("one-step-eod@25k"), trades)

    assert out["verdict"] == "in_progress"
    assert out["progress"]["profit_target"]["met"] is True
    assert out["progress"]["consistency"] == {"value": "60.00", "target": "40", "met": False}
    assert out["breaches"] == []  # a block is not a breach


def test_the_phase_option_evaluates_another_phase(tmp_path: Path) -> None:
    out = evaluate(load_rulebook(CLASSIC), FIXTURES / "pass_classic.trades.csv", phase="phase_2")

    # Phase 2's 5% target (500) is reached at trade 2 (543.00) but 4 trading days are needed: passed at trade 4.
    assert (out["phase"], out["verdict"]) == ("phase_2", "passed")
    assert out["progress"]["profit_target"] == {"value": "1036.00", "target": "500.00", "met": True}
    assert out["metrics"]["trades"] == 4


def test_risk_per_trade_flag_carries_the_computed_risk(tmp_path: Path) -> None:
    trades = log(tmp_path, "1,EURUSD,buy,2,2026-03-03T09:00:00Z,1.08000,2026-03-03T10:00:00Z,1.08100,1.07700,,,,")

    out = evaluate(load_rulebook("strict-risk@25k"), trades)

    [f] = [x for x in out["flags"] if x["rule"] == "max_risk_per_trade"]
    # 0.003 x 2 lots x 100,000 = 600 > 2% of 25,000 = 500
    assert (f["evidence"]["risk"], f["evidence"]["max_risk"], f["evidence"]["ticket"]) == ("600.00", "500.00", "1")
    assert "600.00" in f["evidence"]["message"]


def test_news_deduct_profit_removes_the_profit_of_a_trade_opened_in_the_window(tmp_path: Path) -> None:
    rb = book({"news_trading": {"minutes_before": 5, "minutes_after": 5, "action": "deduct_profit"}}, start="10000")
    trades = log(
        tmp_path,
        "1,EURUSD,buy,1,2026-03-06T13:25:00Z,1.08000,2026-03-06T14:00:00Z,1.08300,,,,,",
        "2,EURUSD,buy,1,2026-03-06T13:24:59Z,1.08000,2026-03-06T14:00:00Z,1.08100,,,,,",
    )
    cal = write(tmp_path, "cal.csv", "time,currency,impact,title\n2026-03-06T13:30:00Z,USD,high,NFP\n")

    out = evaluate(rb, trades, calendar_path=cal)

    assert out["metrics"]["net_profit"] == "100.00"  # trade 1's +300 is deducted; trade 2 opened 1 s too early
    assert [(f["rule"], f["evidence"]["ticket"]) for f in out["flags"]] == [("news_trading", "1")] * 2
    assert out["flags"][1]["evidence"]["deducted"] == "300.00"


def test_the_human_report_names_the_verdict_and_the_breach() -> None:
    rb = load_rulebook(CLASSIC)
    text = render_report(run_case("fail_daily_loss"), rb)

    assert "phase phase_1: FAILED" in text
    assert "max_daily_loss: value 9550.00 vs limit 9600.00 -> fail" in text
    assert "Floating P&L was not evaluated" in text


def test_unreadable_inputs_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    trades = log(tmp_path, OK)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    for kw in ({"prices_path": tmp_path / "missing.csv"}, {"calendar_path": binary}, {"prices_path": binary}):
        with pytest.raises(InputError) as exc:
            evaluate(load_rulebook(CLASSIC), trades, **kw)  # type: ignore[arg-type]
        assert str(exc.value).startswith(str(next(iter(kw.values()))))
    with pytest.raises(InputError, match="cannot read"):
        evaluate(load_rulebook(CLASSIC), tmp_path / "nope.csv")
