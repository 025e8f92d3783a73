"""Outbox → queue → signed delivery to a real receiver on 127.0.0.1 (moto for DynamoDB/SQS/KMS).

Covers security-checklist E1 (signatures verify with the official library, same id new
timestamp on retry), E2 (rotation: two signatures), E3 (the schedule, with jitter bounds, on a
simulated clock), E4 (410 disables), E5 (disabled after failing for the whole window), E6 (an
attempt happens once), E8 (redeliver), E9 (the dispatcher delivers what the immediate enqueue
missed), E11/E12 (checked again at delivery, connect to the checked address).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.tenants.models import Vendor
from chalicelib.webhooks.delivery import Deliverer, Outcome, handle_delivery_messages
from chalicelib.webhooks.dispatch import AttemptMessage, dispatch_due
from chalicelib.webhooks.endpoint import configure_endpoint, rotate_secret
from chalicelib.webhooks.event_log import redeliver
from chalicelib.webhooks.models import DeliveryAttempt, Event, attempt_key
from chalicelib.webhooks.retry import JITTER, MAX_ATTEMPTS, SCHEDULE
from chalicelib.webhooks.ssrf import use_resolver
from tests.functional.broker import BrokerUnderTest
from tests.functional.webhook_helpers import (
    Received,
    Receiver,
    Simulation,
    verifier_clock,
    verifies_with,
    write_events,
)

T0 = 1_900_000_000.0  # a fixed simulated start (2030-03-17)


@pytest.fixture
def receiver(broker: BrokerUnderTest) -> Iterator[Receiver]:
    server = Receiver([broker.vendor.webhook_secret]).start()
    yield server
    server.stop()


def endpoint(broker: BrokerUnderTest, url: str, **body: Any) -> Vendor:
    vendor = Vendor.get(broker.vendor.vendor_id)
    configure_endpoint(vendor, {"url": url, **body}, "test")
    return Vendor.get(broker.vendor.vendor_id)


def event_row(event: Event) -> Event:
    return Event.get(event.vendor_id, event.event_id, consistent_read=True)


def attempt_rows(event: Event) -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.query(attempt_key(event.vendor_id, event.event_id)))


def sqs_records(local_aws: str, queue: str = "xpmb-local-webhooks") -> list[dict[str, Any]]:
    """Receive what the queue holds, shaped as the Lambda event's records (as the pump does)."""
    from chalicelib.aws import aws_client
    from xpmb.pump import _sqs_record

    sqs = aws_client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    return [_sqs_record(m, f"arn:aws:sqs:us-east-1:123456789012:{queue}", "us-east-1") for m in messages]


# -- the real path: commit → SQS → the app's worker → the receiver ------------------------------


def test_a_committed_event_is_queued_at_once_and_delivered_signed_by_the_sqs_worker(
    broker: BrokerUnderTest, receiver: Receiver, local_aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import app
    from xpmb.pump import FakeLambdaContext

    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, time.time())
    records = sqs_records(local_aws)
    assert [json.loads(r["body"]) for r in records] == [
        {"vendor_id": broker.vendor.vendor_id, "event_id": event.event_id, "attempt": 1}
    ]
    capsys.readouterr()
    result = app.handler_map["webhook_worker"]({"Records": records}, FakeLambdaContext("webhook_worker"))
    assert result == {"batchItemFailures": []}

    (got,) = receiver.received
    assert got.verified, got.error
    assert got.webhook_id == event.event_id
    assert got.payload == {
        "type": "push.completed",
        "timestamp": got.payload["timestamp"],
        "data": {"push_id": "push_0"},
    }
    assert set(got.payload) == {"type", "timestamp", "data"}
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("xpm-broker-webhooks/")
    assert "cookie" not in got.headers
    stored = event_row(event)
    assert (stored.delivery_status, stored.attempts_made, stored.delivery_shard, stored.dispatch_at) == (
        "delivered", 1, None, None
    )  # fmt: skip
    (attempt,) = attempt_rows(event)
    assert (attempt.outcome, attempt.response_status) == ("delivered", 204)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(m.get("WebhookDelivered") == [1.0] or m.get("WebhookDelivered") == 1.0 for m in emf), emf
    assert any(m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "xpm-broker-test" for m in emf)
    assert all(m.get("service") == "webhooks" for m in emf)


