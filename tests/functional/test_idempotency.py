"""Idempotency-Key over a moto DynamoDB server on loopback HTTP (security-checklist G1-G5).

Time: Powertools compares expirations with the wall clock itself, so the tests move the clock
that *stamps* a record instead (``run_idempotent(now=...)``): a request made "23 h ago" is one
whose record was stamped 23 h in the past and is then repeated now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib import aws, idempotency
from chalicelib.config import get_settings
from chalicelib.errors import BrokerError, ConfigurationError
from chalicelib.idempotency import StoredResponse, payload_fingerprint, run_idempotent

CLIENTS = "/v1/tenants/{tenant_ref}/xpm/clients"
PUSHES = "/v1/tenants/{tenant_ref}/xpm/pushes"
BODY = b'{"name": "Acme Ltd", "email": "ops@acme.test", "relationships": []}'
CREATED = StoredResponse(
    status=201,
    body='{"uuid":"c-1","name":"Acme Ltd","note":"caf\\u00e9 \u00e9"}',
    headers={"Content-Type": "application/json", "Location": "/v1/tenants/t-1/xpm/clients/c-1"},
)
HOUR = 3600


class LambdaKilled(BaseException):
    """What a Lambda timeout looks like from inside: the process stops, no cleanup runs."""


class CountingHandler:
    def __init__(self, response: StoredResponse = CREATED) -> None:
        self.response = response
        self.calls = 0

    def __call__(self) -> StoredResponse:
        self.calls += 1
        return self.response


@pytest.fixture
def store(local_aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The broker's tables on a fresh moto server; yields the idempotency table's name."""
    from xpmb.bootstrap import bootstrap

    monkeypatch.delenv(idempotency.TTL_ENV, raising=False)
    monkeypatch.setattr(idempotency, "_layers", {})
    bootstrap(get_settings())
    yield get_settings().table_name("idempotency")


def call(
    handler: Any,
    *,
    key: str | None = "key-1",
    body: bytes = BODY,
    vendor_id: str = "v_a",
    tenant_ref: str = "t-1",
    route: str = CLIENTS,
    method: str = "POST",
    lambda_context: Any | None = None,
    now: Any | None = None,
) -> tuple[StoredResponse, bool]:
    return run_idempotent(
        vendor_id=vendor_id,
        tenant_ref=tenant_ref,
        method=method,
        route=route,
        key=key,
        body=body,
        handler=handler,
        lambda_context=lambda_context,
        now=now,
    )


def broker_error(handler: Any, **kwargs: Any) -> BrokerError:
    with pytest.raises(BrokerError) as caught:
        call(handler, **kwargs)
    return caught.value


