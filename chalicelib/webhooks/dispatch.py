"""From the outbox to the ``webhooks`` queue: nothing committed is lost (checklist E9).

Two ways an attempt gets queued, both carrying ``{vendor_id, event_id, attempt}``:

- right after a transaction commits new events (``enqueue_committed``, best effort: a crash
  between commit and send loses only the low latency);
- by the dispatcher, every minute, from the sparse ``by_dispatch`` index: one Query per shard for
  the events whose ``dispatch_at`` has passed (never a Scan). Queuing pushes ``dispatch_at`` one
  lease further, so a slow queue is not flooded with copies; the copies that do happen are
  harmless, since an attempt number is claimed once (``delivery.claim_attempt``).

Retries after a failure with a wait up to 15 minutes go through SQS ``DelaySeconds`` (its limit);
longer waits are only a ``dispatch_at`` in the future.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynamodb.exceptions import PynamoDBException

from chalicelib.config import get_settings
from chalicelib.webhooks.models import DISPATCH_SHARDS, Event

logger = logging.getLogger("xpmb.webhooks")

QUEUE = "webhooks"
SEND_BATCH = 10  # SendMessageBatch takes at most 10 entries
MAX_SQS_DELAY = 900
LEASE_SECONDS = 300  # longer than the worker's longest attempt (15 s) plus the queue's visibility
MAX_PER_RUN = 5000  # the rest waits for the next minute


@dataclass(frozen=True)
class AttemptMessage:
    vendor_id: str
    event_id: str
    attempt: int

    def to_json(self) -> str:
        return json.dumps({"vendor_id": self.vendor_id, "event_id": self.event_id, "attempt": self.attempt})

    @classmethod
    def from_json(cls, body: str) -> AttemptMessage:
        data = json.loads(body)
        return cls(str(data["vendor_id"]), str(data["event_id"]), int(data["attempt"]))


class AttemptQueue(Protocol):
    def send(self, messages: list[AttemptMessage], delay_seconds: int = 0) -> int:
        """Queue the messages; returns how many were accepted."""


class SqsAttemptQueue:
    """The ``webhooks`` SQS queue. ``quick`` clients try once with short timeouts (request paths)."""

    def __init__(self, *, quick: bool = False) -> None:
        self._quick = quick
        self._url: str | None = None

    def _client(self) -> Any:
        from chalicelib.aws import aws_client

        if not self._quick:
            return aws_client("sqs")
        return _quick_sqs_client()

    def _queue_url(self, sqs: Any) -> str:
        if self._url is None:
            self._url = str(sqs.get_queue_url(QueueName=get_settings().queue_name(QUEUE))["QueueUrl"])
        return self._url

    def send(self, messages: list[AttemptMessage], delay_seconds: int = 0) -> int:
        sqs = self._client()
        url = self._queue_url(sqs)
        accepted = 0
        delay = max(0, min(MAX_SQS_DELAY, int(delay_seconds)))
        for start in range(0, len(messages), SEND_BATCH):
            chunk = messages[start : start + SEND_BATCH]
            entries = [
                {"Id": str(i), "MessageBody": m.to_json(), "DelaySeconds": delay} for i, m in enumerate(chunk)
            ]
            result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
            accepted += len(chunk) - len(result.get("Failed", []))
        return accepted


_quick_clients: dict[tuple[str | None, str], Any] = {}
_quick_lock = threading.Lock()


def _quick_sqs_client() -> Any:
    import boto3
    from botocore.config import Config

    settings = get_settings()
    key = (settings.aws_endpoint_url, settings.aws_region)
    with _quick_lock:
        if key not in _quick_clients:
            _quick_clients[key] = boto3.session.Session().client(
                "sqs",
                region_name=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1, read_timeout=2
                ),
            )
        return _quick_clients[key]


def enqueue_committed(events: Iterable[Event], queue: AttemptQueue | None = None) -> int:
    """Queue attempt 1 of events that were just committed; failures are left to the dispatcher."""
    messages = [AttemptMessage(e.vendor_id, e.event_id, e.attempts_made + 1) for e in events]
    if not messages:
        return 0
    try:
        return (queue or SqsAttemptQueue(quick=True)).send(messages)
    except Exception:
        logger.warning("could not queue %d new event(s) now; the dispatcher will", len(messages))
        return 0


@dataclass
class DispatchReport:
    due: int = 0
    enqueued: int = 0
    queries: int = DISPATCH_SHARDS
    event_ids: list[str] = field(default_factory=list)


def due_events(now: float) -> Iterator[Event]:
    """Events whose ``dispatch_at`` has passed: one Query per shard on the sparse index."""
    for shard in range(DISPATCH_SHARDS):
        yield from Event.by_dispatch.query(f"s{shard}", Event.dispatch_at <= now)


def dispatch_due(
    now: float | None = None, queue: AttemptQueue | None = None, limit: int = MAX_PER_RUN
) -> DispatchReport:
    """The per-minute safety net: queue the next attempt of every due event."""
    at = time.time() if now is None else now
    queue = queue or SqsAttemptQueue()
    report = DispatchReport()
    pending: list[AttemptMessage] = []
    for event in due_events(at):
        if report.due >= limit:
            break
        if event.delivery_status != "pending" or not _lease(event, at):
            continue
        report.due += 1
        report.event_ids.append(event.event_id)
        pending.append(AttemptMessage(event.vendor_id, event.event_id, event.attempts_made + 1))
        if len(pending) >= SEND_BATCH:
            report.enqueued += _send(queue, pending)
            pending = []
    if pending:
        report.enqueued += _send(queue, pending)
    logger.info("webhook dispatcher: %d due, %d queued", report.due, report.enqueued)
    return report


def _lease(event: Event, now: float) -> bool:
    """Push ``dispatch_at`` one lease ahead, unless another dispatcher or worker moved it first."""
    seen = event.dispatch_at
    try:
        event.update(
            actions=[Event.dispatch_at.set(now + LEASE_SECONDS)],
            condition=(Event.dispatch_at == seen) & (Event.delivery_status == "pending"),
        )
    except PynamoDBException:
        return False
    return True


def _send(queue: AttemptQueue, messages: list[AttemptMessage]) -> int:
    try:
        return queue.send(messages)
    except Exception:
        # Leased but not queued: the lease runs out and the next run finds them again.
        logger.warning("webhook dispatcher: %d message(s) not queued", len(messages))
        return 0
