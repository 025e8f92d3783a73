"""``xpm-broker dev`` (what ``make run`` starts): the embedded local stack, supervised.

Children: local AWS (moto server), the Xero sandbox (unless XERO_IDENTITY_URL/XERO_API_URL
point elsewhere), the broker (``chalice local --stage local``) and the pump (schedules + SQS).
Each child's output is prefixed with its name; if one dies the others are stopped; Ctrl-C or
SIGTERM stops them all (TERM, then KILL after a grace period).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

PROJECT_DIR = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DEFAULT_PORTS = {"XPMB_PORT": 8000, "XPMB_SANDBOX_PORT": 8090, "XPMB_AWS_PORT": 5000}
LOCAL_CLIENT_ID = "XPMB-LOCAL-SANDBOX-APP"
# Start-up chatter of libraries that says nothing a developer can act on.
NOISE = ("settings for pynamo", "Using Default settings value", "Found credentials in environment variables")


class DevStackError(Exception):
    """A one-line reason the stack cannot start."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    output: list[str] = field(default_factory=list)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_from_env(env: dict[str, str], variable: str) -> int:
    raw = env.get(variable, str(DEFAULT_PORTS[variable]))
    try:
        port = int(raw)
    except ValueError as exc:
        raise DevStackError(f"{variable}={raw!r} is not a port number") from exc
    if not 1 <= port <= 65535:
        raise DevStackError(f"{variable}={port} is not a port number")
    return port


def ensure_port_free(port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves do: connections of a previous run lingering in TIME_WAIT
        # must not count as "in use", or a second `make run` right after Ctrl-C would fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise DevStackError(
                f"port {port} on {HOST} is already in use: stop whatever holds it or set {variable} "
                "to a free port"
            ) from exc


