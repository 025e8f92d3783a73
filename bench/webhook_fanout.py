"""Webhook fan-out: signed (Standard Webhooks) deliveries per second to a local receiver.

The receiver is a minimal HTTP server in its own process (so its CPU is not the sender's): it
reads each request whole and answers 204, one connection per delivery, as the worker connects.

Lines (each alternated round by round with its baseline, see ``measure.py``):

- ``webhook_fanout``: one sender thread making the worker's per-attempt HTTP path:
  ``signature_headers`` (the ``standardwebhooks`` library), the SSRF check of the URL
  (``check_url``) and the pinned, bounded POST (``transport.post``: socket to the checked address,
  15 s watchdog, 64 KB cap). Baseline: ``http.client`` POSTs of the very same body bytes,
  unsigned and unchecked, also one connection each. Target: at least 200 deliveries per second
  from the one sender, i.e. on at most one core (``deliveries_per_second``); the sender's CPU
  seconds per delivery give ``deliveries_per_core_second`` too.
- ``webhook_fanout.worker``: the whole delivery worker (``Deliverer.deliver``: read the event and
  vendor, claim the attempt in a DynamoDB transaction, decrypt the secret (cached data key),
  sign, check, POST, record the outcome) against the same raw POST baseline. Reported only: its
  DynamoDB calls go to the moto server in this process over loopback HTTP, which costs far more
  here than DynamoDB does in a Region.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.context import RunContext
from bench.measure import Paired, alternate
from bench.results import Outcome, Result, Target

NAME = "webhook_fanout"
SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1ub3QtYS1yZWFsLWtleS0wMQ=="
TARGET_PER_SECOND = 200.0

RECEIVER = r"""
import re, socket, sys
server = socket.create_server(("127.0.0.1", 0), backlog=1024)
print(server.getsockname()[1], flush=True)
ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
while True:
    conn, _ = server.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = LENGTH.search(head)
        while match and len(body) < int(match.group(1)):
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        conn.sendall(ANSWER)
    except OSError:
        pass
    finally:
        conn.close()
"""


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]


@contextmanager
def receiver() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


def payload() -> bytes:
    from chalicelib.webhooks.signing import body_bytes

    data = {"tenant_ref": "firm-bench", "push_id": "push_0123456789abcdef", "status": "completed"}
    return body_bytes({"type": "push.completed", "timestamp": "2030-01-01T00:00:00Z", "data": data})


def raw_post(port: int, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request(
            "POST", "/hooks", body=body, headers={"Content-Type": "application/json", "Connection": "close"}
        )
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            raise RuntimeError(f"receiver answered {response.status}")
    finally:
        connection.close()


def signed_post(url: str, body: bytes, message_id: str) -> None:
    from chalicelib.webhooks.signing import signature_headers
    from chalicelib.webhooks.ssrf import check_url
    from chalicelib.webhooks.transport import post

    headers = signature_headers(message_id, time.time(), body, [SECRET])
    response = post(check_url(url, local_stage=True), body, headers)
    if response.answer.status != 204:
        raise RuntimeError(f"delivery failed: {response.answer}")


def timed_batch(operation: Callable[[int], None], batch: int, into: Timing) -> float:
    """Run ``operation(i)`` ``batch`` times; record wall and CPU seconds per delivery; return wall."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for index in range(batch):
        operation(index)
    wall = (time.perf_counter() - wall_start) / batch
    into.wall.append(wall)
    into.cpu.append((time.process_time() - cpu_start) / batch)
    return wall


def check_signatures_verify(body: bytes) -> None:
    """Before timing: what the measured path sends verifies with the official library."""
    from standardwebhooks.webhooks import Webhook

    from chalicelib.webhooks.signing import signature_headers

    Webhook(SECRET).verify(body, signature_headers("evt_bench", time.time(), body, [SECRET]))


def run(context: RunContext) -> list[Outcome]:
    with receiver() as port:
        return [_sender_line(context, port), _worker_line(context, port)]


