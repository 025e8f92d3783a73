"""Signed /v1 requests end to end: requests-http-signature on the vendor side; on ours the Chalice
test client (and a real ``chalice local`` server), problem+json rendering, and DynamoNonceStore
on the moto server (security-checklist B1-B8, D6)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from chalice import Chalice
from chalice.config import Config
from chalice.local import create_local_server
from chalice.test import Client
from requests_http_signature import algorithms

from chalicelib.config import build_settings, get_settings, reset_settings
from chalicelib.errors import BrokerError
from chalicelib.resources import table_def
from chalicelib.tenants.authentication import authenticate
from chalicelib.tenants.nonces import DynamoNonceStore
from chalicelib.tenants.signing import SignatureRejected, SigningKey
from chalicelib.web import http
from tests.conftest import PROJECT_DIR
from tests.unit.test_signing import VendorAuth

KEY_ID = "vk_func_current"
SECRET = b"func-canary-secret-Q2hhbGljZSBicm9rZXIgdGVzdA"
NEXT = SigningKey("vk_func_next", "vendor_func", b"func-next-secret-bmV4dCBrZXkgZm9yIHJvdGF0aW9u")
REVOKED_ID = "vk_func_revoked"
REVOKED_SECRET = b"func-revoked-secret-cmV2b2tlZCBrZXkgc2VjcmV0"


class Keys:
    """The vendor key store is not under test: two active keys and one revoked."""

    active = {KEY_ID: SigningKey(KEY_ID, "vendor_func", SECRET), NEXT.key_id: NEXT}
    revoked = {REVOKED_ID: SigningKey(REVOKED_ID, "vendor_func", REVOKED_SECRET)}

    def resolve(self, key_id: str) -> SigningKey | None:
        return None if key_id in self.revoked else self.active.get(key_id)


@dataclass
class Clock:
    now: float | None = None  # None: the wall clock, as in production


def build_app(clock: Clock) -> Chalice:
    app = Chalice(app_name="signed-requests-under-test")

    def authenticated() -> SigningKey:
        request = app.current_request
        assert request is not None
        settings = get_settings()
        raw_body = request.raw_body
        return authenticate(
            request.method,
            request.to_original_event(),
            request.headers,
            raw_body if isinstance(raw_body, bytes) else raw_body.encode(),
            keys=Keys(),
            nonces=DynamoNonceStore(settings),
            settings=settings,
            now=clock.now,
        )

    @app.route("/v1/echo", methods=["GET", "POST"])
    def echo() -> dict[str, Any]:
        key = authenticated()
        params = app.current_request.query_params if app.current_request else None
        query = {name: params.getlist(name) for name in params} if params else {}
        return {"vendor_id": key.vendor_id, "key_id": key.key_id, "query": query}

    @app.route("/v1/tenants/{tenant_ref}/connection", methods=["GET"])
    def connection(tenant_ref: str) -> dict[str, str]:
        return {"vendor_id": authenticated().vendor_id, "tenant_ref": tenant_ref}

    http.install(app)
    return app


@dataclass(frozen=True)
class Sent:
    """A vendor request as the test client receives it: a path below the public URL, headers, body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature: str


def signed(
    method: str = "GET",
    path: str = "/v1/echo",
    *,
    public_url: str | None = None,
    secret: bytes = SECRET,
    key_id: str = KEY_ID,
    created: float | None = None,
    params: Any = None,
    json_body: Any = None,
    data: Any = None,
    **options: Any,
) -> Sent:
    base = public_url or get_settings().public_url
    options.setdefault("signature_algorithm", algorithms.HMAC_SHA256)
    options.setdefault("use_nonce", True)
    auth = VendorAuth(
        created=int(time.time() if created is None else created), key=secret, key_id=key_id, **options
    )
    prepared = requests.Request(
        method, base + path, params=params, json=json_body, data=data, auth=auth
    ).prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else (prepared.body or b"")
    return Sent(
        method=method,
        path=str(prepared.url)[len(base) :],
        headers=dict(prepared.headers),
        body=body,
        signature=prepared.headers["Signature"],
    )


def send(client: Client, sent: Sent, **changes: Any) -> Any:
    request = {"method": sent.method, "path": sent.path, "headers": sent.headers, "body": sent.body} | changes
    return client.http.request(**request)


