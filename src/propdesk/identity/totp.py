"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 30-second steps, 6 digits, base32
secrets, as every authenticator app expects from an ``otpauth://totp/`` URI. Pure functions of their arguments
(the caller passes the time); only ``new_secret`` draws randomness.

``verify`` answers the time step a code matched (within ``window`` steps either side of ``at``, and strictly after
``after``, the last step the user already spent) or None; the caller stores that step so a code works only once.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20  # 160 bits, the HMAC-SHA1 block-size recommendation of RFC 4226 section 4
ISSUER = "PropDesk"


def new_secret() -> str:
    """A fresh random secret in base32 (32 characters, no padding)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def decode_secret(secret: str) -> bytes:
    """The key bytes of a base32 secret (case, spaces and missing padding tolerated); ``ValueError`` if invalid."""
    cleaned = "".join(secret.split()).upper().rstrip("=")
    if not cleaned or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in cleaned):
        raise ValueError("not a base32 secret")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded)
    except ValueError:  # binascii.Error is a ValueError
        raise ValueError("not a base32 secret") from None


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 HOTP of ``counter`` under ``key``: ``digits`` decimal digits (dynamic truncation)."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def step_of(unix_seconds: float) -> int:
    """The RFC 6238 time step (T0 = 0, X = 30 s) containing ``unix_seconds``."""
    return int(unix_seconds // STEP_SECONDS)


def code_at(secret: str, unix_seconds: float, digits: int = DIGITS) -> str:
    """The code an authenticator shows at ``unix_seconds`` for a base32 ``secret``."""
    return hotp(decode_secret(secret), step_of(unix_seconds), digits)


def well_formed(code: object) -> bool:
    """Is ``code`` six ASCII digits (spaces ignored)?"""
    return isinstance(code, str) and len(_clean(code)) == DIGITS and _clean(code).isascii() and _clean(code).isdigit()


def _clean(code: str) -> str:
    return "".join(code.split())


def verify(secret: str, code: object, unix_seconds: float, *, window: int = 1, after: int | None = None) -> int | None:
    """The time step ``code`` is valid for, within ``window`` steps of ``unix_seconds``, or None.

    Steps at or before ``after`` (the last accepted step) never match: a code, once accepted, is refused ever
    after, and so is any older one. Every candidate is compared in constant time.
    """
    if not well_formed(code):
        return None
    assert isinstance(code, str)
    given = _clean(code).encode()
    key = decode_secret(secret)
    now = step_of(unix_seconds)
    found: int | None = None
    for step in range(now - window, now + window + 1):
        if step < 0 or (after is not None and step <= after):
            continue
        if hmac.compare_digest(hotp(key, step).encode(), given) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """``otpauth://totp/<issuer>:<account>?secret=...&issuer=<issuer>`` (the Key URI format authenticators read)."""
    label = quote(f"{issuer}:{account}", safe=":@")
    return f"otpauth://totp/{label}?" + urlencode({"secret": secret, "issuer": issuer})
