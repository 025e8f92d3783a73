"""RFC 9421 request verification, pure: vendor-side signing with requests-http-signature, fakes
for the key and nonce ports, a frozen clock (security-checklist B1-B8)."""

from __future__ import annotations

import ast
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cryptography.exceptions
import http_sf
import pytest
import requests
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from requests_http_signature import HTTPSignatureAuth

from chalicelib.config import build_settings
from chalicelib.errors import BrokerError
from chalicelib.tenants.authentication import authenticate
from chalicelib.tenants.request_target import (
    route_path,
    target_uri_candidates,
    target_uri_candidates_for_event,
)
from chalicelib.tenants.signing import (
    SignatureRejected,
    SignedRequest,
    SigningKey,
    build_verifier,
    verify_request,
)
from tests.conftest import PROJECT_DIR

PUBLIC_URL = "http://127.0.0.1:8000"
ECHO_URL = f"{PUBLIC_URL}/v1/echo"
NOW = 1_790_000_000.0
KEY_ID = "vk_unit_current"
SECRET = b"unit-canary-secret-0123456789abcdefghijklmn"
KEY = SigningKey(key_id=KEY_ID, vendor_id="vendor_unit", secret=SECRET)
NEXT_KEY = SigningKey(
    key_id="vk_unit_next", vendor_id="vendor_unit", secret=b"unit-next-secret-ZYXWVUTSRQPONMLKJIHGFEDCBA"
)


# --- fakes for the two ports ---------------------------------------------------------------


@dataclass
class FakeKeys:
    keys: dict[str, SigningKey] = field(default_factory=lambda: {KEY.key_id: KEY, NEXT_KEY.key_id: NEXT_KEY})
    revoked: set[str] = field(default_factory=set)

    def resolve(self, key_id: str) -> SigningKey | None:
        return None if key_id in self.revoked else self.keys.get(key_id)


@dataclass
class RecordingNonces:
    claims: list[tuple[str, str, float]] = field(default_factory=list)

    def claim(self, key_id: str, nonce: str, expires_at: float) -> bool:
        seen = any(c[:2] == (key_id, nonce) for c in self.claims)
        self.claims.append((key_id, nonce, expires_at))
        return not seen


# --- the vendor side -------------------------------------------------------------------------


class VendorAuth(HTTPSignatureAuth):
    """What a vendor runs, with the clock and (optionally) the nonce pinned for the test."""

    def __init__(self, *, created: int, nonce: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._created = created
        self._nonce = nonce

    def get_created(self, request: requests.PreparedRequest) -> datetime:
        self.add_date(request, timestamp=self._created)
        return datetime.fromtimestamp(self._created, tz=UTC)

    def get_nonce(self, request: requests.PreparedRequest) -> str | None:
        return self._nonce if self._nonce is not None and self.use_nonce else super().get_nonce(request)


def sign(
    method: str = "GET",
    url: str = ECHO_URL,
    *,
    secret: bytes = SECRET,
    key_id: str = KEY_ID,
    created: int = int(NOW),
    params: Any = None,
    data: Any = None,
    json_body: Any = None,
    **options: Any,
) -> requests.PreparedRequest:
    options.setdefault("signature_algorithm", algorithms.HMAC_SHA256)
    options.setdefault("use_nonce", True)
    auth = VendorAuth(created=created, key=secret, key_id=key_id, **options)
    return requests.Request(method, url, params=params, data=data, json=json_body, auth=auth).prepare()


def candidates_for(url: str, public_url: str = PUBLIC_URL) -> list[str]:
    """What the broker rebuilds: the path and the decoded multi-valued query, as Chalice gives them."""
    parts = urlsplit(url)
    return target_uri_candidates(
        public_url, parts.path, parse_qs(parts.query, keep_blank_values=True) or None
    )


def body_of(prepared: requests.PreparedRequest) -> bytes:
    body = prepared.body
    return body.encode() if isinstance(body, str) else (body or b"")


def verify(
    prepared: requests.PreparedRequest,
    *,
    keys: FakeKeys | None = None,
    nonces: RecordingNonces | None = None,
    **overrides: Any,
) -> SigningKey:
    arguments: dict[str, Any] = {
        "method": prepared.method,
        "target_uris": candidates_for(str(prepared.url)),
        "headers": dict(prepared.headers),
        "body": body_of(prepared),
        "keys": keys or FakeKeys(),
        "nonces": RecordingNonces() if nonces is None else nonces,
        "now": NOW,
    }
    arguments.update(overrides)
    return verify_request(**arguments)


def rejection(call: Callable[[], object]) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        call()
    return caught.value


@dataclass
class MutableRequest:
    method: str
    url: str
    headers: dict[str, str]


def sign_with_library(
    covered: tuple[str, ...], *, headers: dict[str, str] | None = None, nonce: str = "n" * 22
) -> dict[str, str]:
    """Sign with the library directly, for shapes requests-http-signature will not produce."""
    message = MutableRequest("POST", ECHO_URL, dict(headers or {}))
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={KEY_ID: SECRET}),
    )
    signer.sign(
        message,
        key_id=KEY_ID,
        created=datetime.fromtimestamp(NOW, tz=UTC),
        nonce=nonce,
        covered_component_ids=covered,
        use_existing_digest="Content-Digest" in message.headers,
    )
    return message.headers


