"""Scheduled rotation over the sandbox: planner, worker, every failure class, no token lost."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import pytest
import requests
from pynamodb.exceptions import UpdateError

from chalicelib.aws import aws_client
from chalicelib.config import get_settings
from chalicelib.oauth import refresh as refresh_module
from chalicelib.oauth.errors import UpstreamError
from chalicelib.oauth.grants import ROTATE_AFTER_IDLE, apply_token_set, rotation_shard
from chalicelib.oauth.models import Grant
from chalicelib.oauth.rotation import (
    RotationOutcome,
    handle_rotation_messages,
    plan_rotation,
    rotate_grant,
    run_planner,
)
from chalicelib.oauth.xero_identity import TokenSet
from chalicelib.storage import StorageUnavailable
from chalicelib.tenants.models import Connection, Vendor
from tests.functional.broker import BrokerUnderTest
from tests.functional.rotation_helpers import (
    connected_grant,
    events_of,
    make_due,
    sandbox_accepts,
    stored_refresh_token,
)
from tests.functional.sandbox.oauth_helpers import ALICE, arm_fault, calls, user_id
from xpmb.pump import FakeLambdaContext, _sqs_record

REFRESHES = "identity.token.refresh"


def _refreshes(broker: BrokerUnderTest) -> int:
    return calls(broker.sandbox).get(REFRESHES, 0)


def _queue_url() -> str:
    sqs = aws_client("sqs")
    return str(sqs.get_queue_url(QueueName=get_settings().queue_name("rotation"))["QueueUrl"])


def _receive_all() -> list[dict[str, Any]]:
    sqs = aws_client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=_queue_url(), MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not batch.get("Messages"):
            return messages
        messages.extend(batch["Messages"])


def _lambda_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{get_settings().queue_name('rotation')}"
    return {"Records": [_sqs_record(m, arn, "us-east-1") for m in messages]}


def _synthetic_grant(vendor_id: str, n: int, next_rotation_at: float) -> Grant:
    grant = Grant(f"g_synthetic{n:04d}", vendor_id=vendor_id, xero_user_id=f"user-{n}", created_at=0)
    apply_token_set(grant, TokenSet(f"at-{n}", f"rt-{n}", time.time() + 1800, "offline_access"))
    grant.next_rotation_at = next_rotation_at
    grant.save()
    return grant


def test_planner_queries_only_due_grants_and_queues_them(broker: BrokerUnderTest) -> None:
    now = time.time()
    grants = [_synthetic_grant(broker.vendor.vendor_id, n, now + 86400) for n in range(6)]
    due = grants[3]
    Grant(due.grant_id).update(actions=[Grant.next_rotation_at.set(now - 5)])
    flagged = grants[4]  # needs reauthorisation: out of the sparse index
    Grant(flagged.grant_id).update(
        actions=[
            Grant.status.set("needs_reauthorisation"),
            Grant.rotation_shard.remove(),
            Grant.next_rotation_at.remove(),
        ]
    )
    assert {rotation_shard(g.grant_id) for g in grants} != {rotation_shard(due.grant_id)}
    with mock.patch.object(Grant, "scan", side_effect=AssertionError("the planner must never scan")):
        report = plan_rotation(now)
    assert (report.due, report.enqueued, report.items_read, report.queries) == (1, 1, 1, 4)
    messages = _receive_all()
    assert [json.loads(m["Body"])["grant_id"] for m in messages] == [due.grant_id]
    assert json.loads(messages[0]["Body"])["planned_at"] == now


def test_planner_sends_batches_of_ten(broker: BrokerUnderTest) -> None:
    now = time.time()
    for n in range(23):
        _synthetic_grant(broker.vendor.vendor_id, n, now - 10)
    sqs = aws_client("sqs")
    with mock.patch.object(sqs, "send_message_batch", wraps=sqs.send_message_batch) as sent:
        report = plan_rotation(now)
    assert report.enqueued == 23
    assert sorted(len(c.kwargs["Entries"]) for c in sent.call_args_list) == [3, 10, 10]


def test_worker_rotates_a_due_grant_through_the_queue(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    before = _refreshes(broker)
    assert run_planner({}, FakeLambdaContext("planner"))["enqueued"] == 1
    result = handle_rotation_messages(_lambda_event(_receive_all()), FakeLambdaContext("worker"))
    assert result == {"batchItemFailures": []}
    assert _refreshes(broker) == before + 1
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1
    assert stored.next_rotation_at == pytest.approx(time.time() + ROTATE_AFTER_IDLE, abs=30)
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))
    assert rotate_grant(grant.grant_id) == RotationOutcome.NOT_DUE


def test_duplicate_deliveries_refresh_once(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    plan_rotation()
    plan_rotation()  # a second planner run before the worker: the same grant queued twice
    messages = _receive_all()
    assert len(messages) == 2
    before = _refreshes(broker)
    result = handle_rotation_messages(_lambda_event(messages), FakeLambdaContext("worker"))
    assert result == {"batchItemFailures": []}
    assert _refreshes(broker) == before + 1
    assert Grant.get(grant.grant_id).version == grant.version + 1


def test_lost_response_is_recovered_with_the_previous_token(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    old = stored_refresh_token(grant.grant_id)
    arm_fault(broker.sandbox, "token.refresh", "drop_response")
    with pytest.raises(UpstreamError):
        rotate_grant(grant.grant_id)
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored_refresh_token(grant.grant_id) == old  # never dropped
    assert stored.version == grant.version and stored.in_doubt_since is not None
    assert stored.lease_owner is None
    # Xero rotated: the stored token is now the previous one, inside the 30-minute grace.
    assert sandbox_accepts(broker.sandbox, old)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1 and stored.in_doubt_since is None
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))


def test_lost_response_past_the_grace_is_superseded_and_flagged(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    arm_fault(broker.sandbox, "token.refresh", "drop_response")
    with pytest.raises(UpstreamError):
        rotate_grant(grant.grant_id)
    # 31 minutes pass on both clocks (the sandbox's, and our record of the doubtful attempt).
    requests.post(f"{broker.sandbox.url}/_sandbox/clock/advance", json={"seconds": 31 * 60}, timeout=5)
    Grant(grant.grant_id).update(actions=[Grant.in_doubt_since.set(time.time() - 31 * 60)])
    assert rotate_grant(grant.grant_id) == RotationOutcome.NEEDS_REAUTHORISATION
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert (connection.status, connection.status_reason) == ("needs_reauthorisation", "superseded")
    assert len(events_of(broker.vendor.vendor_id, "connection.needs_reauthorisation")) == 1


def _failing_write(*args: Any, **kwargs: Any) -> None:
    raise UpdateError("simulated DynamoDB failure after Xero answered")


def test_a_failed_write_parks_the_new_pair_and_the_next_run_applies_it(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    old = stored_refresh_token(grant.grant_id)
    before = _refreshes(broker)
    with (
        mock.patch.object(refresh_module, "_write_tokens", side_effect=_failing_write),
        mock.patch.object(refresh_module.time, "sleep"),
        pytest.raises(StorageUnavailable),
    ):
        rotate_grant(grant.grant_id)
    parked = Grant.get(grant.grant_id, consistent_read=True)
    assert stored_refresh_token(grant.grant_id) == old  # (a) the old token is still stored
    assert parked.pending_token_ct and parked.pending_from_version == grant.version
    assert parked.version == grant.version
    current_at_xero = next(
        g.refresh_token for g in broker.sandbox.state.grants.values() if g.previous_refresh_token == old
    )
    assert current_at_xero not in parked.pending_token_ct
    assert rotate_grant(grant.grant_id) == RotationOutcome.APPLIED_PARKED
    assert _refreshes(broker) == before + 1  # applied, not refreshed again
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1 and stored.pending_token_ct is None
    assert stored.lease_owner is None
    assert stored_refresh_token(grant.grant_id) == current_at_xero


def test_a_crash_between_refresh_and_write_recovers_inside_the_grace(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    old = stored_refresh_token(grant.grant_id)
    with (
        mock.patch.object(refresh_module, "_persist", side_effect=SystemExit("process died")),
        pytest.raises(SystemExit),
    ):
        rotate_grant(grant.grant_id)
    # The lease outlives the dead process; SQS redelivers after it expires (visibility 180 s > 60 s).
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert stored_refresh_token(grant.grant_id) == old and sandbox_accepts(broker.sandbox, old)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({}, "revoked"),
        ({"refresh_expires_at": 1.0}, "expired"),
    ],
)
def test_invalid_grant_flags_once_with_a_reason(
    broker: BrokerUnderTest, setup: dict[str, float], reason: str
) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    if setup:
        Grant(grant.grant_id).update(actions=[Grant.refresh_expires_at.set(setup["refresh_expires_at"])])
    arm_fault(broker.sandbox, "token.refresh", "invalid_grant", count=5)
    assert rotate_grant(grant.grant_id) == RotationOutcome.NEEDS_REAUTHORISATION
    assert rotate_grant(grant.grant_id) == RotationOutcome.INACTIVE
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert (connection.status, connection.status_reason) == ("needs_reauthorisation", reason)
    assert len(events_of(broker.vendor.vendor_id, "connection.needs_reauthorisation")) == 1
    stored = Grant.get(grant.grant_id)
    assert stored.status == "needs_reauthorisation" and stored.next_rotation_at is None


def test_revoked_in_xero_is_flagged(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    for sandbox_grant in broker.sandbox.state.grants.values():
        sandbox_grant.revoked = True  # as POST /connect/revocation by the user's admin
    assert rotate_grant(grant.grant_id) == RotationOutcome.NEEDS_REAUTHORISATION
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert (connection.status, connection.status_reason) == ("needs_reauthorisation", "revoked")


def test_disconnected_in_xero_is_detected_after_a_successful_refresh(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    alice = user_id(broker.sandbox, ALICE)
    response = requests.post(f"{broker.sandbox.url}/_sandbox/users/{alice}/disconnect", timeout=5)
    assert response.json()["removed"] == 1
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED  # the refresh token still works
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert (connection.status, connection.status_reason) == ("needs_reauthorisation", "disconnected_in_xero")
    make_due(grant.grant_id)
    rotate_grant(grant.grant_id)
    assert len(events_of(broker.vendor.vendor_id, "connection.needs_reauthorisation")) == 1


def test_transient_failures_flip_health_once_then_recover(broker: BrokerUnderTest) -> None:
    from chalicelib.audit import AuditRecord

    grant = connected_grant(broker)
    make_due(grant.grant_id)
    arm_fault(broker.sandbox, "token.refresh", "server_error", count=4, status=503)
    for attempt in range(1, 5):
        with pytest.raises(UpstreamError):
            rotate_grant(grant.grant_id)
        stored = Grant.get(grant.grant_id, consistent_read=True)
        assert stored.consecutive_failures == attempt
        assert stored.health == (None if attempt < 3 else "provider_unavailable")
        assert stored.status == "active" and stored.version == grant.version
    audits = [
        a for a in AuditRecord.query(broker.vendor.vendor_id) if a.action == "grant.provider_unavailable"
    ]
    assert len(audits) == 1
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.health is None and stored.consecutive_failures is None
    assert len(events_of(broker.vendor.vendor_id, "connection.recovered")) == 1
    make_due(grant.grant_id)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert len(events_of(broker.vendor.vendor_id, "connection.recovered")) == 1


def test_invalid_client_is_one_vendor_event_and_leaves_the_grant(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    connected_grant(broker, "firm-2")
    make_due(grant.grant_id)
    app = broker.sandbox.state.apps[broker.xero_client_id]
    secret = app.client_secret
    app.client_secret = "rotated-in-the-developer-portal"
    try:
        for _ in range(3):
            assert rotate_grant(grant.grant_id) == RotationOutcome.APP_MISCONFIGURED
    finally:
        app.client_secret = secret
    assert len(events_of(broker.vendor.vendor_id, "app.misconfigured")) == 1
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.status == "active" and stored.lease_owner is None
    assert Vendor.get(broker.vendor.vendor_id).xero_app_misconfigured_at is not None
    assert all(c.status == "active" for c in Connection.query(broker.vendor.vendor_id))
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert Vendor.get(broker.vendor.vendor_id).xero_app_misconfigured_at is None


def test_expiring_soon_is_sent_once_per_connection(broker: BrokerUnderTest) -> None:
    grant = connected_grant(broker)
    connected_grant(broker, "firm-2")
    now = time.time()
    Grant(grant.grant_id).update(
        actions=[Grant.refresh_issued_at.set(now - 51 * 86400), Grant.next_rotation_at.set(now - 31 * 86400)]
    )
    first = plan_rotation(now)
    second = plan_rotation(now + 3600)
    assert (first.expiring_soon, second.expiring_soon) == (1, 0)
    assert first.oldest_age_days == pytest.approx(51, abs=0.01)
    events = events_of(broker.vendor.vendor_id, "connection.expiring_soon")
    assert sorted(e.data["tenant_ref"] for e in events) == ["firm-1", "firm-2"]


def test_cli_rotates_due_grants_with_progress_and_summary(
    broker: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    from xpmb.cli import main

    grant = connected_grant(broker)
    make_due(grant.grant_id)
    assert main(["connections", "rotate", "--due", "--dry-run"]) == 0
    assert "would rotate 1 grant(s)" in capsys.readouterr().out
    before = _refreshes(broker)
    assert main(["connections", "rotate"]) == 0
    captured = capsys.readouterr()
    assert "1/1" in captured.err
    assert "rotated" in captured.out and "selected 1 grant(s)" in captured.out
    assert _refreshes(broker) == before + 1
    assert main(["connections", "rotate", "--due", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selected"] == 0
    arm_fault(broker.sandbox, "token.refresh", "server_error")
    assert main(["connections", "rotate", "--all", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == {"upstream": 1}
