"""Subject and stream names, namespaced per PropDesk instance.

Every name carries the instance namespace (``pd.<ns>.quotes.<SYMBOL>``, streams ``PD_<NS>_QUOTES``), so instances
and test databases sharing one NATS never see each other's messages. Quotes are published on ``quotes.<SYMBOL>``: every
process takes them live with one plain core-NATS wildcard subscription (``quotes.*``) and the retained stream
captures the same messages; publish acks come back on ``ack.<origin>.<n>``. The namespace is the one registered in the
database (``bus.registration``): every process on one database uses the same one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Subjects", "valid_namespace"]

_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")


def valid_namespace(namespace: str) -> str:
    """``namespace`` when usable as one subject token and inside stream names (lowercase letters, digits, ``_``,
    ``-``; at most 48 characters), else ValueError."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid bus namespace {namespace!r}: lowercase letters, digits, '_' and '-' only")
    return namespace


@dataclass(frozen=True)
class Subjects:
    """The names of one instance's subjects and streams."""

    namespace: str

    def __post_init__(self) -> None:
        valid_namespace(self.namespace)

    @property
    def prefix(self) -> str:
        """``pd.<ns>``: everything of this instance is under it."""
        return f"pd.{self.namespace}"

    def quote(self, symbol: str) -> str:
        """The subject of one symbol's quotes."""
        if not _SYMBOL.match(symbol):
            raise ValueError(f"symbol {symbol!r} cannot be a subject token")
        return f"{self.prefix}.quotes.{symbol}"

    @property
    def all_quotes(self) -> str:
        """The wildcard over every symbol's quotes."""
        return f"{self.prefix}.quotes.*"

    def acks(self, origin: str) -> str:
        """The prefix of the reply subjects a publisher ``origin`` gets its publish acks on (``<prefix><n>``)."""
        if not _NAMESPACE.match(origin):
            raise ValueError(f"invalid origin {origin!r}")
        return f"{self.prefix}.ack.{origin}."

    def symbol_of(self, subject: str) -> str:
        """The symbol a quote subject names (its last token)."""
        return subject.rsplit(".", 1)[-1]

    @property
    def _stream_base(self) -> str:
        # Stream names may not hold '.', '*', '>' or spaces; '-' is fine but keep them uniform.
        return "PD_" + self.namespace.upper().replace("-", "_")

    @property
    def quotes_stream(self) -> str:
        """The retained stream of every quote (kept ``max_age``, for replay by shards)."""
        return f"{self._stream_base}_QUOTES"

    @property
    def last_stream(self) -> str:
        """The stream holding only the last quote of each symbol (sourced from the quotes stream)."""
        return f"{self._stream_base}_LAST"
