"""An XPM client for one vendor tenant: its connection, its grant's tokens, the rate governor.

The connection must belong to the calling vendor (another vendor's tenant reads as not found,
and nothing is sent to Xero) and be active. Tokens come from the single-flight refresh code
(chalicelib.oauth.refresh). A 403 AuthenticationUnsuccessful marks the connection
``needs_reauthorisation`` (one event) and answers 409 ``connection_not_active``.

A warm instance keeps what it read for ``CACHE_SECONDS`` (5 s), so a burst of calls for one
tenant costs no DynamoDB read and no KMS decrypt after the first:
- an *active* connection, per vendor and tenant_ref (other states are never cached: they answer
  409/404 from a fresh read every time);
- a grant's decrypted access token, per grant, taken only while it has more than
  ``MIN_REMAINING + CACHE_SECONDS`` seconds left, so it is never used with less than the 60 s the
  refresh rule asks for (``chalicelib.oauth.refresh``). Refresh stays there, single flight: a
  refresh done here (after Xero's 401 TokenExpired) replaces the cached token.
Why that is safe: a disconnect, a revocation or a ``needs_reauthorisation`` made elsewhere reaches
a warm instance within 5 s; meanwhile Xero itself refuses a deleted connection or a revoked token
(401/403), and any lost authorisation drops the tenant's and the grant's entries at once, so the
next call reads DynamoDB again. Entries live in process memory only (never logged or stored).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.refresh import (
    MIN_REMAINING,
    mark_connection_needs_reauthorisation,
    refresh_grant,
    valid_access_token,
)
from chalicelib.tenants.connections import get_connection
from chalicelib.tenants.models import Connection, Vendor
from chalicelib.xpm.client import XpmClient
from chalicelib.xpm.errors import XpmAuthorisationLost
from chalicelib.xpm.governor import governor_for

logger = logging.getLogger("xpmb.xpm")
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

CACHE_SECONDS = 5.0


class TtlCache(Generic[K, V]):
    """A small thread-safe map whose entries expire ``seconds`` after they were put."""

    def __init__(self, seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._entries) >= 1024 and key not in self._entries:
                self._entries.clear()
            self._entries[key] = (self.clock() + self.seconds, value)

    def forget(self, key: K | None = None) -> None:
        """Drop one entry, or all of them."""
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)


# Active connections by (vendor_id, tenant_ref); access tokens by grant_id: (token, version).
connections: TtlCache[tuple[str, str], Connection] = TtlCache()
tokens: TtlCache[str, tuple[str, int]] = TtlCache()


def forget_cached() -> None:
    """Empty both caches (tests; an operator's tool after editing items by hand)."""
    connections.forget()
    tokens.forget()


def connection_not_active(status: str) -> BrokerError:
    return BrokerError(
        "connection_not_active",
        409,
        "Connection not active",
        f"The tenant's connection is {status}; the firm must reconnect (connect session, mode reauthorise).",
        extra={"connection_status": status},
    )


class GrantTokens:
    """``TokenSource`` over a grant: a valid access token, or one refresh after TokenExpired."""

    def __init__(self, grant_id: str) -> None:
        self.grant_id = grant_id
        self._version: int | None = None

    def access_token(self) -> str:
        cached = tokens.get(self.grant_id)
        if cached is not None:
            token, self._version = cached
            return token
        # Valid for the cache's lifetime too: never used with MIN_REMAINING or less left.
        token, self._version = valid_access_token(self.grant_id, now=time.time() + tokens.seconds)
        tokens.put(self.grant_id, (token, self._version))
        return token

    def refreshed_access_token(self) -> str:
        # Xero said the token expired although we thought it fresh (clock skew, revocation of
        # the access token): refresh unless another worker already did since our version.
        tokens.forget(self.grant_id)
        fresh, self._version = refresh_grant(self.grant_id, seen_version=self._version)
        if fresh.access_expires_at - time.time() > MIN_REMAINING + tokens.seconds:
            tokens.put(self.grant_id, (fresh.access_token, self._version))
        return fresh.access_token


@dataclass
class TenantXpm:
    connection: Connection
    client: XpmClient

    def call(self, operation: Callable[[XpmClient], T]) -> T:
        """Run ``operation``; a lost authorisation marks the connection and becomes a 409."""
        try:
            return operation(self.client)
        except XpmAuthorisationLost as exc:
            connection = self.connection
            connections.forget((connection.vendor_id, connection.tenant_ref))
            if connection.grant_id:
                tokens.forget(connection.grant_id)
            if mark_connection_needs_reauthorisation(connection, reason="authentication_unsuccessful"):
                raise connection_not_active("needs_reauthorisation") from exc
            # Not active any more (disconnected or flagged meanwhile): say what it is now.
            current = get_connection(connection.vendor_id, connection.tenant_ref)
            status = current.status if current.status != "active" else "needs_reauthorisation"
            raise connection_not_active(status) from exc


def active_connection(vendor: Vendor, tenant_ref: str) -> Connection:
    """The vendor's active connection for ``tenant_ref`` (cached ``CACHE_SECONDS``), or 409/404."""
    key = (vendor.vendor_id, tenant_ref)
    connection = connections.get(key)
    if connection is not None:
        return connection
    connection = get_connection(vendor.vendor_id, tenant_ref)
    if connection.status != "active" or not connection.grant_id or not connection.xero_tenant_id:
        raise connection_not_active(connection.status)
    connections.put(key, connection)
    return connection


def tenant_xpm(vendor: Vendor, tenant_ref: str, *, max_body: int | None = None) -> TenantXpm:
    """``max_body``: a larger response cap (wire and decoded) for whole-practice reads (sync)."""
    connection = active_connection(vendor, tenant_ref)
    assert connection.grant_id and connection.xero_tenant_id
    caps = {} if max_body is None else {"max_body": max_body, "max_decoded": max_body}
    client = XpmClient(
        base_url=get_settings().xpm_base_url,
        tenant_id=connection.xero_tenant_id,
        tokens=GrantTokens(connection.grant_id),
        governor=governor_for(vendor.xero_client_id),
        **caps,
    )
    return TenantXpm(connection, client)
