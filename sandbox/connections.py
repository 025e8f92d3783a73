"""``GET/DELETE https://api.xero.com/connections``: the tenantless connections API (§1.8)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.bearer import bearer_claims, problem_response
from sandbox.fault_responses import after_work, arrive
from sandbox.limits import Rejection, rate_limiter
from sandbox.state import Connection, SandboxState, get_state
from sandbox.tokens import TokenError

bp = Blueprint("sandbox_connections", __name__)


def xero_timestamp(epoch: float) -> str:
    """Xero's connection timestamps: UTC, no ``Z``, 7 fractional digits (§1.8)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"


def connection_json(connection: Connection) -> dict[str, Any]:
    return {
        "id": connection.id,
        "authEventId": connection.auth_event_id,
        "tenantId": connection.tenant_id,
        "tenantType": connection.tenant_type,
        "tenantName": connection.tenant_name,
        "createdDateUtc": xero_timestamp(connection.created_at),
        "updatedDateUtc": xero_timestamp(connection.updated_at),
    }


def _app_minute_remaining(state: SandboxState, client_id: str) -> int:
    """The app-wide minute budget left after this call: one budget with the XPM calls (§2.1)."""
    return rate_limiter(state).count_app_call(state.config.limits, client_id, state.clock.now())


def _tenantless(response: Response, state: SandboxState, client_id: str) -> Response:
    # Tenantless calls carry only the app-wide header, never X-MinLimit/X-DayLimit (§1.8, §2.1).
    response.headers["X-AppMinLimit-Remaining"] = str(_app_minute_remaining(state, client_id))
    return response


def _own_connections(state: SandboxState, claims: dict[str, Any]) -> list[Connection]:
    """Connections belong to (app, user): the token's client_id and xero_userid (§1.8)."""
    owner = (claims.get("client_id"), claims.get("xero_userid"))
    with state.lock:
        return [c for c in state.connections.values() if (c.client_id, c.user_id) == owner]


def _caller(state: SandboxState) -> dict[str, Any] | Response:
    """The bearer token's claims, or Xero's 401/403 problem response."""
    try:
        return bearer_claims(state)
    except TokenError as exc:
        return problem_response(exc)


@bp.get("/connections")
@bp.get("/Connections")  # the OpenAPI spec's spelling; clients use lowercase (§1.1)
def list_connections() -> ResponseReturnValue:
    state = get_state()
    fault, early = arrive(state, "connections.list", "connections")
    if early is not None:
        return early
    claims = _caller(state)
    if not isinstance(claims, dict):
        return claims
    decision = rate_limiter(state).admit_app_call(
        state.config.limits, str(claims.get("client_id")), state.clock.now()
    )
    if isinstance(decision, Rejection):
        state.count("connections.rate_limited")
        response = jsonify({"title": "Too Many Requests", "status": 429, "detail": "Rate limit exceeded"})
        response.status_code = 429
        response.headers.update(decision.headers())
        return response
    auth_event_id = request.args.get("authEventId")
    rows = [
        connection_json(c)
        for c in sorted(_own_connections(state, claims), key=lambda c: c.created_at)
        if auth_event_id is None or c.auth_event_id == auth_event_id
    ]
    response = jsonify(rows)
    # Tenantless calls carry only the app-wide header, never X-MinLimit/X-DayLimit (§1.8, §2.1).
    response.headers["X-AppMinLimit-Remaining"] = str(decision)
    return after_work(fault, response)


@bp.delete("/connections/<connection_id>")
@bp.delete("/Connections/<connection_id>")
def delete_connection(connection_id: str) -> ResponseReturnValue:
    """Disconnect one tenant: 204, or 404 for an unknown id or someone else's connection (§1.8)."""
    state = get_state()
    fault, early = arrive(state, "connections.delete", "connections")
    if early is not None:
        return early
    claims = _caller(state)
    if not isinstance(claims, dict):
        return claims
    with state.lock:
        owned = {c.id for c in _own_connections(state, claims)}
        if connection_id not in owned:
            body = {"title": "Not Found", "status": 404, "detail": "Connection not found"}
            response = jsonify(body)
            response.status_code = 404
            return response
        del state.connections[connection_id]
    response = _tenantless(Response(status=204), state, str(claims.get("client_id")))
    return after_work(fault, response)