# --- RFC 9421 Appendix B known answers ---------------------------------------------------------

# B.1.5 "test-shared-secret" and B.2.5 "Signing a Request Using hmac-sha256".
RFC_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
RFC_SIGNATURE = "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="
RFC_PARAMS = '("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
RFC_BASE = "\n".join(
    [
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        '"@authority": example.com',
        '"content-type": application/json',
        f'"@signature-params": {RFC_PARAMS}',
    ]
)
RFC_HEADERS = {
    "host": "example.com",
    "date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "content-type": "application/json",
    "content-digest": (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    ),
    "content-length": "18",
    "signature-input": f"sig-b25={RFC_PARAMS}",
    "signature": f"sig-b25=:{RFC_SIGNATURE}:",
}
RFC_BODY = b'{"hello": "world"}'
RFC_URL = "https://example.com/foo?param=Value&Pet=dog"
RFC_KEY = SigningKey(key_id="test-shared-secret", vendor_id="rfc", secret=RFC_SECRET)


def test_rfc9421_b25_signature_base_gives_the_published_mac() -> None:
    algorithm = algorithms.HMAC_SHA256(shared_secret=RFC_SECRET)
    assert base64.b64encode(algorithm.sign(RFC_BASE.encode())).decode() == RFC_SIGNATURE
    algorithm.verify(base64.b64decode(RFC_SIGNATURE), RFC_BASE.encode())
    with pytest.raises(cryptography.exceptions.InvalidSignature):
        algorithm.verify(base64.b64decode(RFC_SIGNATURE), RFC_BASE.replace("example.com", "x.org").encode())


def test_rfc9421_b25_verifies_through_our_verifier_and_rebuilds_the_published_base() -> None:
    verifier = build_verifier(RFC_KEY, now=1618884473)
    [result] = verifier.verify(SignedRequest("POST", RFC_URL, RFC_HEADERS), max_age=None)
    rebuilt = "\n".join(f"{name}: {value}" for name, value in result.covered_components.items())
    assert rebuilt == RFC_BASE
    assert result.parameters == {"created": 1618884473, "keyid": "test-shared-secret"}
    # B.2's Content-Digest (sha-512, RFC 9530) matches the B.2 body bytes.
    ContentDigest.verify(RFC_HEADERS["content-digest"], RFC_BODY)


def test_rfc9421_b25_fails_with_another_secret_or_outside_our_window() -> None:
    message = SignedRequest("POST", RFC_URL, RFC_HEADERS)
    wrong = SigningKey(key_id="test-shared-secret", vendor_id="rfc", secret=RFC_SECRET[:-1] + b"\x00")
    with pytest.raises(InvalidSignature):
        build_verifier(wrong, now=1618884473).verify(message, max_age=None)
    with pytest.raises(InvalidSignature):
        build_verifier(RFC_KEY, now=1618884473 + 301).verify(message, max_age=None)
    build_verifier(RFC_KEY, now=1618884473 + 300).verify(message, max_age=None)


