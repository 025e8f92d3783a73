"""A signed XPM call leaves its correlation keys on the log context and one ProxyLatency point."""

from __future__ import annotations

import json

import pytest

from chalicelib.observability import get_logger
from tests.functional.broker import BrokerUnderTest


def test_signed_search_is_correlated_and_measured(
    broker: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.connect("firm-obs")
    capsys.readouterr()
    response = broker.signed("GET", "/v1/tenants/firm-obs/xpm/clients?search=Bloggs")
    assert response.status_code == 200

    keys = get_logger().thread_safe_get_current_keys()
    assert keys["request_id"] == response.headers["X-Request-Id"]
    assert keys["vendor_id"] == broker.vendor.vendor_id
    assert keys["tenant_ref"] == "firm-obs"

    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    latency = [p for p in points if "ProxyLatency" in p]
    assert len(latency) == 1
    assert (latency[0]["service"], latency[0]["method"], latency[0]["status"]) == ("api", "GET", "2xx")
    assert latency[0]["ProxyLatency"][0] > 0