def test_the_dispatcher_delivers_what_the_immediate_enqueue_missed(
    broker: BrokerUnderTest, receiver: Receiver, local_aws: str
) -> None:
    """E9: the commit happened but its message was lost (a crash, SQS down) → still delivered."""
    from chalicelib.webhooks.dispatch import SqsAttemptQueue

    endpoint(broker, receiver.url)
    now = time.time()
    events = write_events(broker.vendor.vendor_id, 3, now)
    sqs_records(local_aws)  # the immediate messages are lost (received and never processed)
    assert dispatch_due(now=now + 1).due == 0  # within the grace: the immediate message owns it
    report = dispatch_due(now=now + 61, queue=SqsAttemptQueue())
    assert sorted(report.event_ids) == sorted(e.event_id for e in events)
    assert dispatch_due(now=now + 62).due == 0  # leased: not queued twice
    records = sqs_records(local_aws)
    assert handle_delivery_messages({"Records": records}, None) == {"batchItemFailures": []}
    assert sorted(receiver.verified_ids()) == sorted(e.event_id for e in events)


def test_an_attempt_happens_once_however_often_its_message_arrives(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    """E6: the same message twice (SQS at-least-once, a dispatcher copy) → one attempt, one POST."""
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, time.time())
    worker = Deliverer()
    message = AttemptMessage(event.vendor_id, event.event_id, 1)
    assert worker.deliver(message) is Outcome.DELIVERED
    assert worker.deliver(message) is Outcome.DUPLICATE
    assert len(receiver.received) == 1
    assert [a.attempt for a in attempt_rows(event)] == [1]


