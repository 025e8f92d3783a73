"""The signed XPM proxy: search, get, create (idempotent), push jobs (idempotent), job status."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Response

from chalicelib.errors import BrokerError
from chalicelib.tenants.routes import json_body, signed_caller
from chalicelib.web.pages import Headers

if TYPE_CHECKING:
    from chalicelib.idempotency import StoredResponse

# Services are imported inside the views (see chalicelib/tenants/routes.py).

bp = Blueprint(__name__)
MIN_SEARCH = 3
RATE_HEADERS = ("X-MinLimit-Remaining", "X-DayLimit-Remaining", "X-AppMinLimit-Remaining")


def _rate_headers(headers: dict[str, str]) -> Headers:
    """Xero's remaining budget for this practice, passed on so vendors can pace themselves."""
    return {name: value for name, value in headers.items() if name in RATE_HEADERS}


@bp.route("/v1/tenants/{tenant_ref}/xpm/clients", methods=["GET"])
def search_clients(tenant_ref: str) -> Response:
    from chalicelib.xpm.mapping import present_client
    from chalicelib.xpm.service import tenant_xpm

    vendor, _ = signed_caller()
    params = dict(bp.current_request.query_params or {})
    query = params.get("search")
    if query is None:
        from chalicelib.sync.listing import list_synced_clients

        return Response(body=list_synced_clients(vendor, tenant_ref, params))
    if len(query.strip()) < MIN_SEARCH:
        raise BrokerError(
            "search_too_short",
            422,
            "Search too short",
            f"search needs at least {MIN_SEARCH} characters.",
            extra={"field": "search"},
        )
    xpm = tenant_xpm(vendor, tenant_ref)
    found = xpm.call(lambda c: c.search_clients(query.strip()))
    clients = [present_client(c, vendor.allow_sensitive_fields) for c in found]
    return Response(body={"clients": clients}, headers=_rate_headers(xpm.client.last_rate_headers))


@bp.route("/v1/tenants/{tenant_ref}/xpm/clients/{uuid}", methods=["GET"])
def get_client(tenant_ref: str, uuid: str) -> Response:
    from chalicelib.xpm.mapping import present_client
    from chalicelib.xpm.service import tenant_xpm

    vendor, _ = signed_caller()
    xpm = tenant_xpm(vendor, tenant_ref)
    client = xpm.call(lambda c: c.get_client(uuid))
    body = present_client(client, vendor.allow_sensitive_fields)
    return Response(body=body, headers=_rate_headers(xpm.client.last_rate_headers))


def _idempotent(tenant_ref: str, route: str, handler: Any) -> Response:
    from chalicelib.idempotency import run_idempotent

    vendor, _ = signed_caller()
    request = bp.current_request
    raw = request.raw_body or b""
    body = raw if isinstance(raw, bytes) else raw.encode()
    key = request.headers.get("idempotency-key")
    stored, replayed = run_idempotent(
        vendor_id=vendor.vendor_id,
        tenant_ref=tenant_ref,
        method=request.method,
        route=route,
        key=key,
        body=body,
        handler=lambda: handler(vendor, key),
        lambda_context=request.lambda_context,
    )
    headers: Headers = {**stored.headers, **({"Idempotent-Replayed": "true"} if replayed else {})}
    return Response(body=stored.body, status_code=stored.status, headers=headers)


@bp.route("/v1/tenants/{tenant_ref}/xpm/clients", methods=["POST"])
def create_client(tenant_ref: str) -> Response:
    from chalicelib.idempotency import StoredResponse
    from chalicelib.xpm.pushes import create_client_now

    def handler(vendor: Any, key: str) -> StoredResponse:
        try:
            created = create_client_now(vendor, tenant_ref, json_body(), key)
        except BrokerError as error:
            if error.code != "xpm_validation_failed":
                raise  # not stored: the vendor may retry with the same key
            status, headers, body = error.render()
            return StoredResponse(status, body, headers)
        return StoredResponse(201, json.dumps(created), {"Content-Type": "application/json"})

    return _idempotent(tenant_ref, "xpm/clients", handler)


@bp.route("/v1/tenants/{tenant_ref}/xpm/pushes", methods=["POST"])
def create_push_job(tenant_ref: str) -> Response:
    from chalicelib.idempotency import StoredResponse
    from chalicelib.xpm.pushes import create_push

    def handler(vendor: Any, _key: str) -> StoredResponse:
        push = create_push(vendor, tenant_ref, json_body())
        body = {"push_id": push.push_id, "status": push.status}
        return StoredResponse(202, json.dumps(body), {"Content-Type": "application/json"})

    return _idempotent(tenant_ref, "xpm/pushes", handler)


@bp.route("/v1/tenants/{tenant_ref}/xpm/pushes/{push_id}", methods=["GET"])
def get_push(tenant_ref: str, push_id: str) -> dict[str, Any]:
    from chalicelib.xpm.pushes import push_view

    vendor, _ = signed_caller()
    return push_view(vendor, tenant_ref, push_id)
