"""Opening the price bus for a process: the server (``NATS_URL`` or the embedded one), the connection, the
database's registration of the bus, and the process's quote store attached to it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .bridge import PriceBus
from .client import endpoint_from_url, redact
from .embedded import EmbeddedNats
from .quotes import DEFAULT_RETAIN_S
from .registration import identity_of, register
from .subjects import Subjects

__all__ = ["open_bus"]

_log = logging.getLogger(__name__)


def open_bus(
    db: Any,
    store: Any,
    *,
    nats_url: str | None,
    data_dir: Path,
    namespace: str | None = None,
    retain_s: float = DEFAULT_RETAIN_S,
    name: str = "propdesk",
) -> tuple[PriceBus, EmbeddedNats | None]:
    """Connect this process to its database's price bus and attach ``store`` to it.

    With ``nats_url`` unset, the embedded nats-server of ``data_dir`` (``<data_dir>/nats``) is started or joined.
    The bus is registered in the database on first use; a process connected to another bus (or asking for another
    ``namespace``) raises :class:`~propdesk.bus.registration.BusMismatchError` before touching any price.
    Returns the bus (close it) and the embedded server handle when one is used (``release()`` it after).
    """
    embedded = None
    if nats_url:
        endpoint = endpoint_from_url(nats_url)
    else:
        embedded = EmbeddedNats(Path(data_dir).resolve() / "nats")
        endpoint = embedded.start()
    bus = PriceBus(endpoint, name=name, retain_s=retain_s)
    try:
        bus.connect()
        registered = register(db, identity_of(bus.server_info), namespace=namespace, url_hint=redact(endpoint.url))
        bus.attach(Subjects(registered.namespace), store)
    except BaseException:
        bus.close()
        if embedded is not None:
            embedded.release()
        raise
    _log.info("price bus attached: %s namespace %s", registered.server_identity, registered.namespace)
    return bus, embedded
