"""The change feed's reads and writes: fingerprints, snapshot rows, seen pages, change transactions.

Every write of a change to an *established* snapshot is one ``TransactWriteItems`` holding the
snapshot row, its bucket entry and its outbox event (checklist E9): a change is never stored
without its event, nor announced without being stored. The baseline (a practice's first pass)
announces nothing per client, so its rows go by BatchWriteItem and its buckets whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.storage import StorageUnavailable, is_conditional_failure, transaction, ttl_at
from chalicelib.sync.fingerprint import Entry, canonical
from chalicelib.sync.models import (
    FINGERPRINT_BUCKETS,
    ClientSnapshot,
    FingerprintBucket,
    SeenPage,
    bucket_key,
    bucket_of,
)
from chalicelib.webhooks.models import outbox_event

SEEN_RETENTION = 7 * 86400
# A change is 2 items (row, event) plus its bucket's update (shared by changes in one bucket):
# 30 changes stay under TransactWriteItems' 100 items.
CHANGES_PER_TRANSACTION = 30


class SnapshotConflict(Exception):
    """Another writer changed a client between our read and our write (the lease should prevent it)."""


@dataclass
class Manifest:
    """Every client's last fingerprint, by bucket (one BatchGet loads a practice)."""

    tenant_key: str
    buckets: dict[int, dict[str, str]] = field(default_factory=dict)
    existing: set[int] = field(default_factory=set)
    dirty: set[int] = field(default_factory=set)

    def get(self, client_uuid: str) -> Entry | None:
        value = self.buckets.get(bucket_of(client_uuid), {}).get(client_uuid)
        return Entry.decode(value) if value else None

    def set(self, client_uuid: str, entry: Entry) -> int:
        bucket = bucket_of(client_uuid)
        self.buckets.setdefault(bucket, {})[client_uuid] = entry.encode()
        return bucket

    def items(self) -> Iterable[tuple[str, Entry]]:
        for entries in self.buckets.values():
            for client_uuid, value in entries.items():
                yield client_uuid, Entry.decode(value)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.buckets.values())


def load_manifest(tenant_key: str) -> Manifest:
    manifest = Manifest(tenant_key)
    keys = [bucket_key(tenant_key, n) for n in range(FINGERPRINT_BUCKETS)]
    try:
        for bucket in FingerprintBucket.batch_get(keys, consistent_read=True):
            number = int(bucket.sync_key.rsplit("#", 1)[1])
            manifest.existing.add(number)
            entries: dict[str, str] = bucket.entries.as_dict() if bucket.entries else {}  # type: ignore[no-untyped-call]
            manifest.buckets[number] = dict(entries)
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    return manifest


def flush_buckets(manifest: Manifest, *, create_missing: bool = False) -> int:
    """Write the dirty buckets whole (baseline only: nothing else writes them meanwhile);
    ``create_missing`` also writes every bucket not stored yet, empty ones included."""
    numbers = set(manifest.dirty)
    if create_missing:
        numbers |= set(range(FINGERPRINT_BUCKETS)) - manifest.existing
    if not numbers:
        return 0
    try:
        with FingerprintBucket.batch_write() as batch:
            for number in sorted(numbers):
                entries = manifest.buckets.get(number, {})
                batch.save(FingerprintBucket(bucket_key(manifest.tenant_key, number), entries=entries))
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    manifest.existing |= numbers
    manifest.dirty.clear()
    return len(numbers)


def old_snapshots(tenant_key: str, uuids: Iterable[str]) -> dict[str, dict[str, Any]]:
    keys = [(tenant_key, u) for u in uuids]
    if not keys:
        return {}
    try:
        return {
            row.client_uuid: row.data
            for row in ClientSnapshot.batch_get(
                keys, consistent_read=True, attributes_to_get=["client_uuid", "data_json"]
            )
        }
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc


