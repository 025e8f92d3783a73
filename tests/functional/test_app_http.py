"""The HTTP surface every route shares: /health, /openapi.json, X-Request-Id, problem+json."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice import Chalice
from chalice.test import Client
from openapi_spec_validator import validate

from chalicelib.errors import BrokerError
from chalicelib.web import http
from tests.conftest import PROJECT_DIR


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    from app import app

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted by these routes
    with Client(app, stage_name="local", project_dir=str(PROJECT_DIR)) as test_client:
        yield test_client


def test_health_answers_with_stage_and_a_request_id(client: Client) -> None:
    response = client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body["status"] == "ok"
    assert response.json_body["stage"] == "local"
    assert len(response.headers["X-Request-Id"]) >= 8


def test_a_sane_inbound_request_id_is_echoed_and_a_hostile_one_replaced(client: Client) -> None:
    echoed = client.http.get("/health", headers={"X-Request-Id": "vendor-trace-0001"})
    assert echoed.headers["X-Request-Id"] == "vendor-trace-0001"
    replaced = client.http.get("/health", headers={"X-Request-Id": "bad id\r\nSet-Cookie: x"})
    assert replaced.headers["X-Request-Id"] != "bad id\r\nSet-Cookie: x"
    assert " " not in replaced.headers["X-Request-Id"]


def test_openapi_document_is_valid_openapi_31(client: Client) -> None:
    response = client.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json_body
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert "/health" in document["paths"]
    assert "Problem" in document["components"]["schemas"]
    assert "RFC 9421" in document["components"]["securitySchemes"]["httpMessageSignature"]["description"]


def test_errors_render_as_problem_json_and_internal_details_stay_inside() -> None:
    app = Chalice(app_name="errors-under-test")

    @app.route("/broken-input")
    def broken_input() -> dict[str, str]:
        raise BrokerError("search_too_short", 422, "Search too short", "Give at least 3 characters.")

    @app.route("/crash")
    def crash() -> dict[str, str]:
        raise RuntimeError("secret-token-value leaked?")

    http.install(app)
    with Client(app) as test_client:
        response = test_client.http.get("/broken-input")
        assert response.status_code == 422
        assert response.headers["Content-Type"] == "application/problem+json"
        problem = json.loads(response.body)
        assert problem["code"] == "search_too_short"
        assert problem["status"] == 422
        assert problem["request_id"] == response.headers["X-Request-Id"]
        assert problem["type"].endswith("/search_too_short")

        crashed = test_client.http.get("/crash")
        assert crashed.status_code == 500
        assert json.loads(crashed.body)["code"] == "internal_error"
        assert b"secret-token-value" not in crashed.body
        assert "X-Request-Id" in crashed.headers


def test_every_route_is_documented(client: Client) -> None:
    from app import app

    document = client.http.get("/openapi.json").json_body
    for path, methods in app.routes.items():
        assert path in document["paths"], path
        for method in methods:
            assert method.lower() in document["paths"][path], f"{method} {path}"
