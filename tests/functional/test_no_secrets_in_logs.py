"""Canary test (security-checklist C4): no token, code, verifier or secret reaches any log line."""

from __future__ import annotations

import logging

import pytest

from chalicelib.crypto import get_cipher
from chalicelib.oauth.grants import read_tokens
from chalicelib.oauth.models import Grant
from chalicelib.tenants.models import Connection, Vendor
from chalicelib.tenants.vendors import vendor_context
from tests.functional.broker import BrokerUnderTest
from tests.functional.sandbox.oauth_helpers import arm_fault


def test_a_full_journey_logs_no_secret(broker: BrokerUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker.connect("firm-1")
    arm_fault(broker.sandbox, "token.authorization_code", "server_error")
    broker.connect("firm-2")  # a failure path logs too
    session = broker.create_session("firm-3")
    callback = broker.consent(broker.start(session["session_id"]))
    broker.callback(callback, cookies={})  # a rejected callback
    broker.client.http.get("/v1/tenants")  # a rejected signature
    grant = Grant.get(Connection.get(broker.vendor.vendor_id, "firm-1").grant_id)
    tokens = read_tokens(grant)
    vendor = Vendor.get(broker.vendor.vendor_id)
    xero_secret = get_cipher().decrypt_text(
        vendor.xero_client_secret_ct, vendor_context(vendor.vendor_id, "xero-client-secret")
    )
    code = callback.split("code=")[1].split("&")[0]
    canaries = {
        "access token": tokens.access_token,
        "refresh token": tokens.refresh_token,
        "xero client secret": xero_secret,
        "vendor key secret": broker.vendor.key_secret,
        "webhook secret": broker.vendor.webhook_secret,
        "authorization code": code,
    }
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert logged  # the journey did log something
    for name, secret in canaries.items():
        assert secret not in logged, f"{name} appears in the logs"
