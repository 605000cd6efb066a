"""Cloudflare Turnstile: the sign-up bot check, on when ``PROPDESK_TURNSTILE_SECRET`` is set.

The page widget (``PROPDESK_TURNSTILE_SITEKEY``) hands the browser a token; sign-up POSTs it, with our secret
and the client's IP, to the siteverify endpoint (``PROPDESK_TURNSTILE_VERIFY_URL``) and goes on only when the
answer says ``success: true``. Any other answer, a timeout or a network error counts as a failed check (fail
closed): a bot wall that opens when Cloudflare is unreachable would be no wall.
"""

from __future__ import annotations

from typing import Any

import httpx

from .. import logs

TIMEOUT_SECONDS = 5.0
MAX_TOKEN_LENGTH = 2048  # Cloudflare documents tokens of at most 2048 characters


class Turnstile:
    """Verifies widget tokens against siteverify; ``enabled`` is False when no secret is configured."""

    def __init__(self, secret: str | None, verify_url: str, *, timeout: float = TIMEOUT_SECONDS):
        self.secret = secret
        self.verify_url = verify_url
        self.timeout = timeout
        self.log = logs.get("propdesk.turnstile")

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def verify(self, token: str | None, remote_ip: str | None = None) -> bool:
        """True when the check passes (always True when Turnstile is off)."""
        if not self.enabled:
            return True
        if not token or not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            return False
        form: dict[str, Any] = {"secret": self.secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        try:
            r = httpx.post(self.verify_url, data=form, timeout=self.timeout)
            body = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            self.log.warning("turnstile_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            return False
        ok = isinstance(body, dict) and body.get("success") is True
        if not ok:
            self.log.info(
                "turnstile_refused",
                status=r.status_code,
                codes=body.get("error-codes") if isinstance(body, dict) else None,
            )
        return ok
