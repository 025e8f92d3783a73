"""Start and stop `xpm-broker dev` (what `make run` runs) on free ports, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("xpm-broker"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Nothing listens there (TIME_WAIT leftovers don't count, as for the servers themselves)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.env['XPMB_PORT']}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.env['XPMB_SANDBOX_PORT']}"

    @property
    def aws_url(self) -> str:
        return f"http://127.0.0.1:{self.env['XPMB_AWS_PORT']}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def child_pids(self) -> dict[str, int]:
        match = re.search(r"processes\s+(.+)", self.output())
        assert match, self.output()
        return {name: int(pid) for name, pid in (p.split("=") for p in match.group(1).split(", "))}

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, as a developer would press it."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)


def stack_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "AWS_ENDPOINT_URL",
        "XERO_IDENTITY_URL",
        "XERO_API_URL",
        "XERO_CLIENT_ID",
        "XERO_CLIENT_SECRET",
    ):
        env.pop(name, None)
    env.update(
        {
            "XPMB_PORT": str(free_port()),
            "XPMB_SANDBOX_PORT": str(free_port()),
            "XPMB_AWS_PORT": str(free_port()),
            "XPMB_SANDBOX_CLIENTS": "200",
        }
    )
    env.update(overrides)
    return env


def start_stack(env: dict[str, str], timeout: float = 120) -> RunningStack:
    process = subprocess.Popen(
        [CLI, "dev"],
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = RunningStack(process, env)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.lines.append(line.rstrip("\n"))
            if "Press Ctrl-C" in line:
                stack.ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not stack.ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            raise AssertionError(f"stack did not start:\n{stack.output()}")
    return stack


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def demo_credentials(stack: RunningStack) -> dict[str, str]:
    """The demo vendor's ids and secrets exactly as `make run` prints them."""
    found = dict(
        re.findall(r"^\s+(vendor_id|key_id|key_secret|webhook_secret)\s+(\S+)$", stack.output(), re.M)
    )
    assert {"vendor_id", "key_id", "key_secret"} <= found.keys(), stack.output()
    return found


def connect_over_http(
    broker_url: str, connect_url: str, user: str = "alice@sandbox.example", practice: str = "bloggs"
) -> str:
    """What a person does in the browser, as plain HTTP: Connect to Xero → sign in → Allow.

    Returns the URL the broker finally redirects to (the vendor's return URL with the outcome).
    """
    from urllib.parse import parse_qs, urlsplit

    import requests

    from sandbox.state import stable_uuid

    browser = requests.Session()
    page = browser.get(connect_url, timeout=10)
    assert page.status_code == 200, page.text
    session_id = urlsplit(connect_url).path.rsplit("/", 1)[-1]
    start = browser.post(
        f"{broker_url}/connect/{session_id}/start",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
        timeout=10,
    )
    assert start.status_code == 303, start.text
    authorize = urlsplit(start.headers["Location"])
    form = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    consent = browser.post(
        f"{authorize.scheme}://{authorize.netloc}{authorize.path}",
        data={**form, "user": user, "decision": "allow", "tenant_id": stable_uuid("practice", practice)},
        allow_redirects=False,
        timeout=10,
    )
    assert consent.status_code == 302, consent.text
    callback = browser.get(consent.headers["Location"], allow_redirects=False, timeout=30)
    assert callback.status_code == 302, callback.text
    return str(callback.headers["Location"])
