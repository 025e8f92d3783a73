"""The change feed's reads and writes: fingerprints, snapshot rows, seen pages, change transactions.

What the broker has announced about a client is its fingerprint entry (version and state) in a
bucket; a change is announced by ONE ``TransactWriteItems`` that rewrites the client's bucket
(fenced on the bucket's ``rev``) and puts the outbox event (checklist E9): a fingerprint never
moves without its event, and an event never exists without its fingerprint.

The snapshot row (the client's fields, what the listing serves) is written just before that
transaction, outside it: the row table holds a whole practice (20,000+ items), and rows need no
fence (one lease holder writes them). A crash between row and transaction leaves new data whose
event the next sync announces (the fingerprint still differs): late, never lost, never doubled.

The baseline (a practice's first pass) announces nothing per client, so its rows go by
BatchWriteItem and its buckets whole at checkpoints.
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
# Two items a change at most (event, bucket): 40 changes stay under TransactWriteItems' 100
# items, and 40 rewritten buckets of a large practice well under its 4 MB.
CHANGES_PER_TRANSACTION = 40


class SnapshotConflict(Exception):
    """A bucket changed under us (another writer; the lease should prevent it): retry the run."""


@dataclass
class Manifest:
    """Every client's last fingerprint entry, by bucket (three BatchGets load a practice)."""

    tenant_key: str
    buckets: dict[int, dict[str, str]] = field(default_factory=dict)
    revs: dict[int, int] = field(default_factory=dict)
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

    def packed(self, bucket: int) -> str:
        entries = self.buckets.get(bucket, {})
        return "\n".join(f"{u} {v}" for u, v in sorted(entries.items()))

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.buckets.values())


def _unpack(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.splitlines():
        client_uuid, _, value = line.partition(" ")
        if client_uuid and value:
            entries[client_uuid] = value
    return entries


def load_manifest(tenant_key: str) -> Manifest:
    manifest = Manifest(tenant_key)
    keys = [bucket_key(tenant_key, n) for n in range(FINGERPRINT_BUCKETS)]
    try:
        for bucket in FingerprintBucket.batch_get(keys, consistent_read=True):
            number = int(bucket.sync_key.rsplit("#", 1)[1])
            manifest.revs[number] = int(bucket.rev or 0)
            manifest.buckets[number] = _unpack(bucket.entries or "")
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    return manifest


def _bucket(manifest: Manifest, number: int) -> FingerprintBucket:
    return FingerprintBucket(
        bucket_key(manifest.tenant_key, number),
        entries=manifest.packed(number),
        rev=manifest.revs.get(number, 0) + 1,
    )


def flush_buckets(manifest: Manifest) -> int:
    """Write the dirty buckets whole (baseline only: the lease holder is the only writer)."""
    numbers = sorted(manifest.dirty)
    if not numbers:
        return 0
    try:
        with FingerprintBucket.batch_write() as batch:
            for number in numbers:
                batch.save(_bucket(manifest, number))
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    for number in numbers:
        manifest.revs[number] = manifest.revs.get(number, 0) + 1
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


def _write_rows(tenant_key: str, changes: list[Change], now: float) -> None:
    try:
        with ClientSnapshot.batch_write() as batch:
            for change in changes:
                batch.save(
                    ClientSnapshot(
                        tenant_key,
                        change.client_uuid,
                        data_json=canonical(change.snapshot),
                        fingerprint=change.entry.fingerprint,
                        version=change.entry.version,
                        updated_at=now,
                    )
                )
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc


def write_baseline(manifest: Manifest, changes: list[Change], now: float) -> None:
    """Rows by BatchWriteItem; bucket entries in memory, written at the next checkpoint."""
    _write_rows(manifest.tenant_key, changes, now)
    for change in changes:
        manifest.dirty.add(manifest.set(change.client_uuid, change.entry))


def write_changes(manifest: Manifest, vendor_id: str, changes: list[Change], now: float) -> None:
    """Per chunk: the rows, then one transaction of the rewritten buckets and the events."""
    for start in range(0, len(changes), CHANGES_PER_TRANSACTION):
        chunk = changes[start : start + CHANGES_PER_TRANSACTION]
        _write_rows(manifest.tenant_key, chunk, now)
        touched = sorted({bucket_of(c.client_uuid) for c in chunk})
        before = {n: dict(manifest.buckets.get(n, {})) for n in touched}
        for change in chunk:
            manifest.set(change.client_uuid, change.entry)
        try:
            with transaction() as tx:
                for number in touched:
                    rev = manifest.revs.get(number, 0)
                    fence: Any = (
                        FingerprintBucket.sync_key.does_not_exist()
                        if rev == 0
                        else FingerprintBucket.rev == rev
                    )
                    tx.save(_bucket(manifest, number), condition=fence)
                for change in chunk:
                    assert change.event_type is not None and change.event_data is not None
                    tx.save(outbox_event(vendor_id, change.event_type, change.event_data, now))
        except PynamoDBException as exc:
            manifest.buckets.update(before)  # not written: forget the in-memory entries
            if is_conditional_failure(exc):
                raise SnapshotConflict() from exc
            raise StorageUnavailable() from exc
        for number in touched:
            manifest.revs[number] = manifest.revs.get(number, 0) + 1


def seen_key(sync_id: str, page: int) -> str:
    return f"seen#{sync_id}#{page:05d}"


def save_seen(sync_id: str, pages: list[tuple[int, list[str]]], now: float | None = None) -> None:
    """The UUIDs each of ``pages`` (number, UUIDs) listed, by BatchWriteItem."""
    at = time.time() if now is None else now
    try:
        with SeenPage.batch_write() as batch:
            for page, uuids in pages:
                batch.save(
                    SeenPage(
                        seen_key(sync_id, page),
                        uuids=" ".join(uuids),
                        expires_at_ttl=ttl_at(at + SEEN_RETENTION),
                    )
                )
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc


def forget_seen(sync_id: str, pages: int) -> None:
    """Delete a finished pass's page records (TTL would, a week later)."""
    try:
        with SeenPage.batch_write() as batch:
            for page in range(pages):
                batch.delete(SeenPage(seen_key(sync_id, page)))
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
        seen.update((page.uuids or "").split())
    return seen
