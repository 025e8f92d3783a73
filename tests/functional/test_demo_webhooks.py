"""The demo vendor's webhook receiver (local stack only) and the demo page's live list."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from chalicelib.webhooks.signing import body_bytes, signature_headers
from tests.functional.broker import BrokerUnderTest, LiveBroker, live_broker_fixture
from tests.functional.webhook_helpers import write_events


@pytest.fixture
def demo(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokerUnderTest]:
    """The fixture's vendor plays the demo vendor, as ``make run`` passes it in the environment."""
    from chalicelib.web import demo_inbox

    monkeypatch.setenv("XPMB_DEMO_VENDOR_ID", broker.vendor.vendor_id)
    monkeypatch.setenv("XPMB_DEMO_KEY_ID", broker.vendor.key_id)
    monkeypatch.setenv("XPMB_DEMO_KEY_SECRET", broker.vendor.key_secret)
    monkeypatch.setenv("XPMB_DEMO_WEBHOOK_SECRET", broker.vendor.webhook_secret)
    demo_inbox.forget()
    yield broker
    demo_inbox.forget()


def post_webhook(
    broker: BrokerUnderTest, secret: str, webhook_id: str = "evt_00000000000011aabbccdd00"
) -> object:
    body = body_bytes(
        {"type": "connection.created", "timestamp": "2030-01-01T00:00:00Z", "data": {"tenant_ref": "t1"}}
    )
    headers = {
        **signature_headers(webhook_id, time.time(), body, [secret]),
        "Content-Type": "application/json",
    }
    return broker.client.http.post("/demo/webhooks", headers=headers, body=body)


def test_the_receiver_verifies_dedupes_and_lists(demo: BrokerUnderTest) -> None:
    assert post_webhook(demo, demo.vendor.webhook_secret).status_code == 204  # type: ignore[attr-defined]
    assert post_webhook(demo, demo.vendor.webhook_secret).status_code == 204  # type: ignore[attr-defined]
    listed = json.loads(demo.client.http.get("/demo/webhooks").body)["events"]
    assert [(e["type"], e["deliveries"], e["data"]) for e in listed] == [
        ("connection.created", 2, {"tenant_ref": "t1"})
    ]
    forged = post_webhook(
        demo, "whsec_" + "QmFkIHNlY3JldCBieXRlcyBmb3IgdGVzdGluZw==", "evt_00000000000011aabbccdd01"
    )
    assert forged.status_code == 401  # type: ignore[attr-defined]
    assert json.loads(forged.body)["code"] == "invalid_webhook_signature"  # type: ignore[attr-defined]
    assert len(json.loads(demo.client.http.get("/demo/webhooks").body)["events"]) == 1


def test_the_receiver_does_not_exist_without_the_demo_vendor(broker: BrokerUnderTest) -> None:
    assert post_webhook(broker, broker.vendor.webhook_secret).status_code == 404  # type: ignore[attr-defined]
    assert broker.client.http.get("/demo/webhooks").status_code == 404


def test_the_receiver_does_not_exist_off_the_local_stage(
    demo: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Chalice's test client pins the stage to ``local``, so this asks the receiver directly.)"""
    from chalicelib.config import reset_settings
    from chalicelib.errors import BrokerError
    from chalicelib.web import demo_inbox

    monkeypatch.setenv("XPMB_STAGE", "dev")
    monkeypatch.setenv("XPMB_KMS_KEY_ID", "alias/xpmb-local")
    monkeypatch.setenv("XPMB_PUBLIC_URL", "https://broker.example")
    reset_settings()
    body = body_bytes({"type": "connection.created", "timestamp": "2030-01-01T00:00:00Z", "data": {}})
    headers = signature_headers(
        "evt_00000000000011aabbccdd02", time.time(), body, [demo.vendor.webhook_secret]
    )
    for call in (lambda: demo_inbox.receive(body, headers), demo_inbox.received):
        with pytest.raises(BrokerError) as refused:
            call()
        assert refused.value.status == 404


@pytest.fixture
def live(demo: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveBroker]:
    yield from live_broker_fixture(demo, monkeypatch)


def test_events_reach_the_demo_page_through_the_real_delivery_path(
    demo: BrokerUnderTest, live: LiveBroker
) -> None:
    """The local stack's wiring: the demo vendor's endpoint is ``{public}/demo/webhooks``."""
    from chalicelib.tenants.models import Vendor
    from chalicelib.webhooks.delivery import Deliverer
    from chalicelib.webhooks.dispatch import AttemptMessage
    from chalicelib.webhooks.endpoint import configure_endpoint

    configure_endpoint(Vendor.get(demo.vendor.vendor_id), {"url": f"{live.url}/demo/webhooks"}, "test")
    events = write_events(demo.vendor.vendor_id, 2, time.time(), event_type="connection.revoked")
    for event in events:
        assert Deliverer().deliver(AttemptMessage(event.vendor_id, event.event_id, 1)).value == "delivered"
    import requests

    listed = requests.get(f"{live.url}/demo/webhooks", timeout=10).json()["events"]
    assert [e["id"] for e in listed] == [e.event_id for e in reversed(events)]
    page = requests.get(f"{live.url}/demo", timeout=30)
    assert 'id="webhooks"' in page.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"])
    assert nonce and page.text.count(f'<script nonce="{nonce.group(1)}">') >= 1
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
