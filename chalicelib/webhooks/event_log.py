"""The vendor's durable event log (``GET /v1/events``) and manual redelivery (checklist E8).

Event ids sort by creation time (millisecond prefix), so ``after=<id>`` pages forward through
the log. Two writers can commit out of id order by a few milliseconds, so a poller should re-read
from a little before its last id (docs/webhooks.md) and dedupe by id, as webhook receivers do.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.errors import BrokerError
from chalicelib.oauth.sessions import invalid_request
from chalicelib.storage import StorageUnavailable, find, is_conditional_failure, transaction
from chalicelib.tenants.connections import iso
from chalicelib.tenants.models import Vendor
from chalicelib.webhooks import endpoint as endpoints
from chalicelib.webhooks.dispatch import AttemptMessage, AttemptQueue, SqsAttemptQueue
from chalicelib.webhooks.models import IMMEDIATE_GRACE_SECONDS, Event, dispatch_shard

logger = logging.getLogger("xpmb.webhooks")
EVENT_ID = re.compile(r"^evt_[0-9]{13}[0-9a-f]{10}$")
DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def event_not_found() -> BrokerError:
    return BrokerError("event_not_found", 404, "Event not found", "No such event for this vendor.")


def event_view(event: Event) -> dict[str, Any]:
    payload = event.to_payload()
    return {
        "id": event.event_id,
        **payload,
        "delivery": {
            "status": event.delivery_status,
            "attempts": event.attempts_made,
            "last_attempt_at": iso(event.last_attempt_at),
            "last_response_status": int(event.last_response_status) if event.last_response_status else None,
            "last_error": event.last_error,
            "next_attempt_at": iso(event.next_attempt_at) if event.delivery_status == "pending" else None,
            "delivered_at": iso(event.delivered_at),
            "failed_at": iso(event.failed_at) if event.delivery_status in ("failed", "skipped") else None,
            "failed_reason": event.failed_reason if event.delivery_status in ("failed", "skipped") else None,
        },
    }


def list_events(vendor_id: str, *, after: str | None, limit: str | None) -> dict[str, Any]:
    """One page of the log, oldest first, strictly after ``after``."""
    if after is not None and not EVENT_ID.match(after):
        raise invalid_request("after must be an event id (evt_…) from this log.", "after")
    if limit is not None and (not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT):
        raise invalid_request(f"limit must be an integer from 1 to {MAX_LIMIT}.", "limit")
    size = int(limit) if limit is not None else DEFAULT_LIMIT
    try:
        results = Event.query(
            vendor_id,
            Event.event_id > after if after else None,
            limit=size,
            scan_index_forward=True,
        )
        events = list(results)
        more = results.last_evaluated_key is not None
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    return {
        "events": [event_view(e) for e in events],
        "has_more": more,
        "next_after": events[-1].event_id if events else after,
    }


def redeliver(
    vendor: Vendor, event_id: str, actor: str, now: float | None = None, queue: AttemptQueue | None = None
) -> dict[str, Any]:
    """Start a new round of attempts for one event, signed with the current secret(s) when sent."""
    at = time.time() if now is None else now
    event = find(Event, vendor.vendor_id, event_id, consistent=True) if EVENT_ID.match(event_id) else None
    if event is None:
        raise event_not_found()
    if not vendor.webhook_url:
        raise BrokerError(
            "webhook_endpoint_not_configured",
            409,
            "No webhook endpoint",
            "Configure one with PUT /v1/webhook-endpoint first.",
        )
    if endpoints.is_disabled(vendor):
        raise BrokerError(
            "webhook_endpoint_disabled",
            409,
            "Webhook endpoint disabled",
            "Re-enable it with PUT /v1/webhook-endpoint first.",
        )
    made = event.attempts_made
    unchanged = Event.attempts == made
    if made == 0:
        unchanged = unchanged | Event.attempts.does_not_exist()
    try:
        with transaction() as tx:
            tx.update(
                event,
                actions=[
                    Event.delivery_status.set("pending"),
                    Event.delivery_shard.set(dispatch_shard(event.event_id)),
                    Event.dispatch_at.set(at + IMMEDIATE_GRACE_SECONDS),
                    Event.next_attempt_at.set(at),
                    Event.round_start.set(made),
                    Event.round_started_at.remove(),
                    Event.redelivery_requested_at.set(at),
                    Event.failed_at.remove(),
                    Event.failed_reason.remove(),
                ],
                condition=unchanged,
            )
            tx.save(
                audit_record(
                    vendor.vendor_id, "event.redelivered", actor, detail={"event_id": event_id}, now=at
                )
            )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            raise BrokerError(
                "event_delivery_in_progress",
                409,
                "Delivery in progress",
                "An attempt for this event started meanwhile; try again in a few seconds.",
            ) from exc
        raise StorageUnavailable() from exc
    try:
        (queue or SqsAttemptQueue(quick=True)).send([AttemptMessage(vendor.vendor_id, event_id, made + 1)])
    except Exception:
        logger.warning("could not queue the redelivery of %s now; the dispatcher will", event_id)
    event.refresh(consistent_read=True)
    return event_view(event)
