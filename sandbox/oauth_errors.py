"""OAuth 2.0 error responses as Xero's token and revocation endpoints send them (§1.6)."""

from __future__ import annotations

from flask import Response, jsonify


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``error`` is the contract, ``description`` optional detail."""

    def __init__(self, error: str, description: str | None = None, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        # Xero answers 400 even for invalid_client, where RFC 6749 would allow 401 (§1.6).
        self.status = status

    def response(self) -> Response:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        response = jsonify(body)
        response.status_code = self.status
        response.headers["Cache-Control"] = "no-store"
        return response
