"""Schemathesis over the running local stack: every documented operation, signed like a vendor.

Asserts Schemathesis's default checks: no 5xx, every status code/content type/header/body
conforms to /openapi.json, calls without (or with a broken) signature are refused, invalid input
is rejected. Left out: ``positive_data_acceptance``: a schema-valid body may still be refused for
what a schema cannot say (an unregistered return URL, an XPM UUID that does not exist) with a
documented 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from requests_http_signature import HTTPSignatureAuth, algorithms
from schemathesis.checks import positive_data_acceptance

from tests.e2e.stack import RunningStack, demo_credentials

pytestmark = pytest.mark.e2e
SIGNATURE_HEADERS = ("Signature", "Signature-Input", "Content-Digest", "Date")


@schemathesis.auth().apply_to(path_regex=r"^/v1/")  # the browser and demo paths are unsigned
class VendorSignature:
    """The signing hook: sign the request exactly as it will be sent (RFC 9421, fresh nonce)."""

    auth: ClassVar[HTTPSignatureAuth | None] = None
    base_url: ClassVar[str] = ""

    def get(self, case: schemathesis.Case, context: Any) -> HTTPSignatureAuth | None:
        return self.auth

    def set(self, case: schemathesis.Case, data: HTTPSignatureAuth, context: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=self.base_url)
        fields = ("method", "url", "params", "headers", "data", "json", "cookies")
        prepared = requests.Request(**{k: kwargs[k] for k in fields if k in kwargs}).prepare()
        data(prepared)
        case.headers = {**(case.headers or {})}
        for name in SIGNATURE_HEADERS:
            if name in prepared.headers:
                case.headers[name] = prepared.headers[name]


@pytest.fixture(scope="module")
def signing(stack: RunningStack) -> Iterator[None]:
    credentials = demo_credentials(stack)
    VendorSignature.base_url = stack.broker_url
    VendorSignature.auth = HTTPSignatureAuth(
        key=credentials["key_secret"].encode(),
        key_id=credentials["key_id"],
        signature_algorithm=algorithms.HMAC_SHA256,
        use_nonce=True,
    )
    yield
    VendorSignature.auth = None


def test_every_operation_conforms(stack: RunningStack, signing: None) -> None:
    # Schemathesis's pytest plugin (from_fixture) does not run under pytest 9, so the operations
    # are driven with its Python API: one Hypothesis run per operation, failures collected.
    api = schemathesis.openapi.from_url(f"{stack.broker_url}/openapi.json")
    failures: list[str] = []
    labels: list[str] = []
    statuses: dict[str, set[int]] = {}
    for result in api.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=stack.broker_url, timeout=30, excluded_checks=[positive_data_acceptance]
            )
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as error:  # report every operation's failures
            failures.append(f"{operation.label}: {error}")
    assert len(labels) >= 10, labels
    # The signing hook works: signed calls get past authentication (not all 401s).
    assert 200 in statuses["GET /v1/tenants"], statuses
    assert statuses["GET /v1/tenants/{tenant_ref}/connection"] - {401}, statuses
    assert not failures, "\n\n".join(failures)
