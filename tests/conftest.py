"""Shared fixtures: fake AWS credentials before anything imports boto, and the Xero sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Never reach real AWS from tests, whatever the developer's shell has.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "xpm-broker-test",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[object]:
    """One Xero sandbox on a free loopback port for the whole session (reset per test)."""
    from sandbox.server import SandboxServer
    from sandbox.state import SandboxConfig, SandboxState

    server = SandboxServer(SandboxState(SandboxConfig(clients_per_practice=200))).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: object) -> object:
    """The sandbox server, reset to its seeded world (data, tokens, faults, clock, counters)."""
    from sandbox.server import SandboxServer

    assert isinstance(sandbox_server, SandboxServer)
    sandbox_server.state.reset()
    return sandbox_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port: local AWS over real HTTP, as the dev stack runs it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def local_aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_ENDPOINT_URL pointed at a freshly reset moto server, and Settings rebuilt from it."""
    import requests

    from chalicelib.config import reset_settings

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("XPMB_STAGE", "local")
    reset_settings()
    yield moto_endpoint
    reset_settings()


@pytest.fixture
def broker(local_aws: str, sandbox: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The broker app wired to local AWS and the sandbox, with one registered vendor."""
    from tests.functional.broker import broker_fixture

    yield from broker_fixture(local_aws, sandbox, monkeypatch)  # type: ignore[arg-type]
