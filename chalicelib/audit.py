"""The append-only audit trail: who did what, when, to which tenant, and how it ended."""

from __future__ import annotations

import time
from typing import Any

from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.storage import BrokerModel, sortable_id


class AuditRecord(BrokerModel):
    logical_table = "audit"

    vendor_id = UnicodeAttribute(hash_key=True)
    audit_id = UnicodeAttribute(range_key=True)
    action = UnicodeAttribute()
    outcome = UnicodeAttribute()  # success | failure
    actor = UnicodeAttribute()  # "vendor-key:<key id>", "xero-user:<id>", "operator", "system"
    tenant_ref = UnicodeAttribute(null=True)
    detail = MapAttribute[str, Any](null=True)
    at = NumberAttribute()


def audit_record(
    vendor_id: str,
    action: str,
    actor: str,
    *,
    outcome: str = "success",
    tenant_ref: str | None = None,
    detail: dict[str, Any] | None = None,
    now: float | None = None,
) -> AuditRecord:
    """Build (not save) an audit row, so callers can write it in the same transaction."""
    at = time.time() if now is None else now
    return AuditRecord(
        vendor_id,
        sortable_id("a", at),
        action=action,
        outcome=outcome,
        actor=actor,
        tenant_ref=tenant_ref,
        detail=detail or {},
        at=at,
    )
