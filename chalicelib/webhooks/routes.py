"""The signed webhook API under /v1: the endpoint, its secret, the event log, redelivery."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

bp = Blueprint(__name__)

# Services are imported inside the views (see chalicelib/tenants/routes.py): /health stays light.


def _caller(*, fresh: bool = True) -> tuple[Any, str]:
    from chalicelib.tenants import routes as vendor_api
    from chalicelib.tenants.vendors import get_vendor

    # The vendor API's helpers read ``bp.current_request`` of *their* blueprint; every blueprint
    # of the app shares the app's current request.
    vendor, key = vendor_api.signed_caller()
    if fresh:
        # signed_caller's vendor may be up to 30 s old (chalicelib/tenants/keys.py); the endpoint's
        # state (disabled, secret rotation) must be read as it is now.
        vendor = get_vendor(vendor.vendor_id)
    return vendor, f"vendor-key:{key.key_id}"


@bp.route("/v1/webhook-endpoint", methods=["PUT"])
def put_webhook_endpoint() -> dict[str, Any]:
    from chalicelib.tenants.routes import json_body
    from chalicelib.webhooks.endpoint import configure_endpoint

    vendor, actor = _caller()
    return configure_endpoint(vendor, json_body(), actor)


@bp.route("/v1/webhook-endpoint", methods=["GET"])
def get_webhook_endpoint() -> dict[str, Any]:
    from chalicelib.webhooks.endpoint import endpoint_view

    vendor, _ = _caller()
    return endpoint_view(vendor)


@bp.route("/v1/webhook-endpoint/secret:rotate", methods=["POST"])
def rotate_webhook_secret() -> dict[str, Any]:
    from chalicelib.webhooks.endpoint import rotate_secret

    vendor, actor = _caller()
    return rotate_secret(vendor, actor)


@bp.route("/v1/events", methods=["GET"])
def list_events() -> dict[str, Any]:
    from chalicelib.webhooks.event_log import list_events as event_page

    vendor, _ = _caller(fresh=False)
    params: dict[str, str] = dict(bp.current_request.query_params or {})
    return event_page(vendor.vendor_id, after=params.get("after"), limit=params.get("limit"))


@bp.route("/v1/events/{event_id}/redeliver", methods=["POST"])
def redeliver_event(event_id: str) -> Response:
    from chalicelib.webhooks.event_log import redeliver

    vendor, actor = _caller()
    return Response(body=redeliver(vendor, event_id, actor), status_code=202)
