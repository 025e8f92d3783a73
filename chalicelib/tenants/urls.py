"""Validation of URLs vendors register (return URLs, webhook URL).

Return URLs are later matched by exact string comparison (checklist A5), so they are stored
exactly as given after these checks: https (http only for loopback on the local stage), no
userinfo, no fragment, an explicit host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chalicelib.errors import BrokerError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def invalid_url(field: str, detail: str) -> BrokerError:
    return BrokerError("invalid_url", 422, "Invalid URL", f"{field}: {detail}", extra={"field": field})


def check_registered_url(url: str, field: str, *, local_stage: bool) -> str:
    if not isinstance(url, str) or not url or len(url) > 2048 or url != url.strip():
        raise invalid_url(field, "must be a non-empty URL of at most 2048 characters")
    if any(ch in url for ch in "\\\r\n\t "):
        raise invalid_url(field, "must not contain spaces, control characters or backslashes")
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise invalid_url(field, "must be an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise invalid_url(field, "must not contain user information")
    if parts.fragment or url.endswith("#"):
        raise invalid_url(field, "must not contain a fragment")
    if parts.scheme == "http" and not (local_stage and parts.hostname in LOOPBACK_HOSTS):
        raise invalid_url(field, "must use https (http is allowed only for loopback on the local stage)")
    return url
