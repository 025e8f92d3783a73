"""The demo vendor's webhook receiver (local stack only), as a vendor would write one.

``make run`` registers ``{public}/demo/webhooks`` as the demo vendor's endpoint and passes its
secret in ``XPMB_DEMO_WEBHOOK_SECRET``. Each POST is verified with the official
``standardwebhooks`` library, deduplicated on ``webhook-id`` (deliveries are at least once) and
kept in memory (the last 50) for the demo page, which polls ``GET /demo/webhooks``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import BrokerError
from chalicelib.web.demo import demo_vendor

KEPT = 50

_inbox: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def demo_webhook_secrets() -> list[str]:
    """The secrets the demo receiver trusts (comma-separated, to follow a rotation); 404 off-stack."""
    demo_vendor()  # 404 unless this is the local stack with a demo vendor
    secrets = [s for s in os.environ.get("XPMB_DEMO_WEBHOOK_SECRET", "").split(",") if s]
    if not secrets:
        raise BrokerError("not_found", 404, "Not found", "The demo receiver has no webhook secret.")
    return secrets


def receive(body: bytes, headers: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
    """Verify one delivery and keep it; a repeated ``webhook-id`` is counted, not stored twice."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    lowered = {k.lower(): v for k, v in headers.items()}
    payload: Any = None
    for secret in demo_webhook_secrets():
        try:
            payload = Webhook(secret).verify(body, lowered)
            break
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature list
            continue
    if not isinstance(payload, dict):
        raise BrokerError(
            "invalid_webhook_signature", 401, "Invalid signature", "The webhook signature does not verify."
        )
    webhook_id = lowered["webhook-id"]
    with _lock:
        entry = _inbox.get(webhook_id)
        if entry is not None:
            entry["deliveries"] += 1
            return entry
        entry = {
            "id": webhook_id,
            "type": payload.get("type"),
            "timestamp": payload.get("timestamp"),
            "data": payload.get("data"),
            "received_at": time.time() if now is None else now,
            "deliveries": 1,
        }
        _inbox[webhook_id] = entry
        while len(_inbox) > KEPT:
            _inbox.popitem(last=False)
        return entry


def received() -> dict[str, Any]:
    demo_webhook_secrets()
    with _lock:
        return {"events": [dict(e) for e in reversed(_inbox.values())]}


def forget() -> None:
    with _lock:
        _inbox.clear()
