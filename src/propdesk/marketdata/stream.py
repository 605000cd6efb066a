"""An in-process tick stream: feeds ``publish`` quotes; the execution core, the UI and workers ``subscribe``.

Delivery is synchronous, on the publisher's thread, in subscription order. The subscriber list is copied under
a lock and the callbacks run outside it, so a callback may subscribe or unsubscribe (itself included) without
deadlocking; a subscription removed during a publish may still receive that one quote. A callback that raises
is logged and skipped: the others still get the quote.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..domain.quotes import Quote

log = logging.getLogger("propdesk.marketdata.stream")

TickCallback = Callable[[Quote], object]


@dataclass(frozen=True)
class _Subscription:
    id: int
    callback: TickCallback
    symbols: frozenset[str] | None  # None: every symbol


class TickStream:
    """Thread-safe publish/subscribe of quotes within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[int, _Subscription] = {}
        self._ids = itertools.count(1)

    def subscribe(self, callback: TickCallback, symbols: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(quote)`` for every published quote (or only those of ``symbols``). Returns an
        idempotent ``unsubscribe()``."""
        wanted = None if symbols is None else frozenset(s.upper() for s in symbols)
        with self._lock:
            sub = _Subscription(next(self._ids), callback, wanted)
            self._subs[sub.id] = sub

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(sub.id, None)

        return unsubscribe

    def publish(self, quote: Quote) -> int:
        """Deliver ``quote`` to the matching subscribers; returns how many took it without raising."""
        symbol = quote.symbol.upper()
        with self._lock:
            targets = [s for s in self._subs.values() if s.symbols is None or symbol in s.symbols]
        delivered = 0
        for sub in targets:
            try:
                sub.callback(quote)
            except Exception:
                log.exception("tick subscriber %d failed on %s", sub.id, quote.symbol)
            else:
                delivered += 1
        return delivered

    def __len__(self) -> int:
        with self._lock:
            return len(self._subs)


__all__ = ["TickCallback", "TickStream"]
