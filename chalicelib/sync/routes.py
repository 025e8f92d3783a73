"""``POST/GET /v1/tenants/{tenant_ref}/xpm/sync``: start a sync now, or see the current one.

The synced list itself is ``GET …/xpm/clients`` without ``search`` (chalicelib/xpm/routes.py).
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.tenants.routes import signed_caller

bp = Blueprint(__name__)


@bp.route("/v1/tenants/{tenant_ref}/xpm/sync", methods=["POST"])
def start_sync(tenant_ref: str) -> Response:
    """202 with the run: a new one, or the one already queued or running (joined, not doubled)."""
    from chalicelib.sync.jobs import request_sync
    from chalicelib.sync.listing import sync_view
    from chalicelib.xpm.service import active_connection

    vendor, _ = signed_caller()
    connection = active_connection(vendor, tenant_ref)
    state, started = request_sync(vendor.vendor_id, tenant_ref, "api")
    body = {**sync_view(state, connection), "started": started}
    location = f"/v1/tenants/{tenant_ref}/xpm/sync"
    return Response(body=body, status_code=202, headers={"Location": location})


@bp.route("/v1/tenants/{tenant_ref}/xpm/sync", methods=["GET"])
def get_sync(tenant_ref: str) -> dict[str, Any]:
    from chalicelib.sync.listing import sync_status

    vendor, _ = signed_caller()
    return sync_status(vendor, tenant_ref)
