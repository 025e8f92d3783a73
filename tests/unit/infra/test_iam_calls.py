"""The IAM policies allow what the functions really do.

The broker runs its journeys on local AWS and the sandbox: the API (connect, tenants, search,
get, create with an Idempotency-Key, push, disconnect), the push worker, the rotation planner
and the rotation worker (rotated, invalid_client), each invoked through ``app.handler_map``
as Lambda would (the pump builds the events). Every AWS call made inside a function is
checked against that function's generated policy: action, resource and KMS encryption context.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.config import get_settings
from chalicelib.oauth.models import Grant
from chalicelib.oauth.rescue import send_rescue
from chalicelib.tenants.models import Connection
from infra.iam import FUNCTIONS, allows, policy_document
from tests.functional.broker import BrokerUnderTest
from tests.functional.rotation_helpers import make_due
from tests.unit.infra.aws_calls import Recorder, acting_as, as_function, recording
from xpmb.pump import Pump


def _signed_ok(broker: BrokerUnderTest, method: str, path: str, **kwargs: Any) -> Any:
    response = broker.signed(method, path, **kwargs)
    assert response.status_code < 300, (path, response.status_code, response.body)
    return response.json_body if response.body else None


def _api_journeys(broker: BrokerUnderTest) -> None:
    broker.connect("firm-1")
    broker.connect("firm-2")
    _signed_ok(broker, "GET", "/v1/tenants")
    _signed_ok(broker, "GET", "/v1/tenants/firm-1/connection")
    found = _signed_ok(broker, "GET", "/v1/tenants/firm-1/xpm/clients?search=Joe%20Bloggs")["clients"]
    _signed_ok(broker, "GET", f"/v1/tenants/firm-1/xpm/clients/{found[0]['uuid']}")
    _signed_ok(
        broker,
        "POST",
        "/v1/tenants/firm-1/xpm/clients",
        json_body={"name": "Iam Checked Pty Ltd", "business_structure": "Company"},
        headers={"Idempotency-Key": "iam-create-1"},
    )
    push = {
        "entity": {"name": "Iam Ventures Pty Ltd", "business_structure": "Company"},
        "parties": [{"ref": "joe", "xpm_uuid": found[0]["uuid"]}],
        "relationships": [{"type": "Director", "related": "joe"}],
    }
    accepted = _signed_ok(
        broker,
        "POST",
        "/v1/tenants/firm-1/xpm/pushes",
        json_body=push,
        headers={"Idempotency-Key": "iam-push-1"},
    )
    _signed_ok(broker, "GET", f"/v1/tenants/firm-1/xpm/pushes/{accepted['push_id']}")
    _signed_ok(broker, "POST", "/v1/tenants/firm-1/xpm/sync")
    _signed_ok(broker, "GET", "/v1/tenants/firm-1/xpm/clients?limit=5")


def _webhook_journeys(broker: BrokerUnderTest, receiver_url: str) -> None:
    _signed_ok(broker, "PUT", "/v1/webhook-endpoint", json_body={"url": receiver_url})
    _signed_ok(broker, "GET", "/v1/webhook-endpoint")
    _signed_ok(broker, "POST", "/v1/webhook-endpoint/secret:rotate")
    events = _signed_ok(broker, "GET", "/v1/events?limit=5")["events"]
    _signed_ok(broker, "POST", f"/v1/events/{events[0]['id']}/redeliver")


class _Accepting(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def receiver_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


def _drain(pump: Pump) -> int:
    total = 0
    while handled := pump.deliver_sqs_once(wait_seconds=0):
        total += handled
    return total


@pytest.fixture
def recorded(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch, receiver_url: str) -> Recorder:
    from app import app

    for name, handler in list(app.handler_map.items()):
        monkeypatch.setitem(app.handler_map, name, as_function(name, handler))
    pump = Pump(app, get_settings(), schedule_cap_seconds=None, wait_seconds=0)
    with recording(get_settings()) as recorder:
        with acting_as("api_handler"):
            _api_journeys(broker)
            _webhook_journeys(broker, receiver_url)
        assert _drain(pump) >= 1  # the push and the webhooks
        assert "webhook_dispatcher" in pump.fire_due_schedules(force=True)
        _drain(pump)

        grant_id = Connection.get(broker.vendor.vendor_id, "firm-1").grant_id
        make_due(grant_id)
        assert "rotation_planner" in pump.fire_due_schedules(force=True)
        assert _drain(pump) >= 1
        assert Grant.get(grant_id, consistent_read=True).next_rotation_at > 0

        # invalid_client: the worker flags the vendor (a vendors write) and tells it once.
        make_due(grant_id)
        xero_app = broker.sandbox.state.apps[broker.xero_client_id]
        secret, xero_app.client_secret = xero_app.client_secret, "rotated-in-the-developer-portal"
        try:
            pump.fire_due_schedules(force=True)
            _drain(pump)
        finally:
            xero_app.client_secret = secret

        # A rescue message (what a refresh sends when DynamoDB takes neither the pair nor its
        # parking) reaches the token_rescue worker; this one is stale, so it is read and dropped.
        grant = Grant.get(grant_id, consistent_read=True)
        with acting_as("rotation_worker"):
            assert send_rescue(grant, "iam-journey", grant.token_ct, time.time())
        Grant(grant_id).update(actions=[Grant.version.add(1)])
        assert _drain(pump) == 1

        with acting_as("api_handler"):
            response = broker.signed("DELETE", "/v1/tenants/firm-2/connection")
            assert response.status_code == 204, response.body
    return recorder


def test_every_call_a_function_makes_is_allowed_by_its_policy(recorded: Recorder) -> None:
    denied: dict[str, list[str]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for access in recorded.accesses:
        document = policy_document(access.function, FUNCTIONS[access.function])
        resource = json.loads(access.resource)
        seen[access.function].add(access.action)
        if not allows(document, access.action, resource, dict(access.context)):
            denied[access.function].append(f"{access.action} on {access.resource} {access.context}")
    assert not denied, json.dumps(denied, indent=2)
    # The journeys reached every function (the check above is not vacuous).
    assert set(seen) == set(FUNCTIONS), seen.keys()
    assert {"kms:GenerateDataKey", "kms:Decrypt", "dynamodb:PutItem"} <= seen["api_handler"]
    assert {"sqs:SendMessage", "dynamodb:Query"} <= seen["rotation_planner"]
    assert "kms:Decrypt" in seen["rotation_worker"] and "kms:Decrypt" in seen["push_worker"]
    assert {"kms:Decrypt", "dynamodb:PutItem"} <= seen["webhook_worker"]
    assert "dynamodb:Query" in seen["webhook_dispatcher"]
    assert "dynamodb:Query" in seen["sync_planner"]
    assert "dynamodb:UpdateItem" in seen["sync_worker"]
