"""Vendors, API keys, request-signature verification, tenants and connections."""

CONNECTION_STATUSES = ("active", "needs_reauthorisation", "revoked")
