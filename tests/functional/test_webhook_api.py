"""The signed webhook API (contract.md §4): endpoint, secret rotation, event log, redelivery.

Through the Chalice test client with RFC 9421-signed requests, and the rotation route (its path
has a literal colon) also over the live HTTP server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.tenants.models import Vendor
from chalicelib.webhooks.models import EVENT_TYPES, Event
from tests.functional.broker import BrokerUnderTest, LiveBroker, live_broker_fixture, make_vendor
from tests.functional.webhook_helpers import Receiver, write_events


@pytest.fixture
def receiver(broker: BrokerUnderTest) -> Iterator[Receiver]:
    server = Receiver([broker.vendor.webhook_secret]).start()
    yield server
    server.stop()


def body(response: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.body)
    return loaded


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    document = body(response)
    assert document["code"] == code
    return document


def test_an_unconfigured_endpoint_reads_as_such(broker: BrokerUnderTest) -> None:
    response = broker.signed("GET", "/v1/webhook-endpoint")
    assert response.status_code == 200
    view = body(response)
    assert (view["url"], view["status"]) == (None, "not_configured")
    assert view["event_types"] == sorted(EVENT_TYPES)


def test_put_sets_url_and_types_and_get_never_shows_a_secret(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    response = broker.signed(
        "PUT",
        "/v1/webhook-endpoint",
        json_body={"url": receiver.url, "event_types": ["push.failed", "push.completed"]},
    )
    assert response.status_code == 200, response.body
    assert body(response)["event_types"] == ["push.completed", "push.failed"]
    got = broker.signed("GET", "/v1/webhook-endpoint")
    view = body(got)
    assert (view["url"], view["status"], view["disabled_at"]) == (receiver.url, "active", None)
    assert view["secret_rotation"] == {
        "rotated_at": None,
        "previous_secret_active": False,
        "previous_secret_expires_at": None,
    }
    assert "whsec_" not in got.body.decode() and "secret_ct" not in got.body.decode()
    # Omitting event_types means every type again.
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    assert body(broker.signed("GET", "/v1/webhook-endpoint"))["event_types"] == sorted(EVENT_TYPES)


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"url": "https://10.0.0.1/hooks"}, "invalid_url", "url"),
        ({"url": "http://hooks.vendor.example/"}, "invalid_url", "url"),
        ({"url": "https://169.254.169.254/"}, "invalid_url", "url"),
        ({"url": "https://0x7f000001/"}, "invalid_url", "url"),
        ({"url": "https://u:p@hooks.vendor.example/"}, "invalid_url", "url"),
        ({}, "invalid_request", "url"),
        ({"url": 5}, "invalid_request", "url"),
        (
            {"url": "https://hooks.vendor.example/", "event_types": ["push.exploded"]},
            "invalid_request",
            "event_types",
        ),
        ({"url": "https://hooks.vendor.example/", "event_types": []}, "invalid_request", "event_types"),
        (
            {"url": "https://hooks.vendor.example/", "event_types": "push.failed"},
            "invalid_request",
            "event_types",
        ),
        ({"url": "https://hooks.vendor.example/", "secret": "whsec_x"}, "invalid_request", "secret"),
    ],
)
def test_bad_endpoint_input_is_a_problem(
    broker: BrokerUnderTest, payload: dict[str, Any], code: str, field: str
) -> None:
    document = problem(broker.signed("PUT", "/v1/webhook-endpoint", json_body=payload), 422, code)
    assert document["field"] == field
    assert Vendor.get(broker.vendor.vendor_id).webhook_url is None


def test_put_re_enables_a_disabled_endpoint(broker: BrokerUnderTest, receiver: Receiver) -> None:
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    vendor = Vendor.get(broker.vendor.vendor_id)
    from chalicelib.webhooks.endpoint import disable_endpoint

    assert disable_endpoint(vendor, "gone", time.time())
    assert not disable_endpoint(Vendor.get(broker.vendor.vendor_id), "gone", time.time())  # once
    view = body(broker.signed("GET", "/v1/webhook-endpoint"))
    assert (view["status"], view["disabled_reason"]) == ("disabled", "gone")
    assert view["disabled_at"] is not None
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    view = body(broker.signed("GET", "/v1/webhook-endpoint"))
    assert (view["status"], view["disabled_at"], view["disabled_reason"]) == ("active", None, None)


def test_secret_rotate_route_with_its_literal_colon(broker: BrokerUnderTest, receiver: Receiver) -> None:
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    response = broker.signed("POST", "/v1/webhook-endpoint/secret:rotate")
    assert response.status_code == 200, response.body
    rotated = body(response)
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != broker.vendor.webhook_secret
    assert rotated["secret_rotation"]["previous_secret_active"] is True
    view = body(broker.signed("GET", "/v1/webhook-endpoint"))
    rotated_at = view["secret_rotation"]["rotated_at"]
    expires = view["secret_rotation"]["previous_secret_expires_at"]
    assert _seconds(expires) - _seconds(rotated_at) == 24 * 3600
    assert "secret" not in view


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def live(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveBroker]:
    yield from live_broker_fixture(broker, monkeypatch)


def test_secret_rotate_over_real_http(live: LiveBroker) -> None:
    import requests
    from requests_http_signature import HTTPSignatureAuth, algorithms

    auth = HTTPSignatureAuth(
        key=live.vendor.key_secret.encode(),
        key_id=live.vendor.key_id,
        signature_algorithm=algorithms.HMAC_SHA256,
        use_nonce=True,
    )
    response = requests.post(f"{live.url}/v1/webhook-endpoint/secret:rotate", auth=auth, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["secret"].startswith("whsec_")
    assert live.get("/v1/webhook-endpoint").json()["secret_rotation"]["previous_secret_active"] is True


def test_the_event_log_pages_forward_by_id(broker: BrokerUnderTest) -> None:
    now = time.time()
    events = write_events(broker.vendor.vendor_id, 5, now)
    first = body(broker.signed("GET", "/v1/events?limit=2"))
    assert [e["id"] for e in first["events"]] == [e.event_id for e in events[:2]]
    assert first["has_more"] is True
    second = body(broker.signed("GET", f"/v1/events?limit=2&after={first['next_after']}"))
    assert [e["id"] for e in second["events"]] == [e.event_id for e in events[2:4]]
    rest = body(broker.signed("GET", f"/v1/events?after={second['next_after']}"))
    assert [e["id"] for e in rest["events"]] == [events[4].event_id]
    assert rest["has_more"] is False
    empty = body(broker.signed("GET", f"/v1/events?after={rest['next_after']}"))
    assert (empty["events"], empty["next_after"]) == ([], events[4].event_id)  # poll again from here
    shown = first["events"][0]
    assert shown["type"] == "push.completed" and shown["data"] == {"push_id": "push_0"}
    assert shown["delivery"]["status"] == "pending" and shown["delivery"]["attempts"] == 0


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "after=evt_x", "after=../../"])
def test_bad_event_log_parameters_are_problems(broker: BrokerUnderTest, query: str) -> None:
    problem(broker.signed("GET", f"/v1/events?{query}"), 422, "invalid_request")


def test_a_vendor_sees_only_its_own_events(broker: BrokerUnderTest) -> None:
    other = make_vendor(
        name="Other", xero_client_id="X", xero_client_secret="Y", return_urls=["https://other.example/done"]
    )
    (theirs,) = write_events(other.vendor_id, 1, time.time())
    (mine,) = write_events(broker.vendor.vendor_id, 1, time.time())
    assert [e["id"] for e in body(broker.signed("GET", "/v1/events"))["events"]] == [mine.event_id]
    problem(broker.signed("POST", f"/v1/events/{theirs.event_id}/redeliver"), 404, "event_not_found")
    problem(broker.signed("POST", "/v1/events/evt_nope/redeliver"), 404, "event_not_found")
    assert Event.get(other.vendor_id, theirs.event_id).redelivery_requested_at is None


def test_redeliver_queues_a_new_round_and_is_refused_without_an_active_endpoint(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    (event,) = write_events(broker.vendor.vendor_id, 1, time.time())
    problem(
        broker.signed("POST", f"/v1/events/{event.event_id}/redeliver"),
        409,
        "webhook_endpoint_not_configured",
    )
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    from chalicelib.webhooks.delivery import Deliverer
    from chalicelib.webhooks.dispatch import AttemptMessage

    Deliverer().deliver(AttemptMessage(event.vendor_id, event.event_id, 1))
    assert receiver.verified_ids() == [event.event_id]
    response = broker.signed("POST", f"/v1/events/{event.event_id}/redeliver")
    assert response.status_code == 202, response.body
    view = body(response)
    assert (view["id"], view["delivery"]["status"], view["delivery"]["attempts"]) == (
        event.event_id,
        "pending",
        1,
    )
    Deliverer().deliver(AttemptMessage(event.vendor_id, event.event_id, 2))
    assert receiver.verified_ids() == [event.event_id, event.event_id]  # same id: the vendor dedupes
    listed = body(broker.signed("GET", "/v1/events"))["events"][0]["delivery"]
    assert (listed["status"], listed["attempts"], listed["last_response_status"]) == ("delivered", 2, 204)

    from chalicelib.webhooks.endpoint import disable_endpoint

    disable_endpoint(Vendor.get(broker.vendor.vendor_id), "gone", time.time())
    problem(broker.signed("POST", f"/v1/events/{event.event_id}/redeliver"), 409, "webhook_endpoint_disabled")


def test_unsigned_calls_are_refused(broker: BrokerUnderTest) -> None:
    for method, path in (
        ("GET", "/v1/webhook-endpoint"),
        ("PUT", "/v1/webhook-endpoint"),
        ("POST", "/v1/webhook-endpoint/secret:rotate"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events/evt_0000000000000aaaaaaaaaa/redeliver"),
    ):
        response = getattr(broker.client.http, method.lower())(
            path, headers={"Content-Type": "application/json"}, body=b"{}"
        )
        problem(response, 401, "invalid_signature")


def test_endpoint_changes_are_audited_without_secrets(broker: BrokerUnderTest, receiver: Receiver) -> None:
    """PUT, secret:rotate, disabling and redelivery each write one audit row naming the key used."""
    from chalicelib.audit import AuditRecord
    from chalicelib.webhooks.delivery import Deliverer
    from chalicelib.webhooks.dispatch import AttemptMessage
    from chalicelib.webhooks.endpoint import disable_endpoint

    vendor_id = broker.vendor.vendor_id
    caller = f"vendor-key:{broker.vendor.key_id}"

    def rows() -> list[AuditRecord]:
        return [r for r in AuditRecord.query(vendor_id, consistent_read=True) if r.action != "vendor.created"]

    broker.signed(
        "PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url, "event_types": ["push.failed"]}
    )
    rotated = body(broker.signed("POST", "/v1/webhook-endpoint/secret:rotate"))
    assert disable_endpoint(Vendor.get(vendor_id), "gone", time.time())
    problem(
        broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": "https://10.0.0.1/"}),
        422,
        "invalid_url",
    )
    broker.signed("PUT", "/v1/webhook-endpoint", json_body={"url": receiver.url})
    (event,) = write_events(vendor_id, 1, time.time())
    Deliverer().deliver(AttemptMessage(vendor_id, event.event_id, 1))
    assert broker.signed("POST", f"/v1/events/{event.event_id}/redeliver").status_code == 202

    audited = rows()
    assert [(r.action, r.actor, r.outcome) for r in audited] == [
        ("webhook_endpoint.updated", caller, "success"),
        ("webhook_secret.rotated", caller, "success"),
        ("webhook_endpoint.disabled", "system", "failure"),
        ("webhook_endpoint.updated", caller, "success"),  # the refused PUT changed nothing
        ("event.redelivered", caller, "success"),
    ]
    assert audited[0].detail.as_dict() == {"host": "127.0.0.1", "event_types": 1}
    assert audited[2].detail.as_dict() == {"reason": "gone", "host": "127.0.0.1"}
    assert audited[4].detail.as_dict() == {"event_id": event.event_id}
    stored = json.dumps([dict(r.attribute_values, detail=r.detail.as_dict()) for r in audited], default=str)
    for secret in (broker.vendor.webhook_secret, rotated["secret"], broker.vendor.key_secret):
        assert secret not in stored
