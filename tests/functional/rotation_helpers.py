"""Helpers shared by the rotation tests: due grants, the sandbox's view of a refresh token."""

from __future__ import annotations

import json
import time
from typing import Any

from chalicelib.crypto import get_cipher
from chalicelib.oauth.grants import read_tokens, token_context
from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection
from chalicelib.webhooks.models import Event
from sandbox.server import SandboxServer
from tests.functional.broker import BrokerUnderTest


def connected_grant(broker: BrokerUnderTest, tenant_ref: str = "firm-1", **kwargs: Any) -> Grant:
    broker.connect(tenant_ref, **kwargs)
    grant_id = Connection.get(broker.vendor.vendor_id, tenant_ref).grant_id
    assert grant_id
    return Grant.get(grant_id, consistent_read=True)


def make_due(grant_id: str, seconds_ago: float = 60) -> None:
    Grant(grant_id).update(actions=[Grant.next_rotation_at.set(time.time() - seconds_ago)])


def stored_refresh_token(grant_id: str) -> str:
    return read_tokens(Grant.get(grant_id, consistent_read=True)).refresh_token


def parked_refresh_token(grant_id: str) -> str | None:
    """The refresh token of a parked pair that the next run would apply (checklist D3)."""
    grant = Grant.get(grant_id, consistent_read=True)
    if not grant.pending_token_ct or grant.pending_from_version != grant.version:
        return None
    data = json.loads(get_cipher().decrypt(grant.pending_token_ct, token_context(grant)))
    return str(data["refresh_token"])


def sandbox_accepts(sandbox: SandboxServer, refresh_token: str) -> bool:
    """Would the sandbox's token endpoint accept this refresh token now (current, or in grace)?"""
    state = sandbox.state
    with state.lock:
        now = state.clock.now()
        for grant in state.grants.values():
            if grant.revoked:
                continue
            if grant.refresh_token == refresh_token:
                return now - grant.refresh_issued_at <= state.config.refresh_token_idle_expiry
            if grant.previous_refresh_token == refresh_token:
                return now <= grant.previous_valid_until
    return False


def events_of(vendor_id: str, event_type: str) -> list[Event]:
    return [e for e in Event.query(vendor_id) if e.type == event_type]


def queue_url(queue: str) -> str:
    from chalicelib.aws import aws_client
    from chalicelib.config import get_settings

    sqs = aws_client("sqs")
    return str(sqs.get_queue_url(QueueName=get_settings().queue_name(queue))["QueueUrl"])


def receive_all(queue: str) -> list[dict[str, Any]]:
    """Every message now visible on ``queue`` (they stay in flight until deleted)."""
    from chalicelib.aws import aws_client

    sqs = aws_client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url(queue), MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not batch.get("Messages"):
            return messages
        messages.extend(batch["Messages"])


def lambda_event(queue: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The SQS event Lambda would hand the queue's handler for ``messages``."""
    from chalicelib.config import get_settings
    from xpmb.pump import _sqs_record

    arn = f"arn:aws:sqs:us-east-1:123456789012:{get_settings().queue_name(queue)}"
    return {"Records": [_sqs_record(m, arn, "us-east-1") for m in messages]}


def xero_current_refresh_token(sandbox: SandboxServer, previous: str) -> str:
    """The refresh token the sandbox issued when it rotated ``previous``."""
    with sandbox.state.lock:
        return next(
            g.refresh_token for g in sandbox.state.grants.values() if g.previous_refresh_token == previous
        )