def test_rfc9421_b25_request_is_refused_by_our_stricter_policy() -> None:
    """The RFC example has no nonce and does not cover @method/@target-uri: contract §4 needs both."""
    keys = FakeKeys(keys={RFC_KEY.key_id: RFC_KEY})
    refused = rejection(
        lambda: verify_request(
            method="POST",
            target_uris=[RFC_URL],
            headers=RFC_HEADERS,
            body=RFC_BODY,
            keys=keys,
            nonces=RecordingNonces(),
            now=1618884473,
        )
    )
    assert "nonce" in refused.reason


# --- requests that pass ------------------------------------------------------------------------


def test_a_signed_get_passes_and_spends_its_nonce_for_two_windows() -> None:
    nonces = RecordingNonces()
    prepared = sign("GET")
    assert verify(prepared, nonces=nonces) == KEY
    [(key_id, nonce, expires_at)] = nonces.claims
    assert key_id == KEY_ID
    assert f'nonce="{nonce}"' in prepared.headers["Signature-Input"]
    assert expires_at == int(NOW) + 600


def test_a_signed_post_with_a_json_body_passes() -> None:
    prepared = sign("POST", json_body={"return_url": "https://vendor.example/back", "mode": "connect"})
    assert verify(prepared) == KEY


def test_both_active_keys_of_a_vendor_work() -> None:
    """B7: during a rotation the old and the new key are both accepted."""
    assert verify(sign()) == KEY
    assert verify(sign(key_id=NEXT_KEY.key_id, secret=NEXT_KEY.secret)) == NEXT_KEY


@pytest.mark.parametrize("skew", [-300, -299, 299, 300])
def test_created_within_300_seconds_either_way_passes(skew: int) -> None:
    assert verify(sign(created=int(NOW) + skew)) == KEY


def test_alg_may_be_omitted_and_an_unexpired_expires_is_fine() -> None:
    from datetime import timedelta

    assert verify(sign(include_alg=False)) == KEY
    assert verify(sign(expires_in=timedelta(seconds=30))) == KEY


def test_a_sha512_content_digest_is_accepted() -> None:
    class Sha512(ContentDigest):
        algorithm = "sha-512"

    class Sha512Signer(HTTPMessageSigner):
        content_digest_class = Sha512

    class Sha512Auth(VendorAuth):
        signer_class = Sha512Signer

    auth = Sha512Auth(
        created=int(NOW),
        key=SECRET,
        key_id=KEY_ID,
        signature_algorithm=algorithms.HMAC_SHA256,
        use_nonce=True,
    )
    prepared = requests.Request("POST", ECHO_URL, data=b"payload", auth=auth).prepare()
    assert prepared.headers["Content-Digest"].startswith("sha-512=")
    assert verify(prepared) == KEY


def test_queries_with_spaces_unicode_and_repeated_names_verify() -> None:
    params = {"search": "Smith & Sons café", "tag": ["a b", "ü", "x+y"], "since": "2026-01-01T00:00:00Z"}
    assert verify(sign(params=params)) == KEY
    # A hand-written URL: requests requotes it ("%20", ":" kept), the broker sees decoded values.
    assert verify(sign(url=f"{ECHO_URL}?q=a b:c&page=2")) == KEY


def test_a_body_exactly_at_the_cap_passes_and_one_byte_more_is_413() -> None:
    at_cap = sign("POST", data=b"x" * 1024)
    assert verify(at_cap, max_body=1024) == KEY
    over = sign("POST", data=b"x" * 1025)
    nonces = RecordingNonces()
    with pytest.raises(BrokerError) as caught:
        verify(over, max_body=1024, nonces=nonces)
    assert not isinstance(caught.value, SignatureRejected)
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert nonces.claims == []


# --- requests that fail: every B requirement, one identical 401 --------------------------------


def _drop(name: str) -> Callable[[], object]:
    prepared = sign()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != name}
    return lambda: verify(prepared, headers=headers)


def _tampered(**overrides: Any) -> Callable[[], object]:
    prepared = sign("POST", json_body={"a": 1, "b": [1, 2]}, params={"q": "one"})
    return lambda: verify(prepared, **overrides)


