"""The HTTP layer: Chalice's own errors are problem+json too (contract §4); HSTS on https."""

from __future__ import annotations

import pytest

from tests.functional.broker import BrokerUnderTest


def test_wrong_content_type_is_a_problem(broker: BrokerUnderTest) -> None:
    response = broker.client.http.post(
        "/connect/any-session/start", headers={"Content-Type": "application/json"}, body=b"{}"
    )
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json_body["code"] == "unsupported_media_type"
    assert response.json_body["status"] == 415
    assert response.headers["X-Request-Id"]


def test_wrong_method_is_a_problem_with_allow(broker: BrokerUnderTest) -> None:
    response = broker.client.http.put("/health")
    assert response.status_code == 405
    assert response.json_body["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_https_deployments_send_hsts(broker: BrokerUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.config import reset_settings

    assert "Strict-Transport-Security" not in broker.client.http.get("/health").headers  # http locally
    monkeypatch.setenv("XPMB_PUBLIC_URL", "https://broker.example")
    reset_settings()
    try:
        response = broker.client.http.get("/health")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=63072000")
    finally:
        monkeypatch.undo()
        reset_settings()
