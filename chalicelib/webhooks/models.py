"""The event outbox and durable event log: one row per event, written with the change it reports."""

from __future__ import annotations

import json
import time
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute

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


class Event(BrokerModel):
    logical_table = "events"

    vendor_id = UnicodeAttribute(hash_key=True)
    event_id = UnicodeAttribute(range_key=True)
    type = UnicodeAttribute()
    data_json = UnicodeAttribute()  # thin payload: ids and states, never tokens (checklist E10)
    created_at = NumberAttribute()
    delivery_status = UnicodeAttribute(default="pending")  # pending | delivered | failed

    @property
    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data_json)
        return loaded

    def to_payload(self) -> dict[str, Any]:
        """The webhook body shape (contract.md §6)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))
        return {"id": self.event_id, "type": self.type, "timestamp": stamp, "data": self.data}


def outbox_event(vendor_id: str, event_type: str, data: dict[str, Any], now: float | None = None) -> Event:
    """Build (not save) an event, to be written in the same transaction as its change (E9)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    at = time.time() if now is None else now
    return Event(
        vendor_id,
        sortable_id("evt_", at),
        type=event_type,
        data_json=json.dumps(data, separators=(",", ":"), sort_keys=True),
        created_at=at,
    )
