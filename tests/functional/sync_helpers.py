"""Helpers for the change-feed tests: run a sync to its end, change the sandbox behind XPM's back."""

from __future__ import annotations

import json
from typing import Any

import requests

from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.sync.jobs import Outcome, message_of, request_sync, run_message
from chalicelib.sync.models import SyncState, state_key
from chalicelib.webhooks.models import Event
from sandbox.server import SandboxServer
from tests.functional.sandbox.oauth_helpers import BLOGGS
from xpmb.pump import _sqs_record

TIMEOUT = 120
CLIENT_EVENTS = ("xpm.client.created", "xpm.client.updated", "xpm.client.archived")


def run_sync(vendor_id: str, tenant_ref: str, *, max_steps: int = 50, trigger: str = "api") -> list[Outcome]:
    """Start (or join) a sync and run it to its end in this process, skipping deferral waits.

    Returns the outcome of every invocation, the last being ``completed`` or ``failed``.
    """
    state, _ = request_sync(vendor_id, tenant_ref, trigger, enqueue=False)
    outcomes: list[Outcome] = []
    for _ in range(max_steps):
        current = SyncState.get(state.sync_key, consistent_read=True)
        now = max(float(current.resume_at or 0), float(current.updated_at or 0))
        outcome = run_message(message_of(state), deadline=None, now=now)
        outcomes.append(outcome)
        if outcome.status in ("completed", "failed", "obsolete"):
            return outcomes  # deferrals left continuation messages on the queue: stale now
    raise AssertionError(f"sync did not finish: {outcomes}")


def sync_state(vendor_id: str, tenant_ref: str) -> SyncState:
    return SyncState.get(state_key(vendor_id, tenant_ref), consistent_read=True)


def queue_url() -> str:
    sqs = aws_client("sqs")
    return str(sqs.get_queue_url(QueueName=get_settings().queue_name("sync"))["QueueUrl"])


def receive_all() -> list[dict[str, Any]]:
    sqs = aws_client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url(), MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not batch.get("Messages"):
            return messages
        messages.extend(batch["Messages"])


def lambda_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{get_settings().queue_name('sync')}"
    return {"Records": [_sqs_record(m, arn, "us-east-1") for m in messages]}


def events(vendor_id: str, *types: str) -> list[Event]:
    wanted = types or (*CLIENT_EVENTS, "sync.completed")
    return [e for e in Event.query(vendor_id, consistent_read=True) if e.type in wanted]


def client_events(vendor_id: str) -> list[tuple[str, str]]:
    """``(type, client_uuid)`` of every client event so far, in order."""
    return [(e.type, e.data["client_uuid"]) for e in events(vendor_id, *CLIENT_EVENTS)]


def last_completed(vendor_id: str) -> dict[str, Any]:
    done = events(vendor_id, "sync.completed")
    assert done, "no sync.completed event"
    return done[-1].data


class Practice:
    """The sandbox's data of one practice, changed directly (as a staff member in XPM would)."""

    def __init__(self, sandbox: SandboxServer, tenant_id: str = BLOGGS) -> None:
        self.base = f"{sandbox.url}/_sandbox/practices/{tenant_id}"
        self.tenant_id = tenant_id

    def clients(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.base}/clients", timeout=TIMEOUT)
        response.raise_for_status()
        clients: list[dict[str, Any]] = response.json()
        return clients

    def active(self) -> list[dict[str, Any]]:
        return [c for c in self.clients() if not c["IsArchived"] and not c["IsDeleted"]]

    def patch(self, client_uuid: str, **fields: Any) -> None:
        response = requests.patch(f"{self.base}/clients/{client_uuid}", json=fields, timeout=TIMEOUT)
        assert response.status_code == 200, response.text

    def insert(self, name: str, **fields: Any) -> str:
        response = requests.post(f"{self.base}/clients", json={"Name": name, **fields}, timeout=TIMEOUT)
        assert response.status_code == 201, response.text
        return str(response.json()["UUID"])

    def reseed(self, clients: int) -> None:
        response = requests.post(f"{self.base}/reseed", json={"clients": clients}, timeout=300)
        response.raise_for_status()


def body_of(response: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.body)
    return loaded
