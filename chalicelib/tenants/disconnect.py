"""Disconnect a tenant (contract.md §4; checklist C6) and retire grants nobody uses.

Order: DELETE the Xero connection (one tenant) with a valid access token; revoke the refresh
token only when no other connection uses the grant (revocation removes *all* the user's
connections to the app, xero-reference §1.7); destroy the ciphertext; mark the connection
revoked with its event and audit row in one transaction. If Xero cannot be reached the local
side still ends (the firm asked to disconnect) and the audit row records what is pending.
"""

from __future__ import annotations

import logging
import time

from chalicelib.audit import audit_record
from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.discovery import identity_provider
from chalicelib.oauth.grants import read_tokens, xero_app_for
from chalicelib.oauth.models import Grant
from chalicelib.oauth.refresh import valid_access_token
from chalicelib.oauth.xero_connections import delete_connection
from chalicelib.oauth.xero_identity import revoke
from chalicelib.storage import find, transaction
from chalicelib.tenants.connections import get_connection
from chalicelib.tenants.models import Connection
from chalicelib.tenants.vendors import get_vendor
from chalicelib.webhooks.models import outbox_event

logger = logging.getLogger("xpmb.disconnect")


def disconnect(vendor_id: str, tenant_ref: str, actor: str, now: float | None = None) -> None:
    """Idempotent: a tenant already revoked answers as success without calling Xero."""
    current = time.time() if now is None else now
    connection = get_connection(vendor_id, tenant_ref)
    if connection.status == "revoked":
        return
    pending: list[str] = []
    if connection.grant_id and connection.xero_connection_id:
        pending += _delete_at_xero(connection)
    with transaction() as tx:
        tx.update(
            connection,
            actions=[
                Connection.status.set("revoked"),
                Connection.status_reason.set("disconnected"),
                Connection.revoked_at.set(current),
                Connection.updated_at.set(current),
                Connection.grant_id.remove(),
            ],
        )
        data = {
            "tenant_ref": tenant_ref,
            "xero_tenant_id": connection.xero_tenant_id,
            "reason": "disconnected",
        }
        tx.save(outbox_event(vendor_id, "connection.revoked", data, current))
        tx.save(
            audit_record(
                vendor_id,
                "connection.revoked",
                actor,
                outcome="success" if not pending else "failure",
                tenant_ref=tenant_ref,
                detail={"xero_cleanup_pending": pending} if pending else {},
                now=current,
            )
        )
    if connection.grant_id:
        retire_grant_if_unused(connection.grant_id)


def _delete_at_xero(connection: Connection) -> list[str]:
    assert connection.grant_id and connection.xero_connection_id
    try:
        access_token, _ = valid_access_token(connection.grant_id)
        delete_connection(get_settings().xero_api_url, access_token, connection.xero_connection_id)
    except BrokerError as exc:
        logger.warning("could not delete the Xero connection of %s: %s", connection.tenant_ref, exc.code)
        return ["delete_connection"]
    return []


def retire_grant_if_unused(grant_id: str) -> None:
    """Revoke and shred a grant that no active connection uses any more."""
    users = [c for c in Connection.by_grant.query(grant_id) if c.status != "revoked"]
    if users:
        return
    grant = find(Grant, grant_id, consistent=True)
    if grant is None:
        return
    if grant.token_ct:
        try:
            vendor = get_vendor(grant.vendor_id)
            provider = identity_provider(get_settings().xero_identity_url)
            revoke(
                xero_app_for(vendor),
                provider.metadata().revocation_endpoint,
                read_tokens(grant).refresh_token,
            )
        except BrokerError as exc:
            # Shred locally anyway: without the ciphertext nobody can use the token (C6).
            logger.warning("could not revoke grant %s at Xero: %s", grant_id, exc.code)
    grant.update(
        actions=[
            Grant.status.set("revoked"),
            Grant.token_ct.remove(),
            Grant.next_rotation_at.remove(),
            Grant.rotation_shard.remove(),
            Grant.lease_owner.remove(),
            Grant.lease_until.remove(),
        ]
    )