def records(table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = aws.aws_client("dynamodb").scan(TableName=table, ConsistentRead=True)[
        "Items"
    ]
    return items


def backdated(seconds: float) -> Any:
    return lambda: time.time() - seconds


# G1: the header is required and well-formed.


def test_missing_key_is_400_and_the_handler_does_not_run(store: str) -> None:
    handler = CountingHandler()
    error = broker_error(handler, key=None)
    assert (error.status, error.code) == (400, "idempotency_key_required")
    assert error.to_problem()["type"].endswith("/idempotency_key_required")
    assert handler.calls == 0
    assert records(store) == []


@pytest.mark.parametrize("key", ["", '""', "has space", "a" * 256, "a#b", "clé", '"open', "a\nb"])
def test_malformed_key_is_400(store: str, key: str) -> None:
    handler = CountingHandler()
    error = broker_error(handler, key=key)
    assert (error.status, error.code) == (400, "invalid_idempotency_key")
    assert handler.calls == 0


def test_sf_string_key_is_the_same_key_as_the_bare_token(store: str) -> None:
    handler = CountingHandler()
    key = "4b0c7e52-0d2e-4f5e-9a43-2b9b5d7e9f01"
    assert call(handler, key=f'"{key}"') == (CREATED, False)
    assert call(handler, key=key) == (CREATED, True)
    assert call(handler, key="a" * 255)[1] is False
    assert handler.calls == 2


# G5: completed requests replay.


def test_first_call_runs_once_then_replays_identically(store: str) -> None:
    handler = CountingHandler()
    first, replayed_first = call(handler)
    second, replayed_second = call(handler)

    assert (first, replayed_first) == (CREATED, False)
    assert replayed_second is True
    assert (second.status, second.body, second.headers) == (CREATED.status, CREATED.body, CREATED.headers)
    assert handler.calls == 1
    [record] = records(store)
    assert record["status"] == {"S": "COMPLETED"}


def test_a_fresh_lambda_sees_the_records_of_another(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = CountingHandler()
    call(handler)
    # A new container: no persistence layer and no boto3 client survive from the first one.
    monkeypatch.setattr(idempotency, "_layers", {})
    monkeypatch.setattr(aws, "_clients", {})
    assert call(handler) == (CREATED, True)
    assert handler.calls == 1


# G3: the same key with another body is refused.


def test_same_key_with_a_changed_field_is_422_without_running(store: str) -> None:
    handler = CountingHandler()
    call(handler)
    error = broker_error(handler, body=BODY.replace(b"Acme Ltd", b"Acme Pty"))
    assert (error.status, error.code) == (422, "idempotency_key_reused")
    assert handler.calls == 1


def test_equal_json_with_other_key_order_and_whitespace_replays(store: str) -> None:
    handler = CountingHandler()
    call(handler)
    reordered = b'{\n  "relationships" : [ ],\n  "email":"ops@acme.test",  "name":"Acme Ltd"\n}'
    assert payload_fingerprint(reordered) == payload_fingerprint(BODY)
    assert call(handler, body=reordered) == (CREATED, True)
    assert handler.calls == 1


def test_non_json_bodies_are_fingerprinted_by_their_bytes(store: str) -> None:
    handler = CountingHandler()
    call(handler, body=b"name=Acme")
    assert call(handler, body=b"name=Acme") == (CREATED, True)
    assert broker_error(handler, body=b"name=Acme ").code == "idempotency_key_reused"
    assert payload_fingerprint(b"[1, 2]") != payload_fingerprint(b"[2, 1]")
    assert handler.calls == 1


# G2: the key's scope is vendor, tenant, method, route and key.


def test_two_vendors_using_one_key_both_run(store: str) -> None:
    vendor_a, vendor_b = CountingHandler(), CountingHandler(StoredResponse(201, '{"uuid":"c-2"}', {}))
    assert call(vendor_a, vendor_id="v_a", body=b'{"name":"A"}') == (CREATED, False)
    assert call(vendor_b, vendor_id="v_b", body=b'{"name":"B"}')[1] is False
    assert (vendor_a.calls, vendor_b.calls) == (1, 1)
    assert len(records(store)) == 2


@pytest.mark.parametrize(
    "other",
    [{"tenant_ref": "t-2"}, {"route": PUSHES}, {"method": "PUT"}, {"key": "key-2"}],
    ids=["tenant", "route", "method", "key"],
)
def test_scope_components_are_independent(store: str, other: dict[str, str]) -> None:
    handler = CountingHandler()
    call(handler)
    assert call(handler, body=b'{"name":"Other"}', **other)[1] is False
    assert handler.calls == 2


def test_separators_inside_components_cannot_collide(store: str) -> None:
    handler = CountingHandler()
    call(handler, vendor_id="v_a#t", tenant_ref="x")
    assert call(handler, vendor_id="v_a", tenant_ref="t#x")[1] is False
    assert handler.calls == 2


# G4: a concurrent duplicate is refused; a crashed one stops blocking at its deadline.


def test_concurrent_duplicate_gets_409_and_never_runs(store: str) -> None:
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def slow_create() -> StoredResponse:
        started.set()
        assert release.wait(10)
        return CREATED

    def first_request() -> None:
        try:
            outcome["first"] = call(slow_create)
        except BaseException as exc:  # surfaced by the assertion below
            outcome["first"] = exc

    worker = threading.Thread(target=first_request)
    worker.start()
    assert started.wait(10)
    duplicate = CountingHandler()
    try:
        error = broker_error(duplicate)
    finally:
        release.set()
        worker.join(10)

    assert (error.status, error.code, error.headers) == (409, "idempotency_in_progress", {"Retry-After": "1"})
    assert duplicate.calls == 0
    assert outcome["first"] == (CREATED, False)
    assert call(duplicate) == (CREATED, True)
    assert duplicate.calls == 0


def crash(**kwargs: Any) -> None:
    def killed() -> StoredResponse:
        raise LambdaKilled

    with pytest.raises(LambdaKilled):
        call(killed, **kwargs)


def fake_context(remaining_ms: int) -> Any:
    return SimpleNamespace(get_remaining_time_in_millis=lambda: remaining_ms)


def test_crashed_invocation_frees_the_key_at_the_lambda_deadline(store: str) -> None:
    handler = CountingHandler()
    crash(lambda_context=fake_context(5_000))
    [record] = records(store)
    assert record["status"] == {"S": "INPROGRESS"}
    assert abs(int(record["in_progress_expiration"]["N"]) / 1000 - (time.time() + 5)) < 2
    assert broker_error(handler).code == "idempotency_in_progress"

    # Six seconds after a crash with five left, the key is free (the 60 s default would not be).
    crash(key="key-2", lambda_context=fake_context(5_000), now=backdated(6))
    assert call(handler, key="key-2") == (CREATED, False)
    # The same on the real clock: a crash with 300 ms left, retried after 400 ms.
    crash(key="key-3", lambda_context=fake_context(300))
    time.sleep(0.4)
    assert call(handler, key="key-3") == (CREATED, False)
    assert handler.calls == 2


def test_crashed_invocation_without_a_context_blocks_for_the_default_only(store: str) -> None:
    handler = CountingHandler()
    crash()
    [record] = records(store)
    expiry_ms = int(record["in_progress_expiration"]["N"])
    assert abs(expiry_ms / 1000 - (time.time() + idempotency.DEFAULT_IN_PROGRESS_SECONDS)) < 5
    assert broker_error(handler).code == "idempotency_in_progress"

    crash(key="key-2", now=backdated(idempotency.DEFAULT_IN_PROGRESS_SECONDS + 1))
    assert call(handler, key="key-2") == (CREATED, False)
    assert handler.calls == 1


# G5: what is stored, and for how long.


def test_handler_exception_removes_the_record_so_a_retry_runs(store: str) -> None:
    def broken() -> StoredResponse:
        raise RuntimeError("XPM connection reset")

    with pytest.raises(RuntimeError):
        call(broken)
    assert records(store) == []
    handler = CountingHandler()
    assert call(handler) == (CREATED, False)
    assert handler.calls == 1


@pytest.mark.parametrize(
    ("status", "code"), [(429, "rate_limited"), (409, "connection_not_active"), (422, "invalid_request")]
)
def test_raised_broker_errors_are_not_stored(store: str, status: int, code: str) -> None:
    attempts = 0

    def refused() -> StoredResponse:
        nonlocal attempts
        attempts += 1
        raise BrokerError(code, status, "Refused", headers={"Retry-After": "3"})

    for _ in range(2):
        error = broker_error(refused)
        assert (error.status, error.code) == (status, code)
    assert attempts == 2
    assert records(store) == []


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 400])
def test_returned_responses_outside_the_policy_are_not_stored(store: str, status: int) -> None:
    handler = CountingHandler(StoredResponse(status, '{"code":"x"}', {}))
    assert call(handler) == (handler.response, False)
    assert call(handler) == (handler.response, False)
    assert handler.calls == 2
    assert records(store) == []


