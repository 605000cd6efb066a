"""TOTP (identity/totp.py) against RFC 6238 appendix B, plus the window, replay and format rules."""

from __future__ import annotations

import base64

import pytest

from propdesk.identity import totp

# RFC 6238 appendix B: the SHA-1 seed is the ASCII string "12345678901234567890" (20 bytes).
RFC_SEED_SHA1 = b"12345678901234567890"
RFC_SEED_SHA256 = b"12345678901234567890123456789012"
RFC_SEED_SHA512 = b"1234567890123456789012345678901234567890123456789012345678901234"
RFC_SHA1_SECRET = base64.b32encode(RFC_SEED_SHA1).decode()

# (Unix time, the 8-digit TOTP of the appendix) for SHA-1, SHA-256 and SHA-512.
RFC_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("t", "sha1", "sha256", "sha512"), RFC_VECTORS)
def test_rfc6238_appendix_b_eight_digits(t: int, sha1: str, sha256: str, sha512: str) -> None:
    step = totp.step_of(t)
    assert totp.hotp(RFC_SEED_SHA1, step, 8) == sha1
    assert totp.hotp(RFC_SEED_SHA256, step, 8, "sha256") == sha256
    assert totp.hotp(RFC_SEED_SHA512, step, 8, "sha512") == sha512


@pytest.mark.parametrize(("t", "sha1"), [(v[0], v[1]) for v in RFC_VECTORS])
def test_rfc6238_sha1_vectors_at_six_digits(t: int, sha1: str) -> None:
    # Six digits are the same truncated value modulo 10^6: the last six digits of the appendix's eight.
    assert totp.code_at(RFC_SHA1_SECRET, t) == sha1[-6:]
    assert totp.verify(RFC_SHA1_SECRET, sha1[-6:], t) == totp.step_of(t)


def test_rfc4226_appendix_d_hotp_values() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
    assert [totp.hotp(RFC_SEED_SHA1, i) for i in range(10)] == expected


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    t = 1_700_000_015.0
    now = totp.step_of(t)
    for offset in (-1, 0, 1):
        code = totp.code_at(RFC_SHA1_SECRET, t + offset * 30)
        assert totp.verify(RFC_SHA1_SECRET, code, t) == now + offset
    for offset in (-2, 2):
        code = totp.code_at(RFC_SHA1_SECRET, t + offset * 30)
        assert totp.verify(RFC_SHA1_SECRET, code, t) is None


def test_a_spent_step_and_every_older_one_never_match_again() -> None:
    t = 1_700_000_015.0
    code = totp.code_at(RFC_SHA1_SECRET, t)
    step = totp.verify(RFC_SHA1_SECRET, code, t)
    assert step is not None
    assert totp.verify(RFC_SHA1_SECRET, code, t, after=step) is None
    previous = totp.code_at(RFC_SHA1_SECRET, t - 30)
    assert totp.verify(RFC_SHA1_SECRET, previous, t, after=step) is None
    following = totp.code_at(RFC_SHA1_SECRET, t + 30)
    assert totp.verify(RFC_SHA1_SECRET, following, t + 30, after=step) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", None, 123456, "12 34 5"])
def test_malformed_codes_never_match(code: object) -> None:
    assert totp.verify(RFC_SHA1_SECRET, code, 59) is None


def test_spaces_inside_a_code_are_ignored() -> None:
    code = totp.code_at(RFC_SHA1_SECRET, 59)
    assert totp.verify(RFC_SHA1_SECRET, f"{code[:3]} {code[3:]}", 59) == 1


def test_new_secrets_are_random_160_bit_base32() -> None:
    a, b = totp.new_secret(), totp.new_secret()
    assert a != b and len(a) == 32
    assert len(totp.decode_secret(a)) == 20
    assert totp.decode_secret(a.lower()) == totp.decode_secret(a)


@pytest.mark.parametrize("bad", ["", "not base32!", "AAAAAAA1"])
def test_a_bad_secret_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        totp.decode_secret(bad)


def test_the_provisioning_uri() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "boss@example.com")
    assert uri == "otpauth://totp/PropDesk:boss@example.com?secret=JBSWY3DPEHPK3PXP&issuer=PropDesk"
