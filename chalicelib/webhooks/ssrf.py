"""The one SSRF guard for URLs the broker will POST to (security-checklist E11 to E13).

Checked at registration *and* before every delivery (DNS may have changed since):

- https only, port 443 or 8443; no userinfo, no fragment, host at most 253 characters;
- an IP-literal host must be spelled as a plain dotted quad or a bracketed IPv6 address: decimal
  (``2130706433``), octal (``0177.0.0.1``), hex (``0x7f.1``) and short (``127.1``) spellings are
  refused outright, since resolvers and URL parsers disagree about them;
- every A/AAAA address the name resolves to must be globally routable (``is_global``, not
  multicast/reserved) and outside the explicit deny list; IPv4-mapped, NAT64, 6to4 and Teredo
  IPv6 addresses are unwrapped and their IPv4 address checked too.

The caller then connects to one of the *checked* addresses (``transport.py``): the name is never
resolved again for that attempt, so a rebinding DNS answer cannot redirect the connection.

On the local stage only, loopback hosts (``127.0.0.1``, ``localhost``, ``::1``) are allowed,
over http or https and on any port, so the demo vendor and the tests can receive webhooks.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

ALLOWED_PORTS = frozenset({443, 8443})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253

# Checklist E11's explicit list, checked in addition to ``is_global`` (belt and braces: the
# ``ipaddress`` tables change between Python versions).
DENIED_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",  # incl. 169.254.169.254 (instance metadata) and 169.254.170.2 (ECS)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "2001:db8::/32",
        "64:ff9b:1::/48",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HEX_NUMBER = re.compile(r"^0x[0-9a-f]*$")
_CANONICAL_OCTET = re.compile(r"^(0|[1-9][0-9]{0,2})$")


class UnsafeUrl(Exception):
    """The URL may not be called: ``reason`` says why (safe to show to the vendor)."""

    def __init__(self, reason: str, *, unresolved: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unresolved = unresolved  # the name did not resolve (may be transient), nothing refused


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntax checks: where to connect and what to send as Host/SNI."""

    scheme: str
    host: str  # lower case, without a trailing dot or IPv6 brackets
    port: int
    path: str  # path and query, as sent in the request line
    literal: IPAddress | None  # the host, when it is an IP address
    loopback_allowed: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if self.literal is not None and self.literal.version == 6 else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class CheckedTarget:
    """A target and the addresses it resolved to, every one of them allowed (connect to these)."""

    target: Target
    addresses: tuple[IPAddress, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """Every A/AAAA address of ``host`` (``socket.getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_resolver: Resolver = system_resolver


def use_resolver(resolver: Resolver | None) -> None:
    """Replace the resolver (tests and benchmarks; ``None`` restores ``getaddrinfo``)."""
    global _resolver  # noqa: PLW0603 - one process-wide resolver, swappable for tests
    _resolver = resolver or system_resolver


def check_url(url: str, *, local_stage: bool, resolver: Resolver | None = None) -> CheckedTarget:
    """Syntax, then resolution: the target and its allowed addresses, or ``UnsafeUrl``."""
    target = parse_target(url, local_stage=local_stage)
    return CheckedTarget(target, resolve_target(target, resolver or _resolver))


def split_url(url: str) -> SplitResult:
    """The checks every registered URL shares (webhook and return URLs): one string, one parse."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or url != url.strip():
        raise UnsafeUrl(f"must be a non-empty URL of at most {MAX_URL_LENGTH} characters")
    if any(ch in url for ch in "\\\r\n\t ") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeUrl("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UnsafeUrl("is not a valid URL") from exc
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise UnsafeUrl("must be an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl("must not contain user information")
    if parts.fragment or url.endswith("#"):
        raise UnsafeUrl("must not contain a fragment")
    return parts


def http_allowed(parts: SplitResult, *, local_stage: bool) -> bool:
    """Plain http only for loopback on the local stage (contract.md §6)."""
    return local_stage and (parts.hostname or "") in LOOPBACK_HOSTS


def parse_target(url: str, *, local_stage: bool) -> Target:
    """The checks that need no DNS: scheme, userinfo, port, host spelling."""
    parts = split_url(url)
    host, literal = _host(parts.netloc, parts.hostname or "")
    loopback = local_stage and host in LOOPBACK_HOSTS
    if parts.scheme == "http" and not loopback:
        raise UnsafeUrl("must use https (http is allowed only for loopback on the local stage)")
    if host == "localhost" and not loopback:
        raise UnsafeUrl("must not be a loopback host")
    effective_port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    if not loopback and effective_port not in ALLOWED_PORTS:
        raise UnsafeUrl("must use port 443 or 8443")
    if literal is not None and not loopback:
        _check_address(literal)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, effective_port, path, literal, loopback)


def resolve_target(target: Target, resolver: Resolver) -> tuple[IPAddress, ...]:
    """Resolve once and check *every* address (E11): one bad address refuses the whole name."""
    if target.literal is not None:
        names: Sequence[str] = [str(target.literal)]
    else:
        try:
            names = resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl("the host name does not resolve", unresolved=True) from exc
    if not names:
        raise UnsafeUrl("the host name does not resolve", unresolved=True)
    addresses: list[IPAddress] = []
    for name in names:
        try:
            address = ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError as exc:
            raise UnsafeUrl("the host name resolved to something that is not an address") from exc
        if target.loopback_allowed:
            if not address.is_loopback:
                raise UnsafeUrl("a loopback host must resolve to loopback addresses only")
        else:
            _check_address(address)
        addresses.append(address)
    return tuple(dict.fromkeys(addresses))


def is_blocked(address: IPAddress) -> bool:
    """True unless ``address`` (and any IPv4 address embedded in it) is globally routable."""
    embedded = _embedded_ipv4(address)
    if embedded is not None and is_blocked(embedded):
        return True
    if any(address in network for network in DENIED_NETWORKS if network.version == address.version):
        return True
    if address.is_multicast or address.is_reserved or address.is_unspecified or address.is_loopback:
        return True
    if address.is_link_local or address.is_private:
        return True
    return not address.is_global


def _check_address(address: IPAddress) -> None:
    if is_blocked(address):
        raise UnsafeUrl("resolves to a private, loopback, link-local or otherwise non-public address")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    teredo_client = address.teredo[1] if address.teredo is not None else None
    compatible = ipaddress.IPv4Address(int(address)) if 1 < int(address) < 2**32 else None  # ::a.b.c.d
    return address.ipv4_mapped or address.sixtofour or teredo_client or compatible


def _host(netloc: str, hostname: str) -> tuple[str, IPAddress | None]:
    """The canonical host and, for an IP literal, its address; odd spellings are refused."""
    raw_host = netloc.rsplit("@", 1)[-1]
    if raw_host.startswith("["):
        inside = raw_host[1:].split("]", 1)[0]
        if "%" in inside:
            raise UnsafeUrl("must not use an IPv6 zone identifier")
        try:
            v6 = ipaddress.IPv6Address(inside)
        except ValueError as exc:
            raise UnsafeUrl("has an invalid IPv6 address") from exc
        return str(v6), v6
    host = hostname.lower()
    if host.endswith("."):
        host = host[:-1]  # the absolute form of the same name: check it like the name itself
    if not host or len(host) > MAX_HOST_LENGTH:
        raise UnsafeUrl(f"must have a host of 1 to {MAX_HOST_LENGTH} characters")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UnsafeUrl("has a host name that is not a valid internationalised name") from exc
    labels = host.split(".")
    if _looks_numeric(labels[-1]):
        # WHATWG URL: a host whose last label is a number is an IPv4 address; only the plain
        # dotted quad is accepted, so every parser and resolver reads the same address.
        if len(labels) != 4 or not all(_CANONICAL_OCTET.match(label) for label in labels):
            raise UnsafeUrl("spells an IPv4 address in a non-standard form (use a.b.c.d)")
        try:
            v4 = ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise UnsafeUrl("has an invalid IPv4 address") from exc
        return str(v4), v4
    if not all(_DNS_LABEL.match(label) for label in labels):
        raise UnsafeUrl("has a host name with characters outside letters, digits and hyphens")
    if host != "localhost" and (len(labels) < 2 or host.endswith(".localhost")):
        raise UnsafeUrl("must be a fully qualified public host name")
    return host, None


def _looks_numeric(label: str) -> bool:
    return bool(label) and (label.isdigit() or bool(_HEX_NUMBER.match(label)))
