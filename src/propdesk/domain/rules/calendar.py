"""Trading days: the half-open interval [day start, next day start) in the rulebook's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class TradingCalendar:
    """Maps instants to trading days and back. Nothing assumes a day is 24 hours long.

    A trading day is named by a date: the local date it starts on when it starts before noon (``00:00``,
    ``07:00``), else the local date it ends on. An evening start is the session of the next day, as futures and
    FX desks name it: with ``day_starts_at: "18:00"`` the day from Tuesday 18:00 to Wednesday 18:00 is
    Wednesday's, and a Sunday-evening open belongs to Monday.
    """

    def __init__(self, timezone: str, day_starts_at: time):
        self.tz = ZoneInfo(timezone)
        self.day_starts_at = day_starts_at
        self._label_shift = timedelta(days=1 if day_starts_at >= time(12) else 0)

    def day_of(self, ts: datetime) -> date:
        """The trading day ``ts`` belongs to."""
        local = ts.astimezone(self.tz)
        d = local.date()  # the local date the day started on, once corrected below
        if local.time().replace(tzinfo=None) < self.day_starts_at:
            d -= timedelta(days=1)
        # Guard against DST edge cases where the wall-clock comparison and the instant disagree.
        if self._start_on(d) > ts:
            d -= timedelta(days=1)
        elif self._start_on(d + timedelta(days=1)) <= ts:
            d += timedelta(days=1)
        return d + self._label_shift

    def start_of(self, d: date) -> datetime:
        """The UTC instant trading day ``d`` starts."""
        return self._start_on(d - self._label_shift)

    def _start_on(self, local_date: date) -> datetime:
        return datetime.combine(local_date, self.day_starts_at, tzinfo=self.tz).astimezone(UTC)

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
