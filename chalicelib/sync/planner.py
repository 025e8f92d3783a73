"""The sync planner: start a sync of every tenant due, from the sparse ``by_next_sync`` index.

One Query per shard (never a Scan): its cost follows the number of tenants due. Each due
tenant's ``next_sync_at`` first moves on by the interval (a condition makes two planner runs
take it once), then its sync is started, or joined when one is in flight, and queued in batches.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field

from pynamodb.exceptions import PynamoDBException

from chalicelib.aws import aws_client
from chalicelib.storage import StorageUnavailable, is_conditional_failure
from chalicelib.sync.jobs import message_of, queue_url, request_sync, sync_interval
from chalicelib.sync.models import SYNC_SHARDS, SyncState

logger = logging.getLogger("xpmb.sync")
SEND_BATCH = 10  # SendMessageBatch takes at most 10 entries


@dataclass
class PlanReport:
    due: int = 0
    started: int = 0
    joined: int = 0
    enqueued: int = 0
    queries: int = 0
    sync_ids: list[str] = field(default_factory=list)


def plan_syncs(now: float | None = None, *, enqueue: bool = True) -> PlanReport:
    """Start a sync of every tenant due: one Query per shard of the sparse ``by_next_sync`` index."""
    at = time.time() if now is None else now
    report = PlanReport(queries=SYNC_SHARDS)
    pending: list[dict[str, str]] = []
    for shard in range(SYNC_SHARDS):
        try:
            due = list(SyncState.by_next_sync.query(f"s{shard}", SyncState.next_sync_at <= at))
        except PynamoDBException as exc:
            raise StorageUnavailable() from exc
        for state in due:
            report.due += 1
            if not _move_schedule(state, at):
                continue  # another planner run took it
            started_state, started = request_sync(
                state.vendor_id, state.tenant_ref, "schedule", at, enqueue=False
            )
            if not started:
                report.joined += 1
                continue
            report.started += 1
            report.sync_ids.append(str(started_state.sync_id))
            pending.append(message_of(started_state))
    if enqueue:
        for start in range(0, len(pending), SEND_BATCH):
            report.enqueued += _send_batch(pending[start : start + SEND_BATCH])
    logger.info("sync planner: %d due, %d started, %d queued", report.due, report.started, report.enqueued)
    return report


def _move_schedule(state: SyncState, now: float) -> bool:
    interval = sync_interval()
    # A little jitter spreads practices connected together over the planner's runs.
    upcoming = now + interval + random.uniform(0, min(600.0, interval * 0.02))  # noqa: S311
    try:
        SyncState(state.sync_key).update(
            actions=[SyncState.next_sync_at.set(upcoming)], condition=SyncState.next_sync_at <= now
        )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    return True


def _send_batch(messages: list[dict[str, str]]) -> int:
    sqs = aws_client("sqs")
    entries = [{"Id": str(i), "MessageBody": json.dumps(m)} for i, m in enumerate(messages)]
    result = sqs.send_message_batch(QueueUrl=queue_url(), Entries=entries)
    failed = result.get("Failed", [])
    if failed:
        # Their runs stay "queued" until STALE_AFTER; the next request or schedule restarts them.
        logger.warning("sync planner: %d message(s) not queued", len(failed))
    return len(entries) - len(failed)
