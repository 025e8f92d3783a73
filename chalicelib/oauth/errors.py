"""Errors of the Xero identity side, named as the contract names them (contract.md §5)."""

from __future__ import annotations

from chalicelib.errors import BrokerError


class UpstreamError(BrokerError):
    """Xero identity or the connections API failed or answered something we cannot trust."""

    def __init__(self, detail: str, *, status: int = 502) -> None:
        super().__init__("upstream_unavailable", status, "Xero unavailable", detail)


class InvalidGrant(BrokerError):
    """Xero refused the refresh token or code (``invalid_grant``, xero-reference §1.6)."""

    def __init__(self, description: str = "") -> None:
        super().__init__(
            "connection_not_active",
            409,
            "Connection not active",
            "Xero no longer accepts this connection's authorisation; the firm must reconnect.",
            extra={"xero_error": "invalid_grant", "xero_error_description": description[:200]},
        )


class InvalidClient(BrokerError):
    """Xero refused the vendor's app credentials (``invalid_client``)."""

    def __init__(self) -> None:
        super().__init__(
            "app_misconfigured",
            502,
            "Xero app misconfigured",
            "Xero refused the vendor's Xero app credentials (invalid_client).",
        )


class IdTokenInvalid(Exception):
    """The id_token failed validation; ``reason`` is for internal logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
