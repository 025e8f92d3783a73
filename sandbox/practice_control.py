"""Control routes for practice data and XPM behaviour, under /_sandbox/ (never part of Xero).

Tests read records unmasked, change them behind the API's back (a change made in XPM by a staff
member, for change-feed tests), insert clients directly, reseed a practice at scale, and tune
``xpm_latency_seconds`` / ``xpm_error_status``. JSON keys are XPM's element names.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.practice import CLIENT_FIELDS, CLIENT_FLAGS, CLIENT_REFS, Client, ClientChanges, PracticeData
from sandbox.seed import seed_practice_data
from sandbox.state import SandboxState, get_state

bp = Blueprint("sandbox_practices", __name__, url_prefix="/_sandbox")

MAX_RESEED_CLIENTS = 100_000
MAX_LATENCY_SECONDS = 120.0


def client_json(client: Client, data: PracticeData) -> dict[str, Any]:
    """A client as stored: unmasked, with flags, references, contacts, groups and relationships."""
    return {
        "UUID": client.uuid,
        "Name": client.name,
        **client.fields,
        **{tag: getattr(client, attribute) or None for tag, attribute in CLIENT_REFS.items()},
        **{tag: getattr(client, attribute) for tag, attribute in CLIENT_FLAGS.items()},
        "BillingType": client.billing_type or None,
        "Modified": datetime.fromtimestamp(client.modified, tz=UTC).isoformat(),
        "Contacts": [
            {
                "UUID": c.uuid,
                "Name": c.name,
                "Salutation": c.salutation,
                "Addressee": c.addressee,
                "Phone": c.phone,
                "Mobile": c.mobile,
                "Email": c.email,
                "Position": c.position,
                "IsPrimary": c.is_primary,
                "IsDeleted": c.is_deleted,
            }
            for c in client.contacts
        ],
        "Groups": [{"UUID": g.uuid, "Name": g.name} for g in data.groups_of(client.uuid)],
        "Relationships": [r.to_json() for r in data.relationships_of(client.uuid)],
    }


def _data(state: SandboxState, tenant_id: str) -> PracticeData:
    practice = state.practices.get(tenant_id)
    if practice is None or practice.data is None:
        abort(404, "unknown practice")
    data: PracticeData = practice.data
    return data


def _changes(body: dict[str, Any]) -> ClientChanges:
    """ClientChanges from a JSON object of XPM element names; 400 on anything else."""
    changes = ClientChanges()
    for key, value in body.items():
        if key in CLIENT_FLAGS:
            if not isinstance(value, bool):
                abort(400, f"{key} must be true or false")
            changes.flags[CLIENT_FLAGS[key]] = value
            continue
        if not isinstance(value, str):
            abort(400, f"{key} must be a string")
        if key == "Name":
            if not value:
                abort(400, "Name must not be empty")
            changes.name = value
        elif key in CLIENT_FIELDS:
            changes.fields[key] = value
        elif key in CLIENT_REFS:
            changes.refs[CLIENT_REFS[key]] = value
        else:
            abort(400, f"unknown client field {key!r}")
    return changes


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "a JSON object body is required")
    return body


@bp.get("/practices/<tenant_id>/clients")
def list_clients(tenant_id: str) -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        data = _data(state, tenant_id)
        return jsonify([client_json(c, data) for c in data.clients.values()])


@bp.get("/practices/<tenant_id>/clients/<client_uuid>")
def get_client(tenant_id: str, client_uuid: str) -> ResponseReturnValue:
    state = get_state()
    with state.lock:
        data = _data(state, tenant_id)
        client = data.clients.get(client_uuid)
        if client is None:
            abort(404, "unknown client")
        return jsonify(client_json(client, data))


@bp.patch("/practices/<tenant_id>/clients/<client_uuid>")
def patch_client(tenant_id: str, client_uuid: str) -> ResponseReturnValue:
    """Change fields directly, as a staff member editing in XPM would; bumps ``modified``."""
    changes = _changes(_body())
    state = get_state()
    with state.lock:
        data = _data(state, tenant_id)
        client = data.clients.get(client_uuid)
        if client is None:
            abort(404, "unknown client")
        data.update_client(client, changes, state.clock.now())
        return jsonify(client_json(client, data))


@bp.post("/practices/<tenant_id>/clients")
def insert_client(tenant_id: str) -> ResponseReturnValue:
    """Insert a client without the API's validation (optional ``UUID``; ``Name`` required)."""
    body = _body()
    client_uuid = body.pop("UUID", None) or str(uuid.uuid4())
    changes = _changes(body)
    if changes.name is None:
        abort(400, "Name is required")
    state = get_state()
    with state.lock:
        data = _data(state, tenant_id)
        if not isinstance(client_uuid, str) or client_uuid in data.clients:
            abort(409, "UUID must be a new string")
        client = data.add_client(client_uuid, changes, state.clock.now())
        return jsonify(client_json(client, data)), 201


@bp.post("/practices/<tenant_id>/reseed")
def reseed(tenant_id: str) -> ResponseReturnValue:
    """Replace the practice's data with a fresh deterministic ``{"clients": N}`` seed."""
    n_clients = _body().get("clients")
    if not isinstance(n_clients, int) or not 1 <= n_clients <= MAX_RESEED_CLIENTS:
        abort(400, f"clients must be an integer from 1 to {MAX_RESEED_CLIENTS}")
    state = get_state()
    started = time.perf_counter()
    with state.lock:
        practice = state.practices.get(tenant_id)
        if practice is None:
            abort(404, "unknown practice")
        # Same (seed, practice, N) -> same data, whatever was seeded or changed before.
        rng = random.Random(f"{state.config.seed}/{tenant_id}/{n_clients}")
        practice.data = seed_practice_data(practice, n_clients, rng)
    return jsonify(
        {"tenant_id": tenant_id, "clients": n_clients, "seconds": round(time.perf_counter() - started, 3)}
    )


@bp.get("/xpm-options")
def xpm_options() -> ResponseReturnValue:
    config = get_state().config
    return jsonify(
        {"xpm_latency_seconds": config.xpm_latency_seconds, "xpm_error_status": config.xpm_error_status}
    )


@bp.put("/xpm-options")
def set_xpm_options() -> ResponseReturnValue:
    body = _body()
    state = get_state()
    with state.lock:
        if "xpm_latency_seconds" in body:
            latency = body["xpm_latency_seconds"]
            if isinstance(latency, bool) or not isinstance(latency, int | float):
                abort(400, "xpm_latency_seconds must be a number")
            if not 0 <= latency <= MAX_LATENCY_SECONDS:
                abort(400, f"xpm_latency_seconds must be from 0 to {MAX_LATENCY_SECONDS}")
            state.config.xpm_latency_seconds = float(latency)
        if "xpm_error_status" in body:
            status = body["xpm_error_status"]
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                abort(400, "xpm_error_status must be an HTTP status from 200 to 599")
            state.config.xpm_error_status = status
    return xpm_options()
