"""Outgoing mail: every message goes into ``email_outbox`` first, then is delivered and its outcome recorded.

Transport: SMTP (``aiosmtplib``) when ``PROPDESK_SMTP_URL`` is set —
``smtp://user:pass@host:port`` (plain, upgraded with ``?starttls=true``), ``smtps://...`` (TLS from the first
byte) — otherwise the console: the message (a reset link, say) is written as one log line on stderr, which is
how a local or demo install hands out links without a mail server.

Delivery status lives in the row: ``attempts`` counts tries, ``sent_at`` marks success (``transport`` says how),
``failed_at`` + ``error`` the last failure (no credentials in it). The admin panel counts these.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from .. import logs
from ..domain.clock import Clock

T = TypeVar("T")

MAX_ATTEMPTS = 5
SMTP_TIMEOUT_SECONDS = 15.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp[s]://[user[:pass]@]host[:port][?starttls=true]`` -> where and how to connect."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("PROPDESK_SMTP_URL must look like smtp://user:pass@host:587?starttls=true or smtps://host")
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
    use_tls = scheme == "smtps"
    start_tls = not use_tls and query.get("starttls", "false") in _TRUE
    port = parts.port or (465 if use_tls else 587 if start_tls else 25)
    return SmtpTarget(
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        use_tls,
        start_tls,
    )


class Mailer:
    """Queues messages in the outbox and delivers them (SMTP or console)."""

    def __init__(self, db: Any, clock: Clock, *, smtp_url: str | None, sender: str):
        self.db = db
        self.clock = clock
        self.smtp = parse_smtp_url(smtp_url) if smtp_url else None
        self.sender = sender
        self.log = logs.get("propdesk.mail")

    def queue(self, to: str, subject: str, body: str, kind: str) -> int:
        """Store a message; returns its outbox id (deliver it with ``deliver``)."""
        with self.db.tx() as c:
            row = c.execute(
                "INSERT INTO email_outbox (to_address, subject, body, kind, created_at)"
                " VALUES (%s,%s,%s,%s,%s) RETURNING id",
                (to, subject[:300], body, kind[:64], self.clock.now()),
            ).fetchone()
        return int(row["id"])

    def send(self, to: str, subject: str, body: str, kind: str) -> bool:
        """Queue and deliver at once (CLI and tests); True when delivered."""
        return self.deliver(self.queue(to, subject, body, kind))

    def deliver(self, outbox_id: int) -> bool:
        """Try one stored message once; the outcome is written to its row. Never raises for a delivery failure."""
        with self.db.read() as c:
            row = c.execute(
                "SELECT id, to_address, subject, body, kind, sent_at FROM email_outbox WHERE id=%s", (outbox_id,)
            ).fetchone()
        if row is None or row["sent_at"] is not None:
            return row is not None
        transport = "smtp" if self.smtp else "console"
        error: str | None = None
        try:
            if self.smtp is None:
                # No mail server configured: the console is the mailbox (reset links of a local install).
                self.log.warning(
                    "email_console", to=row["to_address"], subject=row["subject"], kind=row["kind"], body=row["body"]
                )
            else:
                _run_coroutine(self._smtp_send(self._message(row)))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            self.log.warning("email_failed", outbox_id=outbox_id, kind=row["kind"], error=error)
        now = self.clock.now()
        with self.db.tx() as c:
            if error is None:
                c.execute(
                    "UPDATE email_outbox SET attempts=attempts+1, sent_at=%s, transport=%s, error=NULL WHERE id=%s",
                    (now, transport, outbox_id),
                )
            else:
                c.execute(
                    "UPDATE email_outbox SET attempts=attempts+1, failed_at=%s, transport=%s, error=%s WHERE id=%s",
                    (now, transport, error, outbox_id),
                )
        return error is None

    def deliver_pending(self, limit: int = 100) -> tuple[int, int]:
        """Retry unsent messages under ``MAX_ATTEMPTS``; returns (sent, failed)."""
        with self.db.read() as c:
            ids = [
                r["id"]
                for r in c.execute(
                    "SELECT id FROM email_outbox WHERE sent_at IS NULL AND attempts < %s ORDER BY id LIMIT %s",
                    (MAX_ATTEMPTS, limit),
                ).fetchall()
            ]
        sent = sum(1 for i in ids if self.deliver(i))
        return sent, len(ids) - sent

    def _message(self, row: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = row["to_address"]
        msg["Subject"] = row["subject"]
        msg["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        msg["Message-ID"] = make_msgid(domain="propdesk.local")
        msg.set_content(row["body"])
        return msg

    async def _smtp_send(self, msg: EmailMessage) -> None:
        import aiosmtplib

        assert self.smtp is not None
        t = self.smtp
        await aiosmtplib.send(
            msg,
            hostname=t.host,
            port=t.port,
            username=t.username,
            password=t.password,
            use_tls=t.use_tls,
            start_tls=t.start_tls if t.start_tls else False,
            timeout=SMTP_TIMEOUT_SECONDS,
        )


def delivery_counts(conn: Any) -> dict[str, int]:
    """Outbox figures for the admin panel: queued (not yet tried), sent, failing (tried, not sent), total."""
    row = conn.execute(
        "SELECT count(*) AS total, count(sent_at) AS sent,"
        " count(*) FILTER (WHERE sent_at IS NULL AND attempts > 0) AS failing,"
        " count(*) FILTER (WHERE sent_at IS NULL AND attempts = 0) AS queued FROM email_outbox"
    ).fetchone()
    return {k: int(row[k]) for k in ("total", "sent", "failing", "queued")}


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, also when this thread already runs an event loop
    (``asyncio.run`` refuses that): then it runs on a short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp") as pool:
        return pool.submit(asyncio.run, coro).result()
