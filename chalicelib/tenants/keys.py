"""Resolve a vendor key id to its secret for request verification, with a short cache.

Cached for 30 s so a revocation takes effect within a minute (checklist B7) while warm Lambdas
skip DynamoDB and KMS on most requests. The calling vendor's record is cached the same way
(``vendor``): nothing in the broker edits a vendor in place (a key is issued or revoked, never
the vendor changed), and a change made by hand reaches a warm instance within 30 s, like a key
revocation.
"""

from __future__ import annotations

import threading
import time

from chalicelib.storage import find
from chalicelib.tenants.models import Vendor, VendorKey
from chalicelib.tenants.signing import SigningKey
from chalicelib.tenants.vendors import get_vendor, key_secret

CACHE_SECONDS = 30.0


class VendorKeyResolver:
    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self._cache: dict[str, tuple[float, SigningKey | None]] = {}
        self._vendors: dict[str, tuple[float, Vendor]] = {}
        self._lock = threading.Lock()
        self._cache_seconds = cache_seconds

    def resolve(self, key_id: str) -> SigningKey | None:
        if not key_id or len(key_id) > 64 or not key_id.startswith("vk_"):
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None and cached[0] > now:
                return cached[1]
        resolved = self._load(key_id)
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key_id] = (now + self._cache_seconds, resolved)
        return resolved

    def vendor(self, vendor_id: str) -> Vendor:
        """The vendor a resolved key belongs to (404 ``vendor_not_found`` is never cached)."""
        now = time.monotonic()
        with self._lock:
            cached = self._vendors.get(vendor_id)
            if cached is not None and cached[0] > now:
                return cached[1]
        vendor = get_vendor(vendor_id)
        with self._lock:
            if len(self._vendors) > 1024:
                self._vendors.clear()
            self._vendors[vendor_id] = (now + self._cache_seconds, vendor)
        return vendor

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._vendors.clear()

    @staticmethod
    def _load(key_id: str) -> SigningKey | None:
        key = find(VendorKey, key_id)
        if key is None or key.status != "active":
            return None
        return SigningKey(key_id=key.key_id, vendor_id=key.vendor_id, secret=key_secret(key))


_resolver = VendorKeyResolver()


def key_resolver() -> VendorKeyResolver:
    return _resolver