def _sender_line(context: RunContext, port: int) -> Result:
    body, url = payload(), f"http://127.0.0.1:{port}/hooks"
    check_signatures_verify(body)
    batch, rounds = (100 if context.quick else 300), context.rounds(9)
    for index in range(50):  # warm-up: imports, TLS-free code paths, the receiver's accept loop
        raw_post(port, body)
        signed_post(url, body, f"evt_warm{index}")
    baseline, measured = Timing([], []), Timing([], [])
    paired = alternate(
        rounds,
        lambda: timed_batch(lambda _: raw_post(port, body), batch, baseline),
        lambda: timed_batch(lambda i: signed_post(url, body, f"evt_bench{i}"), batch, measured),
    )
    return _result(
        NAME,
        paired,
        baseline,
        measured,
        target=Target("deliveries_per_second", TARGET_PER_SECOND, ">= 200/s", at_most=False),
        parameters={
            "body_bytes": len(body),
            "deliveries_per_round": batch,
            "measured": "signature_headers (standardwebhooks, 1 secret) + check_url + transport.post",
            "baseline": "http.client POST of the same bytes, unsigned, no SSRF check, no watchdog",
            "receiver": "separate process, reads each request whole, 204, one connection per delivery",
            "sender": "one thread (at most one core)",
        },
    )


def _worker_line(context: RunContext, port: int) -> Result:
    from chalicelib.storage import transaction
    from chalicelib.tenants.models import Vendor
    from chalicelib.webhooks.delivery import Deliverer, Outcome
    from chalicelib.webhooks.dispatch import AttemptMessage
    from chalicelib.webhooks.endpoint import configure_endpoint
    from chalicelib.webhooks.models import outbox_event

    stack = context.stack()
    vendor_id = stack.broker.vendor.vendor_id  # type: ignore[attr-defined]
    configure_endpoint(Vendor.get(vendor_id), {"url": f"http://127.0.0.1:{port}/hooks"}, "bench")
    batch, rounds = (20 if context.quick else 50), context.rounds(7)
    body = payload()

    class NoQueue:  # the worker never needs to queue a retry here (every attempt succeeds)
        def send(self, messages: list[AttemptMessage], delay_seconds: int = 0) -> int:
            return len(messages)

    worker = Deliverer(queue=NoQueue())

    def fresh_messages() -> list[AttemptMessage]:
        events = [outbox_event(vendor_id, "push.completed", {"push_id": f"p{i}"}) for i in range(batch)]
        for start in range(0, batch, 25):
            with transaction() as tx:
                for event in events[start : start + 25]:
                    tx.save(event)
        return [AttemptMessage(vendor_id, e.event_id, 1) for e in events]

    def deliver_all(messages: list[AttemptMessage]) -> Callable[[int], None]:
        def one(index: int) -> None:
            if worker.deliver(messages[index]) is not Outcome.DELIVERED:
                raise RuntimeError("the worker did not deliver")

        return one

    deliver_all(fresh_messages())(0)  # warm-up: connections, the KMS data key cache
    batches = [fresh_messages() for _ in range(rounds)]  # written before any timing
    pending = iter(batches)
    baseline, measured = Timing([], []), Timing([], [])
    paired = alternate(
        rounds,
        lambda: timed_batch(lambda _: raw_post(port, body), batch, baseline),
        lambda: timed_batch(deliver_all(next(pending)), batch, measured),
    )
    return _result(
        f"{NAME}.worker",
        paired,
        baseline,
        measured,
        target=None,
        parameters={
            "deliveries_per_round": batch,
            "measured": "Deliverer.deliver: DynamoDB reads, claim transaction, sign, check, POST, record",
            "baseline": "http.client POST of the same bytes",
            "aws": "moto server in this process over loopback HTTP (dominates; not a Region's cost)",
        },
    )


def _result(
    name: str,
    paired: Paired,
    baseline: Timing,
    measured: Timing,
    *,
    target: Target | None,
    parameters: dict[str, Any],
) -> Result:
    wall, base_wall = statistics.median(measured.wall), statistics.median(baseline.wall)
    cpu, base_cpu = statistics.median(measured.cpu), statistics.median(baseline.cpu)
    metrics = {
        "deliveries_per_second": 1 / wall,
        "deliveries_per_core_second": 1 / cpu,
        "baseline_posts_per_second": 1 / base_wall,
        "baseline_posts_per_core_second": 1 / base_cpu,
        "sender_cpu_ms_per_delivery": cpu * 1000,
        "baseline_cpu_ms_per_post": base_cpu * 1000,
    }
    return Result(
        name=name,
        ratio=paired.median_ratio(),
        target=target,
        median_seconds=wall,
        baseline_median_seconds=base_wall,
        spread=paired.spread(),
        round_ratios=paired.ratios,
        rounds=paired.rounds,
        parameters=parameters,
        metrics=metrics,
        note=(
            f"{1 / wall:,.0f} signed deliveries/s from one sender ({1 / cpu:,.0f} per CPU second) "
            f"vs {1 / base_wall:,.0f} raw POSTs/s"
        ),
    )
