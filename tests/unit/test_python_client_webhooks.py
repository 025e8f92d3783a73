"""The client's webhook helper accepts what Standard Webhooks signs and nothing else."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook
from xpmb_client import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
BODY = json.dumps({"type": "push.completed", "timestamp": "2026-11-22T00:00:00Z", "data": {"push_id": "p1"}})


def signed_headers(secret: str, body: str, at: float | None = None, msg_id: str = "evt_1") -> dict[str, str]:
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(int(moment.timestamp())),
        "Webhook-Signature": Webhook(secret).sign(msg_id, moment, body),
    }


def test_a_signed_event_verifies_with_any_header_case() -> None:
    event = verify_webhook(SECRET, BODY.encode(), signed_headers(SECRET, BODY))
    assert event["type"] == "push.completed"
    assert event["data"] == {"push_id": "p1"}


def test_rotation_sends_two_signatures_and_either_secret_verifies() -> None:
    new_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    old = signed_headers(SECRET, BODY)
    new = signed_headers(new_secret, BODY)
    both = {**old, "Webhook-Signature": f"{old['Webhook-Signature']} {new['Webhook-Signature']}"}
    assert verify_webhook(SECRET, BODY, both)["type"] == "push.completed"
    assert verify_webhook(new_secret, BODY, both)["type"] == "push.completed"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace("p1", "p2")),  # body changed
        lambda h, b: ({**h, "Webhook-Id": "evt_2"}, b),  # id changed
        lambda h, b: ({**h, "Webhook-Signature": "v1,AAAA"}, b),  # wrong MAC
        lambda h, b: ({**h, "Webhook-Signature": "garbage-without-comma"}, b),  # malformed (ValueError)
        lambda h, b: ({k: v for k, v in h.items() if k != "Webhook-Id"}, b),  # header missing
    ],
)
def test_anything_tampered_is_refused(tamper: object) -> None:
    headers, body = tamper(signed_headers(SECRET, BODY), BODY)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, body, headers)


def test_an_old_timestamp_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, BODY, signed_headers(SECRET, BODY, at=time.time() - 3600))


def test_another_secret_is_refused() -> None:
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(other, BODY, signed_headers(SECRET, BODY))
