"""Structured JSON logs on stderr (stdout is reserved for machine-readable output)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

#: Keys whose values never reach a log line, wherever they appear in an event (nested too).
SECRET_KEYS = re.compile(
    r"(^|_)(password|passwd|secret|token|api_?key|authorization|cookie|session|signature|anchor_key|otp|totp|otpauth)"
    r"(?!_id$)($|_)",
    re.IGNORECASE,
)
# user:password@ in URLs (postgresql://, nats://, smtp://, ...), and bearer tokens in free text.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)
# ``secret=`` covers the query of an ``otpauth://totp/...?secret=...`` URI (a TOTP secret in free text).
_KV_PASSWORD = re.compile(r"\b(password|PGPASSWORD|secret)=\S+", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
REDACTED = "***"


def redact_text(text: str) -> str:
    """``text`` with URL passwords, ``password=...`` and ``secret=...`` pairs and bearer tokens replaced by
    ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    text = _KV_PASSWORD.sub(lambda m: m.group(1) + "=" + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_KEYS.search(k) else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: secrets never reach a log line (by key anywhere in the event, and inside text)."""
    for key in list(event):
        if key == "event":
            event[key] = _redact(event[key])
        elif SECRET_KEYS.search(key):
            event[key] = REDACTED
        else:
            event[key] = _redact(event[key])
    return event


def configure(level: str = "INFO", json: bool = True) -> None:
    """Configure structlog and the standard library to write one JSON object per line to stderr."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,  # after format_exc_info: a traceback's text is redacted too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    for handler in logging.getLogger().handlers:  # libraries log through the standard library: redact there too
        if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
            handler.addFilter(_RedactingFilter())


class _RedactingFilter(logging.Filter):
    """Applies :func:`redact_text` to a standard-library record's message (psycopg_pool, nats, uvicorn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def get(name: str = "propdesk") -> Any:
    return structlog.get_logger(name)