def test_xpm_validation_failure_is_stored_and_replayed(store: str) -> None:
    rejected = StoredResponse(
        422,
        '{"code":"xpm_validation_failed","detail":"Name is required"}',
        {"Content-Type": "application/problem+json"},
    )
    handler = CountingHandler(rejected)
    assert call(handler) == (rejected, False)
    assert call(handler) == (rejected, True)
    assert handler.calls == 1


def test_records_are_kept_for_24_hours(store: str) -> None:
    before = time.time()
    call(CountingHandler())
    [record] = records(store)
    expiration = int(record["expiration"]["N"])
    assert before + 86_400 - 1 <= expiration <= time.time() + 86_400


def test_replay_at_23_hours_and_a_fresh_run_at_25_hours(store: str) -> None:
    handler = CountingHandler()
    call(handler, key="k-23h", now=backdated(23 * HOUR))
    assert call(handler, key="k-23h") == (CREATED, True)
    assert handler.calls == 1

    call(handler, key="k-25h", now=backdated(25 * HOUR))
    # After 24 h the old record is ignored entirely: the key is free again, even for another
    # body (no 422), and this run becomes the stored one.
    new_body = b'{"name":"Acme Ltd (2)"}'
    assert call(handler, key="k-25h", body=new_body) == (CREATED, False)
    assert handler.calls == 3
    assert call(handler, key="k-25h", body=new_body) == (CREATED, True)
    assert broker_error(handler, key="k-25h").code == "idempotency_key_reused"
    assert handler.calls == 3


