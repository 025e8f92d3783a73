"""Log masking, correlation keys and EMF metrics (issue 7 observability)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from chalicelib.observability import bind_context, clear_context, get_logger, mask_value, record_metric

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(get_logger().registered_formatter)
    target = logging.getLogger("xpmb")
    target.addHandler(handler)
    try:
        yield stream
    finally:
        target.removeHandler(handler)
        clear_context()


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"refresh failed for {JWT}", JWT),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("tfn 123 456 782 given", "123 456 782"),
        ("tfn 123456782 given", "123456782"),
        ("ird 49-091-850 given", "49-091-850"),
    ],
)
def test_values_that_look_secret_are_masked(text: str, hidden: str) -> None:
    masked = mask_value("message", text)
    assert hidden not in masked
    assert "***" in masked


def test_secret_keys_are_masked_at_any_depth_and_ordinary_values_kept() -> None:
    record = {
        "refresh_token": "opaque-value",
        "client": {"tax_number": "123456782", "name": "Bloggs Electrical"},
        "attempts": [{"client_secret": "s"}],
        "timestamp": "2026-11-22 02:38:20,123+0000",
        "created_at": 1795314935,
        "push_id": "push_01JD4Z3",
    }
    masked = mask_value("extra", record)
    assert masked["refresh_token"] == "***"
    assert masked["client"] == {"tax_number": "***", "name": "Bloggs Electrical"}
    assert masked["attempts"] == [{"client_secret": "***"}]
    assert masked["timestamp"] == record["timestamp"]
    assert masked["created_at"] == record["created_at"]
    assert masked["push_id"] == record["push_id"]


def test_log_lines_are_json_with_correlation_and_masked(log_lines: io.StringIO) -> None:
    bind_context(request_id="req-12345678", vendor_id="ven_1", tenant_ref="firm-1")
    logging.getLogger("xpmb.refresh").warning("token %s rejected", JWT, extra={"access_token": "abc"})
    bind_context(tenant_ref=None)
    logging.getLogger("xpmb.xpm").info("after")
    first, second = parsed(log_lines)
    assert first["request_id"] == "req-12345678"
    assert first["vendor_id"] == "ven_1"
    assert first["tenant_ref"] == "firm-1"
    assert first["level"] == "WARNING"
    assert JWT not in json.dumps(first)
    assert first["access_token"] == "***"
    assert "tenant_ref" not in second
    assert second["vendor_id"] == "ven_1"


def test_metrics_are_emf_with_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    record_metric("RefreshOutcome", 1, service="refresh", outcome="invalid_grant")
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    point = emf[0]
    directive = point["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "xpm-broker")
    assert directive["Metrics"] == [{"Name": "RefreshOutcome", "Unit": "Count"}]
    assert sorted(directive["Dimensions"][0]) == ["outcome", "service"]
    assert (point["service"], point["outcome"], point["RefreshOutcome"]) == (
        "refresh",
        "invalid_grant",
        [1.0],
    )


def test_tracing_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import observability

    monkeypatch.setattr(observability, "_tracer", None)
    monkeypatch.delenv("XPMB_TRACING", raising=False)
    assert observability.get_tracer() is None
    monkeypatch.setenv("XPMB_TRACING", "true")
    tracer = observability.get_tracer()
    assert tracer is not None
    assert type(tracer).__name__ == "Tracer"


def test_metrics_can_be_muted_for_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.observability import metrics_muted

    with metrics_muted():
        record_metric("Muted", service="cli")
    assert '"_aws"' not in capsys.readouterr().out
    record_metric("Heard", service="cli")  # muting ends with the block
    assert '"Heard"' in capsys.readouterr().out