def _edited_input(old: str, new: str) -> Callable[[], object]:
    prepared = sign()
    headers = dict(prepared.headers)
    assert old in headers["Signature-Input"]
    headers["Signature-Input"] = headers["Signature-Input"].replace(old, new)
    return lambda: verify(prepared, headers=headers)


def _two_labels() -> Callable[[], object]:
    prepared = sign()
    headers = dict(prepared.headers)
    headers["Signature-Input"] += ", other" + headers["Signature-Input"][len("pyhms") :]
    headers["Signature"] += ", other" + headers["Signature"][len("pyhms") :]
    return lambda: verify(prepared, headers=headers)


def _case_duplicate() -> Callable[[], object]:
    prepared = sign()
    headers = dict(prepared.headers)
    headers["signature"] = headers["Signature"]
    return lambda: verify(prepared, headers=headers)


def _oversized() -> Callable[[], object]:
    prepared = sign()
    headers = dict(prepared.headers)
    headers["Signature-Input"] += ";tag=" + json.dumps("t" * 3000)
    return lambda: verify(prepared, headers=headers)


def _uncovered_body() -> Callable[[], object]:
    headers = sign_with_library(("@method", "@authority", "@target-uri"))
    return lambda: verify_request(
        method="POST",
        target_uris=[ECHO_URL],
        headers=headers,
        body=b'{"a": 1}',
        keys=FakeKeys(),
        nonces=RecordingNonces(),
        now=NOW,
    )


def _signed_wrong_digest() -> Callable[[], object]:
    """The MAC is valid and covers a Content-Digest, but of other bytes: only the digest check fails."""
    headers = sign_with_library(
        ("@method", "@authority", "@target-uri", "content-digest"),
        headers={"Content-Digest": ContentDigest.create(b'{"a": 2}')},
    )
    return lambda: verify_request(
        method="POST",
        target_uris=[ECHO_URL],
        headers=headers,
        body=b'{"a": 1}',
        keys=FakeKeys(),
        nonces=RecordingNonces(),
        now=NOW,
    )


class _Mislabelled(algorithms.HMAC_SHA256):
    algorithm_id = "hmac-sha512"


