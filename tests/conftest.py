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
