"""Rate limits on XPM calls (§2.1): per (app, tenant) minute, day and concurrency; per app minute."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    advance_clock,
    control,
    ok,
    restore_config,
    set_limits,
    set_xpm_options,
)


@pytest.fixture(autouse=True)
def _restore_config(sandbox: SandboxServer) -> Iterator[None]:
    yield
    restore_config(sandbox.state)


def assert_limited(response: requests.Response, problem: str, max_retry_after: int | None) -> None:
    assert response.status_code == 429
    assert response.headers["X-Rate-Limit-Problem"] == problem
    if max_retry_after is None:
        assert "Retry-After" not in response.headers
    else:
        assert 1 <= int(response.headers["Retry-After"]) <= max_retry_after


def test_remaining_headers_count_down(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    responses = [api.get("staff.api/list") for _ in range(3)]

    assert [r.headers["X-MinLimit-Remaining"] for r in responses] == ["59", "58", "57"]
    assert [r.headers["X-DayLimit-Remaining"] for r in responses] == ["4999", "4998", "4997"]
    assert [r.headers["X-AppMinLimit-Remaining"] for r in responses] == ["9999", "9998", "9997"]


def test_minute_limit_then_retry_after_then_a_new_window(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_limits(sandbox, per_minute=3)

    allowed = [api.get("client.api/search", {"query": "Bloggs"}) for _ in range(3)]
    refused = api.get("client.api/search", {"query": "Bloggs"})
    advance_clock(sandbox, 60)
    later = api.get("client.api/search", {"query": "Bloggs"})

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert allowed[-1].headers["X-MinLimit-Remaining"] == "0"
    assert_limited(refused, "minute", 60)
    assert refused.headers["Content-Type"].startswith("application/json")
    ok(later)
    assert later.headers["X-MinLimit-Remaining"] == "2"


def test_refused_calls_spend_no_budget(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_limits(sandbox, per_minute=2, per_day=10)

    for _ in range(2):
        ok(api.get("staff.api/list"))
    for _ in range(3):
        assert_limited(api.get("staff.api/list"), "minute", 60)
    advance_clock(sandbox, 60)
    response = api.get("staff.api/list")

    ok(response)
    assert response.headers["X-DayLimit-Remaining"] == "7"  # 3 admitted calls, not 6


def test_day_limit(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_limits(sandbox, per_day=2)

    for _ in range(2):
        ok(api.get("staff.api/list"))
    refused = api.get("staff.api/list")
    advance_clock(sandbox, 60)
    still_refused = api.get("staff.api/list")
    advance_clock(sandbox, 86_400)
    api_next_day = XpmApi.connect(sandbox, app=api.app)  # the first token has expired by now

    assert_limited(refused, "day", 86_400)
    assert_limited(still_refused, "day", 86_400 - 60)
    assert int(still_refused.headers["Retry-After"]) < int(refused.headers["Retry-After"])
    assert ok(api_next_day.get("staff.api/list")) is not None


def test_app_minute_limit_spans_tenants(sandbox: SandboxServer) -> None:
    bloggs = XpmApi.connect(sandbox, "alice", "bloggs")
    harbour = XpmApi.connect(sandbox, "alice", "harbour", app=bloggs.app)
    other_app = XpmApi.connect(sandbox, "alice", "harbour")
    set_limits(sandbox, app_per_minute=3)

    allowed = [bloggs.get("staff.api/list"), bloggs.get("staff.api/list"), harbour.get("staff.api/list")]
    refused = harbour.get("staff.api/list")

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["X-AppMinLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert [r.headers["X-MinLimit-Remaining"] for r in allowed] == ["59", "58", "59"]  # per tenant
    assert_limited(refused, "appminute", 60)
    ok(other_app.get("staff.api/list"))  # another app has its own budget


def test_minute_limits_are_per_app_and_tenant(sandbox: SandboxServer) -> None:
    bloggs = XpmApi.connect(sandbox, "alice", "bloggs")
    harbour = XpmApi.connect(sandbox, "alice", "harbour", app=bloggs.app)
    set_limits(sandbox, per_minute=1)

    ok(bloggs.get("staff.api/list"))
    assert_limited(bloggs.get("staff.api/list"), "minute", 60)
    ok(harbour.get("staff.api/list"))


def test_concurrent_limit(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_limits(sandbox, concurrent=2)
    set_xpm_options(sandbox, xpm_latency_seconds=0.6)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: api.get("staff.api/list"), range(6)))
    set_xpm_options(sandbox, xpm_latency_seconds=0)

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2
    assert statuses.count(429) >= 1
    for response in responses:
        if response.status_code == 429:
            assert_limited(response, "concurrent", None)
    ok(api.get("staff.api/list"))  # the slots were given back


def test_latency_option_slows_calls(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_xpm_options(sandbox, xpm_latency_seconds=0.3)

    response = api.get("staff.api/list")

    ok(response)
    assert response.elapsed.total_seconds() >= 0.3
    assert control(sandbox, "GET", "xpm-options").json()["xpm_latency_seconds"] == 0.3
    assert control(sandbox, "PUT", "xpm-options", {"xpm_latency_seconds": -1}).status_code == 400
    assert control(sandbox, "PUT", "xpm-options", {"xpm_error_status": 99}).status_code == 400


def test_reset_forgets_the_windows(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_limits(sandbox, per_minute=1)
    ok(api.get("staff.api/list"))
    assert_limited(api.get("staff.api/list"), "minute", 60)

    assert control(sandbox, "POST", "reset").status_code == 204
    # reset dropped apps and connections too: register the same client id again
    app = sandbox.state.register_app(api.app.redirect_uris, client_id=api.app.client_id)
    fresh = XpmApi.connect(sandbox, app=app)

    ok(fresh.get("staff.api/list"))
