"""One bounded POST against real servers on 127.0.0.1 (security-checklist E4, E12, E14).

TLS is exercised with a throwaway CA: the connection goes to the pinned address 127.0.0.1 while
SNI and certificate verification use the host name, as they do for a vendor's public address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.webhooks.ssrf import CheckedTarget, Target
from chalicelib.webhooks.transport import MAX_RESPONSE_BYTES, TOTAL_TIMEOUT, Limits, post

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass
class RawServer:
    """A TCP server whose ``answer(conn)`` writes whatever bytes the test wants."""

    answer: Callable[[socket.socket], None]
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        if self.tls is not None:
            self.tls.sni_callback = lambda _s, name, _c: self.server_names.append(name)  # type: ignore[assignment]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:  # read it all: closing with unread bytes resets the connection
                body += conn.recv(65536)
            self.requests.append(data)
            self.answer(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._sock.close()


def target(port: int, scheme: str = "http", host: str = "127.0.0.1") -> CheckedTarget:
    literal = LOOPBACK if host == "127.0.0.1" else None
    return CheckedTarget(Target(scheme, host, port, "/hooks?x=1", literal, True), (LOOPBACK,))


def reply(status: str, headers: str = "", body: bytes = b"") -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode()
        conn.sendall(head + body)

    return answer


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


def serve(servers: list[RawServer], answer: Callable[[socket.socket], None], **kwargs: object) -> RawServer:
    server = RawServer(answer, **kwargs)  # type: ignore[arg-type]
    servers.append(server)
    return server


def test_a_2xx_is_read_and_the_request_is_plain(servers: list[RawServer]) -> None:
    server = serve(servers, reply("200 OK", body=b"thanks"))
    response = post(target(server.port), b'{"a":1}', {"webhook-id": "evt_1"})
    assert (response.answer.status, response.body, response.truncated) == (200, b"thanks", False)
    request = server.requests[0].decode()
    assert request.startswith("POST /hooks?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in request
    assert "User-Agent: xpm-broker-webhooks/1\r\n" in request and "webhook-id: evt_1\r\n" in request
    assert "Cookie" not in request


def test_a_redirect_to_a_private_address_is_not_followed(servers: list[RawServer]) -> None:
    internal = serve(servers, reply("200 OK"))
    server = serve(
        servers, reply("301 Moved Permanently", f"Location: http://127.0.0.1:{internal.port}/admin\r\n")
    )
    response = post(target(server.port), b"{}", {})
    assert response.answer.status == 301
    assert internal.connections == 0


def test_at_most_64_kb_of_a_10_mb_body_is_read(servers: list[RawServer]) -> None:
    big = b"x" * (10 * 1024 * 1024)
    server = serve(servers, reply("200 OK", body=big))
    started = time.monotonic()
    response = post(target(server.port), b"{}", {})
    assert len(response.body) == MAX_RESPONSE_BYTES == 64 * 1024
    assert response.truncated
    assert response.answer.status == 200
    assert time.monotonic() - started < 5


def test_a_trickling_server_is_cut_off_at_the_total_deadline(servers: list[RawServer]) -> None:
    """E14: one byte at a time resets per-read timeouts; only a total deadline stops it."""

    def trickle(conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"." * 100:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)

    server = serve(servers, trickle)
    started = time.monotonic()
    response = post(target(server.port), b"{}", {}, limits=Limits(total_timeout=1.0))
    elapsed = time.monotonic() - started
    assert response.answer.error == "timeout" and response.answer.status is None
    assert 0.9 <= elapsed < 2.0
    assert TOTAL_TIMEOUT == 15.0  # the production limit


def test_a_silent_server_times_out(servers: list[RawServer]) -> None:
    server = serve(servers, lambda conn: time.sleep(3))
    response = post(target(server.port), b"{}", {}, limits=Limits(total_timeout=0.5))
    assert response.answer.error == "timeout"


def test_a_refused_connection_is_a_connection_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert post(target(port), b"{}", {}).answer.error == "connection"


# -- TLS to a pinned address -------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def client(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        return context

    def server(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_pki(tmp_path: Path, name: str) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


def test_tls_goes_to_the_pinned_address_with_sni_and_verifies_the_name(
    servers: list[RawServer], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, "hooks.vendor.test")
    server = serve(servers, reply("204 No Content"), tls=pki.server())
    checked = target(server.port, "https", "hooks.vendor.test")  # never resolved: 127.0.0.1 is pinned
    response = post(checked, b"{}", {}, tls=pki.client())
    assert response.answer.status == 204, response.answer
    assert server.server_names == ["hooks.vendor.test"]
    assert f"Host: hooks.vendor.test:{server.port}\r\n" in server.requests[0].decode()


def test_a_certificate_for_another_name_is_a_tls_failure(servers: list[RawServer], tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "someone-else.test")
    server = serve(servers, reply("204 No Content"), tls=pki.server())
    response = post(target(server.port, "https", "hooks.vendor.test"), b"{}", {}, tls=pki.client())
    assert response.answer.error == "tls"
    assert server.requests == []


def test_an_untrusted_certificate_is_a_tls_failure(servers: list[RawServer], tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "hooks.vendor.test")
    server = serve(servers, reply("204 No Content"), tls=pki.server())
    response = post(target(server.port, "https", "hooks.vendor.test"), b"{}", {})  # system trust store
    assert response.answer.error == "tls"
