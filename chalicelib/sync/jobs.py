"""Sync runs: start (or join), lease, checkpoint, defer, finish with ``sync.completed``.

A tenant has one :class:`SyncState`. ``request_sync`` starts a run unless one is in flight
(``queued``/``running`` and touched within ``STALE_AFTER``), in which case the caller gets that
one: the API answers 202 with it, the planner skips it. A run is driven by whoever holds its
lease (an SQS worker invocation, or the CLI); everyone else leaves it alone. A run stops early
(``Defer``) at a rate limit, a budget reserve or the end of its time, saves its checkpoint and
is continued by a delayed SQS message (or, in the CLI, after a sleep). It ends in one
transaction with its ``sync.completed`` event (E9): ``status`` ``completed`` or ``failed``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.errors import UpstreamError
from chalicelib.storage import (
    StorageUnavailable,
    find,
    is_conditional_failure,
    new_id,
    sortable_id,
    transaction,
)
from chalicelib.sync.engine import (
    FETCH,
    FULL_LIST,
    MODIFIED_SINCE,
    PAGED,
    Defer,
    Pacer,
    SyncRun,
    day_reserve,
    full_pass_seconds,
    max_list_bytes,
    minute_reserve,
)
from chalicelib.sync.models import SyncState, state_key, sync_shard
from chalicelib.webhooks.models import outbox_event
from chalicelib.xpm.errors import XpmUnavailable

logger = logging.getLogger("xpmb.sync")

QUEUE = "sync"
IN_FLIGHT = ("queued", "running")
LEASE_SECONDS = 960.0  # > the worker's Lambda timeout (900 s); = the queue's visibility timeout
STALE_AFTER = 3600.0  # an in-flight run untouched this long is abandoned (a lost message)
MAX_SQS_DELAY = 900  # SQS DelaySeconds ceiling
WATERMARK_OVERLAP = 600.0  # modifiedsince starts this much before the previous pass began
MAX_TRANSIENT_FAILURES = 5
DEFINITIVE = ("connection_not_active", "tenant_not_found", "vendor_not_found", "app_misconfigured")
EVENT_COUNTS = ("created", "updated", "archived", "deleted", "unchanged", "fetched")


# -- starting ------------------------------------------------------------------------------------


def in_flight(state: SyncState, now: float) -> bool:
    return state.status in IN_FLIGHT and float(state.updated_at or 0) > now - STALE_AFTER


def request_sync(
    vendor_id: str, tenant_ref: str, trigger: str, now: float | None = None, *, enqueue: bool = True
) -> tuple[SyncState, bool]:
    """Start a sync of the tenant, or join the one in flight: ``(state, started)``.

    The caller has checked that the connection is active. The tenant joins the schedule if it
    was not on it (a connection made before the change feed existed).
    """
    at = time.time() if now is None else now
    key = state_key(vendor_id, tenant_ref)
    for _ in range(3):
        state = find(SyncState, key, consistent=True)
        if state is not None and in_flight(state, at):
            return state, False
        sync_id = sortable_id("sync_", at)
        fresh = SyncState(key)
        try:
            fresh.update(
                actions=[
                    SyncState.vendor_id.set(vendor_id),
                    SyncState.tenant_ref.set(tenant_ref),
                    SyncState.sync_shard.set(sync_shard(vendor_id, tenant_ref)),
                    SyncState.next_sync_at.set(SyncState.next_sync_at | (at + sync_interval())),
                    SyncState.sync_id.set(sync_id),
                    SyncState.status.set("queued"),
                    SyncState.trigger.set(trigger),
                    SyncState.requested_at.set(at),
                    SyncState.updated_at.set(at),
                    *_clear_run(),
                ],
                condition=SyncState.sync_key.does_not_exist()
                | ~SyncState.status.is_in(*IN_FLIGHT)
                | (SyncState.updated_at <= at - STALE_AFTER),
            )
        except PynamoDBException as exc:
            if is_conditional_failure(exc):
                continue  # someone else started one: join it
            raise StorageUnavailable() from exc
        if enqueue:
            _enqueue_or_fail(fresh, at)
        return fresh, True
    raise StorageUnavailable()


def _clear_run() -> list[Any]:
    return [
        SyncState.started_at.remove(),
        SyncState.finished_at.remove(),
        SyncState.error_code.remove(),
        SyncState.resume_at.remove(),
        SyncState.mode.remove(),
        SyncState.phase.remove(),
        SyncState.page_token.remove(),
        SyncState.pages.remove(),
        SyncState.counts_json.remove(),
        SyncState.initial.remove(),
        SyncState.lease_owner.remove(),
        SyncState.lease_until.remove(),
    ]


def sync_interval() -> float:
    return float(get_settings().sync_interval_seconds)


def message_of(state: SyncState) -> dict[str, str]:
    assert state.sync_id
    return {"sync_key": state.sync_key, "sync_id": state.sync_id}


def queue_url() -> str:
    sqs = aws_client("sqs")
    return str(sqs.get_queue_url(QueueName=get_settings().queue_name(QUEUE))["QueueUrl"])


def _enqueue_or_fail(state: SyncState, now: float) -> None:
    try:
        send(message_of(state))
    except Exception as exc:
        logger.warning("sync %s not queued: %s", state.sync_id, type(exc).__name__)
        _finish_quietly(state, "queue_unavailable", now)
        raise BrokerError("queue_unavailable", 503, "Queue unavailable", "Try again shortly.") from exc


def send(message: dict[str, str], delay: float = 0) -> None:
    aws_client("sqs").send_message(
        QueueUrl=queue_url(),
        MessageBody=json.dumps(message),
        DelaySeconds=int(min(max(0, delay), MAX_SQS_DELAY)),
    )


def _finish_quietly(state: SyncState, code: str, now: float) -> None:
    try:
        SyncState(state.sync_key).update(
            actions=[
                SyncState.status.set("failed"),
                SyncState.error_code.set(code),
                SyncState.updated_at.set(now),
            ],
            condition=SyncState.sync_id == state.sync_id,
        )
    except PynamoDBException:
        logger.warning("could not mark sync %s failed", state.sync_id)


# -- driving a run -------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # completed | failed | deferred | waiting | busy | obsolete
    delay: float = 0.0
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def acquire(sync_key: str, sync_id: str, owner: str, now: float) -> SyncState | None:
    """Take the run's lease (or None: finished, replaced, or someone else is driving it)."""
    state = SyncState(sync_key)
    try:
        state.update(
            actions=[
                SyncState.status.set("running"),
                SyncState.started_at.set(SyncState.started_at | now),
                SyncState.lease_owner.set(owner),
                SyncState.lease_until.set(now + LEASE_SECONDS),
                SyncState.updated_at.set(now),
                SyncState.resume_at.remove(),
            ],
            condition=(SyncState.sync_id == sync_id)
            & SyncState.status.is_in(*IN_FLIGHT)
            & (SyncState.lease_until.does_not_exist() | (SyncState.lease_until <= now)),
        )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return None
        raise StorageUnavailable() from exc
    return state


