"""The broker on the local stack, in this process: Xero sandbox + one connected firm; moto in its own process.

It reuses the functional tests' harness (``tests/functional/broker.py``): the same bootstrap,
Xero app registration, vendor and browser-free connect journey the tests run, driven here
without pytest. Rate limits are raised on both sides (the broker's governor through
``XPMB_GOVERNOR_*``, the sandbox through ``PUT /_sandbox/limits``) so neither shapes a benchmark;
the governor still does all its DynamoDB work on every call.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests

TENANT_REF = "firm-bench"
TIMEOUT = 120
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
_UNLIMITED_GOVERNOR = {
    "XPMB_GOVERNOR_PER_MINUTE": "1000000",
    "XPMB_GOVERNOR_PER_DAY": "100000000",
    "XPMB_GOVERNOR_APP_PER_MINUTE": "100000000",
}
_UNLIMITED_SANDBOX = {
    "concurrent": 1000,
    "per_minute": 1_000_000,
    "per_day": 100_000_000,
    "app_per_minute": 100_000_000,
}


@dataclass
class LocalStack:
    aws_endpoint: str
    sandbox_url: str
    broker: object  # tests.functional.broker.BrokerUnderTest (imported lazily)
    practice_id: str  # the connected Xero tenant id
    grant_id: str

    def xpm_url(self, path: str) -> str:
        return f"{self.sandbox_url}/practicemanager/3.0/{path}"

    def access_token(self) -> str:
        """The connection's current Xero access token, read as the broker reads it."""
        from chalicelib.oauth.refresh import valid_access_token

        token, _ = valid_access_token(self.grant_id)
        return token

    def xpm_headers(self) -> dict[str, str]:
        """What the broker's XpmClient sends to Xero (minus its User-Agent)."""
        return {
            "Authorization": f"Bearer {self.access_token()}",
            "xero-tenant-id": self.practice_id,
            "Accept": "application/xml",
            "Accept-Encoding": "gzip, deflate",
        }

    def reseed(self, clients: int) -> None:
        """Replace the connected practice's data with ``clients`` seeded clients."""
        response = requests.post(
            f"{self.sandbox_url}/_sandbox/practices/{self.practice_id}/reseed",
            json={"clients": clients},
            timeout=TIMEOUT,
        )
        response.raise_for_status()

    def insert_client(self, name: str) -> None:
        response = requests.post(
            f"{self.sandbox_url}/_sandbox/practices/{self.practice_id}/clients",
            json={"Name": name},
            timeout=TIMEOUT,
        )
        response.raise_for_status()


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's server in its own process, as DynamoDB/KMS/SQS are not in the broker's process.

    In this process, moto's request handling (pure Python) would hold the broker's GIL and put its
    own CPU time into every measured request. Its Query reads only the queried partition
    (``bench.fast_moto``), like DynamoDB.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_moto", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/")
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a request thread still open keeps werkzeug serving
            process.kill()
            process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def _sandbox_server() -> Iterator[object]:
    from sandbox.server import SandboxServer
    from sandbox.state import SandboxConfig, SandboxState

    server = SandboxServer(SandboxState(SandboxConfig())).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def local_stack() -> Iterator[LocalStack]:
    """Start everything, connect one firm (Alice, Bloggs practice), stop everything after."""
    env = pytest.MonkeyPatch()
    try:
        for name, value in {**_FAKE_AWS, **_UNLIMITED_GOVERNOR}.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        with moto_process() as endpoint, _sandbox_server() as sandbox:
            env.setenv("AWS_ENDPOINT_URL", endpoint)
            env.setenv("XPMB_STAGE", "local")
            yield from _connected(endpoint, sandbox, env)
    finally:
        env.undo()
        from chalicelib.config import reset_settings

        reset_settings()


def _connected(endpoint: str, sandbox: object, env: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    from chalicelib.config import reset_settings
    from chalicelib.tenants.connections import get_connection
    from tests.functional.broker import broker_fixture
    from tests.functional.sandbox.oauth_helpers import BLOGGS

    reset_settings()
    harness = broker_fixture(endpoint, sandbox, env)  # type: ignore[arg-type]
    broker = next(harness)
    try:
        broker.connect(TENANT_REF)
        connection = get_connection(broker.vendor.vendor_id, TENANT_REF)
        assert connection.status == "active", connection.status
        assert connection.grant_id and connection.xero_tenant_id == BLOGGS, connection.xero_tenant_id
        url = broker.sandbox.url
        requests.put(f"{url}/_sandbox/limits", json=_UNLIMITED_SANDBOX, timeout=TIMEOUT).raise_for_status()
        yield LocalStack(endpoint, url, broker, connection.xero_tenant_id, connection.grant_id)
    finally:
        next(harness, None)  # the fixture's teardown, as pytest runs it
