"""What the change feed stores: the synced clients, and its bookkeeping in the ``syncs`` table.

``client_snapshots`` (hash ``tenant_key`` = ``{vendor_id}#{tenant_ref}#{xero_tenant_id}``, range
``client_uuid``) holds one row per synced client: its summary fields as contract JSON, the
fingerprint of those fields, a per-client ``version`` (+1 on every change) and ``updated_at``
(when a sync saw it change; the ``by_updated`` index serves ``updated_since``). The practice id is
part of the key, so a connection moved to another practice starts a fresh snapshot.

``syncs`` (hash ``sync_key``) holds three kinds of item, told apart by the key's prefix:

- ``state#{vendor_id}#{tenant_ref}`` — :class:`SyncState`: the schedule (``sync_shard`` +
  ``next_sync_at`` feed the sparse ``by_next_sync`` index the planner queries), the current run
  (id, status, lease, checkpoint) and the last finished one.
- ``fp#{tenant_key}#{nnn}`` — :class:`FingerprintBucket`: ``entries``, one line
  ``{uuid} {fingerprint} {version} {a|r|d}`` (active, archived, deleted) per client whose UUID
  hashes to bucket ``nnn``, and ``rev`` (+1 on every write, the optimistic fence). Three
  BatchGets load a whole practice's fingerprints, so a sync needs no Query over the snapshot
  partition. A bucket is one packed string rather than a map: a change rewrites its bucket whole
  inside the change's transaction (DynamoDB bills an update by the whole item either way).
- ``seen#{sync_id}#{page}`` — :class:`SeenPage`: the UUIDs one page of a paged pass returned
  (space-separated), so a pass resumed in another invocation still knows which clients
  disappeared (archived or deleted: 3.1 ``paged-list`` lists neither). Expire after a week.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pynamodb.attributes import BooleanAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.storage import BrokerModel

SYNC_SHARDS = 4
FINGERPRINT_BUCKETS = 256  # ~60 bytes an entry, 400 KB an item: ~1.5 million clients a practice

ACTIVE, ARCHIVED, DELETED = "a", "r", "d"


def state_key(vendor_id: str, tenant_ref: str) -> str:
    return f"state#{vendor_id}#{tenant_ref}"


def snapshot_key(vendor_id: str, tenant_ref: str, xero_tenant_id: str) -> str:
    return f"{vendor_id}#{tenant_ref}#{xero_tenant_id}"


def sync_shard(vendor_id: str, tenant_ref: str) -> str:
    digest = hashlib.sha256(f"{vendor_id}\x00{tenant_ref}".encode()).hexdigest()
    return f"s{int(digest, 16) % SYNC_SHARDS}"


def bucket_of(client_uuid: str) -> int:
    return int(hashlib.sha256(client_uuid.encode()).hexdigest()[:8], 16) % FINGERPRINT_BUCKETS


def bucket_key(tenant_key: str, bucket: int) -> str:
    return f"fp#{tenant_key}#{bucket:03d}"


class StatesByNextSync(GlobalSecondaryIndex["SyncState"]):
    class Meta:
        index_name = "by_next_sync"
        projection = AllProjection()

    sync_shard = UnicodeAttribute(hash_key=True)
    next_sync_at = NumberAttribute(range_key=True)


class SyncState(BrokerModel):
    """One per vendor x tenant_ref: the schedule, the run in progress, the last run."""

    logical_table = "syncs"

    sync_key = UnicodeAttribute(hash_key=True)
    vendor_id = UnicodeAttribute()
    tenant_ref = UnicodeAttribute()
    # schedule: present only while the connection is active (a sparse index)
    sync_shard = UnicodeAttribute(null=True)
    next_sync_at = NumberAttribute(null=True)
    # the current (or last) run
    sync_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="idle")  # idle | queued | running | completed | failed
    trigger = UnicodeAttribute(null=True)  # schedule | api | cli
    requested_at = NumberAttribute(null=True)
    started_at = NumberAttribute(null=True)
    finished_at = NumberAttribute(null=True)
    updated_at = NumberAttribute(null=True)
    error_code = UnicodeAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    resume_at = NumberAttribute(null=True)  # deferred by a rate limit until then
    # checkpoint of the run (a resumed invocation continues from here)
    mode = UnicodeAttribute(null=True)  # paged | full_list | modified_since
    phase = UnicodeAttribute(null=True)  # fetch | vanished
    page_token = UnicodeAttribute(null=True)
    pages = NumberAttribute(null=True)
    counts_json = UnicodeAttribute(null=True)
    initial = BooleanAttribute(null=True)  # the baseline pass: no per-client events
    # what the next run starts from
    xero_tenant_id = UnicodeAttribute(null=True)  # the practice the snapshot belongs to
    baseline_done = BooleanAttribute(null=True)
    watermark = NumberAttribute(null=True)  # 3.0: modifiedsince of the next incremental pass
    last_full_pass_at = NumberAttribute(null=True)
    # the last finished run, for GET …/xpm/sync and the listing's ``sync`` field
    last_sync_id = UnicodeAttribute(null=True)
    last_status = UnicodeAttribute(null=True)
    last_completed_at = NumberAttribute(null=True)
    last_counts_json = UnicodeAttribute(null=True)
    expires_at_ttl = TTLAttribute(null=True)  # never set on a state (the table's TTL is for pages)
    by_next_sync = StatesByNextSync()

    def counts(self) -> dict[str, int]:
        loaded: dict[str, int] = json.loads(self.counts_json or "{}")
        return loaded

    def last_counts(self) -> dict[str, int]:
        loaded: dict[str, int] = json.loads(self.last_counts_json or "{}")
        return loaded


# The other two kinds of item share the table, so their models declare its index and TTL
# attribute too (tests/unit/test_models_match_resources.py); they never set the index's keys.
class BucketsByNextSync(GlobalSecondaryIndex["FingerprintBucket"]):
    class Meta:
        index_name = "by_next_sync"
        projection = AllProjection()

    sync_shard = UnicodeAttribute(hash_key=True)
    next_sync_at = NumberAttribute(range_key=True)


class FingerprintBucket(BrokerModel):
    logical_table = "syncs"

    sync_key = UnicodeAttribute(hash_key=True)
    entries = UnicodeAttribute(default="")
    rev = NumberAttribute(default=0)
    sync_shard = UnicodeAttribute(null=True)
    next_sync_at = NumberAttribute(null=True)
    expires_at_ttl = TTLAttribute(null=True)
    by_next_sync = BucketsByNextSync()


class PagesByNextSync(GlobalSecondaryIndex["SeenPage"]):
    class Meta:
        index_name = "by_next_sync"
        projection = AllProjection()

    sync_shard = UnicodeAttribute(hash_key=True)
    next_sync_at = NumberAttribute(range_key=True)


class SeenPage(BrokerModel):
    logical_table = "syncs"

    sync_key = UnicodeAttribute(hash_key=True)
    uuids = UnicodeAttribute(default="")
    sync_shard = UnicodeAttribute(null=True)
    next_sync_at = NumberAttribute(null=True)
    expires_at_ttl = TTLAttribute(null=True)
    by_next_sync = PagesByNextSync()


class SnapshotsByUpdated(GlobalSecondaryIndex["ClientSnapshot"]):
    class Meta:
        index_name = "by_updated"
        projection = AllProjection()

    tenant_key = UnicodeAttribute(hash_key=True)
    updated_at = NumberAttribute(range_key=True)


class ClientSnapshot(BrokerModel):
    """One synced client: summary fields only (never tax numbers), as contract JSON."""

    logical_table = "client_snapshots"

    tenant_key = UnicodeAttribute(hash_key=True)
    client_uuid = UnicodeAttribute(range_key=True)
    data_json = UnicodeAttribute()
    fingerprint = UnicodeAttribute()
    version = NumberAttribute(default=1)
    updated_at = NumberAttribute()
    by_updated = SnapshotsByUpdated()

    @property
    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data_json)
        return loaded
