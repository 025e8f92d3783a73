"""Envelope encryption against local KMS (moto server): context binding, tampering, caching."""

from __future__ import annotations

import pytest

from chalicelib.config import get_settings
from chalicelib.crypto import DecryptionError, EnvelopeCipher, get_cipher, reset_cipher
from xpmb.bootstrap import bootstrap


@pytest.fixture
def cipher(local_aws: str) -> EnvelopeCipher:
    bootstrap(get_settings())
    reset_cipher()
    return get_cipher()


def _context(record: str) -> dict[str, str]:
    return {"app": "xpm-broker", "purpose": "xero-token-set", "vendor_id": "v_1", "record": record}


def test_round_trip_and_no_plaintext_in_the_envelope(cipher: EnvelopeCipher) -> None:
    secret = b"refresh-token-canary-7f3a9c"
    envelope = cipher.encrypt(secret, _context("grant-a"))
    assert envelope.startswith("v1.")
    assert b"canary" not in envelope.encode()
    assert cipher.decrypt(envelope, _context("grant-a")) == secret


def test_a_ciphertext_copied_into_another_row_fails_to_decrypt(cipher: EnvelopeCipher) -> None:
    envelope = cipher.encrypt(b"token of grant a", _context("grant-a"))
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, _context("grant-b"))
    other_purpose = {**_context("grant-a"), "purpose": "vendor-api-key"}
    with pytest.raises(DecryptionError):
        cipher.decrypt(envelope, other_purpose)


def test_the_context_is_enforced_by_kms_too_not_only_by_the_cache(local_aws: str) -> None:
    bootstrap(get_settings())
    reset_cipher()
    writer = get_cipher()
    envelope = writer.encrypt(b"x", _context("grant-a"))
    reset_cipher()  # a cold container: no cached data key
    with pytest.raises(DecryptionError):
        get_cipher().decrypt(envelope, _context("grant-b"))


def test_tampered_or_malformed_envelopes_fail_closed(cipher: EnvelopeCipher) -> None:
    envelope = cipher.encrypt(b"payload", _context("grant-a"))
    version, wrapped, nonce, body = envelope.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (f"{version}.{wrapped}.{nonce}.{flipped}", "v2." + envelope[3:], "garbage", ""):
        with pytest.raises(DecryptionError):
            cipher.decrypt(bad, _context("grant-a"))


def test_data_keys_are_cached_for_reads(cipher: EnvelopeCipher) -> None:
    envelope = cipher.encrypt(b"payload", _context("grant-a"))
    calls = cipher.kms_calls
    for _ in range(5):
        cipher.decrypt(envelope, _context("grant-a"))
    assert cipher.kms_calls == calls  # the data key from the write is reused


def test_an_expired_cache_entry_goes_back_to_kms(local_aws: str) -> None:
    from chalicelib.aws import aws_client

    bootstrap(get_settings())
    now = [0.0]
    cipher = EnvelopeCipher(
        lambda: aws_client("kms"), get_settings().kms_key_id, cache_seconds=10, clock=lambda: now[0]
    )
    envelope = cipher.encrypt(b"payload", _context("grant-a"))
    calls = cipher.kms_calls
    now[0] = 11.0
    assert cipher.decrypt(envelope, _context("grant-a")) == b"payload"
    assert cipher.kms_calls == calls + 1


def test_a_context_without_purpose_is_refused(cipher: EnvelopeCipher) -> None:
    with pytest.raises(ValueError, match="purpose"):
        cipher.encrypt(b"x", {"vendor_id": "v_1"})