@dataclass(frozen=True)
class Change:
    """One client to write: its new snapshot and, outside a baseline, the event announcing it."""

    client_uuid: str
    snapshot: dict[str, Any]
    entry: Entry
    previous: Entry | None
    event_type: str | None = None
    event_data: dict[str, Any] | None = None


def _row(tenant_key: str, change: Change, now: float) -> ClientSnapshot:
    return ClientSnapshot(
        tenant_key,
        change.client_uuid,
        data_json=canonical(change.snapshot),
        fingerprint=change.entry.fingerprint,
        version=change.entry.version,
        updated_at=now,
    )


def write_baseline(manifest: Manifest, changes: list[Change], now: float) -> None:
    """Rows by BatchWriteItem; bucket entries in memory, flushed at the next checkpoint."""
    try:
        with ClientSnapshot.batch_write() as batch:
            for change in changes:
                batch.save(_row(manifest.tenant_key, change, now))
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    for change in changes:
        manifest.dirty.add(manifest.set(change.client_uuid, change.entry))


def write_changes(manifest: Manifest, vendor_id: str, changes: list[Change], now: float) -> None:
    """Each chunk in one transaction: rows (fenced on the version we read), bucket entries, events."""
    ensure_buckets(manifest, {bucket_of(c.client_uuid) for c in changes})
    for start in range(0, len(changes), CHANGES_PER_TRANSACTION):
        chunk = changes[start : start + CHANGES_PER_TRANSACTION]
        by_bucket: dict[int, list[Change]] = {}
        for change in chunk:
            by_bucket.setdefault(bucket_of(change.client_uuid), []).append(change)
        try:
            with transaction() as tx:
                for change in chunk:
                    row = _row(manifest.tenant_key, change, now)
                    condition: Any = (
                        ClientSnapshot.client_uuid.does_not_exist()
                        if change.previous is None
                        else ClientSnapshot.version == change.previous.version
                    )
                    tx.save(row, condition=condition)
                    assert change.event_type is not None and change.event_data is not None
                    tx.save(outbox_event(vendor_id, change.event_type, change.event_data, now))
                for number, in_bucket in by_bucket.items():
                    tx.update(
                        FingerprintBucket(bucket_key(manifest.tenant_key, number)),
                        actions=[
                            FingerprintBucket.entries[c.client_uuid].set(c.entry.encode()) for c in in_bucket
                        ],
                    )
        except PynamoDBException as exc:
            if is_conditional_failure(exc):
                raise SnapshotConflict() from exc
            raise StorageUnavailable() from exc
        for change in chunk:
            manifest.set(change.client_uuid, change.entry)


def ensure_buckets(manifest: Manifest, numbers: set[int]) -> None:
    """Create missing bucket items (empty) so entry updates have a map to write into."""
    for number in sorted(numbers - manifest.existing):
        try:
            FingerprintBucket(bucket_key(manifest.tenant_key, number), entries={}).save(
                condition=FingerprintBucket.sync_key.does_not_exist()
            )
        except PynamoDBException as exc:
            if not is_conditional_failure(exc):
                raise StorageUnavailable() from exc
        manifest.existing.add(number)


def seen_key(sync_id: str, page: int) -> str:
    return f"seen#{sync_id}#{page:05d}"


def save_seen(sync_id: str, page: int, uuids: list[str], now: float | None = None) -> None:
    at = time.time() if now is None else now
    try:
        SeenPage(seen_key(sync_id, page), uuids=uuids, expires_at_ttl=ttl_at(at + SEEN_RETENTION)).save()
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc


def load_seen(sync_id: str, pages: int) -> set[str]:
    seen: set[str] = set()
    keys = [seen_key(sync_id, n) for n in range(pages)]
    if not keys:
        return seen
    try:
        found = list(SeenPage.batch_get(keys, consistent_read=True))
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    if len(found) != len(keys):
        raise StorageUnavailable()  # a page record vanished: retry rather than call clients gone
    for page in found:
        seen.update(str(u) for u in page.uuids or [])
    return seen
