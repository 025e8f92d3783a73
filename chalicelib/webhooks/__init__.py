"""Outbox, Standard Webhooks signing, delivery and retries, SSRF guard, event log."""