def problem_body(response: Any) -> dict[str, Any]:
    assert response.status_code == 401, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Signature")
    body = dict(response.json_body)
    assert body.pop("request_id") == response.headers["X-Request-Id"]
    return body


def nonce_items(endpoint: str) -> list[dict[str, Any]]:
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    items: list[dict[str, Any]] = dynamodb.scan(TableName=get_settings().table_name("request_nonces"))[
        "Items"
    ]
    return items


@pytest.fixture
def nonce_table(local_aws: str) -> str:
    definition = table_def("request_nonces")
    name = get_settings().table_name(definition.name)
    dynamodb = boto3.client("dynamodb", endpoint_url=local_aws)
    dynamodb.create_table(**definition.create_table_kwargs(name))
    dynamodb.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": str(definition.ttl_attribute)},
    )
    return name


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(nonce_table: str, clock: Clock) -> Iterator[Client]:
    with Client(build_app(clock), stage_name="local", project_dir=str(PROJECT_DIR)) as test_client:
        yield test_client


# --- accepted --------------------------------------------------------------------------------


def test_signed_get_and_post_pass_and_spend_their_nonces(client: Client, local_aws: str) -> None:
    get = signed("GET", params={"status": "active"})
    post = signed("POST", json_body={"return_url": "https://vendor.example/back", "mode": "connect"})
    assert send(client, get).json_body == {
        "vendor_id": "vendor_func",
        "key_id": KEY_ID,
        "query": {"status": ["active"]},
    }
    assert send(client, post).status_code == 200

    stored = {item["nonce_key"]["S"]: item for item in nonce_items(local_aws)}
    assert len(stored) == 2
    for sent in (get, post):
        signature_input = sent.headers["Signature-Input"]
        nonce = signature_input.split('nonce="')[1].split('"')[0]
        created = int(signature_input.split("created=")[1].split(";")[0])
        item = stored[f"{KEY_ID}#{nonce}"]
        assert int(item["expires_at"]["N"]) == created + 600
        assert int(item["expires_at_ttl"]["N"]) == created + 600


def test_a_replayed_request_is_refused(client: Client) -> None:
    sent = signed("POST", json_body={"a": 1})
    assert send(client, sent).status_code == 200
    assert send(client, sent).status_code == 401


def test_both_active_keys_work(client: Client) -> None:
    assert send(client, signed()).json_body["key_id"] == KEY_ID
    assert send(client, signed(key_id=NEXT.key_id, secret=NEXT.secret)).json_body["key_id"] == NEXT.key_id


def test_created_299_seconds_either_way_passes(client: Client, clock: Clock) -> None:
    clock.now = time.time()  # the library alone would refuse +299 s (it allows 5 s of skew)
    for skew in (-299, 299):
        assert send(client, signed(created=clock.now + skew)).status_code == 200


def test_queries_with_spaces_unicode_and_repeats_verify(client: Client) -> None:
    params = {"search": "Smith & Sons café", "tag": ["a b", "ü", "x+y"], "since": "2026-01-01T00:00:00Z"}
    response = send(client, signed(params=params))
    assert response.status_code == 200, response.body
    assert response.json_body["query"] == {
        "search": ["Smith & Sons café"],
        "tag": ["a b", "ü", "x+y"],
        "since": ["2026-01-01T00:00:00Z"],
    }