FAILURES: dict[str, Callable[[], Callable[[], object]]] = {
    "no Signature": lambda: _drop("signature"),
    "no Signature-Input": lambda: _drop("signature-input"),
    "no Content-Digest with a covered digest": lambda: _drop("content-digest"),
    "unknown key": lambda: lambda: verify(sign(key_id="vk_nobody")),
    "revoked key": lambda: lambda: verify(sign(), keys=FakeKeys(revoked={KEY_ID})),
    "wrong secret": lambda: lambda: verify(sign(secret=b"not-the-secret-0123456789abcdefghijklm")),
    "method": lambda: _tampered(method="PUT"),
    "path": lambda: _tampered(target_uris=candidates_for(f"{PUBLIC_URL}/v1/echo2?q=one")),
    "query": lambda: _tampered(target_uris=candidates_for(f"{ECHO_URL}?q=two")),
    "extra query parameter": lambda: _tampered(target_uris=candidates_for(f"{ECHO_URL}?q=one&admin=1")),
    "host": lambda: _tampered(target_uris=candidates_for(f"{ECHO_URL}?q=one", "http://127.0.0.1:8001")),
    "body": lambda: _tampered(body=b'{"a": 2, "b": [1, 2]}'),
    "re-serialised JSON body": lambda: _tampered(body=b'{"a":1,"b":[1,2]}'),
    "body without a signed digest": _uncovered_body,
    "digest mismatch": _signed_wrong_digest,
    "created 301 s ago": lambda: lambda: verify(sign(created=int(NOW) - 301)),
    "created 301 s ahead": lambda: lambda: verify(sign(created=int(NOW) + 301)),
    "expired": lambda: _edited_input(";alg=", f";expires={int(NOW) - 1};alg="),
    "no nonce": lambda: lambda: verify(sign(use_nonce=False)),
    "short nonce": lambda: lambda: verify(sign(nonce="abc")),
    "no keyid": lambda: _edited_input(f'keyid="{KEY_ID}";', ""),
    "alg not hmac-sha256": lambda: lambda: verify(sign(signature_algorithm=_Mislabelled)),
    "unknown parameter": lambda: _edited_input(";alg=", ";debug=?1;alg="),
    "no @authority": lambda: lambda: verify(sign(covered_component_ids=("@method", "@target-uri"))),
    "no @target-uri": lambda: lambda: verify(sign(covered_component_ids=("@method", "@authority"))),
    "no @method": lambda: lambda: verify(sign(covered_component_ids=("@authority", "@target-uri"))),
    "two signature labels": _two_labels,
    "duplicated header": _case_duplicate,
    "oversized header": _oversized,
    "malformed Signature-Input": lambda: _edited_input("pyhms=(", "pyhms=(("),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_every_failure_is_the_same_401(case: str) -> None:
    """B8: a snapshot of one body; whichever check failed, the response is byte-identical."""
    refused = rejection(FAILURES[case]())
    assert refused.render("req-1") == SignatureRejected("reference").render("req-1")
    status, headers, body = refused.render("req-1")
    assert status == 401
    assert json.loads(body)["code"] == "invalid_signature"
    assert headers["WWW-Authenticate"].startswith("Signature")
    assert refused.reason and refused.reason not in body


def test_the_401_says_what_an_acceptable_signature_covers() -> None:
    """RFC 9421 §5.1 Accept-Signature, parseable by any Structured Fields parser."""
    headers = SignatureRejected("any").headers
    [(components, params)] = http_sf.parse(headers["Accept-Signature"].encode(), tltype="dictionary").values()
    assert [name for name, _ in components] == ["@method", "@authority", "@target-uri", "content-digest"]
    assert params == {"created": True, "nonce": True, "alg": "hmac-sha256"}


def test_failure_reasons_name_what_failed() -> None:
    assert "past" in rejection(FAILURES["created 301 s ago"]()).reason
    assert "future" in rejection(FAILURES["created 301 s ahead"]()).reason
    assert "digest" in rejection(FAILURES["digest mismatch"]()).reason
    assert "@authority" in rejection(FAILURES["no @authority"]()).reason
    assert "hmac-sha256" in rejection(FAILURES["alg not hmac-sha256"]()).reason
    assert "unknown" in rejection(FAILURES["unknown key"]()).reason


def test_a_replayed_request_is_refused() -> None:
    nonces = RecordingNonces()
    prepared = sign("POST", json_body={"a": 1})
    verify(prepared, nonces=nonces)
    assert rejection(lambda: verify(prepared, nonces=nonces)).reason == "nonce already used"


@pytest.mark.parametrize(
    "case", ["wrong secret", "path", "body", "digest mismatch", "created 301 s ago", "no nonce"]
)
def test_the_nonce_is_claimed_only_after_the_mac_and_digest_verify(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B6: unauthenticated requests never write to the nonce store."""
    claims: list[object] = []
    monkeypatch.setattr(RecordingNonces, "claim", lambda self, *args: claims.append(args) or True)
    rejection(FAILURES[case]())
    assert claims == []


@settings(max_examples=60, deadline=None)
@given(body=st.binary(min_size=1, max_size=300), data=st.data())
def test_flipping_any_bit_of_the_body_is_refused(body: bytes, data: st.DataObject) -> None:
    """B3: the digest is over the raw bytes, so any single-bit change is caught."""
    prepared = sign("POST", data=body)
    assert verify(prepared) == KEY
    index = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = body[:index] + bytes([body[index] ^ (1 << bit)]) + body[index + 1 :]
    nonces = RecordingNonces()
    assert "digest" in rejection(lambda: verify(prepared, body=tampered, nonces=nonces)).reason
    assert nonces.claims == []


def test_rejections_and_keys_do_not_print_secrets() -> None:
    refused = rejection(FAILURES["wrong secret"]())
    assert "secret" not in repr(KEY).lower()
    assert SECRET.decode() not in repr(KEY) + repr(refused) + str(refused)


# --- B4: the library compares MACs; this module never does ------------------------------------

_MAC_WORDS = {"signature", "sig", "mac", "hmac", "digest", "secret"}


def _equality_on_macs(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.IsNot) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if {part for name in names for part in name.lower().split("_")} & _MAC_WORDS:
                found.append(ast.unparse(node))
    return found


def test_signing_never_compares_macs_with_equality_nor_hashes_by_itself() -> None:
    source = (PROJECT_DIR / "chalicelib" / "tenants" / "signing.py").read_text()
    assert _equality_on_macs(source) == []
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"hmac", "hashlib", "base64"}
    assert "http_message_signatures" in imported
    # The detector itself works.
    assert _equality_on_macs("if signature == expected_mac:\n    pass\n")
    assert _equality_on_macs("ok = request.digest != computed\n")


def test_chalicelib_signing_code_does_not_import_chalice() -> None:
    for name in ("signing", "request_target", "nonces", "authentication"):
        tree = ast.parse(Path(PROJECT_DIR / "chalicelib" / "tenants" / f"{name}.py").read_text())
        modules = {
            (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not any(module.split(".")[0] == "chalice" for module in modules), name


# --- the target URI ---------------------------------------------------------------------------


def test_candidates_are_deduplicated_and_the_raw_query_comes_first() -> None:
    assert target_uri_candidates(PUBLIC_URL, "/v1/echo", None) == [ECHO_URL]
    assert target_uri_candidates(PUBLIC_URL + "/", "/v1/echo", {"limit": ["10"]}) == [f"{ECHO_URL}?limit=10"]
    query = {"q": ["a b:c"], "t": ["ü", "x"]}
    spelled = target_uri_candidates(PUBLIC_URL, "/v1/echo", query, raw_query="q=a%20b:c&t=%C3%BC&t=x")
    assert spelled == [
        f"{ECHO_URL}?q=a%20b:c&t=%C3%BC&t=x",
        f"{ECHO_URL}?q=a+b%3Ac&t=%C3%BC&t=x",
        f"{ECHO_URL}?q=a%20b%3Ac&t=%C3%BC&t=x",
    ]


def test_a_decoded_path_is_reencoded_and_an_encoded_one_kept() -> None:
    assert target_uri_candidates(PUBLIC_URL, "/v1/tenants/a b", None) == [f"{PUBLIC_URL}/v1/tenants/a%20b"]
    assert target_uri_candidates(PUBLIC_URL, "/v1/tenants/a%3Ab", None) == [f"{PUBLIC_URL}/v1/tenants/a%3Ab"]


@pytest.mark.parametrize(
    ("public_url", "received", "template", "expected"),
    [
        # chalice.test.Client and chalice local: requestContext.path is the route path itself.
        ("http://127.0.0.1:8000", "/v1/echo", "/v1/echo", "/v1/echo"),
        # API Gateway on its execute-api domain: the stage is in front of the route path.
        (
            "https://abc.execute-api.eu-west-1.amazonaws.com/api",
            "/api/v1/tenants/acme/connection",
            "/v1/tenants/{tenant_ref}/connection",
            "/v1/tenants/acme/connection",
        ),
        # ... or not (event "path" without the stage): same answer, the stage is never doubled.
        (
            "https://abc.execute-api.eu-west-1.amazonaws.com/api",
            "/v1/tenants/acme/connection",
            "/v1/tenants/{tenant_ref}/connection",
            "/v1/tenants/acme/connection",
        ),
        # A custom domain with a base-path mapping.
        ("https://api.example.com/broker", "/broker/v1/echo", "/v1/echo", "/v1/echo"),
        # A base path equal to the route's first segment is not mistaken for a prefix.
        ("https://x.example/v1", "/v1/echo", "/v1/echo", "/v1/echo"),
        ("http://127.0.0.1:8000", "/v1/echo/", "/v1/echo", "/v1/echo/"),
        ("http://127.0.0.1:8000", "/", "/", "/"),
        # No usable template: strip the public URL's base path when it is there.
        ("https://api.example.com/prod", "/prod/v1/echo", None, "/v1/echo"),
        ("https://api.example.com/prod", "/prod/v1/files/a/b", "/v1/files/{proxy+}", "/v1/files/a/b"),
        ("https://api.example.com", "/v1/echo", None, "/v1/echo"),
    ],
)
def test_route_path_rule(public_url: str, received: str, template: str | None, expected: str) -> None:
    assert route_path(public_url, received, template) == expected


def test_candidates_for_an_api_gateway_event_with_a_stage() -> None:
    event = {
        "resource": "/v1/tenants/{tenant_ref}/xpm/clients",
        "path": "/v1/tenants/acme/xpm/clients",
        "requestContext": {
            "path": "/prod/v1/tenants/acme/xpm/clients",
            "resourcePath": "/v1/tenants/{tenant_ref}/xpm/clients",
        },
        "multiValueQueryStringParameters": {"search": ["Smith & Co"], "limit": ["5"]},
        "queryStringParameters": {"search": "Smith & Co", "limit": "5"},
    }
    public_url = "https://api.example.com/prod"
    assert target_uri_candidates_for_event(public_url, event)[0] == (
        "https://api.example.com/prod/v1/tenants/acme/xpm/clients?search=Smith+%26+Co&limit=5"
    )


def test_candidates_for_a_chalice_event_and_single_valued_queries() -> None:
    chalice_event = {
        "requestContext": {"path": "/v1/echo", "resourcePath": "/v1/echo"},
        "multiValueQueryStringParameters": None,
    }
    assert target_uri_candidates_for_event(PUBLIC_URL, chalice_event) == [ECHO_URL]
    single = {"path": "/v1/echo", "resource": "/v1/echo", "queryStringParameters": {"a": "1"}}
    assert target_uri_candidates_for_event(PUBLIC_URL, single) == [f"{ECHO_URL}?a=1"]


# --- authenticate(): the glue and its log line ----------------------------------------------


def _event_for(prepared: requests.PreparedRequest) -> dict[str, Any]:
    parts = urlsplit(str(prepared.url))
    return {
        "requestContext": {"path": parts.path, "resourcePath": parts.path, "httpMethod": prepared.method},
        "multiValueQueryStringParameters": parse_qs(parts.query, keep_blank_values=True) or None,
        "headers": {k.lower(): v for k, v in prepared.headers.items()},
    }


def _authenticate(
    prepared: requests.PreparedRequest, event: dict[str, Any], nonces: RecordingNonces
) -> SigningKey:
    return authenticate(
        str(prepared.method),
        event,
        event["headers"],
        body_of(prepared),
        keys=FakeKeys(),
        nonces=nonces,
        settings=build_settings(
            {"XPMB_STAGE": "local", "XPMB_KMS_KEY_ID": "alias/unit", "XPMB_PUBLIC_URL": PUBLIC_URL}
        ),
        now=NOW,
    )


def test_authenticate_verifies_an_event_and_logs_rejections_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xpmb.auth")
    nonces = RecordingNonces()
    prepared = sign("POST", json_body={"canary": "body-canary-4711"}, params={"q": "x"})
    event = _event_for(prepared)
    assert _authenticate(prepared, event, nonces) == KEY
    with pytest.raises(SignatureRejected):
        _authenticate(prepared, event, nonces)  # replay
    forged_secret = b"forged-secret-canary-000000000000000"
    forged = sign("POST", json_body={"canary": "body-canary-4711"}, secret=forged_secret)
    with pytest.raises(SignatureRejected):
        _authenticate(forged, _event_for(forged), nonces)
    [replayed, bad_mac] = [r for r in caplog.records if r.name == "xpmb.auth"]
    assert replayed.levelno == logging.INFO
    assert "nonce already used" in replayed.getMessage()
    assert "candidate target URIs" in bad_mac.getMessage()
    assert KEY_ID in bad_mac.getMessage()
    for secret_text in (
        SECRET.decode(),
        "forged-secret-canary",
        "body-canary-4711",
        prepared.headers["Signature"].split(":")[1],
        forged.headers["Signature"].split(":")[1],
    ):
        assert secret_text not in caplog.text


def test_authenticate_refuses_repeated_signature_fields() -> None:
    prepared = sign()
    event = _event_for(prepared)
    event["multiValueHeaders"] = {"Signature": [prepared.headers["Signature"], prepared.headers["Signature"]]}
    nonces = RecordingNonces()
    assert "repeated" in rejection(lambda: _authenticate(prepared, event, nonces)).reason
    assert nonces.claims == []
