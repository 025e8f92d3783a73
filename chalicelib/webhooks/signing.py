"""Standard Webhooks signatures with the official ``standardwebhooks`` package (checklist E1, E2).

``webhook-id`` is the event id (stable across retries: vendors dedupe on it), ``webhook-timestamp``
the Unix time of *this* attempt, ``webhook-signature`` one ``v1,<base64 HMAC-SHA256>`` per
valid secret, space-separated: during a rotation's grace period both the new and the old secret
sign, so a vendor can switch its verifier at any moment. The signed content is
``{id}.{timestamp}.{body}`` over exactly the bytes sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, ASCII only."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signature_headers(
    message_id: str, timestamp: float, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The three ``webhook-*`` headers for one attempt, signed with every secret given."""
    from standardwebhooks.webhooks import Webhook

    if not secrets:
        raise ValueError("at least one signing secret is required")
    if "." in message_id:
        raise ValueError("a webhook id must not contain '.'")
    seconds = int(timestamp)
    when = datetime.fromtimestamp(seconds, tz=UTC)
    text = body.decode("ascii")
    signatures = [Webhook(secret).sign(message_id, when, text) for secret in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signatures),
    }
