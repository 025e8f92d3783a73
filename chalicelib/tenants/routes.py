"""The signed vendor API under /v1: connect sessions, connection status, disconnect, tenants."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Response

from chalicelib.config import get_settings
from chalicelib.errors import BrokerError

if TYPE_CHECKING:
    from chalicelib.tenants.models import Vendor
    from chalicelib.tenants.nonces import DynamoNonceStore
    from chalicelib.tenants.signing import SigningKey

# Route modules import their services inside the views: every Lambda of the app imports app.py,
# and a /health call or a schedule tick should not pay for OAuth, JOSE, XML and DynamoDB code.

bp = Blueprint(__name__)
_nonce_stores: dict[str, DynamoNonceStore] = {}
_lock = threading.Lock()


def _nonce_store() -> DynamoNonceStore:
    from chalicelib.tenants.nonces import DynamoNonceStore

    settings = get_settings()
    with _lock:
        store = _nonce_stores.get(settings.table_prefix)
        if store is None:
            store = _nonce_stores[settings.table_prefix] = DynamoNonceStore(settings)
        return store


def signed_caller() -> tuple[Vendor, SigningKey]:
    """Authenticate the current request (RFC 9421) and return the calling vendor and key."""
    from chalicelib.observability import bind_context
    from chalicelib.tenants.authentication import authenticate
    from chalicelib.tenants.keys import key_resolver

    request = bp.current_request
    raw = request.raw_body or b""
    key = authenticate(
        request.method,
        request.to_original_event(),
        request.headers,
        raw if isinstance(raw, bytes) else raw.encode(),
        keys=key_resolver(),
        nonces=_nonce_store(),
        settings=get_settings(),
    )
    bind_context(vendor_id=key.vendor_id, key_id=key.key_id)
    return key_resolver().vendor(key.vendor_id), key  # cached like the key (30 s)


def json_body() -> Any:
    raw = bp.current_request.raw_body or b""
    try:
        return json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrokerError("invalid_json", 400, "Invalid JSON", "The request body is not valid JSON.") from exc


@bp.route("/v1/tenants/{tenant_ref}/connect-sessions", methods=["POST"])
def create_connect_session(tenant_ref: str) -> Response:
    from chalicelib.audit import audit_record
    from chalicelib.oauth.sessions import create_session
    from chalicelib.tenants.connections import iso

    vendor, key = signed_caller()
    session = create_session(vendor, tenant_ref, json_body())
    audit_record(
        vendor.vendor_id,
        "connect_session.created",
        f"vendor-key:{key.key_id}",
        tenant_ref=tenant_ref,
        detail={"session_id": session.session_id},
    ).save()
    body = {
        "connect_url": session.connect_url,
        "session_id": session.session_id,
        "expires_at": iso(session.expires_at),
    }
    return Response(body=body, status_code=201)


@bp.route("/v1/tenants/{tenant_ref}/connection", methods=["GET"])
def get_connection(tenant_ref: str) -> dict[str, Any]:
    from chalicelib.tenants.connections import connection_status

    vendor, _ = signed_caller()
    return connection_status(vendor.vendor_id, tenant_ref)


@bp.route("/v1/tenants/{tenant_ref}/connection", methods=["DELETE"])
def delete_connection(tenant_ref: str) -> Response:
    from chalicelib.tenants.disconnect import disconnect

    vendor, key = signed_caller()
    disconnect(vendor.vendor_id, tenant_ref, f"vendor-key:{key.key_id}")
    return Response(body="", status_code=204)


@bp.route("/v1/tenants", methods=["GET"])
def list_tenants() -> dict[str, Any]:
    from chalicelib.tenants.connections import list_tenants_page

    vendor, _ = signed_caller()
    params: dict[str, str] = dict(bp.current_request.query_params or {})
    return list_tenants_page(
        vendor.vendor_id, status=params.get("status"), cursor=params.get("cursor"), limit=params.get("limit")
    )
