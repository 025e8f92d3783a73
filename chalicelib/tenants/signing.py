"""RFC 9421 verification of vendor requests (contract.md §4; security-checklist.md B1-B8).

Pure: the only I/O goes through the ``KeyResolver`` and ``NonceStore`` ports. The signature
base, the HMAC and the Content-Digest check are the ``http-message-signatures`` library's (it
compares in constant time, B4); this module adds the policy RFC 9421 leaves to the verifier:
one signature, required parameters and components, the ±300 s window, single-use nonces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import http_sf
from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    VerifyResult,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from chalicelib.errors import BrokerError

ALGORITHM = algorithms.HMAC_SHA256.algorithm_id  # "hmac-sha256", contract §4
REQUIRED_COMPONENTS = ("@method", "@authority", "@target-uri")
BODY_COMPONENT = "content-digest"
MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 256 * 1024
REJECTION_DETAIL = "The request signature is missing, invalid, expired or replayed."

# B1 bounds (our choices): far above what requests-http-signature sends, far below abuse.
_FIELD_LIMITS = {"signature-input": 2048, "signature": 512, BODY_COMPONENT: 512}
_MAX_COMPONENTS = 24
_METADATA = frozenset({"alg", "created", "expires", "keyid", "nonce", "tag"})
_KEY_ID = re.compile(r"[A-Za-z0-9_.~:-]{1,128}")
# 22 = secrets.token_urlsafe(16), what requests-http-signature sends; "#" is excluded so that
# "{key_id}#{nonce}" is an unambiguous nonce-table key.
_NONCE = re.compile(r"[A-Za-z0-9_.~+/=-]{22,128}")


@dataclass(frozen=True)
class SigningKey:
    """An active vendor key.

    ``secret`` is the HMAC key: the ASCII bytes of the ``key_secret`` string the CLI prints
    (``key_secret.encode()``), exactly what a vendor passes to ``HTTPSignatureAuth(key=...)``;
    it is never base64-decoded.
    """

    key_id: str
    vendor_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret (C4)
        return f"SigningKey(key_id={self.key_id!r}, vendor_id={self.vendor_id!r})"


class KeyResolver(Protocol):
    def resolve(self, key_id: str) -> SigningKey | None:
        """The active key, or None when it is unknown, revoked or expired (B7)."""


class NonceStore(Protocol):
    def claim(self, key_id: str, nonce: str, expires_at: float) -> bool:
        """Record the nonce until ``expires_at``; False when it was seen before (B6)."""


class SignatureRejected(BrokerError):
    """Every signature failure renders the same 401 (B8); ``reason`` is for internal logs only."""

    def __init__(self, reason: str, *, key_id: str | None = None) -> None:
        super().__init__(
            "invalid_signature",
            401,
            "Invalid signature",
            REJECTION_DETAIL,
            headers={
                "WWW-Authenticate": 'Signature realm="xpm-broker"',
                # RFC 9421 §5.1: what an acceptable signature covers.
                "Accept-Signature": (
                    f'sig1=("@method" "@authority" "@target-uri" "{BODY_COMPONENT}")'
                    f';created;nonce;alg="{ALGORITHM}"'
                ),
            },
        )
        self.reason = reason
        self.key_id = key_id


def payload_too_large(max_body: int) -> BrokerError:
    return BrokerError(
        "payload_too_large", 413, "Payload too large", f"The request body exceeds {max_body} bytes."
    )


@dataclass(frozen=True)
class SignedRequest:
    """The message shape the library reads: an uppercase method, an encoded absolute URL, headers."""

    method: str
    url: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _SignatureInput:
    key_id: str
    nonce: str
    created: int
    components: frozenset[str]  # bare names covered without component parameters


def verify_request(
    *,
    method: str,
    target_uris: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    keys: KeyResolver,
    nonces: NonceStore,
    now: float,
    max_skew: int = MAX_SKEW_SECONDS,
    max_body: int = MAX_BODY_BYTES,
) -> SigningKey:
    """The key that signed this request, or ``SignatureRejected``; the nonce is spent on success.

    ``target_uris`` are the spellings of the URL the vendor may have signed
    (``request_target.target_uri_candidates``): the signature must verify for one of them.
    """
    if len(body) > max_body:  # B3: refuse before hashing
        raise payload_too_large(max_body)
    fields = _header_fields(headers)
    signed = _read_signature_input(fields, body=body, now=now, max_skew=max_skew)
    key = keys.resolve(signed.key_id)
    if key is None:  # B7: unknown, revoked and expired keys look alike
        raise SignatureRejected("unknown, revoked or expired key", key_id=signed.key_id)
    verifier = build_verifier(key, now=now, max_skew=max_skew)
    message, results = _verify_mac(verifier, method, target_uris, fields, key_id=signed.key_id)
    _verify_body(verifier, message, results, body, key_id=signed.key_id)
    # B6: only an authenticated request may write, so unsigned junk cannot fill the table. The
    # record outlives the window (created + max_skew) with margin; a later replay fails B2 anyway.
    if not nonces.claim(key.key_id, signed.nonce, signed.created + 2 * max_skew):
        raise SignatureRejected("nonce already used", key_id=signed.key_id)
    return key


def build_verifier(key: SigningKey, *, now: float, max_skew: int = MAX_SKEW_SECONDS) -> HTTPMessageVerifier:
    """The library's HMAC-SHA256 verifier, trusting only ``key`` and judging time by ``now``."""
    return _PinnedClockVerifier(key, now=now, max_skew=max_skew)


