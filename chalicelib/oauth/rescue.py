"""The token_rescue queue: where a refreshed pair goes when DynamoDB takes neither it nor its parking.

Xero issued the pair, and the refresh token we still store is accepted for only 30 more minutes
(xero-reference §1.5; checklist D3). So ``refresh._persist`` sends the pair here, sealed under KMS
with the grant's encryption context (the message never holds a token in clear), and this queue's
worker stores it with the fences of a parked pair: only while the grant is still at the version
it was refreshed from, and its lease is free, expired or the sender's. A stale message (a newer
pair was stored meanwhile) is dropped: the stored token is the newer one. The queue keeps
messages 14 days, retries a failed apply, then dead-letters it for an operator to redrive.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.oauth.models import Grant
from chalicelib.storage import StorageUnavailable, find

logger = logging.getLogger("xpmb.rescue")

QUEUE = "token_rescue"


def send_rescue(grant: Grant, owner: str, sealed: str, issued_at: float) -> bool:
    """Queue the sealed pair; False when SQS refused too (the caller keeps retrying)."""
    body = {
        "grant_id": grant.grant_id,
        "from_version": int(grant.version),
        "owner": owner,
        "issued_at": issued_at,
        "token_ct": sealed,
    }
    try:
        sqs = aws_client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().queue_name(QUEUE))["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    except Exception:
        logger.error("could not send the refreshed tokens of %s to the rescue queue", grant.grant_id)
        return False
    logger.warning("refreshed tokens of %s sent to the rescue queue", grant.grant_id)
    return True


class RescueDeferred(Exception):
    """The grant is leased by another worker right now: apply the message on a later receive."""


def apply_rescue(body: dict[str, Any]) -> str:
    """Store one rescued pair: ``applied``, ``stale`` (a newer pair is stored) or ``gone``."""
    from chalicelib.oauth.refresh import apply_sealed_token_set

    grant = find(Grant, str(body["grant_id"]), consistent=True)
    if grant is None or grant.status != "active":
        return "gone"
    from_version = int(body["from_version"])
    if int(grant.version) != from_version:
        return "stale"
    issued_at = body.get("issued_at")
    applied = apply_sealed_token_set(
        grant,
        str(body["token_ct"]),
        from_version,
        str(body.get("owner") or ""),
        float(issued_at) if issued_at is not None else None,
    )
    if applied is not None:
        logger.info("applied the rescued token set of %s", grant.grant_id)
        return "applied"
    latest = find(Grant, grant.grant_id, consistent=True)
    if latest is None or int(latest.version) != from_version:
        return "stale"
    raise RescueDeferred(grant.grant_id)


def handle_rescue_messages(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS entry point; a message that cannot be applied yet is reported as a partial failure."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    outcomes: Counter[str] = Counter()

    def record_handler(record: SQSRecord) -> None:
        try:
            outcomes[apply_rescue(json.loads(record.body))] += 1
        except (RescueDeferred, StorageUnavailable):
            outcomes["deferred"] += 1
            raise

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    if outcomes:
        logger.info("token rescue: %s", dict(outcomes))
    return dict(result)
