"""OIDC discovery and JWKS, cached per process (xero-reference §1.1: Xero's edge may block
repeated discovery fetches; checklist A7: refetch JWKS on an unknown kid at most every 5 min)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from joserfc.jwk import KeySet

from chalicelib.oauth.errors import UpstreamError
from chalicelib.oauth.xero_http import request

DISCOVERY_TTL = 3600.0
JWKS_TTL = 3600.0
JWKS_REFETCH_MIN_INTERVAL = 300.0


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str
    userinfo_endpoint: str
    signing_algorithms: tuple[str, ...]


class IdentityProvider:
    """Discovery + JWKS for one issuer, cached with TTLs."""

    def __init__(self, issuer: str, clock: Any = time.monotonic) -> None:
        self.issuer = issuer.rstrip("/")
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._jwks: tuple[float, KeySet] | None = None
        self._last_forced_refetch = -JWKS_REFETCH_MIN_INTERVAL
        self.fetches = {"discovery": 0, "jwks": 0}

    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata and self._metadata[0] > self._clock():
                return self._metadata[1]
        document = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery")
        if document.get("issuer") != self.issuer:
            # Mix-up defence (checklist A6): the document must name the issuer we asked.
            raise UpstreamError("Xero's discovery document names a different issuer")
        try:
            metadata = ProviderMetadata(
                issuer=document["issuer"],
                authorization_endpoint=document["authorization_endpoint"],
                token_endpoint=document["token_endpoint"],
                jwks_uri=document["jwks_uri"],
                revocation_endpoint=document.get("revocation_endpoint", f"{self.issuer}/connect/revocation"),
                userinfo_endpoint=document.get("userinfo_endpoint", f"{self.issuer}/connect/userinfo"),
                signing_algorithms=tuple(document.get("id_token_signing_alg_values_supported") or ["RS256"]),
            )
        except KeyError as exc:
            raise UpstreamError("Xero's discovery document is incomplete") from exc
        with self._lock:
            self._metadata = (self._clock() + DISCOVERY_TTL, metadata)
        return metadata

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The JWKS; ``refresh`` refetches (at most once per 5 minutes) for an unknown kid."""
        with self._lock:
            cached = self._jwks
            fresh_enough = cached is not None and cached[0] > self._clock()
            # A flood of tokens with unknown kids causes at most one refetch per 5 minutes.
            may_refetch = self._clock() - self._last_forced_refetch >= JWKS_REFETCH_MIN_INTERVAL
            if cached is not None and fresh_enough and not (refresh and may_refetch):
                return cached[1]
            if refresh:
                self._last_forced_refetch = self._clock()
        document = self._get_json(self.metadata().jwks_uri, "jwks")
        try:
            key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except Exception as exc:
            raise UpstreamError("Xero's JWKS could not be read") from exc
        with self._lock:
            self._jwks = (self._clock() + JWKS_TTL, key_set)
        return key_set

    def _get_json(self, url: str, kind: str) -> dict[str, Any]:
        self.fetches[kind] += 1
        try:
            response = request("GET", url, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise UpstreamError(f"Xero identity unreachable ({kind})") from exc
        if response.status_code != 200:
            raise UpstreamError(f"Xero identity answered {response.status_code} ({kind})")
        try:
            document = response.json()
        except ValueError as exc:
            raise UpstreamError(f"Xero identity sent invalid JSON ({kind})") from exc
        if not isinstance(document, dict):
            raise UpstreamError(f"Xero identity sent an unexpected document ({kind})")
        return document


_providers: dict[str, IdentityProvider] = {}
_providers_lock = threading.Lock()


def identity_provider(issuer: str) -> IdentityProvider:
    with _providers_lock:
        if issuer not in _providers:
            _providers[issuer] = IdentityProvider(issuer)
        return _providers[issuer]


def forget_providers() -> None:
    with _providers_lock:
        _providers.clear()
