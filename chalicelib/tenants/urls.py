"""Validation of URLs vendors register (return URLs, webhook URL).

Return URLs are later matched by exact string comparison (checklist A5), so they are stored
exactly as given after these checks: https (http only for loopback on the local stage), no
userinfo, no fragment, an explicit host. The broker never calls a return URL (the browser does).

A webhook URL is one the broker *will* call, so it goes through the one SSRF guard
(``chalicelib.webhooks.ssrf``: public addresses only, port 443/8443, no odd IP spellings), at
registration here and again before every delivery.
"""

from __future__ import annotations

from chalicelib.errors import BrokerError
from chalicelib.webhooks.ssrf import LOOPBACK_HOSTS, UnsafeUrl, check_url, http_allowed, split_url

__all__ = ["LOOPBACK_HOSTS", "check_registered_url", "check_webhook_url", "invalid_url"]


def invalid_url(field: str, detail: str) -> BrokerError:
    return BrokerError("invalid_url", 422, "Invalid URL", f"{field}: {detail}", extra={"field": field})


def check_registered_url(url: str, field: str, *, local_stage: bool) -> str:
    try:
        parts = split_url(url)
    except UnsafeUrl as unsafe:
        raise invalid_url(field, unsafe.reason) from unsafe
    if parts.scheme == "http" and not http_allowed(parts, local_stage=local_stage):
        raise invalid_url(field, "must use https (http is allowed only for loopback on the local stage)")
    return url


def check_webhook_url(url: str, field: str = "url", *, local_stage: bool) -> str:
    """A URL the broker may POST webhooks to (resolves the host: every address must be public)."""
    try:
        check_url(url, local_stage=local_stage)
    except UnsafeUrl as unsafe:
        raise invalid_url(field, unsafe.reason) from unsafe
    return url
