"""Trading days are [day start, next day start) in the rulebook's timezone; DST days are 23 or 25 hours long."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from propdesk.domain.rules.calendar import TradingCalendar

H = timedelta(hours=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# (timezone, day_starts_at, the trading day holding the switch, its start in UTC, its length in hours)
DST_DAYS = [
    ("Europe/Prague", time(0), date(2026, 3, 29), utc(2026, 3, 28, 23), 23),  # spring forward 02:00 -> 03:00
    ("Europe/Prague", time(0), date(2026, 10, 25), utc(2026, 10, 24, 22), 25),  # fall back 03:00 -> 02:00
    ("America/New_York", time(0), date(2026, 3, 8), utc(2026, 3, 8, 5), 23),
    ("America/New_York", time(0), date(2026, 11, 1), utc(2026, 11, 1, 4), 25),
    # A futures-style 18:00 day start: the session that opens Saturday 18:00 holds Sunday's 02:00 switch and
    # is named after the date it ends on (Sunday).
    ("America/New_York", time(18), date(2026, 3, 8), utc(2026, 3, 7, 23), 23),
    ("America/New_York", time(18), date(2026, 11, 1), utc(2026, 10, 31, 22), 25),
]


@pytest.mark.parametrize(("tz", "starts", "day", "start_utc", "hours"), DST_DAYS)
def test_dst_trading_days_are_23_or_25_hours_and_start_at_the_local_day_start(
    tz: str, starts: time, day: date, start_utc: datetime, hours: int
) -> None:
    cal = TradingCalendar(tz, starts)

    assert cal.start_of(day) == start_utc
    assert cal.start_of(day + timedelta(days=1)) - cal.start_of(day) == hours * H
    assert cal.local(cal.start_of(day)).time() == starts
    assert cal.local(cal.start_of(day + timedelta(days=1))).time() == starts


@pytest.mark.parametrize(("tz", "starts", "day", "start_utc", "hours"), DST_DAYS)
def test_on_dst_days_the_last_instant_belongs_to_the_day_and_the_next_start_to_the_next_day(
    tz: str, starts: time, day: date, start_utc: datetime, hours: int
) -> None:
    cal = TradingCalendar(tz, starts)
    end = start_utc + hours * H

    assert cal.day_of(start_utc) == day
    assert cal.day_of(start_utc - timedelta(microseconds=1)) == day - timedelta(days=1)
    assert cal.day_of(end - timedelta(microseconds=1)) == day
    assert cal.day_of(end) == day + timedelta(days=1)
    assert cal.next_start(start_utc) == end
    assert cal.boundaries(start_utc - H, end + H) == [start_utc, end]


def test_an_instant_exactly_at_the_day_start_belongs_to_the_new_day() -> None:
    cal = TradingCalendar("Europe/Prague", time(0))
    start = utc(2026, 3, 2, 23)  # 2026-03-03 00:00 CET

    assert cal.day_of(start) == date(2026, 3, 3)
    assert cal.day_of(start - timedelta(microseconds=1)) == date(2026, 3, 2)


def test_boundaries_are_the_day_starts_in_the_half_open_interval_after_until() -> None:
    cal = TradingCalendar("UTC", time(0))

    assert cal.boundaries(utc(2026, 3, 2), utc(2026, 3, 4)) == [utc(2026, 3, 3), utc(2026, 3, 4)]
    assert cal.boundaries(utc(2026, 3, 2, 1), utc(2026, 3, 2, 23)) == []


def test_a_morning_day_start_names_the_day_after_the_date_it_starts_on() -> None:
    cal = TradingCalendar("Europe/London", time(7))

    assert cal.day_of(utc(2026, 3, 3, 6, 59)) == date(2026, 3, 2)  # 06:59 GMT Tuesday: still Monday's day
    assert cal.day_of(utc(2026, 3, 3, 7)) == date(2026, 3, 3)
    assert cal.start_of(date(2026, 3, 3)) == utc(2026, 3, 3, 7)


def test_an_evening_day_start_names_the_session_after_the_date_it_ends_on() -> None:
    # Futures/FX convention (a reading of RULES.md, which names no convention): the 17:00 New York session that
    # opens Sunday evening is Monday's trading day.
    cal = TradingCalendar("America/New_York", time(17))

    assert cal.day_of(utc(2026, 3, 1, 22)) == date(2026, 3, 2)  # Sunday 17:00 EST
    assert cal.day_of(utc(2026, 3, 2, 21, 59)) == date(2026, 3, 2)  # Monday 16:59 EST
    assert cal.day_of(utc(2026, 3, 2, 22)) == date(2026, 3, 3)  # Monday 17:00 EST: Tuesday's session
    assert cal.start_of(date(2026, 3, 2)) == utc(2026, 3, 1, 22)


def test_weekends_are_saturday_and_sunday_in_the_rulebook_timezone() -> None:
    cal = TradingCalendar("Asia/Tokyo", time(0))

    assert cal.is_weekend(utc(2026, 3, 6, 15))  # Saturday 00:00 in Tokyo, still Friday in UTC
    assert not cal.is_weekend(utc(2026, 3, 6, 14, 59))
    assert cal.is_weekend(utc(2026, 3, 8, 14, 59))  # Sunday 23:59 Tokyo
    assert not cal.is_weekend(utc(2026, 3, 8, 15))


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
zones = st.sampled_from(["UTC", "Europe/Prague", "America/New_York", "Australia/Sydney", "Europe/London"])
starts_at = st.sampled_from([time(0), time(17), time(18), time(22), time(2, 30)])


@given(instants, zones, starts_at)
def test_every_instant_lies_in_exactly_one_trading_day(t: datetime, tz: str, starts: time) -> None:
    cal = TradingCalendar(tz, starts)
    d = cal.day_of(t)

    assert cal.start_of(d) <= t < cal.start_of(d + timedelta(days=1))
    assert timedelta(hours=22) <= cal.start_of(d + timedelta(days=1)) - cal.start_of(d) <= timedelta(hours=26)
    assert cal.next_start(t) == cal.start_of(d + timedelta(days=1))
