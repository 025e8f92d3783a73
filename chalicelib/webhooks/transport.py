"""One bounded POST to an address the SSRF guard checked (security-checklist E4, E12, E14).

- Connects to the *checked* IP address, never to the name again (no DNS rebinding between check
  and connect); for https the TLS handshake still sends the host name as SNI and verifies the
  certificate for that name, and the Host header carries the name.
- 5 s to connect, 15 s for everything (a watchdog shuts the socket at the deadline, so a peer
  trickling one byte per second cannot hold the worker), at most 64 KB of the body read.
- No redirects (3xx is an answer like any other), no cookies, a fixed User-Agent.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chalicelib.webhooks.retry import Answer, parse_retry_after
from chalicelib.webhooks.ssrf import CheckedTarget, IPAddress

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "xpm-broker-webhooks/1"

Connector = Callable[[tuple[str, int], float], socket.socket]


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = CONNECT_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    max_response_bytes: int = MAX_RESPONSE_BYTES


@dataclass(frozen=True)
class Response:
    answer: Answer
    body: bytes = b""
    truncated: bool = False
    address: str | None = None
    elapsed: float = 0.0


def open_tcp(address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection to an IP address (no name lookup: the address was checked)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Watch:
    deadline: float
    active: list[socket.socket]
    cancelled: bool = False


class _Watchdog:
    """One thread that shuts sockets whose total deadline passed (a Timer per POST would start
    a thread per delivery, which costs more than the delivery's own work)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, active: list[socket.socket]) -> _Watch:
        entry = _Watch(deadline, active)
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._order), entry))
            self._ready.notify()
        return entry

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._heap:
                    self._ready.wait()
                deadline, _, entry = self._heap[0]
                if entry.cancelled:
                    heapq.heappop(self._heap)
                    continue
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._ready.wait(remaining)
                    continue
                heapq.heappop(self._heap)
            _shutdown(entry.active)


_watchdog = _Watchdog()


_default_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def default_tls_context() -> ssl.SSLContext:
    """The system trust store, hostname checks on (built once: loading CAs is slow)."""
    global _default_tls  # noqa: PLW0603 - one context per process
    with _tls_lock:
        if _default_tls is None:
            _default_tls = ssl.create_default_context()
        return _default_tls


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) over a socket this module opened to a checked address."""

    def __init__(self, host: str, port: int, sock: socket.socket) -> None:
        super().__init__(host, port)
        self.sock = sock

    def connect(self) -> None:  # the socket is already connected; never resolve ``host``
        if self.sock is None:
            raise http.client.NotConnected()


def post(
    checked: CheckedTarget,
    body: bytes,
    headers: Mapping[str, str],
    *,
    limits: Limits | None = None,
    tls: ssl.SSLContext | None = None,
    connector: Connector = open_tcp,
    now: Callable[[], float] = time.time,
) -> Response:
    """POST ``body`` to ``checked``; failures come back as an ``Answer`` with an error, never raise."""
    limits = limits or Limits()
    started = time.monotonic()
    deadline = started + limits.total_timeout
    target = checked.target
    raw, address, error = _connect(checked, connector, limits.connect_timeout, deadline)
    if raw is None:
        return Response(Answer(None, error), elapsed=time.monotonic() - started)
    raw.settimeout(max(0.01, deadline - time.monotonic()))
    active = [raw]  # the socket in use: the TLS wrapper takes over the raw socket's descriptor
    watch = _watchdog.watch(deadline, active)
    try:
        if target.scheme == "https":
            active[0] = (tls or default_tls_context()).wrap_socket(raw, server_hostname=target.host)
        connection = _PinnedConnection(target.host, target.port, active[0])
        request_headers = {
            "Host": target.host_header,
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
            **headers,
        }
        connection.request("POST", target.path, body=body, headers=request_headers)
        response = connection.getresponse()
        content, truncated = _read_capped(response, limits.max_response_bytes)
        if time.monotonic() >= deadline - 0.05 or (not truncated and response.length):
            # Cut off by the watchdog, or the peer closed before the body ended: the answer did
            # not arrive whole within the limit, so it is no answer (success = 2xx within 15 s).
            raise http.client.IncompleteRead(content)
        retry_after = parse_retry_after(response.getheader("Retry-After"), now())
        answer = Answer(response.status, None, retry_after)
        return Response(answer, content, truncated, str(address), time.monotonic() - started)
    except ssl.SSLError:
        error = "tls"
    except (TimeoutError, OSError, http.client.HTTPException, ValueError):
        error = "connection"
    finally:
        watch.cancelled = True
        _close(active[0])
    if time.monotonic() >= deadline - 0.05:
        error = "timeout"  # whatever broke, it broke because the watchdog closed the socket
    return Response(Answer(None, error), address=str(address), elapsed=time.monotonic() - started)


def _connect(
    checked: CheckedTarget, connector: Connector, connect_timeout: float, deadline: float
) -> tuple[socket.socket | None, IPAddress | None, str]:
    """Try the checked addresses in order; the first that accepts is the one used."""
    error = "connection"
    for address in checked.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None, "timeout"
        try:
            return (
                connector((str(address), checked.target.port), min(connect_timeout, remaining)),
                address,
                "",
            )
        except TimeoutError:
            error = "timeout"
        except OSError:
            error = "connection"
    return None, None, error


def _read_capped(response: http.client.HTTPResponse, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether there was more (which is never read)."""
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = response.read(cap - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    more = response.read(1)
    return b"".join(chunks), bool(more)


def _shutdown(active: list[socket.socket]) -> None:
    # socket.socket's own shutdown, also for an SSLSocket: end the connection under the TLS
    # layer so a read blocked in another thread returns at once.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(active[0], socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
