"""Scheduled refresh-token rotation and connection health (issue 5; checklist D3 to D5, D8).

Xero refresh tokens die after 60 days unused (xero-reference §1.5), so every grant idle for
``XPMB_ROTATE_AFTER_DAYS`` (20) is refreshed through the one single-flight path
(``refresh.refresh_grant``). The planner reads only the due grants, by a Query per shard on the
sparse ``by_next_rotation`` index (never a Scan: its cost follows the number due), and queues
their ids; the worker is idempotent (a grant refreshed meanwhile is no longer due), so SQS
duplicates are harmless.

Health, one event per change of state (each written in the transaction that changes it, E9):
- ``invalid_grant`` → refresh.py marks the connections ``needs_reauthorisation`` with a reason
  (``refresh.invalid_grant_reason``: expired / superseded / revoked);
- ``invalid_client`` → ``app.misconfigured`` once per vendor (``Vendor.xero_app_misconfigured_at``),
  the grant left as it is for the next run;
- 5xx / timeouts → ``consecutive_failures`` + 1 and SQS retries; at ``failure_threshold()`` the grant
  becomes ``provider_unavailable`` once (an audit row; no vendor event: the contract has none and
  the firm need not act); the next success emits ``connection.recovered`` per connection;
- after a success, a connection whose Xero connection id ``GET /connections`` no longer lists
  was disconnected on Xero's side (§1.8): ``needs_reauthorisation``, reason ``disconnected_in_xero``.

Pacing (``pacing.py``): each refresh waits for a slot of the app's rotation rate and counts in the
governor's app minute. Due times and ages are on Xero's clock (``xero_clock.xero_now``), which a
local demo can move with the sandbox's (docs/rotation.md); audit rows and events use real time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.oauth.errors import InvalidClient, InvalidGrant, UpstreamError
from chalicelib.oauth.grants import ROTATION_SHARDS
from chalicelib.oauth.models import Grant
from chalicelib.oauth.pacing import PacingDeferred, cached_vendor, forget_vendor, pace_refresh
from chalicelib.oauth.refresh import (
    apply_parked_token_set,
    load_grant,
    mark_connection_needs_reauthorisation,
    persistence_budget,
    refresh_grant,
)
from chalicelib.oauth.xero_clock import xero_now
from chalicelib.oauth.xero_connections import ConnectionsRateLimited, list_connections
from chalicelib.storage import StorageUnavailable, is_conditional_failure, transaction
from chalicelib.tenants.models import Connection, Vendor
from chalicelib.webhooks.models import outbox_event
from chalicelib.xpm.governor import governor_for

logger = logging.getLogger("xpmb.rotation")

QUEUE = "rotation"
SEND_BATCH = 10  # SendMessageBatch takes at most 10 entries
EXPIRING_SOON_AGE = 50 * 86400  # connection.expiring_soon once a grant is this old (issue 5)
ALARM_AGE_DAYS = 45  # infra (issue 7): alarm when OldestGrantAgeDays >= this
DEFAULT_FAILURE_THRESHOLD = 3
PROVIDER_UNAVAILABLE = "provider_unavailable"
DEFAULT_DEADLINE_SECONDS = 25.0  # without a Lambda context (CLI, tests): how long one grant may take
LAMBDA_MARGIN_SECONDS = 5.0  # left unused of the Lambda's time: to report the batch


def failure_threshold() -> int:
    """``XPMB_ROTATION_FAILURE_THRESHOLD`` (default 3) transient failures in a row."""
    return int(os.environ.get("XPMB_ROTATION_FAILURE_THRESHOLD") or DEFAULT_FAILURE_THRESHOLD)


class RotationOutcome(StrEnum):
    ROTATED = "rotated"
    APPLIED_PARKED = "applied_parked"  # a pair Xero issued earlier, stored now (D3)
    NOT_DUE = "not_due"  # refreshed meanwhile (a duplicate message, or the proxy refreshed)
    INACTIVE = "inactive"  # gone, or already needs reauthorisation
    NEEDS_REAUTHORISATION = "needs_reauthorisation"
    APP_MISCONFIGURED = "app_misconfigured"


@dataclass
class PlanReport:
    due: int = 0
    enqueued: int = 0
    expiring_soon: int = 0
    oldest_age_days: float = 0.0  # among due grants; any grant older than 20 days is due
    queries: int = 0
    items_read: int = 0
    grant_ids: list[str] = field(default_factory=list)


# -- planner -----------------------------------------------------------------------------------


def due_grants(now: float) -> Iterator[Grant]:
    """Grants whose ``next_rotation_at`` has passed: one Query per shard, paged by PynamoDB."""
    for shard in range(ROTATION_SHARDS):
        yield from Grant.by_next_rotation.query(f"s{shard}", Grant.next_rotation_at <= now)


def plan_rotation(
    now: float | None = None, batch: int = SEND_BATCH, *, enqueue: bool = True, metrics: Any = None
) -> PlanReport:
    """Queue every due grant (``enqueue=False``: only list them, for the CLI); ``now`` on Xero's clock."""
    at = xero_now() if now is None else now
    report = PlanReport(queries=ROTATION_SHARDS)
    pending: list[str] = []
    for grant in due_grants(at):
        report.items_read += 1
        if grant.status != "active":
            continue
        report.due += 1
        report.grant_ids.append(grant.grant_id)
        age = at - float(grant.refresh_issued_at or grant.created_at)
        report.oldest_age_days = max(report.oldest_age_days, age / 86400)
        if age >= EXPIRING_SOON_AGE and notify_expiring_soon(grant, at):
            report.expiring_soon += 1
        if enqueue:
            pending.append(grant.grant_id)
            if len(pending) >= min(batch, SEND_BATCH):
                report.enqueued += _send(pending, at)
                pending = []
    if enqueue and pending:
        report.enqueued += _send(pending, at)
    if metrics is not None:
        metrics.add_metric(name="GrantsDue", unit="Count", value=report.due)
        metrics.add_metric(name="OldestGrantAgeDays", unit="Count", value=round(report.oldest_age_days, 2))
    if report.oldest_age_days >= ALARM_AGE_DAYS:
        # What the OldestGrantAgeDays alarm pages on: rotation has not kept a grant fresh.
        logger.error(
            "rotation alarm: a grant is %.1f days without a refresh (threshold %d, Xero's limit 60)",
            report.oldest_age_days,
            ALARM_AGE_DAYS,
        )
    logger.info(
        "rotation planner: %d due, %d queued, %d expiring soon",
        report.due,
        report.enqueued,
        report.expiring_soon,
    )
    return report


