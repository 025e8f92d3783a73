"""Putting a tenant on the change feed's schedule (kept light: the connect flow imports it)."""

from __future__ import annotations

from typing import Any

from chalicelib.sync.models import SyncState, state_key, sync_shard


def schedule_first_sync(tx: Any, vendor_id: str, tenant_ref: str, now: float) -> None:
    """Due now unless already scheduled; written in the connect transaction (``tx``).

    A reconnect after the sync dropped the tenant from the schedule (connection not active)
    puts it back, due at once.
    """
    tx.update(
        SyncState(state_key(vendor_id, tenant_ref)),
        actions=[
            SyncState.vendor_id.set(vendor_id),
            SyncState.tenant_ref.set(tenant_ref),
            SyncState.sync_shard.set(sync_shard(vendor_id, tenant_ref)),
            SyncState.next_sync_at.set(SyncState.next_sync_at | now),
        ],
    )
