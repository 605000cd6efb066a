"""The clock is injected: the core receives ``now`` as data, adapters get a ``Clock``."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time as a timezone-aware UTC datetime."""

    def now(self) -> datetime: ...
