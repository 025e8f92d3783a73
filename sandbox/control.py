"""The control API for tests and demos, under /_sandbox/ (never part of Xero's surface)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.faults import KINDS
from sandbox.state import get_state

bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "a JSON object body is required")
    return body


@bp.get("/")
def summary() -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        return jsonify(
            {
                "clock_offset_seconds": state.clock.offset,
                "now": state.clock.now_dt().isoformat(),
                "config": {k: v for k, v in asdict(state.config).items() if k != "limits"},
                "limits": asdict(state.config.limits),
                "apps": [a.to_json() for a in state.apps.values()],
                "users": [u.to_json() for u in state.users.values()],
                "practices": [{"tenant_id": p.tenant_id, "name": p.name} for p in state.practices.values()],
            }
        )


@bp.post("/reset")
def reset() -> ResponseReturnValue:
    get_state().reset()
    return "", 204


@bp.get("/clock")
def clock() -> ResponseReturnValue:
    state = get_state()
    return jsonify({"offset_seconds": state.clock.offset, "now": state.clock.now_dt().isoformat()})


@bp.post("/clock/advance")
def advance_clock() -> ResponseReturnValue:
    seconds = _body().get("seconds")
    if not isinstance(seconds, int | float) or seconds < 0:
        abort(400, "seconds must be a non-negative number")
    state = get_state()
    state.clock.advance(float(seconds))
    return jsonify({"offset_seconds": state.clock.offset, "now": state.clock.now_dt().isoformat()})


@bp.get("/calls")
def calls() -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        return jsonify(dict(state.calls))


@bp.delete("/calls")
def clear_calls() -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        state.calls.clear()
    return "", 204


@bp.get("/faults")
def list_faults() -> ResponseReturnValue:
    return jsonify(get_state().faults.list())


@bp.post("/faults")
def arm_fault() -> ResponseReturnValue:
    body = _body()
    target, kind = body.pop("target", None), body.pop("kind", None)
    count = body.pop("count", 1)
    if not isinstance(target, str) or kind not in KINDS or not isinstance(count, int) or count < 1:
        abort(400, f"need target (string), kind (one of {', '.join(KINDS)}) and count >= 1")
    fault = get_state().faults.arm(target, kind, count, **body)
    return jsonify(fault.to_json()), 201


@bp.delete("/faults")
def clear_faults() -> ResponseReturnValue:
    get_state().faults.clear()
    return "", 204


@bp.post("/apps")
def register_app() -> ResponseReturnValue:
    body = _body()
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        abort(400, "redirect_uris must be a non-empty list of strings")
    app = get_state().register_app(
        uris,
        name=str(body.get("name", "Sandbox app")),
        client_id=body.get("client_id"),
        client_secret=body.get("client_secret"),
    )
    return jsonify(app.to_json(with_secret=True)), 201


@bp.get("/users")
def users() -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        return jsonify([u.to_json() for u in state.users.values()])


@bp.put("/users/<user_id>/permissions")
def set_permission(user_id: str) -> ResponseReturnValue:
    """Grant or take away "Connect third-party add-ons" in one practice (§5.3)."""
    body = _body()
    state = get_state()
    with state.lock:
        user = state.users.get(user_id)
        tenant_id = body.get("tenant_id")
        if user is None or tenant_id not in state.practices:
            abort(404, "unknown user or practice")
        user.practices[tenant_id] = bool(body.get("can_connect", True))
        return jsonify(user.to_json())


@bp.post("/users/<user_id>/disconnect")
def disconnect_user(user_id: str) -> ResponseReturnValue:
    """As if the user removed the app in Xero: their connections (to one app or all) go away."""
    client_id = request.args.get("client_id")
    state = get_state()
    with state.lock:
        if user_id not in state.users:
            abort(404, "unknown user")
        doomed = [
            c.id
            for c in state.connections.values()
            if c.user_id == user_id and (client_id is None or c.client_id == client_id)
        ]
        for connection_id in doomed:
            del state.connections[connection_id]
    return jsonify({"removed": len(doomed)})


@bp.put("/limits")
def set_limits() -> ResponseReturnValue:
    body = _body()
    state = get_state()
    limits = state.config.limits
    with state.lock:
        for name in ("concurrent", "per_minute", "per_day", "app_per_minute"):
            if name in body:
                value = body[name]
                if not isinstance(value, int) or value < 1:
                    abort(400, f"{name} must be a positive integer")
                setattr(limits, name, value)
        return jsonify(asdict(limits))
