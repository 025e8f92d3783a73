"""Vendors, API keys, request-signature verification, tenants and connections."""
