"""The delivery worker: one attempt of one event per message (security-checklist E1 to E6, E11, E12).

An attempt is numbered (over the event's whole life) and happens at most once: the worker first
*claims* attempt ``n`` in one transaction (the event still pending with ``n - 1`` attempts made,
and no ``DeliveryAttempt`` row ``n`` yet), so a duplicate SQS message, a dispatcher copy or a
Lambda retry of the same attempt finds the claim taken and does nothing (E6). The claim also
moves ``dispatch_at`` one lease ahead: if the worker dies mid-attempt the dispatcher queues
attempt ``n + 1`` later, so an event is never stranded (at least once).

After the POST: 2xx → ``delivered``; 410 → the endpoint is disabled and the event dead-lettered
(``failed``, reason ``endpoint_gone``); anything else → the next attempt is scheduled
(``retry.py``), or, after the last one, the event is dead-lettered (``exhausted``) and, if the
endpoint has not succeeded once since this event's first attempt, the endpoint is disabled
(it failed for the whole window, E5). Dead-lettered events stay in the log and can be redelivered.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.config import get_settings
from chalicelib.storage import StorageUnavailable, find, is_conditional_failure, transaction, ttl_at
from chalicelib.tenants.models import Vendor
from chalicelib.webhooks import endpoint as endpoints
from chalicelib.webhooks.dispatch import (
    LEASE_SECONDS,
    MAX_SQS_DELAY,
    AttemptMessage,
    AttemptQueue,
    SqsAttemptQueue,
)
from chalicelib.webhooks.models import DeliveryAttempt, Event, attempt_key
from chalicelib.webhooks.retry import MAX_ATTEMPTS, Answer, Verdict, next_wait
from chalicelib.webhooks.signing import body_bytes, signature_headers
from chalicelib.webhooks.ssrf import Resolver, UnsafeUrl, check_url
from chalicelib.webhooks.transport import Connector, Limits, Response, open_tcp, post

logger = logging.getLogger("xpmb.webhooks")

ATTEMPT_RETENTION = 30 * 86400
EXCERPT_BYTES = 2048

# Metric names are a contract with infra (the alarm on WebhookEndpointDisabled).
DELIVERED = "WebhookDelivered"
DELIVERY_FAILED = "WebhookDeliveryFailed"
ENDPOINT_DISABLED = "WebhookEndpointDisabled"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"  # failed: exhausted, endpoint gone or disabled
    SKIPPED = "skipped"  # no endpoint, or the vendor does not subscribe to the type
    DUPLICATE = "duplicate"  # this attempt was already claimed, or the event is not pending


@dataclass
class Deliverer:
    """Everything an attempt depends on besides DynamoDB; tests swap the clock, DNS and queue."""

    queue: AttemptQueue = field(default_factory=SqsAttemptQueue)
    resolver: Resolver | None = None  # None: the SSRF module's (getaddrinfo)
    connector: Connector = open_tcp
    tls: ssl.SSLContext | None = None
    limits: Limits = field(default_factory=Limits)
    rng: random.Random = field(default_factory=random.Random)
    counts: Counter[str] = field(default_factory=Counter)

    def deliver(self, message: AttemptMessage, now: float | None = None) -> Outcome:
        return deliver_attempt(self, message, time.time() if now is None else now)


def deliver_attempt(deliverer: Deliverer, message: AttemptMessage, now: float) -> Outcome:
    event = find(Event, message.vendor_id, message.event_id, consistent=True)
    if event is None or event.delivery_status != "pending" or event.attempts_made != message.attempt - 1:
        return Outcome.DUPLICATE
    vendor = find(Vendor, message.vendor_id)
    not_sendable = _not_sendable(event, vendor, now)
    if not_sendable is not None or vendor is None:
        return not_sendable or Outcome.SKIPPED
    in_round = message.attempt - int(event.round_start or 0)
    if in_round > MAX_ATTEMPTS:  # a worker died during the last attempt: the round is over
        return _exhausted(deliverer, event, vendor, now)
    if not claim_attempt(event, message.attempt, in_round, vendor.webhook_url or "", now):
        return Outcome.DUPLICATE
    response = send(deliverer, event, vendor, message.attempt, now)
    return _record(
        deliverer, event, vendor, attempt=message.attempt, in_round=in_round, response=response, now=now
    )


def _not_sendable(event: Event, vendor: Vendor | None, now: float) -> Outcome | None:
    """Settle an event that must not be sent now; None when it may be."""
    if vendor is None or not vendor.webhook_url:
        return _finish(event, "skipped", "no_endpoint", now, Outcome.SKIPPED)
    if event.redelivery_requested_at is None and not endpoints.subscribes_to(vendor, event.type):
        return _finish(event, "skipped", "not_subscribed", now, Outcome.SKIPPED)
    if endpoints.is_disabled(vendor):
        return _finish(event, "failed", "endpoint_disabled", now, Outcome.DEAD_LETTERED)
    return None


def claim_attempt(event: Event, attempt: int, in_round: int, url: str, now: float) -> bool:
    """Take attempt ``attempt`` (once, E6); False when someone else has it or the event moved on."""
    actions: list[Any] = [
        Event.attempts.set(attempt),
        Event.last_attempt_at.set(now),
        Event.dispatch_at.set(now + LEASE_SECONDS),
    ]
    if in_round == 1:
        actions.append(Event.round_started_at.set(now))
    previous = Event.attempts == attempt - 1
    if attempt == 1:
        previous = previous | Event.attempts.does_not_exist()
    row = DeliveryAttempt(
        attempt_key(event.vendor_id, event.event_id),
        attempt,
        started_at=now,
        outcome="in_flight",
        url_host=_host(url),
        expires_at_ttl=ttl_at(now + ATTEMPT_RETENTION),
    )
    try:
        with transaction() as tx:
            tx.update(event, actions=actions, condition=(Event.delivery_status == "pending") & previous)
            tx.save(row, condition=DeliveryAttempt.attempt.does_not_exist())
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    if in_round == 1:
        event.round_started_at = now
    return True


def send(deliverer: Deliverer, event: Event, vendor: Vendor, attempt: int, now: float) -> Response:
    """Check the URL again (E11: DNS may have changed), sign with every valid secret, POST once."""
    body = body_bytes(event.to_payload())
    secrets = endpoints.signing_secrets(vendor, now)
    headers = signature_headers(event.event_id, now, body, secrets)
    try:
        checked = check_url(
            vendor.webhook_url or "", local_stage=get_settings().is_local, resolver=deliverer.resolver
        )
    except UnsafeUrl as unsafe:
        logger.warning("webhook URL of vendor %s refused at delivery: %s", vendor.vendor_id, unsafe.reason)
        error = "dns" if unsafe.unresolved else "blocked"
        return Response(Answer(None, error))
    response = post(
        checked, body, headers, limits=deliverer.limits, tls=deliverer.tls, connector=deliverer.connector
    )
    logger.info(
        "webhook %s attempt %d to vendor %s: %s",
        event.event_id,
        attempt,
        vendor.vendor_id,
        response.answer.status or response.answer.error,
    )
    return response


def _record(
    deliverer: Deliverer,
    event: Event,
    vendor: Vendor,
    *,
    attempt: int,
    in_round: int,
    response: Response,
    now: float,
) -> Outcome:
    answer = response.answer
    verdict = answer.verdict
    _complete_attempt_row(event, attempt, response, verdict)
    if verdict is Verdict.DELIVERED:
        deliverer.counts[DELIVERED] += 1
        endpoints.note_success(vendor)
        return _finish(event, "delivered", None, now, Outcome.DELIVERED, answer=answer)
    deliverer.counts[DELIVERY_FAILED] += 1
    endpoints.note_failure(vendor, now)
    if verdict is Verdict.GONE:
        if endpoints.disable_endpoint(vendor, "gone", now):
            deliverer.counts[ENDPOINT_DISABLED] += 1
        return _finish(event, "failed", "endpoint_gone", now, Outcome.DEAD_LETTERED, answer=answer)
    wait = next_wait(in_round, answer, deliverer.rng)
    if wait is None:
        return _exhausted(deliverer, event, vendor, now, answer)
    return _schedule_retry(deliverer, event, attempt=attempt, now=now, wait=wait, answer=answer)


def _schedule_retry(
    deliverer: Deliverer, event: Event, *, attempt: int, now: float, wait: float, answer: Answer
) -> Outcome:
    due = now + wait
    queued = False
    if wait <= MAX_SQS_DELAY:
        try:
            queued = (
                deliverer.queue.send(
                    [AttemptMessage(event.vendor_id, event.event_id, attempt + 1)], int(wait + 0.999)
                )
                == 1
            )
        except Exception:
            logger.warning("could not queue the retry of %s; the dispatcher will", event.event_id)
    # With a delayed message on its way the dispatcher is only the safety net, one lease later.
    dispatch_at = due + LEASE_SECONDS if queued else due
    _update_event(
        event,
        [
            Event.next_attempt_at.set(due),
            Event.dispatch_at.set(dispatch_at),
            *_answer_actions(answer),
        ],
        condition=(Event.delivery_status == "pending") & (Event.attempts == attempt),
    )
    return Outcome.RETRY_SCHEDULED


def _exhausted(
    deliverer: Deliverer, event: Event, vendor: Vendor, now: float, answer: Answer | None = None
) -> Outcome:
    """The last attempt of the round failed: dead-letter; disable a endpoint failing all along."""
    outcome = _finish(event, "failed", "exhausted", now, Outcome.DEAD_LETTERED, answer=answer)
    vendor.refresh(consistent_read=True)
    started = event.round_started_at
    failing_since = vendor.webhook_failing_since
    failed_all_round = failing_since is not None and started is not None and failing_since <= started
    if failed_all_round and endpoints.disable_endpoint(vendor, "failing_for_retry_window", now):
        deliverer.counts[ENDPOINT_DISABLED] += 1
    return outcome


def _finish(
    event: Event,
    status: str,
    reason: str | None,
    now: float,
    outcome: Outcome,
    *,
    answer: Answer | None = None,
) -> Outcome:
    """Leave the pending state: off the dispatch index, into the log's final status."""
    actions: list[Any] = [
        Event.delivery_status.set(status),
        Event.delivery_shard.remove(),
        Event.dispatch_at.remove(),
        Event.next_attempt_at.remove(),
        *(_answer_actions(answer) if answer is not None else []),
    ]
    if status == "delivered":
        actions += [Event.delivered_at.set(now), Event.failed_reason.remove()]
    else:
        actions += [Event.failed_at.set(now), Event.failed_reason.set(reason or status)]
    _update_event(event, actions, condition=Event.delivery_status == "pending")
    return outcome