def _send(grant_ids: list[str], planned_at: float) -> int:
    sqs = aws_client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().queue_name(QUEUE))["QueueUrl"]
    entries = [
        {"Id": str(i), "MessageBody": json.dumps({"grant_id": gid, "planned_at": planned_at})}
        for i, gid in enumerate(grant_ids)
    ]
    result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    failed = result.get("Failed", [])
    if failed:
        # The next planner run finds them again: they stay due until rotated.
        logger.warning("rotation planner: %d message(s) not queued", len(failed))
    return len(entries) - len(failed)


def notify_expiring_soon(grant: Grant, now: float) -> bool:
    """``connection.expiring_soon`` once per connection per stretch without a successful refresh."""
    issued = float(grant.refresh_issued_at or 0)
    if grant.expiring_soon_notified_at is not None and grant.expiring_soon_notified_at >= issued:
        return False
    connections = _active_connections(grant.grant_id)
    expires_at = issued + 60 * 86400
    try:
        with transaction() as tx:
            tx.update(
                grant,
                actions=[Grant.expiring_soon_notified_at.set(now)],
                condition=Grant.expiring_soon_notified_at.does_not_exist()
                | (Grant.expiring_soon_notified_at < issued),
            )
            for connection in connections[:90]:
                data = {"tenant_ref": connection.tenant_ref, "refresh_token_expires_at": int(expires_at)}
                tx.save(outbox_event(connection.vendor_id, "connection.expiring_soon", data, time.time()))
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    return True


# -- worker ------------------------------------------------------------------------------------


def rotate_grant(
    grant_id: str, now: float | None = None, *, force: bool = False, deadline: float | None = None
) -> RotationOutcome:
    """Refresh one grant if it is still active and due (``force``: even if not due).

    ``now`` is on Xero's clock; ``deadline`` (``time.monotonic()``) bounds the wait for a pacing
    slot. Raises ``UpstreamError``/``StorageUnavailable``/``PacingDeferred`` for the transient
    cases, so SQS retries.
    """
    at = xero_now() if now is None else now
    until = time.monotonic() + DEFAULT_DEADLINE_SECONDS if deadline is None else deadline
    grant = _current(grant_id)
    if grant is None:
        return RotationOutcome.INACTIVE
    if grant.pending_token_ct and apply_parked_token_set(grant) is not None:
        logger.info("applied the parked token set of %s", grant_id)
        _after_success(grant, time.time())
        return RotationOutcome.APPLIED_PARKED
    if not force and (grant.next_rotation_at or 0) > at:
        return RotationOutcome.NOT_DUE
    vendor = cached_vendor(grant.vendor_id)
    app_key = vendor.xero_client_id
    pace_refresh(app_key, until)
    try:
        tokens, _ = refresh_grant(grant_id, seen_version=int(grant.version), current=grant)
    except InvalidGrant:
        return RotationOutcome.NEEDS_REAUTHORISATION  # refresh_grant marked it, one event each
    except InvalidClient:
        _app_misconfigured(grant.vendor_id, time.time())
        return RotationOutcome.APP_MISCONFIGURED
    except UpstreamError:
        _record_transient_failure(grant_id, time.time())
        raise
    _after_success(grant, time.time(), access_token=tokens.access_token, vendor=vendor)
    return RotationOutcome.ROTATED