def test_retention_is_configurable(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(idempotency.TTL_ENV, str(48 * HOUR))
    handler = CountingHandler()
    call(handler, key="k-25h", now=backdated(25 * HOUR))
    assert call(handler, key="k-25h") == (CREATED, True)
    assert handler.calls == 1
    call(handler, key="k-49h", now=backdated(49 * HOUR))
    assert call(handler, key="k-49h") == (CREATED, False)
    assert handler.calls == 3


@pytest.mark.parametrize("value", ["3600", "a day"])
def test_retention_below_24_hours_is_refused(store: str, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(idempotency.TTL_ENV, value)
    handler = CountingHandler()
    with pytest.raises(ConfigurationError):
        call(handler)
    assert handler.calls == 0


def test_powertools_kill_switch_is_refused_on_deployed_stages(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.config import reset_settings

    monkeypatch.setenv("POWERTOOLS_IDEMPOTENCY_DISABLED", "true")
    monkeypatch.setenv("XPMB_STAGE", "dev")
    monkeypatch.setenv("XPMB_PUBLIC_URL", "https://broker.example")
    reset_settings()
    handler = CountingHandler()
    with pytest.raises(ConfigurationError):
        call(handler)
    assert handler.calls == 0


# Storage failures answer 503 and never leak Powertools' exceptions.


def test_unreachable_store_is_503_and_nothing_runs(local_aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "_layers", {})  # no tables: every DynamoDB call fails
    handler = CountingHandler()
    error = broker_error(handler)
    assert (error.status, error.code, error.headers) == (503, "storage_unavailable", {"Retry-After": "2"})
    assert handler.calls == 0


def test_store_lost_after_the_side_effect_answers_the_real_response(store: str) -> None:
    def create_then_lose_store() -> StoredResponse:
        aws.aws_client("dynamodb").delete_table(TableName=store)
        return CREATED

    assert call(create_then_lose_store) == (CREATED, False)


def test_store_lost_while_cleaning_up_a_failure_is_503(store: str) -> None:
    def fail_and_lose_store() -> StoredResponse:
        aws.aws_client("dynamodb").delete_table(TableName=store)
        raise RuntimeError("XPM connection reset")

    error = broker_error(fail_and_lose_store)
    assert (error.status, error.code) == (503, "storage_unavailable")
