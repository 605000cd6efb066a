"""Trading days: the half-open interval [day start, next day start) in the rulebook's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class TradingCalendar:
    """Maps instants to trading days and back. Nothing assumes a day is 24 hours long."""

    def __init__(self, timezone: str, day_starts_at: time):
        self.tz = ZoneInfo(timezone)
        self.day_starts_at = day_starts_at

    def day_of(self, ts: datetime) -> date:
        """The trading day ``ts`` belongs to."""
        local = ts.astimezone(self.tz)
        d = local.date()
        if local.time().replace(tzinfo=None) < self.day_starts_at:
            d -= timedelta(days=1)
        # Guard against DST edge cases where the wall-clock comparison and the instant disagree.
        if self.start_of(d) > ts:
            d -= timedelta(days=1)
        elif self.start_of(d + timedelta(days=1)) <= ts:
            d += timedelta(days=1)
        return d

    def start_of(self, d: date) -> datetime:
        """The UTC instant trading day ``d`` starts."""
        return datetime.combine(d, self.day_starts_at, tzinfo=self.tz).astimezone(UTC)

    def next_start(self, ts: datetime) -> datetime:
        """The first day start strictly after ``ts``."""
        return self.start_of(self.day_of(ts) + timedelta(days=1))

    def boundaries(self, after: datetime, until: datetime) -> list[datetime]:
        """Every day start in (after, until]."""
        out = []
        t = self.next_start(after)
        while t <= until:
            out.append(t)
            t = self.start_of(self.day_of(t) + timedelta(days=1))
        return out

    def local(self, ts: datetime) -> datetime:
        return ts.astimezone(self.tz)

    def is_weekend(self, ts: datetime) -> bool:
        """Saturday or Sunday in the rulebook's timezone."""
        return ts.astimezone(self.tz).weekday() >= 5
