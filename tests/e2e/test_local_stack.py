"""`make run` end to end: every part comes up, answers, and goes away on Ctrl-C."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from defusedxml import ElementTree

from chalicelib.resources import QUEUES, TABLES
from tests.e2e.stack import CLI, PROJECT_DIR, RunningStack, pid_alive, port_is_free, stack_env, start_stack

pytestmark = pytest.mark.e2e


def test_every_part_answers(stack: RunningStack) -> None:
    health = requests.get(f"{stack.broker_url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["stage"] == "local"
    assert health.headers["X-Request-Id"]
    document = requests.get(f"{stack.broker_url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")

    discovery = requests.get(f"{stack.sandbox_url}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == stack.sandbox_url

    aws = {"endpoint_url": stack.aws_url, "region_name": "us-east-1"}
    tables = set(boto3.client("dynamodb", **aws).list_tables()["TableNames"])
    assert {f"xpmb-local-{t.name}" for t in TABLES} <= tables
    queues = boto3.client("sqs", **aws).list_queues()["QueueUrls"]
    assert len(queues) == 2 * len(QUEUES)
    assert boto3.client("kms", **aws).describe_key(KeyId="alias/xpmb-local")["KeyMetadata"]["Enabled"]

    output = stack.output()
    for part in ("broker", "local AWS", "Xero sandbox", "pump"):
        assert part in output
    assert "[pump]" in output
    # The dev stack registered the broker's callback as a Xero app in the sandbox.
    apps = requests.get(f"{stack.sandbox_url}/_sandbox/", timeout=10).json()["apps"]
    assert any(f"{stack.broker_url}/oauth/callback" in a["redirect_uris"] for a in apps)


def test_scripted_oauth_dance_then_xpm_search(stack: RunningStack) -> None:
    """authorize form post → code → token → refresh → connections → XPM search, all over HTTP."""
    sandbox = stack.sandbox_url
    redirect_uri = "http://127.0.0.1:9/callback"  # never fetched: we read the Location header
    app = requests.post(f"{sandbox}/_sandbox/apps", json={"redirect_uris": [redirect_uri]}, timeout=10).json()
    world = requests.get(f"{sandbox}/_sandbox/", timeout=10).json()
    practice = next(p for p in world["practices"] if p["name"].startswith("Bloggs"))
    discovery = requests.get(f"{sandbox}/.well-known/openid-configuration", timeout=10).json()

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": app["client_id"],
        "redirect_uri": redirect_uri,
        "scope": "openid profile email offline_access practicemanager.client practicemanager.staff.read",
        "state": state,
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = requests.get(discovery["authorization_endpoint"], params=params, timeout=10)
    assert page.status_code == 200
    assert "<form" in page.text
    consent = requests.post(
        discovery["authorization_endpoint"],
        data={
            **params,
            "user": "alice@sandbox.example",
            "tenant_id": practice["tenant_id"],
            "decision": "allow",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert consent.status_code == 302, consent.text
    query = parse_qs(urlsplit(consent.headers["Location"]).query)
    assert query["state"] == [state]
    code = query["code"][0]

    auth = (app["client_id"], app["client_secret"])
    token = requests.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=auth,
        timeout=10,
    )
    assert token.status_code == 200, token.text
    tokens = token.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 1800
    assert {"access_token", "refresh_token", "id_token"} <= tokens.keys()

    refreshed = requests.post(
        discovery["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    fresh = refreshed.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]  # rotation (§1.5)
    bearer = {"Authorization": f"Bearer {fresh['access_token']}"}

    connections = requests.get(f"{sandbox}/connections", headers=bearer, timeout=10).json()
    xpm = [c for c in connections if c["tenantType"] == "PRACTICEMANAGER"]
    assert [c["tenantId"] for c in xpm] == [practice["tenant_id"]]

    search = requests.get(
        f"{sandbox}/practicemanager/3.0/client.api/search",
        params={"query": "bloggs"},
        headers={**bearer, "xero-tenant-id": xpm[0]["tenantId"], "Accept": "application/xml"},
        timeout=10,
    )
    assert search.status_code == 200
    root = ElementTree.fromstring(search.content)
    assert root.findtext("Status") == "OK"
    names = [c.findtext("Name") or "" for c in root.iter("Client")]
    assert names
    assert all("bloggs" in n.lower() for n in names)


def test_ctrl_c_stops_every_child_and_a_second_run_works() -> None:
    env = stack_env()
    for attempt in (1, 2):
        running = start_stack(env)
        pids = running.child_pids()
        assert set(pids) == {"aws", "sandbox", "broker", "pump"}
        assert running.interrupt() == 0, running.output()
        assert "stopped." in running.output()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [name for name, pid in pids.items() if pid_alive(pid)], f"run {attempt} left children"
        for variable in ("XPMB_PORT", "XPMB_SANDBOX_PORT", "XPMB_AWS_PORT"):
            assert port_is_free(int(env[variable])), variable


def test_a_busy_port_gives_one_line_naming_the_variable() -> None:
    env = stack_env()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["XPMB_SANDBOX_PORT"])))
        holder.listen()
        result = subprocess.run(
            [CLI, "dev"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert env["XPMB_SANDBOX_PORT"] in lines[0]
    assert "XPMB_SANDBOX_PORT" in lines[0]


def test_an_external_xero_replaces_the_sandbox(sandbox: object) -> None:
    from sandbox.server import SandboxServer

    assert isinstance(sandbox, SandboxServer)
    env = stack_env(XERO_IDENTITY_URL=sandbox.url, XERO_API_URL=sandbox.url)
    app = sandbox.state.register_app([f"http://127.0.0.1:{env['XPMB_PORT']}/oauth/callback"])
    env.update(XERO_CLIENT_ID=app.client_id, XERO_CLIENT_SECRET=app.client_secret)
    running = start_stack(env)
    try:
        assert "sandbox" not in running.child_pids()
        assert "(external)" in running.output()
        assert port_is_free(int(env["XPMB_SANDBOX_PORT"]))
        assert requests.get(f"{running.broker_url}/health", timeout=10).status_code == 200
    finally:
        assert running.interrupt() == 0
