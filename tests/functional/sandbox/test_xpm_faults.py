"""Injected faults on XPM calls (sandbox/faults.py) and the per-endpoint call counters."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    client_names,
    control,
    document,
    ok,
    stored_clients,
    wait_until_idle,
)


def arm(sandbox: SandboxServer, target: str, kind: str, **params: Any) -> None:
    response = control(sandbox, "POST", "faults", {"target": target, "kind": kind, **params})
    assert response.status_code == 201, response.text


def search(api: XpmApi, query: str = "Bloggs", **kwargs: Any) -> requests.Response:
    return api.get("client.api/search", {"query": query}, **kwargs)


def test_server_error_answers_the_status_once(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.client.search", "server_error", status=502)

    failed = search(api)
    recovered = search(api)

    assert failed.status_code == 502
    ok(recovered)


def test_server_error_defaults_to_503_and_the_xpm_target_hits_any_method(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm", "server_error", count=2)

    assert api.get("staff.api/list").status_code == 503
    assert api.get("clientgroup.api/list").status_code == 503
    ok(api.get("staff.api/list"))


def test_write_faults_leave_reads_alone_and_do_no_work(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.write", "server_error")

    ok(search(api))
    failed = api.post("client.api/add", document("Client", Name="Never Created Ltd"))

    assert failed.status_code == 503
    assert "Never Created Ltd" not in [c["Name"] for c in stored_clients(sandbox, api)]


def test_read_faults_leave_writes_alone(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.read", "server_error")

    ok(api.post("client.api/add", document("Client", Name="Written Ltd")))
    assert search(api).status_code == 503


def test_timeout_makes_the_caller_time_out(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.client.search", "timeout", seconds=1.5)

    with pytest.raises(requests.Timeout):
        search(api, timeout=0.3)
    wait_until_idle(1.5)

    ok(search(api, timeout=5))


def test_timeout_then_the_work_still_happens(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.client.add", "timeout", seconds=0.4)

    slow = api.post("client.api/add", document("Client", Name="Slow But Sure Ltd"))

    assert slow.elapsed.total_seconds() >= 0.4
    assert ok(slow).findtext("Client/Name") == "Slow But Sure Ltd"


def test_injected_rate_limit(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.client.get", "rate_limit")
    arm(sandbox, "xpm.client.search", "rate_limit", problem="day", retry_after=3600)

    minute = api.get("client.api/get/00000000-0000-0000-0000-000000000000")
    day = search(api)

    assert minute.status_code == 429
    assert (minute.headers["X-Rate-Limit-Problem"], minute.headers["Retry-After"]) == ("minute", "60")
    assert day.status_code == 429
    assert (day.headers["X-Rate-Limit-Problem"], day.headers["Retry-After"]) == ("day", "3600")


def test_drop_response_on_add_creates_the_client_but_loses_the_answer(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    arm(sandbox, "xpm.client.add", "drop_response")

    with pytest.raises(requests.ConnectionError):
        api.post("client.api/add", document("Client", Name="Lost Answer Pty Ltd"))

    assert client_names(ok(search(api, "Lost Answer"))) == ["Lost Answer Pty Ltd"]
    ok(api.post("client.api/add", document("Client", Name="Second Try Pty Ltd")))  # one shot only


def test_drop_response_on_addrelationship_keeps_the_relationship(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    entity = ok(
        api.post("client.api/add", document("Client", Name="Dropped Rel Ltd", BusinessStructure="Company"))
    )
    person = ok(
        api.post("client.api/add", document("Client", Name="Dee Dropped", BusinessStructure="Individual"))
    )
    entity_uuid = entity.findtext("Client/UUID") or ""
    body = document(
        "Relationship",
        ClientUUID=entity_uuid,
        RelatedClientUUID=person.findtext("Client/UUID") or "",
        Type="Director",
    )
    arm(sandbox, "xpm.write", "drop_response")

    with pytest.raises(requests.ConnectionError):
        api.post("client.api/addrelationship", body)

    detail = ok(api.get(f"client.api/get/{entity_uuid}"))
    assert detail.findtext("Client/Relationships/Relationship/Type") == "Director"


def test_call_counters(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    anonymous = XpmApi(api.sandbox_url, api.app, {})

    search(api)
    search(api)
    api.get("client.api/get/00000000-0000-0000-0000-000000000000")
    anonymous.post("client.api/add", document("Client", Name="Refused Ltd"))
    api.on("3.0").get("client.api/list")

    calls = control(sandbox, "GET", "calls").json()
    assert calls["xpm.client.search"] == 2
    assert calls["xpm.client.get"] == 1
    assert calls["xpm.client.add"] == 1  # refused calls are counted too
    assert calls["xpm.client.list"] == 1
    assert "xpm.staff.list" not in calls
