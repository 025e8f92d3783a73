"""What a vendor may see of its tenants' connections (never tokens; contract.md §4)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.errors import BrokerError
from chalicelib.oauth.models import Grant
from chalicelib.oauth.sessions import check_tenant_ref, invalid_request, tenant_not_found
from chalicelib.storage import StorageUnavailable, find
from chalicelib.tenants import CONNECTION_STATUSES
from chalicelib.tenants.models import Connection

STATUSES = CONNECTION_STATUSES


def iso(timestamp: float | None) -> str | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(float(timestamp), tz=UTC).isoformat().replace("+00:00", "Z")


def connection_view(connection: Connection, grant: Grant | None) -> dict[str, Any]:
    authorised = connection.authorised_by
    live_grant = grant if grant is not None and connection.status != "revoked" else None
    return {
        "tenant_ref": connection.tenant_ref,
        "status": connection.status,
        "status_reason": connection.status_reason,
        "xero_tenant_id": connection.xero_tenant_id,
        "practice_name": connection.practice_name,
        "authorised_by": None
        if authorised is None
        else {"xero_user_id": authorised.xero_user_id, "name": authorised.name, "email": authorised.email},
        "scopes": (connection.scopes or "").split(),
        "connected_at": iso(connection.connected_at),
        "updated_at": iso(connection.updated_at),
        "revoked_at": iso(connection.revoked_at),
        "last_refreshed_at": iso(live_grant.last_refreshed_at) if live_grant else None,
        "refresh_token_expires_at": iso(live_grant.refresh_expires_at) if live_grant else None,
        "next_rotation_at": iso(live_grant.next_rotation_at) if live_grant else None,
    }


def get_connection(vendor_id: str, tenant_ref: str) -> Connection:
    check_tenant_ref(tenant_ref)
    connection = find(Connection, vendor_id, tenant_ref, consistent=True)
    if connection is None:
        raise tenant_not_found()
    return connection


def _grant(grant_id: str | None) -> Grant | None:
    if not grant_id:
        return None
    return find(Grant, grant_id)


def connection_status(vendor_id: str, tenant_ref: str) -> dict[str, Any]:
    connection = get_connection(vendor_id, tenant_ref)
    return connection_view(connection, _grant(connection.grant_id))


def list_tenants_page(
    vendor_id: str, *, status: str | None, cursor: str | None, limit: str | None
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise invalid_request(f"status must be one of {', '.join(STATUSES)}.", "status")
    size = _limit(limit)
    start = _decode_cursor(cursor, vendor_id) if cursor else None
    try:
        results = Connection.query(
            vendor_id,
            filter_condition=(Connection.status == status) if status else None,
            limit=size,
            last_evaluated_key=start,
        )
        rows = list(results)
        last = results.last_evaluated_key
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    return {
        "tenants": [connection_view(c, None) for c in rows],
        "next_cursor": _encode_cursor(last) if last else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise invalid_request("limit must be an integer from 1 to 100.", "limit")
    return int(raw)


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, vendor_id: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(key, dict) or key.get("vendor_id", {}).get("S") != vendor_id:
            raise ValueError("cursor of another vendor")
        if set(key) != {"vendor_id", "tenant_ref"}:
            raise ValueError("unexpected cursor keys")
    except (ValueError, TypeError, AttributeError) as exc:
        raise BrokerError(
            "invalid_cursor", 422, "Invalid cursor", "The cursor is not valid for this listing."
        ) from exc
    return key