def _current(grant_id: str) -> Grant | None:
    """The grant as stored now, or None when it is gone or not active."""
    try:
        grant = load_grant(grant_id)
    except InvalidGrant:
        return None
    return grant if grant.status == "active" and grant.token_ct else None


def _after_success(
    before: Grant, now: float, access_token: str | None = None, vendor: Vendor | None = None
) -> None:
    """Health bookkeeping from the grant as it was before the refresh (``before``)."""
    if before.health == PROVIDER_UNAVAILABLE:
        _recovered(before, now)
    elif before.consecutive_failures:
        _update_quietly(before.grant_id, [Grant.consecutive_failures.remove()])
    _app_works(vendor or cached_vendor(before.vendor_id), now)
    if access_token and vendor is not None:
        _check_disconnected_in_xero(before.grant_id, access_token, vendor.xero_client_id)


def _record_transient_failure(grant_id: str, now: float) -> None:
    """Count a 5xx/timeout; at the threshold flip health once (the condition makes it once)."""
    try:
        grant = load_grant(grant_id)
        grant.update(actions=[Grant.consecutive_failures.add(1)], condition=Grant.grant_id.exists())
    except (PynamoDBException, InvalidGrant, StorageUnavailable):
        logger.warning("could not count a failed rotation of %s", grant_id)
        return
    if int(grant.consecutive_failures or 0) < failure_threshold() or grant.health == PROVIDER_UNAVAILABLE:
        return
    try:
        with transaction() as tx:
            tx.update(
                grant,
                actions=[Grant.health.set(PROVIDER_UNAVAILABLE)],
                condition=Grant.health.does_not_exist(),
            )
            tx.save(
                audit_record(
                    grant.vendor_id,
                    "grant.provider_unavailable",
                    "system",
                    outcome="failure",
                    detail={
                        "grant_id": grant_id,
                        "consecutive_failures": int(grant.consecutive_failures or 0),
                    },
                    now=now,
                )
            )
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):
            logger.warning("could not record provider_unavailable for %s", grant_id)


def _recovered(grant: Grant, now: float) -> None:
    connections = _active_connections(grant.grant_id)
    try:
        with transaction() as tx:
            tx.update(
                grant,
                actions=[Grant.health.remove(), Grant.consecutive_failures.remove()],
                condition=Grant.health == PROVIDER_UNAVAILABLE,
            )
            tx.save(
                audit_record(
                    grant.vendor_id, "grant.recovered", "system", detail={"grant_id": grant.grant_id}, now=now
                )
            )
            for connection in connections[:90]:
                data = {"tenant_ref": connection.tenant_ref, "previous_health": PROVIDER_UNAVAILABLE}
                tx.save(outbox_event(connection.vendor_id, "connection.recovered", data, now))
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):  # a concurrent worker already reported it
            logger.warning("could not record the recovery of %s", grant.grant_id)


def _app_misconfigured(vendor_id: str, now: float) -> None:
    forget_vendor(vendor_id)
    vendor = Vendor(vendor_id)
    try:
        with transaction() as tx:
            tx.update(
                vendor,
                actions=[Vendor.xero_app_misconfigured_at.set(now)],
                condition=Vendor.vendor_id.exists() & Vendor.xero_app_misconfigured_at.does_not_exist(),
            )
            tx.save(outbox_event(vendor_id, "app.misconfigured", {"xero_error": "invalid_client"}, now))
            tx.save(
                audit_record(
                    vendor_id,
                    "app.misconfigured",
                    "system",
                    outcome="failure",
                    detail={"xero_error": "invalid_client"},
                    now=now,
                )
            )
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):
            raise StorageUnavailable() from exc
    logger.error("Xero refused the app credentials of vendor %s (invalid_client)", vendor_id)