def test_an_attempt_claimed_by_a_worker_that_died_is_not_made_twice(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    from chalicelib.webhooks.delivery import claim_attempt

    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    assert claim_attempt(event_row(event), 1, 1, receiver.url, T0 + 1)  # ... and the worker died
    assert (
        Deliverer().deliver(AttemptMessage(event.vendor_id, event.event_id, 1), now=T0 + 2)
        is Outcome.DUPLICATE
    )
    assert receiver.received == []
    # The lease runs out; the dispatcher queues the next attempt number, which does go out.
    with verifier_clock(lambda: T0 + 400):
        sim = Simulation(T0 + 400)
        sim.run_until(T0 + 400)
    assert receiver.verified_ids() == [event.event_id]
    assert [a.attempt for a in attempt_rows(event)] == [1, 2]


# -- on a simulated clock -----------------------------------------------------------------------


def test_receiver_down_for_a_day_then_up_gets_every_event_exactly_once(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    endpoint(broker, receiver.url)
    receiver.stop()  # down: connections refused
    events = write_events(broker.vendor.vendor_id, 6, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 86400)
        assert receiver.received == []
        receiver.start()  # the same port again
        sim.run_until(T0 + 4 * 86400)
    ids = receiver.verified_ids()
    assert all(r.verified for r in receiver.received)
    assert sorted(ids) == sorted(e.event_id for e in events)  # each id once: nothing to dedupe
    for event in events:
        stored = event_row(event)
        assert stored.delivery_status == "delivered"
        assert stored.delivered_at is not None and stored.delivered_at >= T0 + 86400
        rows = attempt_rows(event)
        assert [r.outcome for r in rows][-1] == "delivered"
        assert all(r.outcome == "failed" and r.error == "connection" for r in rows[:-1])
    assert Vendor.get(broker.vendor.vendor_id).webhook_failing_since is None  # a success reset it


def test_retries_follow_the_schedule_with_jitter_then_dead_letter_and_disable(
    broker: BrokerUnderTest, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """E3 + E5: always 500 → 10 attempts at the scheduled offsets (±20 %), then exhausted."""
    receiver.reply = lambda _: (500, {}, b"oops")
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 5 * 86400)
    attempts = attempt_rows(event)
    assert len(attempts) == MAX_ATTEMPTS == 10
    starts = [a.started_at for a in attempts]
    assert starts[0] <= T0 + 61  # immediately (here: the dispatcher, the SQS message was not simulated)
    for index in range(1, MAX_ATTEMPTS):
        wait = starts[index] - starts[index - 1]
        nominal = SCHEDULE[index]
        assert nominal * (1 - JITTER) - 1 <= wait <= nominal * (1 + JITTER) + 1, (index, wait)
    # Every attempt was signed, with the same id and its own timestamp.
    assert all(r.verified for r in receiver.received)
    assert {r.webhook_id for r in receiver.received} == {event.event_id}
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) == MAX_ATTEMPTS
    assert len({r.headers["webhook-signature"] for r in receiver.received}) == MAX_ATTEMPTS
    stored = event_row(event)
    assert (stored.delivery_status, stored.failed_reason, stored.last_response_status) == (
        "failed",
        "exhausted",
        500,
    )
    assert stored.delivery_shard is None and stored.dispatch_at is None  # off the dispatch index
    vendor = Vendor.get(broker.vendor.vendor_id)
    assert vendor.webhook_disabled_reason == "failing_for_retry_window"
    assert vendor.webhook_disabled_at == pytest.approx(starts[-1])
    assert sim.deliverer.counts["WebhookEndpointDisabled"] == 1
    assert sim.deliverer.counts["WebhookDeliveryFailed"] == MAX_ATTEMPTS
    # What the vendor sees through the API: a disabled endpoint, a dead-lettered event.
    shown = json.loads(broker.signed("GET", "/v1/webhook-endpoint").body)
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "failing_for_retry_window")
    (logged,) = json.loads(broker.signed("GET", "/v1/events").body)["events"]
    assert logged["delivery"] | {"last_attempt_at": None, "failed_at": None} == {
        "status": "failed",
        "attempts": MAX_ATTEMPTS,
        "last_attempt_at": None,
        "last_response_status": 500,
        "last_error": None,
        "next_attempt_at": None,
        "delivered_at": None,
        "failed_at": None,
        "failed_reason": "exhausted",
    }
    # Later events are dead-lettered without a POST while disabled.
    (later,) = write_events(broker.vendor.vendor_id, 1, sim.now)
    with verifier_clock(lambda: sim.now):
        sim.run_until(sim.now + 120)
    assert event_row(later).failed_reason == "endpoint_disabled"
    assert len(receiver.received) == MAX_ATTEMPTS


def test_the_endpoint_is_not_disabled_while_it_succeeds_for_other_events(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    """Only an endpoint failing for the whole window is disabled: one poisoned event is not enough."""
    receiver.reply = lambda got: (
        (500, {}, b"") if got.payload["data"]["push_id"] == "bad_0" else (200, {}, b"")
    )
    endpoint(broker, receiver.url)
    (poisoned,) = write_events(broker.vendor.vendor_id, 1, T0, tag="bad")
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        for hour in range(0, 100, 10):  # a good event every 10 hours while the bad one retries
            write_events(broker.vendor.vendor_id, 1, sim.now, tag=f"good{hour}")
            sim.run_until(T0 + (hour + 10) * 3600)
    assert event_row(poisoned).failed_reason == "exhausted"
    assert Vendor.get(broker.vendor.vendor_id).webhook_disabled_at is None
    assert sim.deliverer.counts["WebhookDelivered"] == 10


def test_410_disables_the_endpoint_at_once(broker: BrokerUnderTest, receiver: Receiver) -> None:
    receiver.reply = lambda _: (410, {}, b"")
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 86400)
    assert len(receiver.received) == 1
    assert event_row(event).failed_reason == "endpoint_gone"
    vendor = Vendor.get(broker.vendor.vendor_id)
    assert (vendor.webhook_disabled_reason, vendor.webhook_disabled_at) == ("gone", T0 + 60)
    assert sim.deliverer.counts["WebhookEndpointDisabled"] == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failure_and_is_not_followed(
    broker: BrokerUnderTest, receiver: Receiver, status: int
) -> None:
    elsewhere = Receiver([broker.vendor.webhook_secret]).start()
    try:
        receiver.reply = lambda _: (status, {"Location": elsewhere.url}, b"")
        endpoint(broker, receiver.url)
        (event,) = write_events(broker.vendor.vendor_id, 1, T0)
        sim = Simulation(T0)
        with verifier_clock(lambda: sim.now):
            sim.run_until(T0 + 61)
        assert elsewhere.connections == 0
        stored = event_row(event)
        assert (stored.delivery_status, stored.last_response_status, stored.attempts_made) == (
            "pending",
            status,
            1,
        )
    finally:
        elsewhere.stop()