class DevStack:
    def __init__(self, env: dict[str, str] | None = None, out: IO[str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        external_identity = self.env.get("XERO_IDENTITY_URL")
        external_api = self.env.get("XERO_API_URL")
        self.use_sandbox = not (external_identity or external_api)
        if not self.use_sandbox and not (external_identity and external_api):
            raise DevStackError(
                "set both XERO_IDENTITY_URL and XERO_API_URL, or neither (to use the sandbox)"
            )
        variables = ["XPMB_PORT", "XPMB_AWS_PORT"] + (["XPMB_SANDBOX_PORT"] if self.use_sandbox else [])
        self.ports = {v: port_from_env(self.env, v) for v in variables}
        self.xero_client_id = self.env.get("XERO_CLIENT_ID", "")
        self.xero_client_secret = self.env.get("XERO_CLIENT_SECRET", "")
        self.demo: dict[str, str] = {}

    # -- environment for the children ----------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(self.env)
        aws = f"http://{HOST}:{self.ports['XPMB_AWS_PORT']}"
        env.update(
            {
                "AWS_ENDPOINT_URL": aws,
                "AWS_ACCESS_KEY_ID": env.get("XPMB_LOCAL_AWS_KEY", "local"),
                "AWS_SECRET_ACCESS_KEY": env.get("XPMB_LOCAL_AWS_SECRET", "local"),
                "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
                "AWS_REGION": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
                "XPMB_STAGE": "local",
                "XPMB_PUBLIC_URL": env.get("XPMB_PUBLIC_URL", f"http://{HOST}:{self.ports['XPMB_PORT']}"),
                "PYTHONUNBUFFERED": "1",
                "POWERTOOLS_TRACE_DISABLED": "true",
                # EMF metric lines are for CloudWatch; locally they would drown the log lines.
                "POWERTOOLS_METRICS_DISABLED": env.get("POWERTOOLS_METRICS_DISABLED", "true"),
            }
        )
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_SESSION_TOKEN", None)
        if self.use_sandbox:
            sandbox = f"http://{HOST}:{self.ports['XPMB_SANDBOX_PORT']}"
            env["XERO_IDENTITY_URL"] = sandbox
            env["XERO_API_URL"] = sandbox
            # Grant lifetimes follow the sandbox clock: advancing it shows rotation (docs/rotation.md).
            env.setdefault("XPMB_XERO_CLOCK_URL", f"{sandbox}/_sandbox/clock")
        if self.xero_client_id:
            env["XERO_CLIENT_ID"] = self.xero_client_id
            env["XERO_CLIENT_SECRET"] = self.xero_client_secret
        return env

    # -- children ------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        process = subprocess.Popen(  # noqa: S603 - argv is built from sys.executable and constants
            argv,
            cwd=PROJECT_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
        )
        child = Child(name, process)
        threading.Thread(target=self._relay, args=(child,), daemon=True).start()
        with self._lock:
            self.children.append(child)
        return child

    def _relay(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in child.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.output = [*child.output[-49:], line]
            if not self._stopping.is_set() and not any(noise in line for noise in NOISE):
                self.say(f"[{child.name}] {line}")

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def wait_http(self, child: Child, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                tail = " | ".join(child.output[-5:])
                raise DevStackError(f"{child.name} exited with code {child.process.returncode}: {tail}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        raise DevStackError(f"{child.name} did not answer {url} within {timeout:.0f} s")

    def wait_output(self, child: Child, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in child.output):
            if child.process.poll() is not None:
                raise DevStackError(f"{child.name} exited with code {child.process.returncode}")
            if time.monotonic() > deadline:
                raise DevStackError(f"{child.name} did not start within {timeout:.0f} s")
            time.sleep(0.1)

    # -- start/stop ----------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        for variable, port in self.ports.items():
            ensure_port_free(port, variable)
        env = self.child_env()
        py = sys.executable
        aws_port = self.ports["XPMB_AWS_PORT"]
        moto = self.spawn("aws", [py, "-m", "xpmb.local_aws", "-p", str(aws_port)], env)
        self.wait_http(moto, f"{env['AWS_ENDPOINT_URL']}/moto-api/")
        # Bootstrap with the operator CLI in the children's environment (local AWS endpoint and
        # credentials), never with whatever AWS credentials this shell happens to have.
        created = self._cli(["bootstrap"], env)
        made = sum(1 for line in created.splitlines() if line.startswith("created"))
        self.say(f"local AWS ready: {made} resource(s) created from chalicelib/resources.py")
        if self.use_sandbox:
            sandbox = self.spawn(
                "sandbox",
                [py, "-m", "sandbox", "--host", HOST, "--port", str(self.ports["XPMB_SANDBOX_PORT"])],
                env,
            )
            self.wait_http(sandbox, f"{env['XERO_IDENTITY_URL']}/.well-known/openid-configuration")
            self._register_sandbox_app(env)
            env["XERO_CLIENT_ID"] = self.xero_client_id
            env["XERO_CLIENT_SECRET"] = self.xero_client_secret
        self.demo = self._create_demo_vendor(env)
        env.update(
            {
                "XPMB_DEMO_VENDOR_ID": self.demo["vendor_id"],
                "XPMB_DEMO_KEY_ID": self.demo["key_id"],
                "XPMB_DEMO_KEY_SECRET": self.demo["key_secret"],
                "XPMB_DEMO_WEBHOOK_SECRET": self.demo["webhook_secret"],
            }
        )
        broker_argv = [
            str(Path(py).with_name("chalice")), "local", "--stage", "local", "--host", HOST,
            "--port", str(self.ports["XPMB_PORT"]), "--no-autoreload",
        ]  # fmt: skip
        broker = self.spawn("broker", broker_argv, env)
        self.wait_http(broker, f"http://{HOST}:{self.ports['XPMB_PORT']}/health")
        pump = self.spawn("pump", [py, "-m", "xpmb.pump"], env)
        self.wait_output(pump, "driving")
        return env

    def _create_demo_vendor(self, env: dict[str, str]) -> dict[str, str]:
        """The demo vendor, created with the operator CLI as an operator would (contract.md §1)."""
        public = env["XPMB_PUBLIC_URL"]
        argv = [
            "vendors", "create", "--name", "Demo Docs",
            # "=" form: a generated secret may start with "-", which argparse would take for an option.
            f"--xero-client-id={env['XERO_CLIENT_ID']}", f"--xero-client-secret={env['XERO_CLIENT_SECRET']}",
            "--return-url", f"{public}/demo", "--webhook-url", f"{public}/demo/webhooks", "--json",
        ]  # fmt: skip
        created: dict[str, str] = json.loads(self._cli(argv, env))
        return created

    def _cli(self, argv: list[str], env: dict[str, str]) -> str:
        """Run ``xpm-broker ARGV`` in the children's environment; its stdout, or DevStackError."""
        command = [str(Path(sys.executable).with_name("xpm-broker")), *argv]
        result = subprocess.run(  # noqa: S603 - argv is built from sys.executable and our settings
            command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise DevStackError(f"xpm-broker {argv[0]} failed: {result.stderr.strip()[-300:]}")
        return result.stdout

    def _register_sandbox_app(self, env: dict[str, str]) -> None:
        """Register the broker's callback as a Xero app in the sandbox (like the developer portal)."""
        if not self.xero_client_id:
            self.xero_client_id = LOCAL_CLIENT_ID
        response = requests.post(
            f"{env['XERO_IDENTITY_URL']}/_sandbox/apps",
            json={
                "name": "xpm-broker (local)",
                "client_id": self.xero_client_id,
                "client_secret": self.xero_client_secret or None,
                "redirect_uris": [f"{env['XPMB_PUBLIC_URL']}/oauth/callback"],
            },
            timeout=10,
        )
        response.raise_for_status()
        self.xero_client_secret = response.json()["client_secret"]

    def summary(self, env: dict[str, str]) -> str:
        broker = f"http://{HOST}:{self.ports['XPMB_PORT']}"
        lines = [
            "",
            "xpm-broker local stack is running:",
            f"  broker        {broker}   (GET /health, GET /openapi.json)",
            f"  local AWS     {env['AWS_ENDPOINT_URL']}   (moto server: DynamoDB, KMS, SQS)",
        ]
        if self.use_sandbox:
            lines.append(
                f"  Xero sandbox  {env['XERO_IDENTITY_URL']}   (identity + XPM; control API under /_sandbox/)"
            )
            lines.append(f"  Xero app      client id {self.xero_client_id} (registered in the sandbox)")
        else:
            lines.append(f"  Xero          {env['XERO_IDENTITY_URL']} / {env['XERO_API_URL']} (external)")
        lines.append("  pump          drives the app's schedules and SQS queues")
        lines.append("")
        lines.append(f"Demo vendor page: {broker}/demo   (connect, reconnect, disconnect in a browser)")
        lines.append(f"  vendor_id       {self.demo['vendor_id']}")
        lines.append(f"  key_id          {self.demo['key_id']}")
        lines.append(f"  key_secret      {self.demo['key_secret']}")
        lines.append(f"  webhook_secret  {self.demo['webhook_secret']}")
        lines.append("Signed request example (copy-paste):")
        key_id, secret = self.demo["key_id"], self.demo["key_secret"]
        lines.append(
            f"  {Path(sys.executable)} -c 'import requests; from requests_http_signature import "
            "HTTPSignatureAuth, algorithms as a; "
            f'print(requests.get("{broker}/v1/tenants", auth=HTTPSignatureAuth(key=b"{secret}", '
            f'key_id="{key_id}", signature_algorithm=a.HMAC_SHA256, use_nonce=True)).json())\''
        )
        lines.append("  processes     " + ", ".join(f"{c.name}={c.process.pid}" for c in self.children))
        lines.append("Press Ctrl-C to stop everything.")
        return "\n".join(lines)

    def stop(self, grace: float = 8.0) -> None:
        self._stopping.set()
        with self._lock:
            children = list(reversed(self.children))
        for child in children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=5)

    def supervise(self) -> int:
        """Block until a child dies (exit 1) or we are asked to stop (exit 0)."""
        while not self._stopping.is_set():
            for child in list(self.children):
                code = child.process.poll()
                if code is not None:
                    self.say(f"{child.name} exited unexpectedly with code {code}; stopping the stack")
                    return 1
            self._stopping.wait(0.5)
        return 0

    def request_stop(self, *_: object) -> None:
        self._stopping.set()


def run(env: dict[str, str] | None = None) -> int:
    try:
        stack = DevStack(env)
    except DevStackError as exc:
        print(f"xpm-broker dev: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    try:
        child_env = stack.start()
    except DevStackError as exc:
        stack.stop()
        print(f"xpm-broker dev: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        stack.stop()
        raise
    stack.say(stack.summary(child_env))
    try:
        code = stack.supervise()
    finally:
        stack.say("stopping the local stack ...")
        stack.stop()
        stack.say("stopped.")
    return code
