"""An XPM client for one vendor tenant: its connection, its grant's tokens, the rate governor.

The connection must belong to the calling vendor (another vendor's tenant reads as not found,
and nothing is sent to Xero) and be active. Tokens come from the single-flight refresh code
(chalicelib.oauth.refresh). A 403 AuthenticationUnsuccessful marks the connection
``needs_reauthorisation`` (one event) and answers 409 ``connection_not_active``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.refresh import mark_connection_needs_reauthorisation, refresh_grant, valid_access_token
from chalicelib.tenants.connections import get_connection
from chalicelib.tenants.models import Connection, Vendor
from chalicelib.xpm.client import XpmClient
from chalicelib.xpm.errors import XpmAuthorisationLost
from chalicelib.xpm.governor import governor_for

logger = logging.getLogger("xpmb.xpm")
T = TypeVar("T")


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
        token, self._version = valid_access_token(self.grant_id)
        return token

    def refreshed_access_token(self) -> str:
        # Xero said the token expired although we thought it fresh (clock skew, revocation of
        # the access token): refresh unless another worker already did since our version.
        tokens, self._version = refresh_grant(self.grant_id, seen_version=self._version)
        return tokens.access_token


@dataclass
class TenantXpm:
    connection: Connection
    client: XpmClient

    def call(self, operation: Callable[[XpmClient], T]) -> T:
        """Run ``operation``; a lost authorisation marks the connection and becomes a 409."""
        try:
            return operation(self.client)
        except XpmAuthorisationLost as exc:
            mark_connection_needs_reauthorisation(self.connection, reason="authentication_unsuccessful")
            raise connection_not_active("needs_reauthorisation") from exc


def active_connection(vendor: Vendor, tenant_ref: str) -> Connection:
    connection = get_connection(vendor.vendor_id, tenant_ref)
    if connection.status != "active" or not connection.grant_id or not connection.xero_tenant_id:
        raise connection_not_active(connection.status)
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