def test_retry_after_on_429_lengthens_the_next_wait(broker: BrokerUnderTest, receiver: Receiver) -> None:
    receiver.reply = lambda _: (429, {"Retry-After": "3600"}, b"")
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 61)
    stored = event_row(event)
    assert stored.next_attempt_at == pytest.approx(T0 + 60 + 3600)  # not 5 s
    assert [m.attempt for _, _, m in sim.queue.sent] == [1]  # no SQS delay beyond 15 min: the dispatcher


def test_a_short_retry_goes_through_an_sqs_delay(broker: BrokerUnderTest, receiver: Receiver) -> None:
    receiver.reply = lambda _: (503, {}, b"")
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 61)
    _, sent = sim.queue.sent  # the dispatcher's attempt 1, then the worker's delayed attempt 2
    assert sent[2] == AttemptMessage(event.vendor_id, event.event_id, 2)
    assert 4 <= sent[1] <= 6  # 5 s ± 20 %
    stored = event_row(event)
    assert stored.dispatch_at == pytest.approx(stored.next_attempt_at + 300)  # the dispatcher only as a net


def test_secret_rotation_sends_both_signatures_during_the_grace_period(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    """E2: two ``v1,`` entries, each verifying with its own secret; the old one stops after 24 h."""
    endpoint(broker, receiver.url)
    old = broker.vendor.webhook_secret
    new = rotate_secret(Vendor.get(broker.vendor.vendor_id), "test", now=T0)["secret"]
    assert new.startswith("whsec_") and new != old
    write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 61)
        (during,) = receiver.received
        assert len(during.signatures) == 2 and all(s.startswith("v1,") for s in during.signatures)
        for secret, signature in zip((new, old), during.signatures, strict=True):
            only = {**during.headers, "webhook-signature": signature}
            assert verifies_with(secret, during.body, only)
            assert not verifies_with(
                secret, during.body, {**only, "webhook-signature": _other(during, signature)}
            )
        sim.now = T0 + 24 * 3600 + 1
        write_events(broker.vendor.vendor_id, 1, sim.now)
        sim.run_until(sim.now + 61)
    after = receiver.received[1]
    assert len(after.signatures) == 1
    assert verifies_with(new, after.body, after.headers)
    assert not verifies_with(old, after.body, after.headers)


def _other(got: Received, signature: str) -> str:
    return next(s for s in got.signatures if s != signature)


def test_unsubscribed_types_are_logged_but_not_sent(broker: BrokerUnderTest, receiver: Receiver) -> None:
    endpoint(broker, receiver.url, event_types=["connection.revoked"])
    (event,) = write_events(broker.vendor.vendor_id, 1, T0, event_type="push.completed")
    sim = Simulation(T0)
    sim.run_until(T0 + 61)
    assert receiver.received == []
    assert (event_row(event).delivery_status, event_row(event).failed_reason) == ("skipped", "not_subscribed")


