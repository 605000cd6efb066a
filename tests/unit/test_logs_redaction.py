"""Secrets never reach a log line: by key anywhere in an event, inside free text, and in library log records."""

from __future__ import annotations

import logging

import pytest

from propdesk.logs import REDACTED, _RedactingFilter, redact_secrets, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://postgres:s3cr3t-Pw@127.0.0.1:5432/propdesk", "s3cr3t-Pw"),
        ("nats://propdesk:abcDEF123@127.0.0.1:4222, nats://u:other@h:1", "abcDEF123"),
        ("user=pdtest_engine password=hunter2 host=127.0.0.1", "hunter2"),
        ("PGPASSWORD=hunter2 pg_dump", "hunter2"),
        ("Authorization: Bearer svc_0123456789abcdef", "svc_0123456789abcdef"),
        ("smtps://mailer:mail-pass@smtp.example.com:465", "mail-pass"),
        ("otpauth://totp/PropDesk:a@example.com?secret=JBSWY3DPEHPK3PXP&issuer=PropDesk", "JBSWY3DPEHPK3PXP"),
    ],
)
def test_passwords_and_tokens_inside_text_are_redacted(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out and REDACTED in out


def test_secret_keys_are_redacted_anywhere_in_an_event_but_ids_and_plain_values_stay() -> None:
    event = {
        "event": "connected to postgresql://u:pw@h/db",
        "password": "hunter2",
        "api_key": "k",
        "details": {"session_token": "abc", "nested": [{"authorization": "Bearer x"}], "count": 3},
        "token_id": "tok_123",
        "account_id": "acc-1",
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["password"] == out["api_key"] == REDACTED
    assert out["details"]["session_token"] == REDACTED and out["details"]["nested"][0]["authorization"] == REDACTED
    assert out["details"]["count"] == 3 and out["token_id"] == "tok_123" and out["account_id"] == "acc-1"
    assert "pw" not in out["event"]


def test_library_log_records_are_redacted_too() -> None:
    record = logging.LogRecord(
        "psycopg.pool", logging.WARNING, __file__, 1, "connect to %s failed", ("postgresql://a:topsecret@h/db",), None
    )
    assert _RedactingFilter().filter(record)
    assert "topsecret" not in record.getMessage()


def test_totp_secrets_codes_and_uris_are_redacted_by_key() -> None:
    event = {
        "event": "enrolled",
        "totp_code": "123456",
        "totp_secret": "JBSWY3DPEHPK3PXP",
        "otpauth_uri": "otpauth://totp/PropDesk:a@example.com?secret=JBSWY3DPEHPK3PXP&issuer=PropDesk",
        "detail": {"secret": "JBSWY3DPEHPK3PXP", "otp": "123456", "code": "otpauth://x?secret=ABCDEFGHIJ"},
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["totp_code"] == out["totp_secret"] == out["otpauth_uri"] == REDACTED
    assert out["detail"]["secret"] == out["detail"]["otp"] == REDACTED
    assert "ABCDEFGHIJ" not in out["detail"]["code"]
