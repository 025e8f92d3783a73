"""What a vendor sees of the change feed: the synced client list (paged) and the sync status."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.errors import BrokerError
from chalicelib.oauth.sessions import invalid_request
from chalicelib.storage import StorageUnavailable, find
from chalicelib.sync.models import ClientSnapshot, SyncState, snapshot_key, state_key
from chalicelib.tenants.connections import get_connection, iso
from chalicelib.tenants.models import Connection, Vendor
from chalicelib.xpm.mapping import present_client
from chalicelib.xpm.service import connection_not_active

DEFAULT_LIMIT, MAX_LIMIT = 100, 500
_TABLE_KEYS = {"tenant_key", "client_uuid"}
_INDEX_KEYS = {"tenant_key", "client_uuid", "updated_at"}


def sync_view(state: SyncState | None, connection: Connection) -> dict[str, Any]:
    """The tenant's current (or last) sync, and whether the listing holds a finished snapshot."""
    if state is None or not state.sync_id:
        return {
            "sync_id": None,
            "status": "not_started",
            "synced": False,
            "next_sync_at": iso(state.next_sync_at) if state else None,
        }
    return {
        "sync_id": state.sync_id,
        "status": state.status,
        "trigger": state.trigger,
        "mode": state.mode,
        "initial": state.initial,
        "requested_at": iso(state.requested_at),
        "started_at": iso(state.started_at),
        "finished_at": iso(state.finished_at),
        "error": state.error_code,
        "counts": state.counts(),
        "synced": is_synced(state, connection),
        "last_completed_at": iso(state.last_completed_at),
        "next_sync_at": iso(state.next_sync_at),
    }


def is_synced(state: SyncState | None, connection: Connection) -> bool:
    return bool(
        state is not None
        and state.baseline_done
        and connection.xero_tenant_id
        and state.xero_tenant_id == connection.xero_tenant_id
    )


def load_state(vendor_id: str, tenant_ref: str) -> SyncState | None:
    return find(SyncState, state_key(vendor_id, tenant_ref), consistent=True)


def sync_status(vendor: Vendor, tenant_ref: str) -> dict[str, Any]:
    connection = get_connection(vendor.vendor_id, tenant_ref)
    return sync_view(load_state(vendor.vendor_id, tenant_ref), connection)


def list_synced_clients(vendor: Vendor, tenant_ref: str, params: dict[str, str]) -> dict[str, Any]:
    """``GET …/xpm/clients`` without ``search``: the snapshot, by UUID or by ``updated_since``."""
    connection = get_connection(vendor.vendor_id, tenant_ref)
    if connection.status == "revoked":
        raise connection_not_active(connection.status)
    limit = _limit(params.get("limit"))
    since = _since(params.get("updated_since"))
    state = load_state(vendor.vendor_id, tenant_ref)
    view = sync_view(state, connection)
    empty = {"clients": [], "next_cursor": None, "synced": view["synced"], "sync": view}
    if not connection.xero_tenant_id:
        return empty
    tenant_key = snapshot_key(vendor.vendor_id, tenant_ref, connection.xero_tenant_id)
    cursor = params.get("cursor")
    start = None
    if cursor:
        start, since = _decode_cursor(cursor, tenant_key, since)
    try:
        if since is None:
            results: Any = ClientSnapshot.query(tenant_key, limit=limit, last_evaluated_key=start)
        else:
            results = ClientSnapshot.by_updated.query(
                tenant_key, ClientSnapshot.updated_at >= since, limit=limit, last_evaluated_key=start
            )
        rows = list(results)
        last = results.last_evaluated_key
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    clients = [
        present_client({**row.data, "updated_at": iso(row.updated_at)}, vendor.allow_sensitive_fields)
        for row in rows
    ]
    return {
        **empty,
        "clients": clients,
        "next_cursor": _encode_cursor(last, since) if last and rows else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid_request(f"limit must be an integer from 1 to {MAX_LIMIT}.", "limit")
    return int(raw)


def _since(raw: str | None) -> float | None:
    """``updated_since``: an ISO 8601 date-time with a zone (``Z`` or an offset)."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid_request(
            "updated_since must be an ISO 8601 date-time with a zone, e.g. 2026-11-22T08:00:00Z.",
            "updated_since",
        )
    return moment.astimezone(UTC).timestamp()


def invalid_cursor() -> BrokerError:
    return BrokerError("invalid_cursor", 422, "Invalid cursor", "The cursor is not valid for this listing.")


def _encode_cursor(key: dict[str, Any], since: float | None) -> str:
    raw = json.dumps({"k": key, "s": since}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, tenant_key: str, since: float | None) -> tuple[dict[str, Any], float | None]:
    """The DynamoDB start key inside a cursor this listing issued (same tenant, same filter)
    and the cursor's ``updated_since`` (the parameter may be left out after the first page)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        key, cursor_since = decoded["k"], decoded["s"]
        if cursor_since is not None and (
            isinstance(cursor_since, bool) or not isinstance(cursor_since, int | float)
        ):
            raise ValueError("bad since")
        if since is not None and cursor_since != since:
            raise ValueError("cursor of another filter")
        since = cursor_since
        expected = _TABLE_KEYS if since is None else _INDEX_KEYS
        if set(decoded) != {"k", "s"} or not isinstance(key, dict) or set(key) != expected:
            raise ValueError("unexpected cursor shape")
        if key["tenant_key"] != {"S": tenant_key}:
            raise ValueError("cursor of another listing")
        if not isinstance(key["client_uuid"].get("S"), str):
            raise ValueError("bad client key")
        if since is not None and not isinstance(key["updated_at"].get("N"), str):
            raise ValueError("bad updated_at key")
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise invalid_cursor() from exc
    return dict(key), since
