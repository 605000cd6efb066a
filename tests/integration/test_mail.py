"""Mail: the outbox records every message and its delivery; SMTP against a real aiosmtpd server on loopback
(plain and with authentication); the console transport when no SMTP URL is set; failures recorded, retried."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from tests.web_kit import csrf_headers, make_user, open_test_platform, web_client

from propdesk.notify.mail import Mailer, delivery_counts, parse_smtp_url


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def smtp_auth() -> Iterator[tuple[Inbox, int]]:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"mailer" and data.password == b"s3cret pass"
        return AuthResult(success=ok)

    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def outbox(platform: Any) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        return list(c.execute("SELECT * FROM email_outbox ORDER BY id").fetchall())


def test_smtp_urls_are_parsed_with_their_tls_mode() -> None:
    t = parse_smtp_url("smtp://user%40x:p%20w@mail.example.com:2525?starttls=true")
    assert (t.host, t.port, t.username, t.password, t.use_tls, t.start_tls) == (
        "mail.example.com",
        2525,
        "user@x",
        "p w",
        False,
        True,
    )
    assert parse_smtp_url("smtps://mail.example.com").port == 465 and parse_smtp_url("smtps://h").use_tls
    assert parse_smtp_url("smtp://h").port == 25 and parse_smtp_url("smtp://h?starttls=1").port == 587
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example.com")


def test_a_reset_link_is_mailed_over_smtp_and_recorded_as_sent(
    db_url: str, clock: Any, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    p = open_test_platform(
        db_url,
        clock,
        smtp_url=f"smtp://127.0.0.1:{port}",
        smtp_from="Desk <desk@example.com>",
        public_url="https://desk.example.com",
    )
    try:
        make_user(p, "t@example.com")
        with web_client(p, base_url="https://desk.example.com", headers=csrf_headers(p)) as c:
            assert c.post("/api/v1/auth/password-reset", json={"email": "t@example.com"}).status_code == 202
        assert len(inbox.messages) == 1
        sender, rcpts, msg = inbox.messages[0]
        assert sender == "desk@example.com" and rcpts == ["t@example.com"]
        assert msg["Subject"] == "Reset your PropDesk password"
        assert "https://desk.example.com/reset?token=" in msg.get_payload(decode=True).decode()
        row = outbox(p)[0]
        assert row["sent_at"] == clock.now() and row["attempts"] == 1 and row["transport"] == "smtp"
        assert row["failed_at"] is None and row["kind"] == "password_reset"
        with p.db.read() as conn:
            assert delivery_counts(conn) == {"total": 1, "sent": 1, "failing": 0, "queued": 0}
    finally:
        p.close()


# Plain-text AUTH is fine on loopback in a test (aiosmtpd warns per connection); real URLs use starttls or smtps.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_authentication_is_used_when_the_url_has_credentials(
    database: Any, clock: Any, smtp_auth: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_auth
    good = Mailer(database, clock, smtp_url=f"smtp://mailer:s3cret%20pass@127.0.0.1:{port}", sender="d@example.com")
    assert good.send("t@example.com", "Hello", "body", "test") is True
    assert len(inbox.messages) == 1
    bad = Mailer(database, clock, smtp_url=f"smtp://mailer:wrong@127.0.0.1:{port}", sender="d@example.com")
    assert bad.send("t@example.com", "Hello", "body", "test") is False
    assert len(inbox.messages) == 1


def test_a_failed_delivery_is_recorded_without_credentials_and_retried(
    database: Any, clock: Any, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    down = Mailer(database, clock, smtp_url=f"smtp://user:topsecret@127.0.0.1:{_free_port()}", sender="d@x.com")
    assert down.send("t@example.com", "Hi", "body", "test") is False
    with database.read() as c:
        row = c.execute("SELECT * FROM email_outbox").fetchone()
        assert delivery_counts(c)["failing"] == 1
    assert row["failed_at"] is not None and row["sent_at"] is None and row["attempts"] == 1
    assert row["error"] and "topsecret" not in row["error"]
    up = Mailer(database, clock, smtp_url=f"smtp://127.0.0.1:{port}", sender="d@x.com")
    assert up.deliver_pending() == (1, 0)
    with database.read() as c:
        row = c.execute("SELECT * FROM email_outbox").fetchone()
    assert row["sent_at"] is not None and row["attempts"] == 2 and len(inbox.messages) == 1
    assert up.deliver_pending() == (0, 0)  # nothing is sent twice


def test_without_smtp_the_link_goes_to_the_console_log(platform_no_smtp: Any, capsys: Any) -> None:
    p = platform_no_smtp
    make_user(p, "t@example.com")
    with web_client(p, headers=csrf_headers(p)) as c:
        assert c.post("/api/v1/auth/password-reset", json={"email": "t@example.com"}).status_code == 202
    row = outbox(p)[0]
    assert row["transport"] == "console" and row["sent_at"] is not None
    captured = capsys.readouterr()
    assert "/reset?token=" in captured.err + captured.out


@pytest.fixture
def platform_no_smtp(db_url: str, clock: Any) -> Iterator[Any]:
    p = open_test_platform(db_url, clock)
    yield p
    p.close()
