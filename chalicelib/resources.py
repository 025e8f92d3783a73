"""The one definition of every DynamoDB table and SQS queue the broker uses.

The local-stack bootstrap (``xpmb.bootstrap``), the tests and ``infra/`` all read these
definitions, so a table exists everywhere with the same keys, indexes and TTL attribute
(style.md: "one table-definition source"). PynamoDB models take their table names and keys
from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

KeyType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: Key
    range_key: Key | None = None
    projection: Literal["ALL", "KEYS_ONLY"] = "ALL"


@dataclass(frozen=True)
class TableDef:
    """A table by its logical name; the physical name is ``Settings.table_name(name)``."""

    name: str
    hash_key: Key
    range_key: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    purpose: str = ""

    def key_attributes(self) -> list[Key]:
        keys: dict[str, Key] = {}
        for key in (self.hash_key, self.range_key):
            if key is not None:
                keys[key.name] = key
        for index in self.indexes:
            for key in (index.hash_key, index.range_key):
                if key is not None:
                    keys[key.name] = key
        return list(keys.values())

    def create_table_kwargs(self, physical_name: str) -> dict[str, Any]:
        """Arguments for DynamoDB ``CreateTable`` (on-demand billing)."""
        schema = [{"AttributeName": self.hash_key.name, "KeyType": "HASH"}]
        if self.range_key:
            schema.append({"AttributeName": self.range_key.name, "KeyType": "RANGE"})
        kwargs: dict[str, Any] = {
            "TableName": physical_name,
            "KeySchema": schema,
            "AttributeDefinitions": [
                {"AttributeName": k.name, "AttributeType": k.type} for k in self.key_attributes()
            ],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.indexes:
            kwargs["GlobalSecondaryIndexes"] = [_index_kwargs(index) for index in self.indexes]
        return kwargs


def _index_kwargs(index: Index) -> dict[str, Any]:
    schema = [{"AttributeName": index.hash_key.name, "KeyType": "HASH"}]
    if index.range_key:
        schema.append({"AttributeName": index.range_key.name, "KeyType": "RANGE"})
    return {
        "IndexName": index.name,
        "KeySchema": schema,
        "Projection": {"ProjectionType": index.projection},
    }


@dataclass(frozen=True)
class QueueDef:
    """A queue and its dead-letter queue (``{name}-dlq``)."""

    name: str
    visibility_timeout: int = 120
    max_receive_count: int = 5
    purpose: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


TABLES: tuple[TableDef, ...] = (
    TableDef("vendors", Key("vendor_id"), purpose="vendor registrations"),
    TableDef(
        "vendor_keys",
        Key("key_id"),
        indexes=(Index("by_vendor", Key("vendor_id")),),
        purpose="vendor API signing keys (secrets encrypted)",
    ),
    TableDef(
        "grants",
        Key("grant_id"),
        indexes=(Index("by_next_rotation", Key("rotation_shard"), Key("next_rotation_at", "N")),),
        purpose="one encrypted Xero token set per vendor x Xero user",
    ),
    TableDef(
        "connections",
        Key("vendor_id"),
        Key("tenant_ref"),
        indexes=(Index("by_grant", Key("grant_id")),),
        purpose="one per vendor x tenant_ref: the bound XPM practice",
    ),
    TableDef("connect_sessions", Key("session_id"), ttl_attribute="expires_at_ttl", purpose="connect flows"),
    TableDef("oauth_states", Key("state"), ttl_attribute="expires_at_ttl", purpose="one-time state"),
    TableDef("request_nonces", Key("nonce_key"), ttl_attribute="expires_at_ttl", purpose="replay guard"),
    TableDef("audit", Key("vendor_id"), Key("audit_id"), purpose="append-only audit trail"),
    TableDef(
        "events",
        Key("vendor_id"),
        Key("event_id"),
        # Sparse: only events waiting for a delivery attempt carry the keys (webhooks/dispatch.py).
        indexes=(Index("by_dispatch", Key("delivery_shard"), Key("dispatch_at", "N")),),
        purpose="event outbox and durable event log",
    ),
    TableDef("idempotency", Key("id"), ttl_attribute="expiration", purpose="Idempotency-Key records"),
    TableDef("rate_limits", Key("bucket"), ttl_attribute="expires_at_ttl", purpose="rate governor"),
    TableDef("pushes", Key("push_id"), ttl_attribute="expires_at_ttl", purpose="push jobs"),
    TableDef(
        "client_snapshots",
        Key("tenant_key"),
        Key("client_uuid"),
        indexes=(Index("by_updated", Key("tenant_key"), Key("updated_at", "N")),),
        purpose="synced XPM client fingerprints",
    ),
    TableDef(
        "syncs",
        Key("sync_key"),
        indexes=(Index("by_next_sync", Key("sync_shard"), Key("next_sync_at", "N")),),
        ttl_attribute="expires_at_ttl",
        purpose="change-feed sync state per tenant, fingerprint buckets, pages seen by a pass",
    ),
    TableDef(
        "webhook_attempts",
        Key("event_key"),
        Key("attempt", "N"),
        ttl_attribute="expires_at_ttl",
        purpose="webhook delivery attempts, one per event x attempt number (E6)",
    ),
)

QUEUES: tuple[QueueDef, ...] = (
    QueueDef("rotation", visibility_timeout=180, purpose="grants due for a scheduled refresh"),
    QueueDef("pushes", visibility_timeout=900, purpose="entity push jobs"),
    QueueDef("webhooks", visibility_timeout=120, purpose="webhook deliveries"),
    QueueDef(
        "token_rescue",
        visibility_timeout=120,
        purpose="refreshed token sets (sealed) that DynamoDB did not take; applied under fences",
        attributes={"MessageRetentionPeriod": "1209600"},
    ),
    QueueDef("sync", visibility_timeout=960, purpose="change-feed syncs (one practice per message)"),
)


def table_def(name: str) -> TableDef:
    for table in TABLES:
        if table.name == name:
            return table
    raise KeyError(name)


def queue_def(name: str) -> QueueDef:
    for queue in QUEUES:
        if queue.name == name:
            return queue
    raise KeyError(name)
