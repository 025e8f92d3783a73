"""What an armed fault (sandbox/faults.py) does to an identity or /connections response.

Call ``before_work`` first: it returns the response that replaces the real one, sleeps for a
``timeout`` and then lets the work proceed, or returns None. After the work, ``after_work``
turns a ``drop_response`` into a dropped TCP connection: "Xero did it, the answer was lost".
"""

from __future__ import annotations

import contextlib
import socket
import time

from flask import Response, jsonify, request

from sandbox.faults import Fault
from sandbox.oauth_errors import OAuthError
from sandbox.state import SandboxState

_SERVER_ERROR_PAGE = "<!doctype html><title>{status}</title><h1>{status} Service Unavailable</h1>"


def arrive(state: SandboxState, counter: str, *targets: str) -> tuple[Fault | None, Response | None]:
    """Count the call and take its armed fault: the fault, and the response replacing the real
    one (None when the work should go ahead)."""
    state.count(counter)
    fault = state.faults.take(*targets)
    return fault, before_work(fault)


def before_work(fault: Fault | None) -> Response | None:
    if fault is None:
        return None
    if fault.kind == "server_error":
        # An edge-style HTML page, not JSON: clients must not assume a parseable 5xx body.
        status = int(fault.params.get("status", 503))
        return Response(_SERVER_ERROR_PAGE.format(status=status), status=status, mimetype="text/html")
    if fault.kind == "timeout":
        time.sleep(float(fault.params.get("seconds", 30)))
        return None
    if fault.kind == "invalid_grant":
        return OAuthError("invalid_grant").response()
    if fault.kind == "rate_limit":
        return _rate_limited(fault)
    return None  # drop_response acts after the work


def _rate_limited(fault: Fault) -> Response:
    problem = str(fault.params.get("problem", "minute"))
    response = jsonify(
        {"title": "Too Many Requests", "status": 429, "detail": f"Rate limit exceeded: {problem}"}
    )
    response.status_code = 429
    # §2.1: 429 names the limit in X-Rate-Limit-Problem and says when to retry.
    response.headers["X-Rate-Limit-Problem"] = problem
    response.headers["Retry-After"] = str(fault.params.get("retry_after", 60))
    return response


def after_work(fault: Fault | None, response: Response) -> Response:
    if fault is None or fault.kind != "drop_response":
        return response
    return drop_connection()


def drop_connection() -> Response:
    """Close the client's socket so the response we return is never delivered.

    Writing to the shut-down socket raises a ConnectionError inside werkzeug, which it treats
    as a client that went away; the client sees the connection close with no response.
    """
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return Response(status=500)
