"""Push jobs: an entity graph created in XPM by a worker, with per-record results."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute

from chalicelib.storage import BrokerModel


class Push(BrokerModel):
    logical_table = "pushes"

    push_id = UnicodeAttribute(hash_key=True)
    vendor_id = UnicodeAttribute()
    tenant_ref = UnicodeAttribute()
    status = UnicodeAttribute(default="queued")  # queued | running | completed | failed
    request_ct = UnicodeAttribute()  # envelope-encrypted graph: it may hold tax numbers
    progress_json = UnicodeAttribute(default="{}")  # per-record results; never tax numbers
    error_code = UnicodeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    expires_at_ttl = TTLAttribute(null=True)
