"""The SSRF guard (security-checklist E11, E13): a table of URLs, then Hypothesis over the blocked
ranges in every spelling a URL parser or resolver might accept."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.tenants.urls import check_registered_url, check_webhook_url
from chalicelib.webhooks.ssrf import UnsafeUrl, check_url, is_blocked, parse_target

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def public(host: str, port: int) -> list[str]:
    return [PUBLIC_V4]


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.vendor.example/in",
        "https://hooks.vendor.example:443/in?x=1",
        "https://hooks.vendor.example:8443/in",
        "https://HOOKS.Vendor.Example./in",  # case and the absolute (trailing-dot) form of a name
        f"https://{PUBLIC_V4}/in",
        f"https://[{PUBLIC_V6}]/in",
        "https://bücher.example/hooks",  # IDN, sent as punycode
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    checked = check_url(url, local_stage=False, resolver=public)
    assert all(not is_blocked(a) for a in checked.addresses)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.vendor.example/in", "https"),
        ("https://hooks.vendor.example:8080/in", "port"),
        ("https://hooks.vendor.example:80/in", "port"),
        ("https://user:pw@hooks.vendor.example/in", "user information"),
        ("https://user@hooks.vendor.example/in", "user information"),
        ("https://hooks.vendor.example/in#frag", "fragment"),
        ("ftp://hooks.vendor.example/in", "https"),
        ("//hooks.vendor.example/in", "https"),
        ("https://hooks vendor.example/", "spaces"),
        ("https://hooks.vendor.example\\@evil.example/", "backslash"),
        ("https://127.0.0.1:9001/2018-06-01/runtime/invocation/next", "port"),  # the Lambda Runtime API
        ("https://127.0.0.1/", "non-public"),
        ("https://localhost/", "loopback"),
        ("https://api.localhost/", "fully qualified"),
        ("https://intranet/", "fully qualified"),
        ("https://169.254.169.254/latest/meta-data/", "non-public"),
        ("https://169.254.170.2/v2/credentials", "non-public"),
        ("https://[::1]/", "non-public"),
        ("https://[::ffff:127.0.0.1]/", "non-public"),
        ("https://[::ffff:7f00:1]/", "non-public"),
        ("https://[64:ff9b::a9fe:a9fe]/", "non-public"),  # NAT64 of 169.254.169.254
        ("https://[2002:a00:1::]/", "non-public"),  # 6to4 of 10.0.0.1
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://[fd00::1]/", "non-public"),
        ("https://2130706433/", "non-standard"),
        ("https://0177.0.0.1/", "non-standard"),
        ("https://0x7f.0.0.1/", "non-standard"),
        ("https://0x7f000001/", "non-standard"),
        ("https://127.1/", "non-standard"),
        ("https://127.0.0.1./", "non-public"),
        ("https://%31%32%37.0.0.1/", "non-standard"),
        ("https://%6cocalhost.example/", "characters"),
        ("https://100.64.0.1/", "non-public"),  # CGNAT: not is_private, but not global either
        ("https://198.18.0.1/", "non-public"),
        ("https://0.0.0.0/", "non-public"),
        ("https://224.0.0.1/", "non-public"),
        ("https://" + "a" * 250 + ".example/", "host of"),
    ],
)
def test_unsafe_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        check_url(url, local_stage=False, resolver=public)
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    "bad", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fd12::1", "::ffff:10.0.0.1"]
)
def test_a_name_with_any_non_public_address_is_refused(bad: str) -> None:
    """Every A/AAAA record counts: one private address among public ones refuses the name."""
    with pytest.raises(UnsafeUrl, match="non-public"):
        check_url("https://hooks.vendor.example/", local_stage=False, resolver=resolving_to(PUBLIC_V4, bad))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError("NXDOMAIN")

    with pytest.raises(UnsafeUrl) as refused:
        check_url("https://nowhere.vendor.example/", local_stage=False, resolver=nowhere)
    assert refused.value.unresolved


def test_loopback_http_only_on_the_local_stage() -> None:
    for url in ("http://127.0.0.1:8000/demo/webhooks", "http://localhost:9/x", "http://[::1]:8000/x"):
        assert check_url(
            url, local_stage=True, resolver=resolving_to("127.0.0.1", "::1")
        ).target.loopback_allowed
        with pytest.raises(UnsafeUrl):
            check_url(url, local_stage=False, resolver=resolving_to("127.0.0.1"))
    # Even locally: http only to loopback, and a loopback name must resolve to loopback only.
    with pytest.raises(UnsafeUrl, match="https"):
        check_url("http://hooks.vendor.example/", local_stage=True, resolver=public)
    with pytest.raises(UnsafeUrl, match="loopback addresses only"):
        check_url("http://localhost:8000/", local_stage=True, resolver=resolving_to(PUBLIC_V4))
    with pytest.raises(UnsafeUrl, match="non-public"):
        check_url("https://10.0.0.1/", local_stage=True, resolver=public)


def test_registration_maps_refusals_to_invalid_url_and_return_urls_keep_their_rules() -> None:
    from chalicelib.errors import BrokerError
    from chalicelib.webhooks import ssrf

    ssrf.use_resolver(public)
    try:
        assert check_webhook_url("https://hooks.vendor.example/", local_stage=False)
        with pytest.raises(BrokerError) as refused:
            check_webhook_url("https://10.0.0.1/", "webhook_url", local_stage=False)
    finally:
        ssrf.use_resolver(None)
    assert (refused.value.code, refused.value.status, refused.value.extra) == (
        "invalid_url",
        422,
        {"field": "webhook_url"},
    )
    # Return URLs are never called by the broker: any https host and port, same syntax rules.
    assert check_registered_url("https://intranet.corp:8080/done", "return_url", local_stage=False)
    assert check_registered_url("http://127.0.0.1:8000/demo", "return_url", local_stage=True)
    for url in ("http://acme.example/done", "https://u@acme.example/", "https://acme.example/#x"):
        with pytest.raises(BrokerError):
            check_registered_url(url, "return_url", local_stage=False)


# -- Hypothesis: every blocked address, every spelling -------------------------------------------

BLOCKED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
BLOCKED_V6 = ["::1/128", "fc00::/7", "fe80::/10", "ff00::/8"]


def _in(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    network = ipaddress.ip_network(cidr)
    first, last = int(network.network_address), int(network.broadcast_address)
    return st.integers(first, last).map(ipaddress.ip_address)


blocked_v4 = st.one_of(*(_in(c) for c in BLOCKED_V4))
blocked_v6 = st.one_of(*(_in(c) for c in BLOCKED_V6))


def spellings(address: ipaddress.IPv4Address) -> list[str]:
    """The ways a URL host can name an IPv4 address (WHATWG and inet_aton accept most of them)."""
    octets = [int(p) for p in str(address).split(".")]
    value = int(address)
    return [
        str(address),  # dotted
        f"{address}.",  # trailing dot
        str(value),  # decimal 2130706433
        hex(value),  # 0x7f000001
        ".".join(f"0{o:o}" for o in octets),  # octal 0177.0.0.01
        ".".join(hex(o) for o in octets),  # hex per octet 0x7f.0x0.0x0.0x1
        f"{octets[0]}.{(value & 0xFFFFFF)}",  # short a.b (127.1)
        f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",  # short a.b.c
        f"[::ffff:{address}]",  # IPv4-mapped, dotted
        f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]",  # IPv4-mapped, hex
        f"[64:ff9b::{address}]",  # NAT64
        f"[2002:{value >> 16:x}:{value & 0xFFFF:x}::]",  # 6to4
    ]


@settings(max_examples=300, deadline=None)
@given(blocked_v4)
def test_blocked_ipv4_addresses_are_refused_in_every_spelling(address: ipaddress.IPv4Address) -> None:
    for host in spellings(address):
        url = f"https://{host}/hooks"
        with pytest.raises(UnsafeUrl):
            check_url(url, local_stage=False, resolver=public)


@settings(max_examples=200, deadline=None)
@given(blocked_v6)
def test_blocked_ipv6_addresses_are_refused(address: ipaddress.IPv6Address) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(f"https://[{address}]/hooks", local_stage=False, resolver=public)
    # ... and as the answer of a resolver for an innocent-looking name
    with pytest.raises(UnsafeUrl):
        check_url("https://hooks.vendor.example/", local_stage=False, resolver=resolving_to(str(address)))


@settings(max_examples=200, deadline=None)
@given(blocked_v4)
def test_a_resolver_answering_a_blocked_ipv4_is_refused(address: ipaddress.IPv4Address) -> None:
    for answer in (str(address), f"::ffff:{address}", f"64:ff9b::{address}"):
        with pytest.raises(UnsafeUrl):
            check_url("https://hooks.vendor.example/", local_stage=False, resolver=resolving_to(answer))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_any_ipv4_is_accepted_exactly_when_it_is_global(address: ipaddress.IPv4Address) -> None:
    allowed = address.is_global and not (address.is_multicast or address.is_reserved)
    allowed = allowed and not any(address in ipaddress.ip_network(c) for c in BLOCKED_V4)
    try:
        parse_target(f"https://{address}/hooks", local_stage=False)
    except UnsafeUrl:
        assert not allowed
    else:
        assert allowed
