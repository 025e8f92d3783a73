"""A broker under test: the Chalice app (test client) + local AWS (moto server) + the sandbox.

``broker.signed("POST", "/v1/...", json=...)`` signs like a vendor (requests-http-signature,
RFC 9421) and sends through the Chalice test client; ``broker.connect(...)`` runs the whole
browser journey: connect session → hosted page → sandbox sign-in and consent → callback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from chalice.test import Client
from requests_http_signature import HTTPSignatureAuth, algorithms

from sandbox.server import SandboxServer
from tests.conftest import PROJECT_DIR
from tests.functional.sandbox.oauth_helpers import ALICE, BLOGGS, register_app

PUBLIC_URL = "http://127.0.0.1:8000"
RETURN_URL = "https://vendor.example/xero/done"


@dataclass
class VendorCredentials:
    vendor_id: str
    key_id: str
    key_secret: str
    webhook_secret: str


@dataclass
class BrokerUnderTest:
    client: Client
    sandbox: SandboxServer
    vendor: VendorCredentials
    xero_client_id: str
    cookies: dict[str, str] = field(default_factory=dict)

    def signed(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        vendor: VendorCredentials | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        credentials = vendor or self.vendor
        body = raw if raw is not None else (json.dumps(json_body).encode() if json_body is not None else None)
        request_headers = {"Content-Type": "application/json", **(headers or {})} if body is not None else {}
        prepared = requests.Request(method, PUBLIC_URL + path, data=body, headers=request_headers).prepare()
        auth = HTTPSignatureAuth(
            key=credentials.key_secret.encode(),
            key_id=credentials.key_id,
            signature_algorithm=algorithms.HMAC_SHA256,
            use_nonce=True,
        )
        auth(prepared)
        sent = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
        return getattr(self.client.http, method.lower())(path, headers=sent, body=prepared.body or b"")

    def create_session(self, tenant_ref: str, **body: Any) -> dict[str, Any]:
        payload = {"return_url": RETURN_URL, **body}
        response = self.signed("POST", f"/v1/tenants/{tenant_ref}/connect-sessions", json_body=payload)
        assert response.status_code == 201, response.body
        return dict(response.json_body)

    def start(self, session_id: str) -> str:
        """Click "Connect to Xero": returns the Xero authorize URL and keeps the state cookie."""
        response = self.client.http.post(
            f"/connect/{session_id}/start", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 303, response.body
        cookie = response.headers["Set-Cookie"]
        name, value = cookie.split(";", 1)[0].split("=", 1)
        self.cookies[name] = value
        return str(response.headers["Location"])

    def consent(
        self, authorize_url: str, user: str = ALICE, tenant_id: str | None = BLOGGS, decision: str = "allow"
    ) -> str:
        """Sign in and decide at the sandbox; returns the callback URL Xero redirects to."""
        parts = urlsplit(authorize_url)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        form = {**params, "user": user, "decision": decision}
        if tenant_id:
            form["tenant_id"] = tenant_id
        response = requests.post(
            f"{parts.scheme}://{parts.netloc}{parts.path}", data=form, allow_redirects=False, timeout=10
        )
        assert response.status_code == 302, response.text
        return str(response.headers["Location"])

    def callback(self, callback_url: str, cookies: dict[str, str] | None = None) -> Any:
        parts = urlsplit(callback_url)
        jar = self.cookies if cookies is None else cookies
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        return self.client.http.get(f"{parts.path}?{parts.query}", headers=headers)

    def connect(
        self,
        tenant_ref: str,
        *,
        user: str = ALICE,
        tenant_id: str | None = BLOGGS,
        decision: str = "allow",
        **body: Any,
    ) -> dict[str, list[str]]:
        """The whole journey; returns the query of the redirect to the vendor's return URL."""
        session = self.create_session(tenant_ref, **body)
        callback_url = self.consent(self.start(session["session_id"]), user, tenant_id, decision)
        response = self.callback(callback_url)
        assert response.status_code == 302, response.body
        location = response.headers["Location"]
        assert location.startswith(RETURN_URL + "?"), location
        return parse_qs(urlsplit(location).query)


def make_vendor(**kwargs: Any) -> VendorCredentials:
    from chalicelib.tenants.vendors import create_vendor

    created = create_vendor(**kwargs)
    return VendorCredentials(
        created.vendor_id, created.key.key_id, created.key.key_secret, created.webhook_secret
    )


def broker_fixture(
    local_aws: str, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, **vendor_options: Any
) -> Iterator[BrokerUnderTest]:
    from app import app
    from chalicelib.config import get_settings, reset_settings
    from chalicelib.crypto import reset_cipher
    from chalicelib.oauth.discovery import forget_providers
    from chalicelib.tenants.keys import key_resolver
    from xpmb.bootstrap import bootstrap

    monkeypatch.setenv("XERO_IDENTITY_URL", sandbox.url)
    monkeypatch.setenv("XERO_API_URL", sandbox.url)
    monkeypatch.setenv("XPMB_PUBLIC_URL", PUBLIC_URL)
    reset_settings()
    reset_cipher()
    forget_providers()
    key_resolver().forget()
    bootstrap(get_settings())
    xero = register_app(sandbox, "Vendor's Xero app", [f"{PUBLIC_URL}/oauth/callback"])
    vendor = make_vendor(
        name="Acme Docs",
        xero_client_id=xero.client_id,
        xero_client_secret=xero.client_secret,
        return_urls=[RETURN_URL, "https://vendor.example/other"],
        **vendor_options,
    )
    with Client(app, stage_name="local", project_dir=str(PROJECT_DIR)) as client:
        yield BrokerUnderTest(client, sandbox, vendor, xero.client_id)
    forget_providers()


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


def text_of(html: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.decode()))


@dataclass
class LiveBroker:
    """The same app served by ``chalice local``'s threaded server on a free loopback port."""

    url: str
    vendor: VendorCredentials

    def get(self, path: str) -> requests.Response:
        auth = HTTPSignatureAuth(
            key=self.vendor.key_secret.encode(),
            key_id=self.vendor.key_id,
            signature_algorithm=algorithms.HMAC_SHA256,
            use_nonce=True,
        )
        return requests.get(self.url + path, auth=auth, timeout=60)


def live_broker_fixture(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveBroker]:
    import threading

    from chalice.config import Config
    from chalice.local import create_local_server

    from app import app
    from chalicelib.config import reset_settings

    original_class = app.__class__
    config = Config.create(chalice_stage="local", app_name="xpm-broker", project_dir=str(PROJECT_DIR))
    server = create_local_server(app, config, "127.0.0.1", 0)
    host, port = server.server.server_address[:2]
    url = f"http://{host}:{port}"
    # Signatures cover the public URL: here that is the live server's address.
    monkeypatch.setenv("XPMB_PUBLIC_URL", url)
    reset_settings()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveBroker(url, broker.vendor)
    finally:
        server.shutdown()
        app.__class__ = original_class
        reset_settings()
