"""Errors Chalice raises before a view runs are problem+json too (contract §4)."""

from __future__ import annotations

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