def test_exhausted_events_can_be_redelivered_with_the_current_secret_and_a_new_timestamp(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    """E8: dead-lettered → PUT re-enables → redeliver → delivered once, signed anew."""
    receiver.reply = lambda _: (500, {}, b"")
    endpoint(broker, receiver.url)
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    sim = Simulation(T0)
    with verifier_clock(lambda: sim.now):
        sim.run_until(T0 + 5 * 86400)
    assert event_row(event).delivery_status == "failed"
    receiver.reply = None
    vendor = endpoint(broker, receiver.url)  # re-enables
    new_secret = rotate_secret(vendor, "test", now=sim.now - 48 * 3600)["secret"]  # old grace over by now
    receiver.secrets = [new_secret]
    receiver.received.clear()
    view = redeliver(
        Vendor.get(broker.vendor.vendor_id), event.event_id, "test", now=sim.now, queue=sim.queue
    )
    assert view["delivery"]["status"] == "pending"
    with verifier_clock(lambda: sim.now):
        sim.run_until(sim.now + 3600)
    (got,) = receiver.received
    assert got.verified and got.webhook_id == event.event_id
    assert int(got.headers["webhook-timestamp"]) == int(sim.outcomes[-1][0])
    assert verifies_with(new_secret, got.body, got.headers)
    assert not verifies_with(broker.vendor.webhook_secret, got.body, got.headers)
    stored = event_row(event)
    assert (stored.delivery_status, stored.attempts_made) == ("delivered", MAX_ATTEMPTS + 1)


# -- SSRF at delivery (E11 to E13) ---------------------------------------------------------------


class RecordingConnector:
    """Stands in for the network: records where the worker connects; public addresses refuse, and
    loopback goes to the real local listener (so a connection there would be seen)."""

    def __init__(self, loopback_port: int = 0) -> None:
        self.targets: list[tuple[str, int]] = []
        self.loopback_port = loopback_port

    def __call__(self, address: tuple[str, int], timeout: float) -> socket.socket:
        self.targets.append(address)
        if address[0] in ("127.0.0.1", "::1") and self.loopback_port:
            return socket.create_connection(("127.0.0.1", self.loopback_port), timeout=timeout)
        raise ConnectionRefusedError("not on this network")


def test_dns_rebinding_cannot_move_the_connection_to_loopback(
    broker: BrokerUnderTest, receiver: Receiver
) -> None:
    """E12: the resolver answers a public IP, then 127.0.0.1 → the attempt connects to the checked
    public IP only (one lookup per attempt); the listener on 127.0.0.1 gets no connection."""
    answers = iter([["93.184.216.34"], ["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    lookups: list[str] = []

    def flipping(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    use_resolver(flipping)
    try:
        endpoint(broker, f"https://hooks.vendor.test:{443}/in")  # registration: lookup 1, public
        (event,) = write_events(broker.vendor.vendor_id, 1, T0)
        connector = RecordingConnector(loopback_port=receiver.port)
        sim = Simulation(T0, connector=connector)
        sim.run_until(T0 + 61)  # attempt 1: lookup 2, public → connects to it (refused here)
        assert connector.targets == [("93.184.216.34", 443)]
        assert lookups == ["hooks.vendor.test", "hooks.vendor.test"]
        sim.run_until(T0 + 61 + 10)  # attempt 2: lookup 3 rebinds to 127.0.0.1 → refused, no connect
        assert connector.targets == [("93.184.216.34", 443)]
        assert [a.error for a in attempt_rows(event)] == ["connection", "blocked"]
        assert receiver.connections == 0
    finally:
        use_resolver(None)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hooks",
        "https://169.254.169.254/latest",
        "https://[::ffff:192.168.0.1]/",
        "https://0x7f000001/",
    ],
)
def test_a_url_that_bypassed_registration_is_still_refused_at_delivery(
    broker: BrokerUnderTest, receiver: Receiver, url: str
) -> None:
    """E13: a bad URL written straight to the table (an old row, a bug) → never connected to."""
    Vendor(broker.vendor.vendor_id).update(actions=[Vendor.webhook_url.set(url)])
    (event,) = write_events(broker.vendor.vendor_id, 1, T0)
    connector = RecordingConnector(loopback_port=receiver.port)
    sim = Simulation(T0, connector=connector)
    sim.run_until(T0 + 61)
    assert connector.targets == []
    assert receiver.connections == 0
    assert [a.error for a in attempt_rows(event)] == ["blocked"]
