"""What api.xero.com does before an XPM call reaches the practice: count, authenticate, pick the
tenant, check scopes, apply rate limits, then inject any armed fault.

Gateway refusals are JSON problem bodies or bare statuses, never the XML envelope (§3.2):
401 for tokens and scopes (§1.11), 403 ``AuthenticationUnsuccessful`` for the tenant (§1.11),
429 with ``X-Rate-Limit-Problem`` for limits (§2.1).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from flask import Response, jsonify, request

from sandbox.faults import Fault
from sandbox.limits import Admission, Rejection, rate_limiter
from sandbox.state import Connection, SandboxState
from sandbox.tokens import TokenError, connection_for, has_scope, verify_access_token

INSUFFICIENT_SCOPE = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}  # RFC 6750 §3.1
LEGACY_SCOPE = "practicemanager"  # the 2020-era all-in-one scope still grants everything (§1.10, §0.7)


@dataclass(frozen=True)
class Endpoint:
    """One XPM method, e.g. ``client.api/add``: its names for counters, faults, scopes and 3.0."""

    resource: str  # client | clientgroup | staff
    method: str  # list | paged-list | search | get | add | ...
    api_method: str  # the 3.0 ``api-method`` attribute (§3.2)
    write: bool = False
    versions: tuple[str, ...] = ("3.0", "3.1")

    @property
    def name(self) -> str:
        return f"xpm.{self.resource}.{self.method}"

    @property
    def fault_targets(self) -> tuple[str, str, str]:
        return self.name, "xpm.write" if self.write else "xpm.read", "xpm"

    @property
    def accepted_scopes(self) -> tuple[str, ...]:
        # Client groups ride on the client scope (§3.6); staff has its own (§3.7).
        granular = "practicemanager.staff" if self.resource == "staff" else "practicemanager.client"
        if self.write:
            return granular, LEGACY_SCOPE
        return granular, f"{granular}.read", LEGACY_SCOPE


def through_gateway(
    state: SandboxState, endpoint: Endpoint, work: Callable[[Connection], Response]
) -> Response:
    """Run ``work`` for the caller's connection if the gateway lets the call through."""
    state.count(endpoint.name)
    try:
        claims = verify_access_token(state, request.headers.get("Authorization"))
        connection = connection_for(state, claims, request.headers.get("xero-tenant-id"))
    except TokenError as exc:
        return _problem(exc.status, exc.detail, exc.headers)
    if not has_scope(claims, *endpoint.accepted_scopes):
        return _problem(401, "AuthorizationUnsuccessful", INSUFFICIENT_SCOPE)
    limiter = rate_limiter(state)
    now = state.clock.now()
    decision = limiter.admit(state.config.limits, connection.client_id, connection.tenant_id, now)
    if isinstance(decision, Rejection):
        return _problem(429, "Rate limit exceeded", decision.headers())
    try:
        return _admitted(state, endpoint, decision, lambda: work(connection))
    finally:
        limiter.release(decision)


def _admitted(
    state: SandboxState, endpoint: Endpoint, admission: Admission, work: Callable[[], Response]
) -> Response:
    if state.config.xpm_latency_seconds > 0:
        # Real time, inside the call: it keeps the call "in progress" for the concurrent limit.
        time.sleep(state.config.xpm_latency_seconds)
    fault = state.faults.take(*endpoint.fault_targets)
    if fault is not None and fault.kind == "server_error":
        response = _problem(int(fault.params.get("status", 503)), "Injected server error")
    elif fault is not None and fault.kind == "rate_limit":
        response = _injected_rate_limit(fault)
    else:
        if fault is not None and fault.kind == "timeout":
            time.sleep(float(fault.params.get("seconds", 30)))
        response = work()
        if fault is not None and fault.kind == "drop_response":
            # The change is made; only the answer is lost (the caller must not retry blindly).
            _drop_connection()
            return response
    response.headers.update(admission.headers())
    return response


def _injected_rate_limit(fault: Fault) -> Response:
    headers = {
        "X-Rate-Limit-Problem": str(fault.params.get("problem", "minute")),
        "Retry-After": str(fault.params.get("retry_after", 60)),
    }
    return _problem(429, "Rate limit exceeded", headers)


def _drop_connection() -> None:
    """Close the TCP connection under the server's feet: the client sees no response at all."""
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """Xero's gateway problem body (§1.11): title, status, detail, instance."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:  # an injected status Python has no name for
        title = "Error"
    body = {"title": title, "status": status, "detail": detail, "instance": str(uuid.uuid4())}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response
