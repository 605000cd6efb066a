"""The day roll over every account, set-based: only the accounts with something due are rolled.

``roll_day`` (the exact per-account command) processes an account's day boundaries, expiries, weekend holds and
scale-up cycle up to now. For nearly every account on nearly every cycle there is nothing to process: its next
boundary, deadline, weekend start and scale-up check all lie in the future. Running the command anyway cost one
transaction per account per cycle (and rewrote every rule state just to move its ``last_t``).

So each account gets a *due time*: the earliest instant after its rule state's ``last_t`` at which ``roll_day``
could decide anything (``due_at``, a pure function of the frozen rulebook, the phase and the stored state). It is
computed once per version of the account's rows (``xmin`` of ``accounts`` and ``rule_states``) and kept in a
per-database cache; each cycle reads only the live accounts' row versions (one query), fetches full rows for the
accounts whose versions changed (one query), and runs the exact command for the accounts whose due time has come.
A command that changes an account changes its row versions, so its due time is recomputed on the next cycle.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from ..domain.lifecycle import MARKED, Status
from ..domain.rules.engine import EngineState, Evaluator
from ..domain.rules.rulebook import Rulebook

__all__ = ["RollCache", "due_at", "roll_all_due"]

_LOOKAHEAD = timedelta(days=8)  # every calendar has a boundary within a week (weekends included)
LIVE = tuple(sorted(s.value for s in MARKED))  # the statuses roll_all has always rolled


def due_at(
    book: Rulebook, phase: str | None, state: EngineState, extras: Mapping[str, Any], status: str
) -> datetime | None:
    """The earliest instant after ``state.last_t`` at which ``roll_day`` could change this account (None: the phase
    has ended, nothing is ever due). ``now`` >= the result means: run the exact command."""
    ev = Evaluator(book, phase, state)
    s = ev.s
    if ev.ended:
        return None
    if s.last_t is None:
        return datetime.min.replace(tzinfo=UTC)  # never synced: let the exact command decide at once
    after = s.last_t
    candidates: list[datetime] = []
    upcoming = ev.cal.boundaries(after, after + _LOOKAHEAD)
    candidates.append(upcoming[0] if upcoming else after + _LOOKAHEAD)
    candidates.extend(at for at, _rule, _ev in ev.deadlines())
    wk = ev.rules.get("weekend_trading")
    if wk is not None and not wk["hold_positions"]:
        local = ev.cal.local(after)
        saturday = local.date() + timedelta(days=(5 - local.weekday()) % 7)
        start = datetime.combine(saturday, time(0), tzinfo=ev.cal.tz).astimezone(UTC)
        if start <= after:
            start = datetime.combine(saturday + timedelta(days=7), time(0), tzinfo=ev.cal.tz).astimezone(UTC)
        candidates.append(start)
    scaling = ev.phase.scaling
    if scaling and status == Status.ACTIVE.value:
        started = extras.get("cycle_started_at")
        if not started:
            candidates.append(after)
        else:
            candidates.append(datetime.fromisoformat(started) + timedelta(days=scaling["every_days"]))
    return min(candidates)


@dataclass
class _Entry:
    versions: tuple[int, int]
    due: datetime | None


class RollCache:
    """Due times by account, valid for the row versions they were computed from (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[uuid.UUID, _Entry] = {}

    def get(self, account_id: uuid.UUID, versions: tuple[int, int]) -> _Entry | None:
        with self._lock:
            e = self._entries.get(account_id)
        return e if e is not None and e.versions == versions else None

    def put(self, account_id: uuid.UUID, versions: tuple[int, int], due: datetime | None) -> None:
        with self._lock:
            self._entries[account_id] = _Entry(versions, due)

    def retain(self, live: set[uuid.UUID]) -> None:
        with self._lock:
            for gone in set(self._entries) - live:
                del self._entries[gone]


_VERSIONS = (
    "SELECT a.id, a.xmin::text::bigint AS av, r.xmin::text::bigint AS rv FROM accounts a"
    " JOIN rule_states r ON r.account_id = a.id WHERE a.status = ANY(%s)"
)
_FULL = (
    "SELECT a.id, a.xmin::text::bigint AS av, r.xmin::text::bigint AS rv, a.phase, a.status, a.mode, a.rulebook,"
    " r.state FROM accounts a JOIN rule_states r ON r.account_id = a.id WHERE a.id = ANY(%s)"
)


def roll_all_due(
    db: Any,
    now: datetime,
    book_for: Callable[[Mapping[str, Any]], Rulebook | None],
    roll_day: Callable[[uuid.UUID], Any],
    on_failure: Callable[[uuid.UUID, Exception], None],
    cache: RollCache,
) -> dict[str, Any]:
    """Run ``roll_day`` for every live account whose due time has come; returns ``{"rolled", "failed",
    "accounts", "due", "computed"}`` (``accounts``: live accounts considered; ``computed``: due times refreshed)."""
    with db.read() as c:
        rows = c.execute(_VERSIONS, (list(LIVE),)).fetchall()
        stale = [r["id"] for r in rows if cache.get(r["id"], (r["av"], r["rv"])) is None]
        full = c.execute(_FULL, (stale,)).fetchall() if stale else []
    for r in full:
        versions = (r["av"], r["rv"])
        book = book_for(r)
        if book is None:
            cache.put(r["id"], versions, None)
            continue
        state = r["state"] or {}
        try:
            due = due_at(
                book, r["phase"], EngineState.from_json(state["engine"]), state.get("extras") or {}, r["status"]
            )
        except Exception:  # an unreadable state is the exact command's to report, at once
            due = datetime.min.replace(tzinfo=UTC)
        cache.put(r["id"], versions, due)
    cache.retain({r["id"] for r in rows})
    due_ids = []
    for r in rows:
        entry = cache.get(r["id"], (r["av"], r["rv"]))
        if entry is not None and entry.due is not None and entry.due <= now:
            due_ids.append(r["id"])
    ok, failed = 0, []
    for acc in sorted(due_ids):
        try:
            roll_day(acc)
            ok += 1
        except Exception as exc:
            failed.append({"account_id": str(acc), "error": f"{type(exc).__name__}: {exc}"})
            on_failure(acc, exc)
    return {"rolled": ok, "failed": failed, "accounts": len(rows), "due": len(due_ids), "computed": len(full)}
