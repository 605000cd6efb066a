"""The bus client's header parser gives what nats-py's own gives, faster (every quote carries a header)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from propdesk.bus.client import _Client


@pytest.mark.parametrize(
    "raw",
    [
        b"Nats-Msg-Id: abc.12\r\n\r\n",
        b"Nats-Stream: Q\r\nNats-Subject: pd.x.quotes.EURUSD\r\nNats-Sequence: 12\r\n"
        b"Nats-Time-Stamp: 2026-01-01T00:00:00Z\r\n",
        b"A:B\r\nC:\tD \r\nno colon\r\nbad name: x\r\nbad\tname: y\r\n: empty\r\n"
        b"K: caf\xc3\xa9\r\nN\xc3\xa9: z\r\n\r\n",
        b"Dup: 1\r\nDup: 2\r\n",
        b"",
    ],
)
def test_fast_header_parser_matches_nats_py(raw: bytes) -> None:
    assert _Client._parse_header_lines(raw) == Client._parse_header_lines(raw)
