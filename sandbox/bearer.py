"""Bearer access-token checks for the identity and tenantless API endpoints (§1.8, §1.11)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from sandbox.state import SandboxState
from sandbox.tokens import TokenError, verify_access_token


def bearer_claims(state: SandboxState) -> dict[str, Any]:
    """Claims of the request's access token, or TokenError (401 problem, §1.11)."""
    return verify_access_token(state, request.headers.get("Authorization"))


def problem_response(exc: TokenError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response
