"""A fake Finnhub REST server on an ephemeral 127.0.0.1 port, for the official ``finnhub-python`` client.

It speaks what the client sends: ``GET {API_URL}//calendar/economic?from=YYYY-MM-DD&to=YYYY-MM-DD&token=KEY``
(the client joins ``API_URL`` and ``/calendar/economic`` with a slash, hence the doubled one; repeated slashes
are collapsed). A wrong or missing token is a 401 ``{"error": "Invalid API key"}``; otherwise the response is
``{"economicCalendar": [{"actual","country","estimate","event","impact","prev","time","unit"}, ...]}`` with
the rows whose ``time`` falls in ``[from, to]`` (whole days), served as ``application/json``.

Provider trouble on demand: ``fake.fail_next(429, 500)`` answers the next two requests (whatever their token)
with those statuses and Finnhub's error bodies, then serves normally again.

    with FakeFinnhub(token="k") as fake:
        fake.events.append(fake.row("2026-03-02 13:30:00", "US", "Non-Farm Payrolls", "high"))
        finnhub.Client("k").API_URL = fake.base_url ...
"""

from __future__ import annotations

import json
import re
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

# What Finnhub says with its error statuses (the 429 text is the provider's own).
ERROR_BODIES = {
    429: "API limit reached. Please try again later. Remaining Limit: 0",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FakeFinnhub:
    def __init__(self, token: str = "test-key") -> None:
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                path = re.sub(r"/{2,}", "/", parts.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                fake.requests.append({"path": path, "query": query, "headers": dict(self.headers)})
                with fake._lock:
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure is not None:
                    self._send(failure, {"error": ERROR_BODIES.get(failure, "Internal Server Error")})
                elif query.get("token") != fake.token:
                    self._send(401, {"error": "Invalid API key"})
                elif path == "/api/v1/calendar/economic":
                    try:
                        lo, hi = date.fromisoformat(query["from"]), date.fromisoformat(query["to"])
                    except (KeyError, ValueError):
                        self._send(400, {"error": "from and to must be YYYY-MM-DD"})
                        return
                    rows = [e for e in fake.events if lo <= date.fromisoformat(str(e["time"])[:10]) <= hi]
                    self._send(200, {"economicCalendar": rows})
                else:
                    self._send(404, {"error": "Not found"})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-finnhub", daemon=True)

    def fail_next(self, *statuses: int) -> None:
        """Answer the next ``len(statuses)`` requests with these HTTP statuses, in order."""
        with self._lock:
            self.failures.extend(statuses)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/v1"

    @staticmethod
    def row(time: str, country: str, event: str, impact: str, **extra: Any) -> dict[str, Any]:
        """One calendar row in Finnhub's shape."""
        base: dict[str, Any] = {
            "actual": None,
            "country": country,
            "estimate": None,
            "event": event,
            "impact": impact,
            "prev": None,
            "time": time,
            "unit": "",
        }
        base.update(extra)
        return base

    def start(self) -> FakeFinnhub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeFinnhub:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