def _answer_actions(answer: Answer) -> list[Any]:
    if answer.status is not None:
        return [Event.last_response_status.set(answer.status), Event.last_error.remove()]
    return [Event.last_response_status.remove(), Event.last_error.set(answer.error or "connection")]


def _update_event(event: Event, actions: list[Any], condition: Any) -> None:
    try:
        event.update(actions=actions, condition=condition)
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            logger.info("event %s moved on meanwhile; keeping its newer state", event.event_id)
            return
        raise StorageUnavailable() from exc


def _complete_attempt_row(event: Event, attempt: int, response: Response, verdict: Verdict) -> None:
    answer = response.answer
    excerpt = response.body[:EXCERPT_BYTES].decode("utf-8", errors="replace") if response.body else None
    actions: list[Any] = [
        DeliveryAttempt.outcome.set("delivered" if verdict is Verdict.DELIVERED else "failed"),
        DeliveryAttempt.duration_ms.set(int(response.elapsed * 1000)),
    ]
    if answer.status is not None:
        actions.append(DeliveryAttempt.response_status.set(answer.status))
    if answer.error:
        actions.append(DeliveryAttempt.error.set(answer.error))
    if excerpt:
        actions.append(DeliveryAttempt.response_excerpt.set(excerpt))
    try:
        DeliveryAttempt(attempt_key(event.vendor_id, event.event_id), attempt).update(actions=actions)
    except PynamoDBException:
        logger.warning("could not complete the attempt log of %s #%d", event.event_id, attempt)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


# -- Lambda entry points (wired in app.py) ---------------------------------------------------


def _metrics() -> Any:
    from chalicelib.observability import job_metrics

    return job_metrics("webhooks")


def publish_counts(counts: Counter[str]) -> None:
    names = [name for name in (DELIVERED, DELIVERY_FAILED, ENDPOINT_DISABLED) if counts.get(name)]
    if not names:
        return
    metrics = _metrics()
    for name in names:
        metrics.add_metric(name=name, unit="Count", value=counts[name])
    metrics.flush_metrics()


def handle_delivery_messages(
    event: dict[str, Any], context: Any, deliverer: Deliverer | None = None
) -> dict[str, Any]:
    """SQS entry point: one attempt per message; storage failures are partial batch failures."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    worker = deliverer or Deliverer()

    def record_handler(record: SQSRecord) -> None:
        worker.deliver(AttemptMessage.from_json(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    publish_counts(worker.counts)
    return dict(result)


def run_dispatcher(event: Any = None, context: Any = None) -> dict[str, Any]:
    """The per-minute schedule: queue every due attempt (the outbox safety net)."""
    from chalicelib.webhooks.dispatch import dispatch_due

    report = dispatch_due()
    return {"due": report.due, "enqueued": report.enqueued}
