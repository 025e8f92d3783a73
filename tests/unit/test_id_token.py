"""id_token validation rejects every mutation (security-checklist A7)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from chalicelib.oauth.errors import IdTokenInvalid
from chalicelib.oauth.id_token import unverified_claims, validate_id_token

ISSUER = "https://identity.xero.example"
CLIENT = "CLIENT-ID"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})


class FakeProvider:
    issuer = ISSUER

    def __init__(self) -> None:
        self.refreshes = 0

    def key_set(self, *, refresh: bool = False) -> KeySet:
        self.refreshes += int(refresh)
        return KeySet([KEY])


def _token(header: dict[str, Any] | None = None, key: Any = KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "exp": now + 300,
        "iat": now,
        "nonce": "nonce-1",
        "xero_userid": "u",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(header or {"alg": "RS256", "kid": "k1"}, claims, key)


def _validate(token: str) -> dict[str, Any]:
    return validate_id_token(token, provider=FakeProvider(), client_id=CLIENT, nonce="nonce-1")  # type: ignore[arg-type]


def test_a_good_token_passes() -> None:
    assert _validate(_token())["xero_userid"] == "u"
    assert _validate(_token(aud=[CLIENT, "other"], azp=CLIENT))["xero_userid"] == "u"


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": ISSUER + "/"},
        {"iss": None},
        {"aud": "someone-else"},
        {"aud": [CLIENT, "other"]},  # several audiences need azp
        {"aud": [CLIENT, "other"], "azp": "other"},
        {"exp": -120},  # seconds from now, resolved when the test runs (not at collection)
        {"exp": None},
        {"iat": 600},
        {"iat": -3600},
        {"nonce": "another"},
        {"nonce": None},
    ],
)
def test_each_claim_mutation_is_rejected(overrides: dict[str, Any]) -> None:
    # A long suite collects minutes before this runs: times are offsets from the moment of the test.
    now = int(time.time())
    resolved = {k: now + v if k in ("exp", "iat") and isinstance(v, int) else v for k, v in overrides.items()}
    with pytest.raises(IdTokenInvalid):
        _validate(_token(**resolved))


def test_hs256_signed_with_a_shared_secret_is_rejected() -> None:
    forged = _token({"alg": "HS256"}, OctKey.import_key("c2VjcmV0LWNsaWVudC1zZWNyZXQtdmFsdWUtMTIzNDU2Nzg5MA"))
    with pytest.raises(IdTokenInvalid):
        _validate(forged)


def test_alg_none_is_rejected() -> None:
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    payload = _token().split(".")[1]
    with pytest.raises(IdTokenInvalid):
        _validate(f"{header}.{payload}.")


def test_an_unknown_kid_refetches_once_then_fails() -> None:
    provider = FakeProvider()
    other = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    with pytest.raises(IdTokenInvalid):
        validate_id_token(
            _token({"alg": "RS256", "kid": "k2"}, other),
            provider=provider,
            client_id=CLIENT,
            nonce="nonce-1",  # type: ignore[arg-type]
        )
    assert provider.refreshes == 1


def test_unverified_claims_reads_the_access_token_payload() -> None:
    assert unverified_claims(_token(authentication_event_id="ae-1"))["authentication_event_id"] == "ae-1"
    with pytest.raises(IdTokenInvalid):
        unverified_claims("not-a-jwt")
