"""The event outbox and durable event log: one row per event, written with the change it reports.

Delivery state lives on the same row. While an event waits for an attempt it carries
``delivery_shard`` and ``dispatch_at``, the keys of the sparse ``by_dispatch`` index the
dispatcher queries every minute; both are removed once the event is delivered, skipped or
dead-lettered (``failed``), so the index holds only work that is due or in flight.
``DeliveryAttempt`` rows are the per-attempt log, keyed by event and attempt number: the
conditional write of that row is what makes each attempt happen once (checklist E6).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.storage import BrokerModel, sortable_id

EVENT_TYPES = frozenset(
    {
        "connection.created",
        "connection.reauthorised",
        "connection.needs_reauthorisation",
        "connection.revoked",
        "connection.expiring_soon",
        "connection.recovered",
        "app.misconfigured",
        "xpm.client.created",
        "xpm.client.updated",
        "xpm.client.archived",
        "push.completed",
        "push.failed",
        "sync.completed",
    }
)
DELIVERY_STATUSES = ("pending", "delivered", "failed", "skipped")
DISPATCH_SHARDS = 4
# The first attempt is queued right after the commit; the dispatcher picks an event up only if
# that message was lost (a crash between commit and send), after this grace.
IMMEDIATE_GRACE_SECONDS = 60


def dispatch_shard(event_id: str) -> str:
    return f"s{int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % DISPATCH_SHARDS}"


class EventsByDispatch(GlobalSecondaryIndex["Event"]):
    class Meta:
        index_name = "by_dispatch"
        projection = AllProjection()

    delivery_shard = UnicodeAttribute(hash_key=True)
    dispatch_at = NumberAttribute(range_key=True)


class Event(BrokerModel):
    logical_table = "events"

    vendor_id = UnicodeAttribute(hash_key=True)
    event_id = UnicodeAttribute(range_key=True)
    type = UnicodeAttribute()
    data_json = UnicodeAttribute()  # thin payload: ids and states, never tokens (checklist E10)
    created_at = NumberAttribute()
    delivery_status = UnicodeAttribute(default="pending")  # pending | delivered | failed | skipped
    # -- delivery (webhooks/delivery.py) --
    delivery_shard = UnicodeAttribute(null=True)  # present only while pending (sparse index)
    dispatch_at = NumberAttribute(null=True)  # when the dispatcher should (re)queue it
    next_attempt_at = NumberAttribute(null=True)  # the scheduled time shown to the vendor
    attempts = NumberAttribute(null=True)  # attempts made, over all rounds
    round_start = NumberAttribute(null=True)  # attempts made before this round (redeliver starts one)
    round_started_at = NumberAttribute(null=True)  # the first attempt of this round
    last_attempt_at = NumberAttribute(null=True)
    last_response_status = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    delivered_at = NumberAttribute(null=True)
    failed_at = NumberAttribute(null=True)
    failed_reason = UnicodeAttribute(null=True)  # exhausted | endpoint_gone | endpoint_disabled | ...
    redelivery_requested_at = NumberAttribute(null=True)
    by_dispatch = EventsByDispatch()

    @property
    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data_json)
        return loaded

    @property
    def attempts_made(self) -> int:
        return int(self.attempts or 0)

    def to_payload(self) -> dict[str, Any]:
        """The webhook body shape (contract.md §6, Standard Webhooks): type, timestamp, data."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))
        return {"type": self.type, "timestamp": stamp, "data": self.data}

    @classmethod
    def after_commit(cls, saved: Sequence[BrokerModel]) -> None:
        """Queue the first delivery attempt of events just committed (best effort, low latency)."""
        from chalicelib.webhooks.dispatch import enqueue_committed

        enqueue_committed([event for event in saved if isinstance(event, Event)])


class DeliveryAttempt(BrokerModel):
    """One attempt to deliver one event: written (conditionally) before the POST, completed after."""

    logical_table = "webhook_attempts"

    event_key = UnicodeAttribute(hash_key=True)  # "{vendor_id}#{event_id}"
    attempt = NumberAttribute(range_key=True)
    started_at = NumberAttribute()
    outcome = UnicodeAttribute(default="in_flight")  # in_flight | delivered | failed
    url_host = UnicodeAttribute(null=True)
    response_status = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    response_excerpt = UnicodeAttribute(null=True)  # the first bytes of the body (E14), for support
    signatures = NumberAttribute(null=True)  # 2 during a secret rotation
    expires_at_ttl = TTLAttribute(null=True)


def attempt_key(vendor_id: str, event_id: str) -> str:
    return f"{vendor_id}#{event_id}"


def outbox_event(vendor_id: str, event_type: str, data: dict[str, Any], now: float | None = None) -> Event:
    """Build (not save) an event, to be written in the same transaction as its change (E9)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    at = time.time() if now is None else now
    event_id = sortable_id("evt_", at)
    return Event(
        vendor_id,
        event_id,
        type=event_type,
        data_json=json.dumps(data, separators=(",", ":"), sort_keys=True),
        created_at=at,
        delivery_status="pending",
        delivery_shard=dispatch_shard(event_id),
        dispatch_at=at + IMMEDIATE_GRACE_SECONDS,
        next_attempt_at=at,
        attempts=0,
        round_start=0,
    )