class _OneKeyResolver(HTTPSignatureKeyResolver):
    def __init__(self, key: SigningKey) -> None:
        self._key = key

    def resolve_public_key(self, key_id: str) -> bytes | None:
        return self._key.secret if key_id == self._key.key_id else None

    def resolve_private_key(self, key_id: str) -> bytes:
        raise HTTPMessageSignaturesException("the broker verifies; it never signs as a vendor")


class _PinnedClockVerifier(HTTPMessageVerifier):
    """The library checks ``created`` against the wall clock with 5 s of skew; B2 wants ±300 s
    against the caller's clock, in both directions (so tests can freeze time)."""

    def __init__(self, key: SigningKey, *, now: float, max_skew: int) -> None:
        super().__init__(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_OneKeyResolver(key))
        self._now = now
        self._max_skew = max_skew

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        problem = _timing_problem(sig_input.params, now=self._now, max_skew=self._max_skew)
        if problem:
            raise InvalidSignature(problem)


def _header_fields(headers: Mapping[str, str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in fields:  # B1: two spellings of one field are a duplicate
            raise SignatureRejected(f"duplicated header field {lowered}")
        if len(value) > _FIELD_LIMITS.get(lowered, len(value)):  # B1: absurd sizes
            raise SignatureRejected(f"oversized header field {lowered}")
        fields[lowered] = value
    return fields


def _read_signature_input(
    fields: Mapping[str, str], *, body: bytes, now: float, max_skew: int
) -> _SignatureInput:
    """B1/B2/B5 checks that need no key, so malformed or stale requests never reach a lookup."""
    inputs = _parse_dictionary(fields, "signature-input")
    values = _parse_dictionary(fields, "signature")
    if len(inputs) != 1 or set(inputs) != set(values):
        raise SignatureRejected("exactly one signature label is accepted")
    member = next(iter(inputs.values()))
    if not (isinstance(member, tuple) and isinstance(member[0], list)):
        raise SignatureRejected("Signature-Input member is not an inner list")
    items, params = member
    key_id = params.get("keyid")
    problem = _parameter_problem(params) or _timing_problem(params, now=now, max_skew=max_skew)
    if problem:
        raise SignatureRejected(problem, key_id=key_id if isinstance(key_id, str) else None)
    assert isinstance(key_id, str)
    components = _covered_components(items)
    _require_coverage(components, fields, body=body, key_id=key_id)
    return _SignatureInput(key_id, params["nonce"], params["created"], components)


def _parse_dictionary(fields: Mapping[str, str], name: str) -> dict[str, Any]:
    if name not in fields:
        raise SignatureRejected(f"missing {name} header field")

    def reject_duplicate(key: str, context: str) -> None:
        raise ValueError(f"duplicate {context} key {key}")

    try:
        parsed = http_sf.parse(
            fields[name].encode("ascii"), tltype="dictionary", on_duplicate_key=reject_duplicate
        )
    except (ValueError, TypeError, UnicodeError):  # StructuredFieldError is a ValueError
        raise SignatureRejected(f"malformed {name} header field") from None
    assert isinstance(parsed, dict)
    return parsed


def _parameter_problem(params: Mapping[str, Any]) -> str | None:
    unknown = set(params) - _METADATA
    if unknown:
        return "unknown signature parameter"
    if not (isinstance(params.get("keyid"), str) and _KEY_ID.fullmatch(params["keyid"])):
        return "missing or malformed keyid"
    if not (isinstance(params.get("nonce"), str) and _NONCE.fullmatch(params["nonce"])):
        return "missing or malformed nonce"
    if "alg" in params and params["alg"] != ALGORITHM:  # contract §4: hmac-sha256 only
        return "algorithm is not hmac-sha256"
    return None


def _timing_problem(params: Mapping[str, Any], *, now: float, max_skew: int) -> str | None:
    created, expires = params.get("created"), params.get("expires")
    if type(created) is not int:  # bool is an int subclass; sf Booleans are not timestamps
        return "missing or malformed created"
    if created < now - max_skew:  # B2: too old ...
        return f"created more than {max_skew} s in the past"
    if created > now + max_skew:  # ... and too new (Standard Webhooks checks both; Stripe only the past)
        return f"created more than {max_skew} s in the future"
    if expires is not None and (type(expires) is not int or expires < now):
        return "signature expired"
    return None


def _covered_components(items: list[Any]) -> frozenset[str]:
    if not 0 < len(items) <= _MAX_COMPONENTS:
        raise SignatureRejected("too many or no covered components")
    names = []
    for value, component_params in items:
        if not isinstance(value, str):
            raise SignatureRejected("covered component is not a string")
        if not component_params:
            names.append(value)
    return frozenset(names)


def _require_coverage(
    components: frozenset[str], fields: Mapping[str, str], *, body: bytes, key_id: str
) -> None:
    """B5: the signature must bind method, host and full URL; B3: and the body through its digest."""
    missing = [name for name in REQUIRED_COMPONENTS if name not in components]
    if missing:
        raise SignatureRejected(f"signature does not cover {' '.join(missing)}", key_id=key_id)
    if body and (BODY_COMPONENT not in components or BODY_COMPONENT not in fields):
        raise SignatureRejected("body without a signed Content-Digest", key_id=key_id)


def _verify_mac(
    verifier: HTTPMessageVerifier,
    method: str,
    target_uris: Sequence[str],
    fields: Mapping[str, str],
    *,
    key_id: str,
) -> tuple[SignedRequest, list[VerifyResult]]:
    """The first candidate URI under which the library accepts the MAC (compared in constant time)."""
    for uri in dict.fromkeys(target_uris):
        message = SignedRequest(method=method, url=uri, headers=fields)
        try:
            results = verifier.verify(message, max_age=None, require_components=REQUIRED_COMPONENTS)
        except HTTPMessageSignaturesException:
            continue
        return message, results
    raise SignatureRejected(
        f"signature does not verify for any of {len(target_uris)} candidate target URIs", key_id=key_id
    )


def _verify_body(
    verifier: HTTPMessageVerifier,
    message: SignedRequest,
    results: list[VerifyResult],
    body: bytes,
    *,
    key_id: str,
) -> None:
    """B3: the digest is checked over the raw bytes, after the MAC proved the digest field is signed."""
    try:
        verifier.verify_body(message, results, body)
    except HTTPMessageSignaturesException as error:
        raise SignatureRejected(f"content digest rejected: {error}", key_id=key_id) from None
