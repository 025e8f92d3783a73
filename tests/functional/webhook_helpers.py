"""A real webhook receiver on 127.0.0.1 that verifies with ``standardwebhooks``, and a driver that
runs the dispatcher and the delivery worker on a simulated clock.

The receiver is what a vendor would run: it verifies each request with the official library
(any one of its trusted secrets), records what arrived and answers what the test tells it to.
Between the receiver and the library's clock sits ``verifier_clock``: standardwebhooks reads
``datetime.now`` for its 5-minute tolerance, so a test that simulates days moves that clock too.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.storage import transaction
from chalicelib.webhooks.delivery import Deliverer
from chalicelib.webhooks.dispatch import AttemptMessage, dispatch_due
from chalicelib.webhooks.models import DISPATCH_SHARDS, Event, outbox_event

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None = None

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    @property
    def signatures(self) -> list[str]:
        return self.headers.get("webhook-signature", "").split(" ")


@dataclass
class Receiver:
    """A vendor's endpoint: ``reply`` decides each answer (default 204 once verified)."""

    secrets: list[str]
    reply: Callable[[Received], Reply] | None = None
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    _server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                got = Received(headers, body, False)
                got.verified, got.error = verify(receiver.secrets, body, headers)
                receiver.received.append(got)
                status, extra, content = receiver.reply(got) if receiver.reply else (204, {}, b"")
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> Any:
                receiver.connections += 1
                return super().get_request()

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until ``start()`` binds it again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verified_ids(self) -> list[str]:
        return [r.webhook_id for r in self.received if r.verified]


def verify(secrets: list[str], body: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
    """The official verifier, with each trusted secret: True if any verifies."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    error = "no secret"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers)
            return True, None
        except (WebhookVerificationError, ValueError) as exc:
            error = str(exc)
    return False, error


def verifies_with(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether ``secret`` verifies the request, as of the moment it was signed."""
    with verifier_clock(lambda: float(headers["webhook-timestamp"])):
        return verify([secret], body, headers)[0]


@contextmanager
def verifier_clock(now: Callable[[], float]) -> Iterator[None]:
    """standardwebhooks' tolerance check reads ``datetime.now``: make it read ``now()``."""
    import standardwebhooks.webhooks as library

    class SimulatedDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> SimulatedDatetime:
            moment = datetime.fromtimestamp(now(), tz=tz or UTC)
            return cls(*moment.timetuple()[:6], moment.microsecond, tzinfo=moment.tzinfo)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(library, "datetime", SimulatedDatetime)
        yield


def write_events(
    vendor_id: str, count: int, now: float, event_type: str = "push.completed", tag: str = "push"
) -> list[Event]:
    """Events as the services write them: in a transaction (the after-commit hook runs too)."""
    events = [
        outbox_event(vendor_id, event_type, {"push_id": f"{tag}_{i}"}, now + i / 1000) for i in range(count)
    ]
    with transaction() as tx:
        for event in events:
            tx.save(event)
    return events


class SimulatedQueue:
    """SQS on the simulated clock: a message becomes visible ``delay_seconds`` after it was sent."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, AttemptMessage]] = []
        self._order = itertools.count()
        self.sent: list[tuple[float, int, AttemptMessage]] = []

    def send(self, messages: list[AttemptMessage], delay_seconds: int = 0) -> int:
        for message in messages:
            visible = self._clock() + delay_seconds
            heapq.heappush(self._heap, (visible, next(self._order), message))
            self.sent.append((self._clock(), delay_seconds, message))
        return len(messages)

    def next_visible(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def receive(self, now: float) -> list[AttemptMessage]:
        ready = []
        while self._heap and self._heap[0][0] <= now:
            ready.append(heapq.heappop(self._heap)[2])
        return ready


class Simulation:
    """The dispatcher (every due moment) and the worker, driven on a simulated clock."""

    def __init__(self, start: float, seed: int = 7, **deliverer: Any) -> None:
        self.now = start
        self.queue = SimulatedQueue(lambda: self.now)
        self.deliverer = Deliverer(queue=self.queue, rng=random.Random(seed), **deliverer)
        self.outcomes: list[tuple[float, AttemptMessage, str]] = []

    def next_moment(self) -> float | None:
        """The earliest time anything is due: a visible message or an event's ``dispatch_at``."""
        candidates = [t for t in (self.queue.next_visible(), _earliest_dispatch()) if t is not None]
        return min(candidates) if candidates else None

    def step(self) -> None:
        dispatch_due(now=self.now, queue=self.queue)
        for message in self.queue.receive(self.now):
            outcome = self.deliverer.deliver(message, now=self.now)
            self.outcomes.append((self.now, message, outcome.value))

    def run_until(self, end: float, max_steps: int = 500) -> None:
        for _ in range(max_steps):
            moment = self.next_moment()
            if moment is None or moment > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, moment)
            self.step()
        raise AssertionError("the simulation did not settle")


def _earliest_dispatch() -> float | None:
    earliest: float | None = None
    for shard in range(DISPATCH_SHARDS):
        for event in Event.by_dispatch.query(f"s{shard}", limit=1, scan_index_forward=True):
            if event.dispatch_at is not None and (earliest is None or event.dispatch_at < earliest):
                earliest = float(event.dispatch_at)
            break
    return earliest
