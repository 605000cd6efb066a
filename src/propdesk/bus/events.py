"""Account change events on the bus: subjects, the events stream, and the wire format.

The outbox relay (``workers/outbox_relay.py``) publishes each committed event on ``pd.<ns>.events.<partition>``
(the account's partition, ``domain/events.partition_of``) into the JetStream stream ``PD_<NS>_EVENTS`` with
``Nats-Msg-Id`` set to the event id; the stream drops a copy it has already seen within its duplicate window, and
consumers apply events idempotently anyway (an ``account.changed`` makes the book re-read the account).

A risk shard subscribes to the partitions it owns (``partitions_of_shard``) with a durable consumer and so gets
exactly its accounts' events, in commit order per partition.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import orjson
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..domain.events import PARTITIONS, Event
from .subjects import Subjects

__all__ = [
    "DEFAULT_EVENTS_RETAIN_S",
    "decode_event",
    "encode_event",
    "ensure_events_stream",
    "event_subject",
    "events_stream",
]

DEFAULT_EVENTS_RETAIN_S = 7 * 86_400.0
DUPLICATE_WINDOW_S = 600.0


def event_subject(subjects: Subjects, partition: int) -> str:
    """``pd.<ns>.events.<partition>``."""
    if not 0 <= partition < PARTITIONS:
        raise ValueError(f"partition must be between 0 and {PARTITIONS - 1}")
    return f"{subjects.prefix}.events.{partition}"


def events_stream(subjects: Subjects) -> str:
    """``PD_<NS>_EVENTS``: every event, kept for ``DEFAULT_EVENTS_RETAIN_S`` (a shard down that long rebuilds from
    PostgreSQL anyway)."""
    return "PD_" + subjects.namespace.upper().replace("-", "_") + "_EVENTS"


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_json())


def decode_event(data: bytes) -> dict[str, Any]:
    """The event as JSON (``event_id``, ``type``, ``version``, ``account_id``, ``payload``, ``created_at``,
    ``position``); raises ValueError on anything that is not one."""
    try:
        out = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not an event: {exc}") from exc
    if not isinstance(out, dict) or not {"event_id", "type", "version", "payload"} <= set(out):
        raise ValueError("not an event: missing fields")
    uuid.UUID(str(out["event_id"]))
    return out


async def ensure_events_stream(js: JetStreamContext, subjects: Subjects, *, retain_s: float) -> None:
    """Create (or update) the events stream; idempotent, safe from several processes at once."""
    cfg = StreamConfig(
        name=events_stream(subjects),
        subjects=[f"{subjects.prefix}.events.*"],
        storage=StorageType.FILE,
        max_age=retain_s,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        description="PropDesk: committed account events from the outbox",
    )
    try:
        await js.stream_info(cfg.name or "")
        await js.update_stream(cfg)
    except NotFoundError:
        with contextlib.suppress(Exception):  # created concurrently by another process: the check below decides
            await js.add_stream(cfg)
        await js.stream_info(cfg.name or "")
