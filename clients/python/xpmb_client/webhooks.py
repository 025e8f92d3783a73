"""Verify the broker's webhooks: a thin wrapper on the ``standardwebhooks`` package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as _LibraryError

from xpmb_client.errors import WebhookVerificationError


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Check ``webhook-id``/``webhook-timestamp``/``webhook-signature`` and return the event.

    ``secret`` is the ``whsec_…`` value the broker gave you; ``body`` must be the raw bytes
    received (not re-serialised JSON). Delivery is at least once: deduplicate on the
    ``webhook-id`` header (it stays the same across retries of one event). Raises
    :class:`WebhookVerificationError` for anything that does not verify.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        event = Webhook(secret).verify(body, lowered)
    except (_LibraryError, ValueError) as error:
        # standardwebhooks raises ValueError (not its own error) for a malformed signature header,
        # bad base64 or a body that is not UTF-8 JSON.
        raise WebhookVerificationError(str(error) or type(error).__name__) from error
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    verified: dict[str, Any] = event
    return verified