def drive(
    state: SyncState,
    owner: str,
    pacer: Pacer,
    *,
    clock: Callable[[], float] = time.time,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> Outcome:
    """Run the leased ``state`` until it finishes or defers; always leaves the lease released."""
    from chalicelib.tenants.vendors import get_vendor
    from chalicelib.xpm.service import tenant_xpm

    try:
        vendor = get_vendor(state.vendor_id)
        xpm = tenant_xpm(vendor, state.tenant_ref, max_body=max_list_bytes())
    except BrokerError as error:
        if error.code in DEFINITIVE:
            return finish(state, owner, "failed", clock(), error_code=error.code)
        release(state, owner, clock(), delay=60)
        raise
    if not state.mode:
        _plan_pass(state, xpm.connection.xero_tenant_id or "", clock())

    def save(run: SyncRun) -> None:
        checkpoint(run.state, owner, run.counts, clock())
        if progress is not None:
            progress(dict(run.counts))

    run = SyncRun(state, xpm, pacer, save, clock)
    try:
        run.execute()
    except Defer as deferral:
        run.checkpoint()
        release(state, owner, clock(), delay=deferral.delay)
        return Outcome("deferred", deferral.delay, deferral.reason, dict(run.counts))
    except (XpmUnavailable, UpstreamError) as error:
        run.counts["transient_failures"] += 1
        failures = run.counts["transient_failures"]
        if failures >= MAX_TRANSIENT_FAILURES:
            return finish(
                state, owner, "failed", clock(), counts=run.counts, error_code="upstream_unavailable"
            )
        run.checkpoint()
        delay = min(MAX_SQS_DELAY, 30.0 * 2**failures)
        release(state, owner, clock(), delay=delay)
        reason = getattr(error, "reason", "identity")
        return Outcome("deferred", delay, f"upstream:{reason}", dict(run.counts))
    except BrokerError as error:
        if error.code in DEFINITIVE:
            return finish(state, owner, "failed", clock(), counts=run.counts, error_code=error.code)
        release(state, owner, clock(), delay=60)
        raise
    except Exception:
        release(state, owner, clock(), delay=60)
        raise
    return finish(
        state, owner, "completed", clock(), counts=run.counts, xero_tenant_id=xpm.connection.xero_tenant_id
    )


def _plan_pass(state: SyncState, xero_tenant_id: str, now: float) -> None:
    """Choose the pass for a run's first invocation (kept in the checkpoint)."""
    established = bool(state.baseline_done) and state.xero_tenant_id == xero_tenant_id
    if get_settings().xpm_api_version == "3.1":
        mode = PAGED
    elif (
        not established
        or state.watermark is None
        or now - float(state.last_full_pass_at or 0) >= full_pass_seconds()
    ):
        mode = FULL_LIST
    else:
        mode = MODIFIED_SINCE
    state.mode, state.phase, state.initial = mode, FETCH, not established
    state.page_token, state.pages, state.counts_json = None, 0, "{}"


def checkpoint(state: SyncState, owner: str, counts: dict[str, int], now: float) -> None:
    state.counts_json = json.dumps(dict(counts), sort_keys=True)
    actions = [
        SyncState.mode.set(state.mode),
        SyncState.phase.set(state.phase),
        SyncState.initial.set(bool(state.initial)),
        SyncState.pages.set(int(state.pages or 0)),
        SyncState.counts_json.set(state.counts_json),
        SyncState.updated_at.set(now),
        SyncState.lease_until.set(now + LEASE_SECONDS),
        SyncState.page_token.set(state.page_token) if state.page_token else SyncState.page_token.remove(),
    ]
    _fenced_update(state, owner, actions)


def release(state: SyncState, owner: str, now: float, *, delay: float) -> None:
    actions = [
        SyncState.lease_owner.remove(),
        SyncState.lease_until.remove(),
        SyncState.updated_at.set(now),
        SyncState.resume_at.set(now + delay),
    ]
    try:
        _fenced_update(state, owner, actions)
    except (StorageUnavailable, LeaseLost):
        logger.warning("could not release the lease of sync %s", state.sync_id)


class LeaseLost(Exception):
    """The run's lease passed to another driver (ours expired): stop without writing more."""


def _fenced_update(state: SyncState, owner: str, actions: list[Any]) -> None:
    try:
        SyncState(state.sync_key).update(
            actions=actions, condition=(SyncState.sync_id == state.sync_id) & (SyncState.lease_owner == owner)
        )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            raise LeaseLost() from exc
        raise StorageUnavailable() from exc


def finish(
    state: SyncState,
    owner: str,
    status: str,
    now: float,
    *,
    counts: dict[str, int] | None = None,
    error_code: str | None = None,
    xero_tenant_id: str | None = None,
) -> Outcome:
    """End the run and write its ``sync.completed`` event in the same transaction (E9)."""
    totals = {k: int(v) for k, v in sorted((counts or {}).items())}
    actions: list[Any] = [
        SyncState.status.set(status),
        SyncState.finished_at.set(now),
        SyncState.updated_at.set(now),
        SyncState.last_sync_id.set(state.sync_id),
        SyncState.last_status.set(status),
        SyncState.last_counts_json.set(json.dumps(totals, sort_keys=True)),
        SyncState.counts_json.set(json.dumps(totals, sort_keys=True)),
        SyncState.lease_owner.remove(),
        SyncState.lease_until.remove(),
        SyncState.resume_at.remove(),
        SyncState.page_token.remove(),
        SyncState.phase.remove(),
    ]
    if state.mode:
        actions += [SyncState.mode.set(state.mode), SyncState.initial.set(bool(state.initial))]
    if error_code:
        actions.append(SyncState.error_code.set(error_code))
    if error_code in {"connection_not_active", "tenant_not_found"}:
        # Off the schedule until the firm reconnects (the connect transaction puts it back).
        actions += [SyncState.next_sync_at.remove(), SyncState.sync_shard.remove()]
    if status == "completed":
        started = float(state.started_at or now)
        actions += [
            SyncState.last_completed_at.set(now),
            # The next scheduled sync is an interval after this one, however this one started.
            SyncState.sync_shard.set(sync_shard(state.vendor_id, state.tenant_ref)),
            SyncState.next_sync_at.set(now + sync_interval()),
            SyncState.baseline_done.set(True),
            SyncState.xero_tenant_id.set(xero_tenant_id or ""),
            SyncState.watermark.set(started - WATERMARK_OVERLAP),
        ]
        if state.mode in (PAGED, FULL_LIST):
            actions.append(SyncState.last_full_pass_at.set(started))
    data: dict[str, Any] = {
        "tenant_ref": state.tenant_ref,
        "sync_id": state.sync_id,
        "status": status,
        "trigger": state.trigger,
        "initial": bool(state.initial),
        "counts": {k: totals.get(k, 0) for k in EVENT_COUNTS},
    }
    if error_code:
        data["error"] = error_code
    try:
        with transaction() as tx:
            tx.update(
                SyncState(state.sync_key),
                actions=actions,
                condition=(SyncState.sync_id == state.sync_id) & (SyncState.lease_owner == owner),
            )
            tx.save(outbox_event(state.vendor_id, "sync.completed", data, now))
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            raise LeaseLost() from exc
        raise StorageUnavailable() from exc
    if state.pages:
        _forget_pages(str(state.sync_id), int(state.pages))
    logger.info("sync %s %s: %s", state.sync_id, status, data["counts"])
    return Outcome(status, reason=error_code or "", counts=totals)


def _forget_pages(sync_id: str, pages: int) -> None:
    from chalicelib.sync.store import forget_seen

    try:
        forget_seen(sync_id, pages)
    except StorageUnavailable:
        logger.warning("could not delete the page records of sync %s (TTL will)", sync_id)


# -- the SQS worker --------------------------------------------------------------------------------


def run_message(body: dict[str, Any], deadline: float | None, now: float | None = None) -> Outcome:
    """One SQS message: continue its run if it is still the tenant's run and nobody drives it."""
    at = time.time() if now is None else now
    sync_key, sync_id = str(body["sync_key"]), str(body["sync_id"])
    state = find(SyncState, sync_key, consistent=True)
    if state is None or state.sync_id != sync_id or state.status not in IN_FLIGHT:
        return Outcome("obsolete")
    resume_at = float(state.resume_at or 0)
    if resume_at > at + 1:
        # Not yet: wait on the queue again (SQS delays stop at 15 minutes).
        send(body, resume_at - at)
        _touch(state, at)
        return Outcome("waiting", resume_at - at)
    owner = new_id("lease")
    leased = acquire(sync_key, sync_id, owner, at)
    if leased is None:
        return Outcome("busy")
    pacer = Pacer(deadline=deadline, minute_reserve=minute_reserve(), day_reserve=day_reserve())
    try:
        outcome = drive(leased, owner, pacer)
    except LeaseLost:
        return Outcome("busy")
    if outcome.status == "deferred":
        send(body, outcome.delay)
    return outcome


def _touch(state: SyncState, now: float) -> None:
    try:
        SyncState(state.sync_key).update(
            actions=[SyncState.updated_at.set(now)], condition=SyncState.sync_id == state.sync_id
        )
    except PynamoDBException:
        logger.warning("could not touch sync %s", state.sync_id)
