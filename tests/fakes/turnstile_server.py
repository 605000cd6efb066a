"""A stand-in for Cloudflare Turnstile's siteverify endpoint on an ephemeral 127.0.0.1 port.

It speaks the real protocol: ``POST`` form-encoded ``secret``, ``response`` (the widget token) and optional
``remoteip``; answers ``application/json`` ``{"success": bool, "error-codes": [...], "challenge_ts", "hostname"}``.
A wrong secret is ``invalid-input-secret``; a token not in ``valid_tokens`` is ``invalid-input-response``; a token
used twice is ``timeout-or-duplicate`` (Cloudflare's tokens are single-use). ``fail_with`` forces an HTTP status.

    with FakeTurnstile(secret="s", valid_tokens={"ok-token"}) as fake:
        settings.turnstile_verify_url = fake.url
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs


class FakeTurnstile:
    def __init__(self, secret: str = "test-secret", valid_tokens: set[str] | None = None) -> None:
        self.secret = secret
        self.valid_tokens = set(valid_tokens or {"pass-token"})
        self.used: set[str] = set()
        self.requests: list[dict[str, str]] = []
        self.fail_with: int | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                form = {k: v[-1] for k, v in parse_qs(raw).items()}
                fake.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type", ""), **form})
                if fake.fail_with is not None:
                    self._send(fake.fail_with, {"success": False, "error-codes": ["internal-error"]})
                    return
                codes: list[str] = []
                if form.get("secret") != fake.secret:
                    codes.append("invalid-input-secret" if form.get("secret") else "missing-input-secret")
                token = form.get("response")
                if not token:
                    codes.append("missing-input-response")
                elif token in fake.used:
                    codes.append("timeout-or-duplicate")
                elif token not in fake.valid_tokens:
                    codes.append("invalid-input-response")
                if not codes and token:
                    fake.used.add(token)
                body: dict[str, Any] = {"success": not codes, "error-codes": codes}
                if not codes:
                    body.update({"challenge_ts": "2026-03-02T10:00:00.000Z", "hostname": "localhost"})
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/turnstile/v0/siteverify"

    def __enter__(self) -> FakeTurnstile:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