def _app_works(vendor: Vendor, now: float) -> None:
    """Clear the misconfigured flag after a success (no event type for it: an audit row).

    ``vendor`` may be a few minutes old (``cached_vendor``): a flag another instance set since is
    cleared by a later success; the update below checks the stored flag.
    """
    if vendor.xero_app_misconfigured_at is None:
        return
    vendor_id = vendor.vendor_id
    forget_vendor(vendor_id)
    try:
        with transaction() as tx:
            tx.update(
                vendor,
                actions=[Vendor.xero_app_misconfigured_at.remove()],
                condition=Vendor.xero_app_misconfigured_at.exists(),
            )
            tx.save(audit_record(vendor_id, "app.credentials_accepted", "system", now=now))
    except PynamoDBException as exc:
        if not is_conditional_failure(exc):
            logger.warning("could not clear the misconfigured flag of vendor %s", vendor_id)


def _check_disconnected_in_xero(grant_id: str, access_token: str, app_key: str) -> None:
    """A connection removed in Xero (§1.8) still has a working refresh token: detect it here.

    The call was counted in the app minute by ``pace_refresh``; a 429 anyway (Xero counts calls
    we never saw) blocks the app in the governor until Xero's Retry-After, for proxy calls too.
    """
    connections = [c for c in _active_connections(grant_id) if c.xero_connection_id]
    if not connections:
        return
    try:
        listed = {c.id for c in list_connections(get_settings().xero_api_url, access_token)}
    except ConnectionsRateLimited as limited:
        logger.warning("Xero's app minute ran out while checking the connections of %s", grant_id)
        governor_for(app_key).block("-", limited.retry_after, "appminute")
        return
    except UpstreamError:
        logger.warning("could not list Xero connections after rotating %s", grant_id)
        return
    for connection in connections:
        if connection.xero_connection_id not in listed:
            mark_connection_needs_reauthorisation(connection, reason="disconnected_in_xero")


def _active_connections(grant_id: str) -> list[Connection]:
    return [c for c in Connection.by_grant.query(grant_id) if c.status == "active"]


def _update_quietly(grant_id: str, actions: list[Any]) -> None:
    try:
        Grant(grant_id).update(actions=actions, condition=Grant.grant_id.exists())
    except PynamoDBException:
        logger.warning("could not update rotation bookkeeping of %s", grant_id)


# -- Lambda entry points (wired in app.py) --------------------------------------------------


def failure_class(exc: BaseException) -> str:
    if isinstance(exc, PacingDeferred):
        return "deferred"
    if isinstance(exc, UpstreamError):
        return "upstream"
    if isinstance(exc, StorageUnavailable):
        return "storage"
    return "other"


def _metrics() -> Any:
    from chalicelib.observability import job_metrics

    return job_metrics("rotation")


def run_planner(event: Any = None, context: Any = None) -> dict[str, Any]:
    """The hourly schedule: queue the due grants and publish the oldest grant age (EMF)."""
    metrics = _metrics()
    report = plan_rotation(metrics=metrics)
    metrics.flush_metrics()
    return {"due": report.due, "enqueued": report.enqueued, "expiring_soon": report.expiring_soon}


def handle_rotation_messages(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS entry point: one grant per message; transient failures reported as partial failures."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    counts: Counter[str] = Counter()

    def record_handler(record: SQSRecord) -> None:
        grant_id = json.loads(record.body)["grant_id"]
        seconds = time_left(context)
        try:
            with persistence_budget(seconds):
                outcome = rotate_grant(grant_id, deadline=time.monotonic() + seconds)
        except Exception as exc:
            counts[f"failed.{failure_class(exc)}"] += 1
            raise
        counts[outcome.value] += 1

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    publish_counts(counts)
    return dict(result)


def time_left(context: Any) -> float:
    """Seconds this invocation may still spend on one grant (the Lambda's time, less a margin)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_DEADLINE_SECONDS
    return max(0.0, float(remaining()) / 1000 - LAMBDA_MARGIN_SECONDS)


def publish_counts(counts: Counter[str]) -> None:
    totals: Counter[str] = Counter()
    for outcome, value in counts.items():
        totals[metric_name(outcome)] += value
    metrics = _metrics()
    for name, value in totals.items():
        metrics.add_metric(name=name, unit="Count", value=value)
    metrics.flush_metrics()


METRIC_NAMES = {
    "rotated": "GrantsRotated",
    "applied_parked": "GrantsRotated",
    "not_due": "RotationSkipped",
    "inactive": "RotationSkipped",
    "needs_reauthorisation": "RotationFailedInvalidGrant",
    "app_misconfigured": "RotationFailedInvalidClient",
    "failed.upstream": "RotationFailedUpstream",
    "failed.storage": "RotationFailedStorage",
    "failed.deferred": "RotationDeferred",
    "failed.other": "RotationFailedOther",
}


def metric_name(outcome: str) -> str:
    return METRIC_NAMES.get(outcome, "RotationFailedOther")
