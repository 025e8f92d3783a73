"""Authenticate a signed ``/v1`` request from its Lambda proxy event (contract.md §4).

Routes call ``authenticate`` with ``app.current_request`` pieces; this module stays free of
Chalice so the CLI and tests can call it with a plain event dict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from chalicelib.config import Settings
from chalicelib.tenants.request_target import target_uri_candidates_for_event
from chalicelib.tenants.signing import KeyResolver, NonceStore, SignatureRejected, SigningKey, verify_request

logger = logging.getLogger("xpmb.auth")

# Fields whose repetition would let a proxy and the verifier read different values (B1).
_SINGLE_FIELDS = frozenset({"signature-input", "signature", "content-digest"})


def authenticate(
    method: str,
    event_dict: Mapping[str, Any],
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: KeyResolver,
    nonces: NonceStore,
    settings: Settings,
    now: float | None = None,
) -> SigningKey:
    """The vendor key that signed this request; ``SignatureRejected`` (401) otherwise."""
    try:
        _reject_repeated_fields(event_dict)
        return verify_request(
            method=method,
            target_uris=target_uri_candidates_for_event(settings.public_url, event_dict),
            headers=headers,
            body=body,
            keys=keys,
            nonces=nonces,
            now=time.time() if now is None else now,
        )
    except SignatureRejected as rejection:
        _log_rejection(rejection, method, event_dict)
        raise


def _reject_repeated_fields(event_dict: Mapping[str, Any]) -> None:
    # API Gateway keeps the last value in "headers" and all of them in "multiValueHeaders".
    for name, values in (event_dict.get("multiValueHeaders") or {}).items():
        if name.lower() in _SINGLE_FIELDS and len(values) > 1:
            raise SignatureRejected(f"repeated {name.lower()} header field")


def _log_rejection(rejection: SignatureRejected, method: str, event_dict: Mapping[str, Any]) -> None:
    # B8 + C4: the reason and identifiers only; never the secret, the signature or the body.
    # This line is the audit record of a rejection (docs/security.md, area 8): not a DynamoDB
    # row, so an unauthenticated caller cannot turn its requests into table writes.
    context = event_dict.get("requestContext") or {}
    path = event_dict.get("path") or context.get("path")
    source_ip = (context.get("identity") or {}).get("sourceIp")
    logger.info(
        "request signature rejected: %s (key_id=%s, %s %s from %s)",
        rejection.reason,
        rejection.key_id,
        method,
        path,
        source_ip,
        extra={"auth_reason": rejection.reason, "key_id": rejection.key_id, "source_ip": source_ip},
    )
