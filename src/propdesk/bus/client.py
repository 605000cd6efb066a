"""Connecting to the bus: ``NATS_URL`` from settings, else the embedded server; reconnect forever.

:class:`BusClient` wraps one nats-py connection. It reconnects by itself without end (``max_reconnect_attempts``
-1, a jittered wait between attempts) and reports the transitions to the callbacks given; ``connected`` is what
others read (the price gates, ``/healthz``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client

from .embedded import NatsEndpoint

__all__ = ["BusClient", "endpoint_from_url", "redact"]

_log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


def endpoint_from_url(url: str) -> NatsEndpoint:
    """A ``NATS_URL`` (``nats://[user:password@]host:port``, or several comma-separated) as an endpoint; the
    credentials stay in the URL, which nats-py reads."""
    return NatsEndpoint(url.strip())


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and the registration's hint)."""
    out = []
    for part in url.split(","):
        p = urlsplit(part.strip())
        if p.password:
            host = f"{p.username}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
            p = p._replace(netloc=host)
        out.append(urlunsplit(p))
    return ",".join(out)


class _Client(Client):
    """nats-py's client with two shortcuts on the receive path of every quote:

    - a faster parser of message headers (every quote carries its ``Nats-Msg-Id``, replayed ones JetStream's
      headers: nats-py 2.16's parser tests every character of every name in a generator, most of the receive cost
      of a quote). Same result: lines without ``:`` and names that are empty of ASCII or hold whitespace are
      skipped, names and values stripped, values decoded as UTF-8 with replacement;
    - raw subscriptions (:meth:`raw_subscribe`): the payload goes straight from the protocol parser to a plain
      function, without the ``Msg`` object, the queue and the task step nats-py spends on each message. The
      subscription is an ordinary one otherwise (re-sent on reconnect, unsubscribed the usual way);
    - :meth:`send_now`: already-encoded ``PUB``/``HPUB`` commands written at once when nothing else waits in the
      connection's buffer (else appended to it, behind what is there, for the flusher): a batch of quotes costs one
      write and no coroutine per quote.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw: dict[int, Callable[[bytes], None]] = {}

    async def raw_subscribe(self, subject: str, handler: Callable[[bytes], None]) -> Any:
        """Subscribe ``handler(payload)`` to ``subject``; returns the subscription (``unsubscribe()`` it)."""

        async def unused(_msg: Any) -> None:  # never called: the payloads go to ``handler``
            return None

        sub = await self.subscribe(subject, cb=unused)
        self._raw[sub._id] = handler
        return sub

    def send_now(self, cmds: list[bytes]) -> bool:
        """Send ``cmds`` (encoded protocol commands) in order; False when not connected (nothing sent)."""
        if not self.is_connected or self._transport is None or self._flush_queue is None:
            return False
        if self._pending:
            self._pending.extend(cmds)
            self._pending_data_size += sum(map(len, cmds))
            if self._flush_queue.empty():
                self._flush_queue.put_nowait(asyncio.get_running_loop().create_future())
        else:
            self._transport.writelines(cmds)
        self.stats["out_msgs"] += len(cmds)
        return True

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        handler = self._raw.get(sid)
        if handler is None or sid not in self._subs:
            self._raw.pop(sid, None)
            return await super()._process_msg(sid, subject, reply, data, headers)
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(data)
        return None

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip()
            if len(name.split()) > 1:
                continue
            try:
                key = name.decode("ascii")
            except UnicodeDecodeError:
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out


class BusClient:
    """One NATS connection that reconnects forever; use on the event loop that connected it."""

    def __init__(
        self,
        endpoint: NatsEndpoint,
        *,
        name: str = "propdesk",
        reconnect_wait_s: float = 0.5,
        ping_interval_s: int = 5,
        on_disconnected: Callback | None = None,
        on_reconnected: Callback | None = None,
        no_echo: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.reconnect_wait_s = reconnect_wait_s
        self.ping_interval_s = ping_interval_s
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self.no_echo = no_echo
        self.nc: Client | None = None
        self.disconnects = 0
        self.reconnects = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self.nc is not None and self.nc.is_connected

    @property
    def server_info(self) -> dict[str, Any]:
        """The ``INFO`` of the server connected to (empty before connecting)."""
        info = getattr(self.nc, "_server_info", None)
        return dict(info) if isinstance(info, dict) else {}

    async def connect(self, timeout_s: float = 10.0) -> Client:
        """Connect, waiting at most ``timeout_s`` for the first connection (a bus that is not there at start-up
        is an error the operator must see); after that the client reconnects forever."""

        async def disconnected() -> None:
            self.disconnects += 1
            _log.warning("bus disconnected from %s", redact(self.endpoint.url))
            if self._on_disconnected is not None:
                await self._on_disconnected()

        async def reconnected() -> None:
            self.reconnects += 1
            _log.warning("bus reconnected to %s", redact(self.endpoint.url))
            if self._on_reconnected is not None:
                await self._on_reconnected()

        async def error(exc: Exception) -> None:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]

        servers = [s.strip() for s in self.endpoint.url.split(",") if s.strip()]
        nc = _Client()
        await asyncio.wait_for(
            nc.connect(
                servers,
                user=self.endpoint.user,
                password=self.endpoint.password,
                name=self.name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait_s,  # type: ignore[arg-type,unused-ignore]
                connect_timeout=2,
                ping_interval=self.ping_interval_s,
                max_outstanding_pings=2,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                pending_size=64 * 1024 * 1024,
                no_echo=self.no_echo,
            ),
            timeout_s,
        )
        self.nc = nc
        return nc

    async def close(self) -> None:
        """Flush and close the connection."""
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), 5)
            except Exception:
                await nc.close()
