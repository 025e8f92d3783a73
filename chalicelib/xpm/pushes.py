"""Push jobs: queue an entity graph, create it in XPM record by record, report per record.

The worker is resumable and safe under redelivery (security-checklist G6, G7): progress is
saved after every record, a record created by an attempt that died is adopted rather than
created again (``creation.create_once``), relationships are checked before being re-added, and a
finished job ignores further deliveries. It ends with ``push.completed`` or ``push.failed``,
written in the same transaction as the final status (E9).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.crypto import get_cipher, record_context
from chalicelib.errors import BrokerError
from chalicelib.storage import StorageUnavailable, find, transaction, ttl_at
from chalicelib.tenants.models import Vendor
from chalicelib.tenants.vendors import get_vendor
from chalicelib.webhooks.models import outbox_event
from chalicelib.xpm.creation import create_once, matching_person
from chalicelib.xpm.errors import XpmNotFound, XpmRateLimited, XpmValidationFailed
from chalicelib.xpm.push_graph import ENTITY, Party, PushGraph, Relationship, parse_graph
from chalicelib.xpm.push_models import Push
from chalicelib.xpm.service import TenantXpm, active_connection, tenant_xpm

logger = logging.getLogger("xpmb.pushes")
MAX_ATTEMPTS = 5
RETENTION = 30 * 86400
DEFINITIVE = ("connection_not_active", "tenant_not_found", "vendor_not_found")


def _context(push: Push) -> dict[str, str]:
    return record_context("push-request", push.vendor_id, push.push_id)


def push_not_found() -> BrokerError:
    return BrokerError("push_not_found", 404, "Push not found", "No such push for this tenant.")


def create_push(vendor: Vendor, tenant_ref: str, body: Any, now: float | None = None) -> Push:
    """Validate, store (encrypted) and queue a push; the connection must be active now."""
    graph = parse_graph(body)
    active_connection(vendor, tenant_ref)
    created = time.time() if now is None else now
    push = _new_push(
        f"push_{secrets.token_urlsafe(18)}",
        vendor,
        tenant_ref,
        status="queued",
        body=body,
        graph=graph,
        now=created,
    )
    try:
        push.save(condition=Push.push_id.does_not_exist())
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
    try:
        sqs = aws_client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().queue_name("pushes"))["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"push_id": push.push_id}))
    except Exception as exc:
        push.delete()
        raise BrokerError("queue_unavailable", 503, "Queue unavailable", "Try again shortly.") from exc
    return push


def _new_push(
    push_id: str, vendor: Vendor, tenant_ref: str, *, status: str, body: Any, graph: PushGraph, now: float
) -> Push:
    """A job row (not saved): the request graph encrypted, every record pending."""
    push = Push(
        push_id,
        vendor_id=vendor.vendor_id,
        tenant_ref=tenant_ref,
        status=status,
        request_ct="",
        progress_json=json.dumps(_initial_progress(graph)),
        created_at=now,
        updated_at=now,
        expires_at_ttl=ttl_at(now + RETENTION),
    )
    push.request_ct = get_cipher().encrypt(json.dumps(body).encode(), _context(push))
    return push


def _initial_progress(graph: PushGraph) -> dict[str, Any]:
    return {
        "records": {p.ref: {"status": "pending"} for p in (graph.entity, *graph.parties)},
        "relationships": {str(r.index): {"status": "pending"} for r in graph.relationships},
    }


def push_view(vendor: Vendor, tenant_ref: str, push_id: str) -> dict[str, Any]:
    push = load_push(push_id)
    if push is None or push.vendor_id != vendor.vendor_id or push.tenant_ref != tenant_ref:
        raise push_not_found()
    graph = parse_graph(json.loads(get_cipher().decrypt(push.request_ct, _context(push))))
    return view(push, graph)


def view(push: Push, graph: PushGraph) -> dict[str, Any]:
    from chalicelib.tenants.connections import iso

    progress = json.loads(push.progress_json)
    records = []
    for party in (graph.entity, *graph.parties):
        state = progress["records"].get(party.ref, {})
        records.append(
            {
                "ref": party.ref,
                "name": party.display_name or None,
                "status": state.get("status", "pending"),
                "action": state.get("action"),
                "xpm_uuid": state.get("xpm_uuid"),
                "error": state.get("error"),
            }
        )
    relationships = []
    for rel in graph.relationships:
        state = progress["relationships"].get(str(rel.index), {})
        relationships.append(
            {
                "index": rel.index,
                "type": rel.type,
                "client": rel.client,
                "related": rel.related,
                "status": state.get("status", "pending"),
                "error": state.get("error"),
            }
        )
    return {
        "push_id": push.push_id,
        "tenant_ref": push.tenant_ref,
        "status": push.status,
        "error": push.error_code,
        "attempts": int(push.attempts),
        "created_at": iso(push.created_at),
        "updated_at": iso(push.updated_at),
        "records": records,
        "relationships": relationships,
    }


def load_push(push_id: str) -> Push | None:
    if not push_id.startswith("push_") or len(push_id) > 64:
        return None
    return find(Push, push_id, consistent=True)


# -- the worker ------------------------------------------------------------------------


def run_push(push_id: str) -> None:
    """Advance one push as far as it goes; transient failures raise so the queue retries."""
    push = load_push(push_id)
    if push is None or push.status in ("completed", "failed"):
        return  # unknown, or a redelivery of a finished job (G7)
    push.update(actions=[Push.status.set("running"), Push.attempts.add(1), Push.updated_at.set(time.time())])
    graph = parse_graph(json.loads(get_cipher().decrypt(push.request_ct, _context(push))))
    progress: dict[str, Any] = json.loads(push.progress_json)
    try:
        vendor = get_vendor(push.vendor_id)
        xpm = tenant_xpm(vendor, push.tenant_ref)
        _run(xpm, push, graph, progress)
    except BrokerError as error:
        if error.code in DEFINITIVE:
            _finish(push, graph, progress, error_code=error.code)
            return
        if int(push.attempts) >= MAX_ATTEMPTS and not isinstance(error, XpmRateLimited):
            _finish(push, graph, progress, error_code="retries_exhausted")
            return
        raise
    _finish(push, graph, progress)


def _run(xpm: TenantXpm, push: Push, graph: PushGraph, progress: dict[str, Any]) -> None:
    for party in (graph.entity, *graph.parties):
        record = progress["records"].setdefault(party.ref, {"status": "pending"})
        if record["status"] in ("done", "failed"):
            continue
        try:
            _resolve(xpm, push, party, record, progress)
        except (XpmValidationFailed, XpmNotFound) as error:
            record.update(status="failed", error={"code": error.code, "detail": error.detail})
        _save(push, progress)
    uuids = {ref: r.get("xpm_uuid") for ref, r in progress["records"].items() if r["status"] == "done"}
    for rel in graph.relationships:
        state = progress["relationships"].setdefault(str(rel.index), {"status": "pending"})
        if state["status"] in ("done", "failed"):
            continue
        client_uuid, related_uuid = uuids.get(rel.client), uuids.get(rel.related)
        if not client_uuid or not related_uuid:
            state.update(
                status="failed", error={"code": "dependency_failed", "detail": "a party was not created"}
            )
        else:
            try:
                _relate(
                    xpm,
                    push,
                    rel,
                    client_uuid=client_uuid,
                    related_uuid=related_uuid,
                    state=state,
                    progress=progress,
                )
            except XpmValidationFailed as error:
                state.update(status="failed", error={"code": error.code, "detail": error.detail})
        _save(push, progress)


def _resolve(
    xpm: TenantXpm, push: Push, party: Party, record: dict[str, Any], progress: dict[str, Any]
) -> None:
    if party.xpm_uuid:
        found = xpm.call(lambda c: c.get_client(str(party.xpm_uuid)))
        record.update(status="done", action="reused", xpm_uuid=found["uuid"])
        return
    fields = _client_fields(party)
    if party.ref != ENTITY and record.get("known_before") is None:
        match = xpm.call(lambda c: matching_person(c, party.display_name, fields))
        if match is not None:
            record.update(status="done", action="matched", xpm_uuid=match["uuid"])
            return

    def remember(known: list[str]) -> None:
        record["known_before"] = known
        _save(push, progress)  # persisted before the create is sent: a crash can be reconciled

    created = xpm.call(
        lambda c: create_once(c, fields, party.display_name, record.get("known_before"), remember)
    )
    record.pop("known_before", None)
    record.update(status="done", action="created", xpm_uuid=created["uuid"])


def _client_fields(party: Party) -> dict[str, Any]:
    fields = dict(party.fields)
    fields.setdefault("name", party.display_name)
    if party.ref != ENTITY and "business_structure" not in fields and fields.get("first_name"):
        fields["business_structure"] = "Individual"
    return fields


def _relate(
    xpm: TenantXpm,
    push: Push,
    rel: Relationship,
    *,
    client_uuid: str,
    related_uuid: str,
    state: dict[str, Any],
    progress: dict[str, Any],
) -> None:
    if state.get("attempted"):
        # An earlier attempt may have added it before dying: look before adding again (G6).
        current = xpm.call(lambda c: c.get_client(client_uuid))
        for existing in current.get("relationships") or []:
            related = existing.get("related_client") or {}
            if existing.get("type") == rel.type and related.get("uuid") == related_uuid:
                state.update(status="done")
                return
    state["attempted"] = True
    _save(push, progress)
    relationship = {"type": rel.type, "related_client_uuid": related_uuid, **rel.details}
    xpm.call(lambda c: c.add_relationship(client_uuid, relationship))
    state.pop("attempted", None)
    state.update(status="done")


def _save(push: Push, progress: dict[str, Any]) -> None:
    push.update(actions=[Push.progress_json.set(json.dumps(progress)), Push.updated_at.set(time.time())])


def _finish(push: Push, graph: PushGraph, progress: dict[str, Any], error_code: str | None = None) -> None:
    failed = error_code is not None or any(
        r["status"] == "failed" for r in (*progress["records"].values(), *progress["relationships"].values())
    )
    status = "failed" if failed else "completed"
    now = time.time()
    push.progress_json = json.dumps(progress)
    push.status = status
    push.error_code = error_code
    push.updated_at = now
    summary = view(push, graph)
    data = {
        "push_id": push.push_id,
        "tenant_ref": push.tenant_ref,
        "status": status,
        "error": error_code,
        "records": [{k: r[k] for k in ("ref", "status", "action", "xpm_uuid")} for r in summary["records"]],
    }
    with transaction() as tx:
        tx.update(
            push,
            actions=[
                Push.status.set(status),
                Push.progress_json.set(push.progress_json),
                Push.error_code.set(error_code) if error_code else Push.error_code.remove(),
                Push.updated_at.set(now),
            ],
            condition=Push.status == "running",
        )
        tx.save(outbox_event(push.vendor_id, f"push.{status}", data, now))
        tx.save(
            audit_record(
                push.vendor_id,
                f"push.{status}",
                "system",
                outcome="success" if status == "completed" else "failure",
                tenant_ref=push.tenant_ref,
                detail={"push_id": push.push_id, "error": error_code or ""},
                now=now,
            )
        )
    logger.info("push %s %s", push.push_id, status)


def handle_push_messages(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS entry point: one push per message, partial batch failures (powertools batch)."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    def record_handler(record: SQSRecord) -> None:
        push_id = json.loads(record.body)["push_id"]
        try:
            run_push(push_id)
        except XpmRateLimited as limited:
            _delay(record.receipt_handle, record.event_source_arn, limited.retry_after)
            raise

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(result)


def _delay(receipt_handle: str, queue_arn: str, seconds: int) -> None:
    """Come back when the rate window reopens rather than after the full visibility timeout."""
    try:
        sqs = aws_client("sqs")
        url = sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[-1])["QueueUrl"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(1, seconds)
        )
    except Exception:
        logger.warning("could not shorten the visibility of a rate-limited push message")


# -- one client, synchronously (POST …/xpm/clients) --------------------------------------


def create_client_now(vendor: Vendor, tenant_ref: str, body: Any, idempotency_key: str) -> dict[str, Any]:
    """Create one client (and its relationships) now, on the same resumable machinery.

    The job record is keyed by the Idempotency-Key, so a retry after a crash (the idempotency
    record of a dead invocation expires) resumes it and adopts what was created (G6).
    """
    import hashlib

    from chalicelib.xpm.mapping import present_client
    from chalicelib.xpm.push_graph import graph_from_client_request

    graph_body = graph_from_client_request(body)
    graph = parse_graph(graph_body, require_structure=False)
    xpm = tenant_xpm(vendor, tenant_ref)
    digest = hashlib.sha256(f"{vendor.vendor_id}\x00{tenant_ref}\x00{idempotency_key}".encode()).hexdigest()
    push = _inline_job(f"push_c{digest[:40]}", vendor, tenant_ref, graph_body, graph)
    progress: dict[str, Any] = json.loads(push.progress_json)
    _run(xpm, push, graph, progress)
    entity = progress["records"][ENTITY]
    failures = [r for r in progress["relationships"].values() if r["status"] == "failed"]
    push.update(
        actions=[
            Push.status.set("failed" if entity["status"] == "failed" or failures else "completed"),
            Push.updated_at.set(time.time()),
        ]
    )
    if entity["status"] == "failed":
        error = entity.get("error") or {}
        raise BrokerError(
            "xpm_validation_failed", 422, "XPM rejected the client", str(error.get("detail", ""))
        )
    if failures:
        details = "; ".join(str((f.get("error") or {}).get("detail", "")) for f in failures)
        raise BrokerError(
            "xpm_validation_failed",
            422,
            "XPM rejected a relationship",
            f"The client was created but XPM rejected {len(failures)} relationship(s): {details}",
            extra={"created_uuid": entity["xpm_uuid"]},
        )
    created = xpm.call(lambda c: c.get_client(str(entity["xpm_uuid"])))
    presented: dict[str, Any] = present_client(created, vendor.allow_sensitive_fields)
    return presented


def _inline_job(
    push_id: str, vendor: Vendor, tenant_ref: str, body: dict[str, Any], graph: PushGraph
) -> Push:
    existing = load_push(push_id)
    if existing is not None:
        return existing
    push = _new_push(push_id, vendor, tenant_ref, status="running", body=body, graph=graph, now=time.time())
    try:
        push.save(condition=Push.push_id.does_not_exist())
    except PynamoDBException:
        found = load_push(push_id)
        if found is None:
            raise StorageUnavailable() from None
        return found
    return push
