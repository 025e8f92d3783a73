"""AWS fault injection for tests: a loopback proxy in front of the moto server.

moto has no fault injection, and botocore's retries (throttling, jitter) only show against a real
endpoint. The proxy forwards every request to moto unchanged, except the next ``count`` requests
whose ``X-Amz-Target`` names an armed operation (``DynamoDB_20120810.UpdateItem``,
``TrentService.GenerateDataKey``, ``AmazonSQS.SendMessage``; optionally only when the body
mentions ``body_contains``, e.g. a table name): those get the armed AWS error, in the JSON
protocol's shape, as AWS sends it. ``seen`` counts the requests per operation.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

THROTTLING = {
    "DynamoDB_20120810": "ProvisionedThroughputExceededException",
    "TrentService": "ThrottlingException",
    "AmazonSQS": "RequestThrottled",
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Rule:
    operation: str  # the X-Amz-Target, e.g. "DynamoDB_20120810.UpdateItem"
    error: str  # the AWS error code, e.g. "ThrottlingException"
    remaining: int
    status: int = 400
    body_contains: str | None = None


class AwsFaults:
    def __init__(self, moto_endpoint: str) -> None:
        self.moto = moto_endpoint.rstrip("/")
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.url = ""

    def arm(
        self,
        operation: str,
        error: str | None = None,
        count: int = 1,
        *,
        status: int = 400,
        body_contains: str | None = None,
    ) -> Rule:
        """Fail the next ``count`` calls of ``operation`` (throttling for its service by default)."""
        code = error or THROTTLING[operation.split(".", 1)[0]]
        rule = Rule(operation, code, count, status, body_contains)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _take(self, operation: str, body: bytes) -> Rule | None:
        with self._lock:
            self.seen[operation] += 1
            for rule in self._rules:
                if rule.operation != operation or rule.remaining <= 0:
                    continue
                if rule.body_contains and rule.body_contains.encode() not in body:
                    continue
                rule.remaining -= 1
                self.failed[operation] += 1
                return rule
        return None


def _handler(faults: AwsFaults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            operation = self.headers.get("X-Amz-Target", "")
            rule = faults._take(operation, body) if operation else None
            if rule is not None:
                payload = json.dumps(
                    {"__type": rule.error, "message": "injected by tests/aws_faults"}
                ).encode()
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-RequestId", "injected-fault")
                self.send_header("x-amzn-query-error", f"{rule.error};Sender")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = requests.request(
                self.command, faults.moto + self.path, headers=headers, data=body, timeout=30
            )
            self.send_response(upstream.status_code)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-encoding":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(upstream.content)))
            self.end_headers()
            self.wfile.write(upstream.content)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def aws_fault_proxy(moto_endpoint: str) -> Iterator[AwsFaults]:
    faults = AwsFaults(moto_endpoint)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(faults))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    faults.url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield faults
    finally:
        server.shutdown()
        server.server_close()