def test_a_public_url_with_a_base_path_is_what_the_vendor_signs(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XPMB_PUBLIC_URL", "https://api.example.com/prod")
    reset_settings()
    ok = signed("GET", "/v1/tenants/acme-01/connection", params={"x": "1"})
    assert ok.path == "/v1/tenants/acme-01/connection?x=1"
    assert send(client, ok).json_body == {"vendor_id": "vendor_func", "tenant_ref": "acme-01"}
    without_base = signed("GET", "/v1/tenants/acme-01/connection", public_url="https://api.example.com")
    assert send(client, without_base).status_code == 401


def test_a_body_over_256_kib_is_413_before_any_signature_work(client: Client, local_aws: str) -> None:
    at_cap = signed("POST", data=b"x" * (256 * 1024))
    assert send(client, at_cap).status_code == 200
    over = signed("POST", data=b"x" * (256 * 1024 + 1))
    response = send(client, over)
    assert response.status_code == 413
    assert response.json_body["code"] == "payload_too_large"
    assert len(nonce_items(local_aws)) == 1


# --- refused: one body for all, and nothing written -------------------------------------------


class _Mislabelled(algorithms.HMAC_SHA256):
    algorithm_id = "ed25519"


def _without(sent: Sent, name: str) -> dict[str, str]:
    return {k: v for k, v in sent.headers.items() if k.lower() != name}


def _flip_one_byte(body: bytes) -> bytes:
    return body[:5] + bytes([body[5] ^ 0x01]) + body[6:]


def _reserialised(body: bytes) -> bytes:
    """The same JSON, as a proxy or framework might re-emit it (B3: the digest must catch it)."""
    return json.dumps(json.loads(body), separators=(",", ":")).encode()


def test_every_failure_is_the_same_problem_and_writes_no_nonce(
    client: Client, clock: Clock, local_aws: str
) -> None:
    """B8 snapshot across B1-B7; B6: none of these requests reaches the nonce table."""
    clock.now = time.time()
    get = signed(created=clock.now)
    post = signed("POST", json_body={"a": 1, "b": [1, 2]}, params={"q": "one"}, created=clock.now)
    cases: dict[str, Any] = {
        "unsigned": lambda: send(client, get, headers={"Date": get.headers["Date"]}),
        "no Signature": lambda: send(client, get, headers=_without(get, "signature")),
        "no Signature-Input": lambda: send(client, get, headers=_without(get, "signature-input")),
        "unknown key": lambda: send(client, signed(key_id="vk_nobody", created=clock.now)),
        "revoked key": lambda: send(
            client, signed(key_id=REVOKED_ID, secret=REVOKED_SECRET, created=clock.now)
        ),
        "wrong secret": lambda: send(
            client, signed(secret=b"forged-func-secret-0000000000", created=clock.now)
        ),
        "method": lambda: send(client, get, method="POST"),
        "path": lambda: send(client, get, path="/v1/tenants/acme/connection"),
        "query": lambda: send(client, post, path="/v1/echo?q=two"),
        "host": lambda: send(client, signed(public_url="http://evil.example:8000", created=clock.now)),
        "body byte": lambda: send(client, post, body=_flip_one_byte(post.body)),
        "re-serialised JSON": lambda: send(client, post, body=_reserialised(post.body)),
        "no Content-Digest": lambda: send(client, post, headers=_without(post, "content-digest")),
        "created -301 s": lambda: send(client, signed(created=clock.now - 301)),
        "created +301 s": lambda: send(client, signed(created=clock.now + 301)),
        "no nonce": lambda: send(client, signed(use_nonce=False, created=clock.now)),
        "alg": lambda: send(client, signed(signature_algorithm=_Mislabelled, created=clock.now)),
        "no @authority": lambda: send(
            client, signed(covered_component_ids=("@method", "@target-uri"), created=clock.now)
        ),
        "no @target-uri": lambda: send(
            client, signed(covered_component_ids=("@method", "@authority"), created=clock.now)
        ),
    }
    assert _reserialised(post.body) != post.body
    bodies = {name: problem_body(call()) for name, call in cases.items()}
    expected = SignatureRejected("reference").to_problem()
    assert all(body == expected for body in bodies.values()), bodies
    assert nonce_items(local_aws) == []
    # The same requests, untouched, are fine: the failures above came from the tampering.
    assert send(client, get).status_code == 200
    assert send(client, post).status_code == 200


def test_logs_name_the_reason_but_never_a_secret_signature_or_body(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xpmb.auth")
    forged_secret = b"forged-canary-secret-Zm9yZ2Vk0000"
    good = signed("POST", json_body={"note": "body-canary-8d2f"})
    forged = signed("POST", json_body={"note": "body-canary-8d2f"}, secret=forged_secret)
    tampered_body = json.dumps({"note": "body-canary-tampered"}).encode()
    responses = [
        send(client, good),
        send(client, good),  # replay
        send(client, forged),
        send(client, signed("POST", json_body={"note": "x"}), body=tampered_body),
    ]
    assert [r.status_code for r in responses] == [200, 401, 401, 401]
    messages = [r.getMessage() for r in caplog.records if r.name == "xpmb.auth"]
    assert len(messages) == 3
    assert "nonce already used" in messages[0]
    assert "candidate target URIs" in messages[1]
    assert "content digest" in messages[2]
    # Each line is the audit record of a rejection: what, the key it claimed, where from.
    records = [r for r in caplog.records if r.name == "xpmb.auth"]
    assert [getattr(r, "source_ip", None) for r in records] == ["127.0.0.1"] * 3
    assert [getattr(r, "key_id", None) for r in records] == [KEY_ID] * 3
    leaked = caplog.text + "".join(r.body.decode() for r in responses)
    for canary in (SECRET.decode(), forged_secret.decode(), good.signature, forged.signature, "body-canary"):
        assert canary not in leaked
    for sent in (good, forged):
        assert sent.signature.split(":")[1] not in leaked


# --- DynamoNonceStore on moto ------------------------------------------------------------------


def test_the_nonce_store_conditional_put(nonce_table: str) -> None:
    store = DynamoNonceStore(get_settings())
    expires_at = time.time() + 600
    assert store.claim(KEY_ID, "n" * 22, expires_at) is True
    assert store.claim(KEY_ID, "n" * 22, expires_at) is False
    assert store.claim(NEXT.key_id, "n" * 22, expires_at) is True  # nonces are per key


def test_an_expired_stored_nonce_can_be_reclaimed_without_waiting_for_ttl(nonce_table: str) -> None:
    """D6: moto (like DynamoDB, for up to days) still holds the expired row; the condition decides."""
    now = [1_790_000_000.0]
    store = DynamoNonceStore(get_settings(), clock=lambda: now[0])
    assert store.claim(KEY_ID, "r" * 22, now[0] + 600) is True
    now[0] += 599
    assert store.claim(KEY_ID, "r" * 22, now[0] + 600) is False
    now[0] += 2
    assert store.claim(KEY_ID, "r" * 22, now[0] + 600) is True
    assert store.claim(KEY_ID, "r" * 22, now[0] + 600) is False


def test_storage_failures_are_503_without_aws_details(local_aws: str) -> None:
    settings = build_settings(XPMB_TABLE_PREFIX="xpmb-missing-")
    with pytest.raises(BrokerError) as caught:
        DynamoNonceStore(settings).claim(KEY_ID, "s" * 22, time.time() + 600)
    error = caught.value
    assert (error.status, error.code) == (503, "storage_unavailable")
    rendered = error.render()[2]
    assert "xpmb-missing-" not in rendered
    assert "ResourceNotFound" not in rendered
    assert caught.value.__cause__ is None


# --- chalice local: a real HTTP server and its own event shape -------------------------------


@pytest.fixture
def local_server(nonce_table: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = create_local_server(build_app(Clock()), Config.create(), "127.0.0.1", 0)
    port = server.server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("XPMB_PUBLIC_URL", base)
    reset_settings()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    server.server.server_close()
    thread.join(timeout=10)


def test_chalice_local_serves_signed_requests(local_server: str) -> None:
    session = requests.Session()

    def request(method: str, path: str, **kwargs: Any) -> requests.Response:
        auth = VendorAuth(
            created=int(time.time()),
            key=SECRET,
            key_id=KEY_ID,
            signature_algorithm=algorithms.HMAC_SHA256,
            use_nonce=True,
        )
        prepared = requests.Request(method, local_server + path, auth=auth, **kwargs).prepare()
        return session.send(prepared, timeout=10)

    query = request("GET", "/v1/echo", params={"search": "Smith & Sons café", "tag": ["a b", "ü"]})
    assert query.status_code == 200, query.text
    assert query.json()["query"] == {"search": ["Smith & Sons café"], "tag": ["a b", "ü"]}
    assert request("GET", "/v1/echo?q=a b:c").status_code == 200  # a hand-written, requoted URL
    assert request("GET", "/v1/tenants/acme/connection").json() == {
        "vendor_id": "vendor_func",
        "tenant_ref": "acme",
    }
    assert request("POST", "/v1/echo", json={"a": 1}).status_code == 200
    unsigned = session.get(local_server + "/v1/echo", timeout=10)
    assert unsigned.status_code == 401
    assert unsigned.headers["Content-Type"] == "application/problem+json"
    assert unsigned.json()["code"] == "invalid_signature"
