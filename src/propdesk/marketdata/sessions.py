"""Trading sessions per asset class and per instrument, and quote staleness judged against them.

Session kinds (all boundaries open-inclusive, close-exclusive; local times are America/New_York):

- ``FX_24_5`` (forex): one week-long session, Sunday 17:00 to Friday 17:00.
- ``CME_GLOBEX`` (metals XAUUSD/XAGUSD, energy WTIUSD, and the US index CFDs US500/US100/US30): Sunday to
  Thursday 18:00 to the next day 17:00, i.e. Sunday 18:00 to Friday 17:00 with a daily 17:00-18:00 break. Index
  CFDs at prop firms are priced off the CME equity index futures (ES/NQ/YM), which trade these Globex hours, not
  the NYSE cash session. No exchange holidays are modelled.
- ``XNYS`` (US equities): the NYSE calendar from ``exchange-calendars`` (holidays, early closes at 13:00, regular
  09:30-16:00). Dates outside the calendar's range fall back to the plain weekday rule.
- ``ALWAYS`` (crypto): 24/7, never closes.

``SessionCalendar(always_open=True)`` is the DEMO setting (``PROPDESK_DEMO_ALWAYS_OPEN``, set by ``propdesk demo``):
every market counts as open at every moment, so the demo trades at any hour. Never use it for real accounts.

``SessionCalendar.status(symbol, at)`` answers "is it open now, and when does it next open/close?" in one call.
``exchange_calendars`` (and so pandas) is imported lazily on the first XNYS question and its schedule is turned
once into a plain ``date -> (open, close)`` dict; computed boundaries are cached per (kind, day), and the last answer
per kind is kept with the window in which it stays true (the open session, or the closed stretch up to the next
open or New York midnight), so the order and trigger path pays one comparison per question.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from ..domain.instruments import DEFAULT_CATALOGUE, AssetClass, Catalogue
from ..domain.quotes import Quote

NEW_YORK = ZoneInfo("America/New_York")

FX_ROLL = time(17, 0)
GLOBEX_BREAK_START, GLOBEX_BREAK_END = time(17, 0), time(18, 0)
CASH_OPEN, CASH_CLOSE = time(9, 30), time(16, 0)

XNYS_RANGE: tuple[str, str] = ("2006-01-01", "2040-12-31")
"""The span of the NYSE schedule loaded (fixed, so results do not depend on the day the code runs)."""

_LOOKBACK_DAYS = 7  # the longest session (FX, Sunday to Friday) starts at most 5 days before a moment inside it
_LOOKAHEAD_DAYS = 15  # more than any weekend plus holiday run
_DAY_CACHE_MAX = 8192


class SessionKind(StrEnum):
    FX_24_5 = "fx_24_5"
    CME_GLOBEX = "cme_globex"
    XNYS = "xnys"
    ALWAYS = "always"


SESSION_BY_CLASS: Mapping[AssetClass, SessionKind] = MappingProxyType(
    {
        AssetClass.FOREX: SessionKind.FX_24_5,
        AssetClass.METAL: SessionKind.CME_GLOBEX,
        AssetClass.ENERGY: SessionKind.CME_GLOBEX,
        AssetClass.INDEX: SessionKind.CME_GLOBEX,  # index CFDs follow the CME futures, not the cash session
        AssetClass.EQUITY: SessionKind.XNYS,
        AssetClass.CRYPTO: SessionKind.ALWAYS,
    }
)
"""The session of each asset class."""

SESSION_BY_SYMBOL: Mapping[str, SessionKind] = MappingProxyType(
    {
        "XAUUSD": SessionKind.CME_GLOBEX,
        "XAGUSD": SessionKind.CME_GLOBEX,
        "WTIUSD": SessionKind.CME_GLOBEX,
    }
)
"""Per-instrument overrides of ``SESSION_BY_CLASS`` (take precedence)."""

STALE_AFTER_SECONDS: Mapping[AssetClass, float] = MappingProxyType(
    {
        AssetClass.FOREX: 60.0,
        AssetClass.METAL: 60.0,
        AssetClass.ENERGY: 60.0,
        AssetClass.INDEX: 30.0,
        AssetClass.EQUITY: 30.0,
        AssetClass.CRYPTO: 30.0,
    }
)
"""A quote older than this while its market is open counts as stale (missing)."""


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """Whether the market is open at a moment, and its next open and close (UTC, aware).

    While open: ``next_close`` ends the current session and ``next_open`` starts the one after it.
    While closed: ``next_open`` starts the next session and ``next_close`` ends that session.
    Both are None for a market that never closes.
    """

    open: bool
    next_open: datetime | None
    next_close: datetime | None
    reason: str


Interval = tuple[datetime, datetime]

DEMO_OPEN_REASON = "open: DEMO MODE (every market treated as open)"

_ALWAYS_OPEN = SessionStatus(True, None, None, "open: trades 24/7")
_DEMO_OPEN = SessionStatus(True, None, None, DEMO_OPEN_REASON)

_xnys_lock = threading.Lock()
_xnys_schedule: dict[date, Interval] | None = None
_xnys_bounds: tuple[date, date] | None = None


def _load_xnys() -> tuple[dict[date, Interval], tuple[date, date]]:
    """The NYSE schedule as ``session date -> (open, close)`` in UTC, built once per process."""
    global _xnys_schedule, _xnys_bounds
    if _xnys_schedule is not None and _xnys_bounds is not None:
        return _xnys_schedule, _xnys_bounds
    with _xnys_lock:
        if _xnys_schedule is None or _xnys_bounds is None:
            # exchange-calendars and pandas emit deprecation chatter on import and construction; keep it local.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import exchange_calendars

                cal = exchange_calendars.get_calendar("XNYS", start=XNYS_RANGE[0], end=XNYS_RANGE[1])
                sched = cal.schedule
                table: dict[date, Interval] = {
                    day.date(): (o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
                    for day, o, c in zip(sched.index, sched["open"], sched["close"], strict=True)
                }
                bounds = (cal.first_session.date(), cal.last_session.date())
            _xnys_bounds = bounds
            _xnys_schedule = table
        return _xnys_schedule, _xnys_bounds


def _ny(d: date, t: time) -> datetime:
    return datetime.combine(d, t, tzinfo=NEW_YORK).astimezone(UTC)


class SessionCalendar:
    """Session answers for the symbols of a catalogue. Cheap per call: boundaries are cached per (kind, day)."""

    def __init__(
        self,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        overrides: Mapping[str, SessionKind] | None = None,
        *,
        always_open: bool = False,
    ):
        self._catalogue = catalogue
        self.always_open = always_open
        self._overrides: Mapping[str, SessionKind] = SESSION_BY_SYMBOL if overrides is None else overrides
        self._day_cache: dict[tuple[SessionKind, date], tuple[Interval, ...]] = {}
        # kind -> (valid_from, valid_until, status): the last answer and the window in which it stays the answer.
        # Replaced whole (one dict store), so readers on other threads see an old or a new triple, never a mix.
        self._hot: dict[SessionKind, tuple[datetime, datetime, SessionStatus]] = {}

    # -- lookup ----------------------------------------------------------------------------------------------

    def asset_class(self, symbol: str) -> AssetClass:
        inst = self._catalogue.get(symbol)
        if inst is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        return inst.asset_class

    def kind(self, symbol: str) -> SessionKind:
        """The session kind of ``symbol``: the per-instrument override, else its asset class's."""
        cls = self.asset_class(symbol)
        return self._overrides.get(symbol, SESSION_BY_CLASS[cls])

    # -- the one call ----------------------------------------------------------------------------------------

    def status(self, symbol: str, at: datetime) -> SessionStatus:
        """Is ``symbol``'s market open at ``at`` (aware), and when does it next open and close?"""
        return self.status_for(self.kind(symbol), at)

    def is_open(self, symbol: str, at: datetime) -> bool:
        return self.status(symbol, at).open

    def status_for(self, kind: SessionKind, at: datetime) -> SessionStatus:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        if kind == SessionKind.ALWAYS:
            return _ALWAYS_OPEN
        if self.always_open:
            return _DEMO_OPEN
        hot = self._hot.get(kind)
        if hot is not None and hot[0] <= at < hot[1]:
            return hot[2]
        at = at.astimezone(UTC)
        local_day = at.astimezone(NEW_YORK).date()
        current = self._containing(kind, local_day, at)
        if current is not None:
            opened, closes = current
            following = self._first_opening_after(kind, closes, inclusive=True)
            status = SessionStatus(
                True, following[0] if following else None, closes, self._open_reason(kind, opened, closes)
            )
            self._hot[kind] = (opened, closes, status)
            return status
        upcoming = self._first_opening_after(kind, at, inclusive=False)
        status = SessionStatus(
            False,
            upcoming[0] if upcoming else None,
            upcoming[1] if upcoming else None,
            self._closed_reason(kind, at, upcoming),
        )
        # A closed answer's reason names the local day ("before the open", "exchange holiday"), so it holds from
        # this moment to the next open or the next New York midnight, whichever comes first.
        midnight = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=NEW_YORK).astimezone(UTC)
        self._hot[kind] = (at, min(upcoming[0], midnight) if upcoming else midnight, status)
        return status

    # -- staleness -------------------------------------------------------------------------------------------

    def stale_after(self, symbol: str) -> float:
        return STALE_AFTER_SECONDS[self.asset_class(symbol)]

    def is_stale(self, quote: Quote, at: datetime) -> bool:
        """Older than its asset class's threshold while the market is open (a closed market's quote is not)."""
        if not self.is_open(quote.symbol, at):
            return False
        return quote.age_seconds(at) > self.stale_after(quote.symbol)

    # -- internals -------------------------------------------------------------------------------------------

    def _containing(self, kind: SessionKind, local_day: date, at: datetime) -> Interval | None:
        for back in range(_LOOKBACK_DAYS + 1):
            for opened, closes in self._intervals(kind, local_day - timedelta(days=back)):
                if opened <= at < closes:
                    return opened, closes
        return None

    def _first_opening_after(self, kind: SessionKind, at: datetime, *, inclusive: bool) -> Interval | None:
        """The first session opening at or after (``inclusive``) / strictly after ``at``."""
        start = at.astimezone(NEW_YORK).date() - timedelta(days=1)
        for ahead in range(_LOOKAHEAD_DAYS + 1):
            for opened, closes in self._intervals(kind, start + timedelta(days=ahead)):
                if opened > at or (inclusive and opened == at):
                    return opened, closes
        return None

    def _intervals(self, kind: SessionKind, day: date) -> tuple[Interval, ...]:
        """The sessions that open on New York calendar day ``day``, cached."""
        key = (kind, day)
        hit = self._day_cache.get(key)
        if hit is None:
            hit = self._compute(kind, day)
            if len(self._day_cache) >= _DAY_CACHE_MAX:
                self._day_cache.clear()
            self._day_cache[key] = hit
        return hit

    @staticmethod
    def _compute(kind: SessionKind, day: date) -> tuple[Interval, ...]:
        wd = day.weekday()  # Monday = 0 ... Sunday = 6
        if kind == SessionKind.FX_24_5:
            return ((_ny(day, FX_ROLL), _ny(day + timedelta(days=5), FX_ROLL)),) if wd == 6 else ()
        if kind == SessionKind.CME_GLOBEX:
            if wd == 6 or wd <= 3:
                return ((_ny(day, GLOBEX_BREAK_END), _ny(day + timedelta(days=1), GLOBEX_BREAK_START)),)
            return ()
        if kind == SessionKind.XNYS:
            table, (first, last) = _load_xnys()
            if first <= day <= last:
                hit = table.get(day)
                return (hit,) if hit is not None else ()
            return ((_ny(day, CASH_OPEN), _ny(day, CASH_CLOSE)),) if wd < 5 else ()
        return ()

    @staticmethod
    def _open_reason(kind: SessionKind, opened: datetime, closes: datetime) -> str:
        if kind == SessionKind.FX_24_5:
            return "open: FX 24/5 session"
        if kind == SessionKind.CME_GLOBEX:
            return "open: Globex session"
        close_local = closes.astimezone(NEW_YORK).time()
        if close_local < CASH_CLOSE:
            return f"open: early close session (closes {close_local:%H:%M} New York)"
        return "open: regular session"

    @staticmethod
    def _closed_reason(kind: SessionKind, at: datetime, upcoming: Interval | None) -> str:
        local = at.astimezone(NEW_YORK)
        wd, t = local.weekday(), local.time()
        if kind == SessionKind.FX_24_5:
            return "closed: weekend"
        if kind == SessionKind.CME_GLOBEX:
            if wd <= 3 and GLOBEX_BREAK_START <= t < GLOBEX_BREAK_END:
                return "closed: daily break"
            return "closed: weekend"
        # XNYS
        if wd >= 5:
            return "closed: weekend"
        table, (first, last) = _load_xnys()
        today = local.date()
        if first <= today <= last and today not in table:
            return "closed: exchange holiday"
        if upcoming is not None and upcoming[0].astimezone(NEW_YORK).date() == today:
            return "closed: before the open"
        return "closed: after the close"


_default_lock = threading.Lock()
_default: SessionCalendar | None = None


def default_calendar() -> SessionCalendar:
    """A process-wide ``SessionCalendar`` for ``DEFAULT_CATALOGUE``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SessionCalendar()
        return _default
