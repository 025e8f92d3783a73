"""No token lost when AWS misbehaves after Xero answered (checklist D3; issue 5 "no token lost").

AWS faults come from a loopback proxy in front of moto (tests/functional/aws_faults.py): the
broker's SDK clients and PynamoDB talk to it over real HTTP, so botocore's own retries run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from chalicelib.config import reset_settings
from chalicelib.crypto import reset_cipher
from chalicelib.oauth import xero_identity
from chalicelib.oauth.errors import UpstreamError
from chalicelib.oauth.models import Grant
from chalicelib.oauth.refresh import persistence_budget
from chalicelib.oauth.rescue import handle_rescue_messages
from chalicelib.oauth.rotation import RotationOutcome, rotate_grant
from chalicelib.storage import StorageUnavailable
from chalicelib.tenants.models import Connection
from tests.functional.aws_faults import AwsFaults, aws_fault_proxy
from tests.functional.broker import BrokerUnderTest
from tests.functional.rotation_helpers import (
    connected_grant,
    events_of,
    lambda_event,
    make_due,
    receive_all,
    sandbox_accepts,
    stored_refresh_token,
    xero_current_refresh_token,
)
from tests.functional.sandbox.oauth_helpers import arm_fault, calls
from xpmb.pump import FakeLambdaContext

UPDATE = "DynamoDB_20120810.UpdateItem"
DATA_KEY = "TrentService.GenerateDataKey"
SEND = "AmazonSQS.SendMessage"
TOKEN_WRITE = '"pending_token_ct"'  # in the token write (REMOVE) and the parking (SET) only
RESCUE = "token_rescue"


@pytest.fixture
def aws(broker: BrokerUnderTest, local_aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsFaults]:
    """Every AWS call of the broker goes through the fault proxy from here on."""
    with aws_fault_proxy(local_aws) as faults:
        monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)
        reset_settings()
        reset_cipher()  # a fresh KMS client (and no cached data keys): KMS calls go through the proxy
        yield faults
        monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws)
        reset_settings()
        reset_cipher()


def _due_grant(broker: BrokerUnderTest) -> Grant:
    grant = connected_grant(broker)
    make_due(grant.grant_id)
    return grant


def test_throttled_kms_and_dynamodb_are_retried_by_the_sdk(broker: BrokerUnderTest, aws: AwsFaults) -> None:
    from chalicelib.aws import aws_client

    # botocore's "standard" mode: exponential backoff with full jitter on throttling errors.
    assert aws_client("kms").meta.config.retries["mode"] == "standard"
    assert Grant._get_connection().connection.client.meta.config.retries["mode"] == "standard"
    grant = _due_grant(broker)
    aws.arm(DATA_KEY, count=2)  # ThrottlingException
    aws.arm(UPDATE, count=2, body_contains='"token_ct"')  # ProvisionedThroughputExceededException
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert aws.failed == {DATA_KEY: 2, UPDATE: 2}
    assert aws.seen[DATA_KEY] >= 3
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1 and stored.pending_token_ct is None
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))


def test_failures_the_sdk_gives_up_on_are_retried_with_jitter_until_stored(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    grant = _due_grant(broker)
    # Not retried by botocore (not throttling, not 5xx): the broker's own jittered loop retries.
    aws.arm(DATA_KEY, "KMSInternalException", count=2)
    aws.arm(UPDATE, "AccessDeniedException", count=2, body_contains=TOKEN_WRITE)
    started = time.monotonic()
    with persistence_budget(10):
        assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert time.monotonic() - started < 8
    assert aws.failed == {DATA_KEY: 2, UPDATE: 2}
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version + 1 and stored.pending_token_ct is None
    assert not receive_all(RESCUE)


def test_a_budget_that_ends_after_one_failed_write_still_parks_the_pair(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    """How long failing writes take (a loaded machine) must not decide whether the pair is kept."""
    grant = _due_grant(broker)
    old = stored_refresh_token(grant.grant_id)
    aws.arm(UPDATE, "AccessDeniedException", count=1, body_contains=TOKEN_WRITE)  # the write, not the parking
    with persistence_budget(0.0), pytest.raises(StorageUnavailable):
        rotate_grant(grant.grant_id)
    assert aws.failed[UPDATE] == 1
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version and stored.pending_token_ct  # parked, sealed
    assert stored_refresh_token(grant.grant_id) == old
    assert not receive_all(RESCUE)
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert rotate_grant(grant.grant_id) == RotationOutcome.APPLIED_PARKED
    assert stored_refresh_token(grant.grant_id) == xero_current_refresh_token(broker.sandbox, old)
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))


def test_when_write_and_parking_fail_the_pair_goes_to_the_rescue_queue_sealed(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    grant = _due_grant(broker)
    old = stored_refresh_token(grant.grant_id)
    aws.arm(UPDATE, "AccessDeniedException", count=1000, body_contains=TOKEN_WRITE)
    with persistence_budget(1.0), pytest.raises(StorageUnavailable):
        rotate_grant(grant.grant_id)
    new = xero_current_refresh_token(broker.sandbox, old)
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored_refresh_token(grant.grant_id) == old  # (a) the old token is still stored
    assert stored.version == grant.version and stored.pending_token_ct is None  # parking failed too
    (message,) = receive_all(RESCUE)  # (b) one rescue message, and no token in clear in it
    assert new not in message["Body"] and old not in message["Body"]
    assert json.loads(message["Body"])["from_version"] == grant.version
    aws.clear()
    result = handle_rescue_messages(lambda_event(RESCUE, [message]), FakeLambdaContext("rescue"))
    assert result == {"batchItemFailures": []}
    stored = Grant.get(grant.grant_id, consistent_read=True)  # (c) the reconciler stored it
    assert stored.version == grant.version + 1 and stored_refresh_token(grant.grant_id) == new
    assert stored.next_rotation_at is not None and stored.next_rotation_at > time.time()
    assert sandbox_accepts(broker.sandbox, new)
    # A redelivered copy is stale now: dropped, the stored pair untouched.
    assert handle_rescue_messages(lambda_event(RESCUE, [message]), FakeLambdaContext("rescue")) == {
        "batchItemFailures": []
    }
    assert Grant.get(grant.grant_id, consistent_read=True).version == grant.version + 1


def test_a_rescue_message_overtaken_by_a_newer_refresh_is_dropped(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    grant = _due_grant(broker)
    aws.arm(UPDATE, "AccessDeniedException", count=1000, body_contains=TOKEN_WRITE)
    with persistence_budget(0.0), pytest.raises(StorageUnavailable):  # one write, then secured anyway
        rotate_grant(grant.grant_id)
    (message,) = receive_all(RESCUE)
    aws.clear()
    # SQS redelivers the rotation first (after the lease ran out): the old token, inside the grace.
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    newest = stored_refresh_token(grant.grant_id)
    assert handle_rescue_messages(lambda_event(RESCUE, [message]), FakeLambdaContext("rescue")) == {
        "batchItemFailures": []
    }
    assert stored_refresh_token(grant.grant_id) == newest
    assert sandbox_accepts(broker.sandbox, newest)


def test_a_rescue_waits_while_another_worker_holds_the_lease(broker: BrokerUnderTest, aws: AwsFaults) -> None:
    grant = _due_grant(broker)
    aws.arm(UPDATE, "AccessDeniedException", count=1000, body_contains=TOKEN_WRITE)
    with persistence_budget(0.0), pytest.raises(StorageUnavailable):  # one write, then secured anyway
        rotate_grant(grant.grant_id)
    (message,) = receive_all(RESCUE)
    aws.clear()
    Grant(grant.grant_id).update(
        actions=[Grant.lease_owner.set("someone-else"), Grant.lease_until.set(time.time() + 60)]
    )
    result = handle_rescue_messages(lambda_event(RESCUE, [message]), FakeLambdaContext("rescue"))
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert handle_rescue_messages(lambda_event(RESCUE, [message]), FakeLambdaContext("rescue")) == {
        "batchItemFailures": []
    }
    assert Grant.get(grant.grant_id, consistent_read=True).version == grant.version + 1


def test_when_everything_fails_the_old_token_recovers_inside_the_grace(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    grant = _due_grant(broker)
    old = stored_refresh_token(grant.grant_id)
    aws.arm(UPDATE, "AccessDeniedException", count=1000, body_contains=TOKEN_WRITE)
    aws.arm(SEND, "AccessDeniedException", count=1000)
    started = time.monotonic()
    with persistence_budget(1.5), pytest.raises(StorageUnavailable):
        rotate_grant(grant.grant_id)
    assert 1.0 < time.monotonic() - started < 6  # kept trying for its budget, then gave up
    assert aws.failed[UPDATE] >= 4 and aws.failed[SEND] >= 1  # 3 writes, parking, rescue: all refused
    assert stored_refresh_token(grant.grant_id) == old and sandbox_accepts(broker.sandbox, old)
    aws.clear()
    assert not receive_all(RESCUE)
    # The SQS retry comes after the lease expired (visibility 180 s > lease 60 s), inside the grace.
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))


def test_past_the_grace_a_lost_pair_flags_the_connection_never_a_silent_loss(
    broker: BrokerUnderTest, aws: AwsFaults
) -> None:
    grant = _due_grant(broker)
    aws.arm(UPDATE, "AccessDeniedException", count=1000, body_contains=TOKEN_WRITE)
    aws.arm(SEND, "AccessDeniedException", count=1000)
    with persistence_budget(0.3), pytest.raises(StorageUnavailable):
        rotate_grant(grant.grant_id)
    aws.clear()
    requests.post(f"{broker.sandbox.url}/_sandbox/clock/advance", json={"seconds": 31 * 60}, timeout=5)
    Grant(grant.grant_id).update(actions=[Grant.lease_until.set(time.time() - 1)])
    assert rotate_grant(grant.grant_id) == RotationOutcome.NEEDS_REAUTHORISATION
    connection = Connection.get(broker.vendor.vendor_id, "firm-1")
    assert connection.status == "needs_reauthorisation"
    assert len(events_of(broker.vendor.vendor_id, "connection.needs_reauthorisation")) == 1


def test_a_timeout_at_xero_is_retried_and_recovered_with_the_previous_token(
    broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = _due_grant(broker)
    old = stored_refresh_token(grant.grant_id)
    monkeypatch.setattr(xero_identity, "TIMEOUT", (3.05, 0.3))  # the broker's read timeout, shortened
    arm_fault(broker.sandbox, "token.refresh", "timeout", seconds=0.8)  # then the sandbox rotates anyway
    with pytest.raises(UpstreamError):
        rotate_grant(grant.grant_id)
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.version == grant.version and stored.consecutive_failures == 1 and stored.health is None
    assert stored.in_doubt_since is not None and stored.lease_owner is None
    deadline = time.monotonic() + 5
    while calls(broker.sandbox).get("identity.token.refresh", 0) < 1 or not any(
        g.previous_refresh_token == old for g in broker.sandbox.state.grants.values()
    ):
        assert time.monotonic() < deadline, "the sandbox never finished the timed-out refresh"
        time.sleep(0.05)
    assert stored_refresh_token(grant.grant_id) == old and sandbox_accepts(broker.sandbox, old)
    assert rotate_grant(grant.grant_id) == RotationOutcome.ROTATED
    stored = Grant.get(grant.grant_id, consistent_read=True)
    assert stored.consecutive_failures is None and stored.in_doubt_since is None
    assert sandbox_accepts(broker.sandbox, stored_refresh_token(grant.grant_id))
