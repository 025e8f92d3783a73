"""Signature verification: requests verified per second by ``chalicelib.tenants.signing.
verify_request`` (RFC 9421 HMAC-SHA256 through http-message-signatures, plus the broker's
policy checks and a nonce claim), against a bare ``hmac.new(secret, base, sha256)`` and
``compare_digest`` of the very signature base the vendor signed. No target: the library path is
expected to be far slower than one HMAC; the ratio says by how much.

Requests are signed up front with requests-http-signature (``GET`` of the search route, as a
vendor signs it), so signing is never timed. The baseline's HMAC is checked against each
request's ``Signature`` before timing, so both paths provably hash the same bytes.

Lines: ``memory_nonces`` uses an in-memory key resolver and a set as the nonce store (CPU cost
only); ``dynamo_nonces`` uses ``DynamoNonceStore`` against the moto server (one conditional
``PutItem`` per request, a loopback HTTP round trip here).
"""

from __future__ import annotations

import hashlib
import hmac
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import http_sf
import requests

from bench.context import RunContext
from bench.measure import Paired, alternate, timed
from bench.results import Outcome, Result

NAME = "signature_verification"
URL = "http://127.0.0.1:8000/v1/tenants/firm-1/xpm/clients?search=bloggs"
KEY_ID = "vk_benchmark"
SECRET = b"bench-secret-not-a-real-key-0123456789abcdef"


@dataclass(frozen=True)
class SignedMessage:
    method: str
    url: str
    headers: dict[str, str]
    base: bytes  # the RFC 9421 signature base the MAC covers
    mac: bytes  # the signature the vendor sent


class MemoryKeys:
    def __init__(self, key: Any) -> None:
        self._keys = {key.key_id: key}

    def resolve(self, key_id: str) -> Any:
        return self._keys.get(key_id)


class MemoryNonces:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def claim(self, key_id: str, nonce: str, expires_at: float) -> bool:
        entry = f"{key_id}#{nonce}"
        if entry in self._seen:
            return False
        self._seen.add(entry)
        return True


def signing_key() -> Any:
    from chalicelib.tenants.signing import SigningKey

    return SigningKey(key_id=KEY_ID, vendor_id="v_benchmark", secret=SECRET)


def sign_messages(count: int) -> list[SignedMessage]:
    from requests_http_signature import HTTPSignatureAuth, algorithms

    key = signing_key()
    messages = []
    for _ in range(count):
        prepared = requests.Request("GET", URL).prepare()
        HTTPSignatureAuth(
            key=SECRET, key_id=KEY_ID, signature_algorithm=algorithms.HMAC_SHA256, use_nonce=True
        )(prepared)
        headers = dict(prepared.headers.items())
        messages.append(_with_base(key, prepared.method or "GET", URL, headers))
    return messages


def _with_base(key: Any, method: str, url: str, headers: dict[str, str]) -> SignedMessage:
    """The signature base as the library rebuilds it (VerifyResult.covered_components)."""
    from chalicelib.tenants.signing import SignedRequest, build_verifier

    fields = {name.lower(): value for name, value in headers.items()}
    verifier = build_verifier(key, now=time.time())
    (result,) = verifier.verify(SignedRequest(method, url, fields), max_age=None)
    base = "\n".join(f"{name}: {value}" for name, value in result.covered_components.items()).encode()
    mac = _signature_bytes(fields["signature"])
    if not hmac.compare_digest(hmac.new(SECRET, base, hashlib.sha256).digest(), mac):
        raise RuntimeError("the rebuilt signature base does not match the vendor's signature")
    return SignedMessage(method, url, headers, base, mac)


def _signature_bytes(field: str) -> bytes:
    """The MAC of a one-member ``Signature`` dictionary (``sig1=:base64:``)."""
    parsed = http_sf.parse(field.encode(), tltype="dictionary")
    assert isinstance(parsed, dict) and len(parsed) == 1, field
    value = next(iter(parsed.values()))
    assert isinstance(value, tuple) and isinstance(value[0], bytes), field
    return value[0]


def verify_all(messages: list[SignedMessage], keys: Any, nonces: Any) -> None:
    from chalicelib.tenants.signing import verify_request

    for message in messages:
        verify_request(
            method=message.method,
            target_uris=[message.url],
            headers=message.headers,
            body=b"",
            keys=keys,
            nonces=nonces,
            now=time.time(),
        )


def hmac_all(messages: list[SignedMessage]) -> None:
    for message in messages:
        if not hmac.compare_digest(hmac.new(SECRET, message.base, hashlib.sha256).digest(), message.mac):
            raise RuntimeError("HMAC mismatch")


def run(context: RunContext) -> list[Outcome]:
    return [_memory_line(context), _dynamo_line(context)]


def _memory_line(context: RunContext) -> Result:
    batch = 300 if context.quick else 1_000
    messages, keys = sign_messages(batch), MemoryKeys(signing_key())
    verify_all(messages, keys, MemoryNonces())  # warm-up, and proof that every message verifies
    rounds = context.rounds(9)
    paired = alternate(
        rounds,
        _per_request(lambda: hmac_all(messages), batch),
        _per_request(lambda: verify_all(messages, keys, MemoryNonces()), batch),
    )
    return _result(f"{NAME}.memory_nonces", paired, batch, "in-memory key resolver and nonce set")


def _dynamo_line(context: RunContext) -> Result:
    from chalicelib.config import get_settings
    from chalicelib.tenants.nonces import DynamoNonceStore

    context.stack()  # moto with the broker's tables
    batch, rounds = (25 if context.quick else 100), context.rounds(7)
    batches = [sign_messages(batch) for _ in range(rounds + 1)]  # nonces are single use
    keys, store = MemoryKeys(signing_key()), DynamoNonceStore(get_settings())
    verify_all(batches.pop(), keys, store)  # warm-up: the PynamoDB connection
    fresh = iter(batches)
    paired = alternate(
        rounds,
        _per_request(lambda: hmac_all(batches[0]), batch),
        _per_request(lambda: verify_all(next(fresh), keys, store), batch),
    )
    return _result(f"{NAME}.dynamo_nonces", paired, batch, "DynamoNonceStore on the moto server")


def _per_request(operation: Callable[[], object], batch: int) -> Callable[[], float]:
    return lambda: timed(operation) / batch


def _result(name: str, paired: Paired, batch: int, nonces: str) -> Result:
    measured, baseline = statistics.median(paired.measured), statistics.median(paired.baseline)
    return Result(
        name=name,
        ratio=paired.median_ratio(),
        target=None,
        median_seconds=measured,
        baseline_median_seconds=baseline,
        spread=paired.spread(),
        round_ratios=paired.ratios,
        rounds=paired.rounds,
        parameters={
            "request": f"GET {URL} signed by requests-http-signature (hmac-sha256, nonce)",
            "requests_per_round": batch,
            "measured": f"verify_request, one target URI, {nonces}",
            "baseline": "hmac.new(secret, signature base, sha256).digest() + compare_digest",
        },
        metrics={"verified_per_second": 1 / measured, "bare_hmac_per_second": 1 / baseline},
        note=f"{1 / measured:,.0f} verified requests/s vs {1 / baseline:,.0f} bare HMACs/s ({nonces})",
    )
