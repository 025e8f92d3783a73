"""The streaming reader of client lists (``xml.parse_response_items`` / ``mapping.read_clients``):
the same answers and the same refusals as ``parse_response`` + ``clients_json``, in less memory."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.xpm.errors import XpmUnavailable
from chalicelib.xpm.mapping import clients_json, read_clients
from chalicelib.xpm.xml import check_status, parse_response
from tests.unit.test_xpm_mapping import DETAILED
from tests.unit.test_xpm_xml import MB, attack_payloads, canary  # noqa: F401 - canary is a fixture

CLIENT = DETAILED.split(b"<Client>", 1)[1].split(b"</Client>", 1)[0]


def listed(count: int, *, extra: bytes = b"") -> bytes:
    clients = b"".join(
        b"<Client>" + CLIENT.replace(b"Acme", b"Acme %d" % i) + b"</Client>" for i in range(count)
    )
    return b"<Response><Status>OK</Status><Clients>" + clients + b"</Clients>" + extra + b"</Response>"


def both(body: bytes, **kwargs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    root, streamed = read_clients(body, **kwargs)
    check_status(root)
    return streamed, clients_json(parse_response(body, **kwargs))


def test_a_list_reads_the_same_streamed_as_from_a_tree() -> None:
    streamed, whole = both(listed(25))
    assert len(streamed) == 25
    assert streamed == whole
    assert streamed[3]["name"] != streamed[4]["name"]


def test_only_clients_of_the_listing_are_taken_and_the_rest_of_the_root_stays() -> None:
    body = (
        b"<Response><Status>OK</Status><Other><Client><Name>not listed</Name></Client></Other>"
        b"<Clients><Client><Name>A</Name><Client><Name>nested</Name></Client></Client>"
        b"<!-- a comment --><Client><Name>B</Name></Client></Clients>"
        b"<Pagination><Links><Next>https://x/?pageToken=t2</Next></Links></Pagination></Response>"
    )
    streamed, whole = both(body)
    assert [c["name"] for c in streamed] == ["A", "B"]
    assert streamed == whole
    root, _ = read_clients(body)
    assert root.findtext("Pagination/Links/Next") == "https://x/?pageToken=t2"
    assert root.findtext("Other/Client/Name") == "not listed"


@pytest.mark.parametrize(
    "body",
    [b"<Response><Status>OK</Status><Clients /></Response>", b"<Response><Status>OK</Status></Response>"],
)
def test_no_clients_is_an_empty_list(body: bytes) -> None:
    assert both(body) == ([], [])


def test_an_error_envelope_keeps_its_status_for_the_check() -> None:
    root, clients = read_clients(
        b"<Response><Status>ERROR</Status><ErrorDescription>x</ErrorDescription></Response>"
    )
    assert clients == [] and root.findtext("Status") == "ERROR"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Other><Clients><Client><Name>A</Name></Client></Clients></Other>", "unexpected_shape"),
        (listed(3)[:-40], "unparseable"),  # truncated after some clients were mapped
        (b"<Response><Status>OK</Status><Clients><Client><Name>&undeclared;</Name></Client>", "unparseable"),
        (b"", "unparseable"),
        ("<?xml version='1.0' encoding='utf-16'?><Response/>".encode("utf-16"), "unparseable"),
    ],
)
def test_what_parse_response_refuses_the_stream_refuses(body: bytes, reason: str) -> None:
    with pytest.raises(XpmUnavailable) as streamed:
        read_clients(body)
    with pytest.raises(XpmUnavailable) as whole:
        parse_response(body)
    assert streamed.value.reason == reason
    assert whole.value.status == streamed.value.status == 502


def test_the_size_cap_applies_before_parsing() -> None:
    body = listed(2)
    with pytest.raises(XpmUnavailable) as caught:
        read_clients(body, max_bytes=len(body) - 1)
    assert caught.value.reason == "oversized"


@pytest.mark.parametrize(
    "name",
    [
        "billion_laughs",
        "quadratic_blowup",
        "external_entity",
        "parameter_entity",
        "remote_dtd",
        "internal_subset_only",
        "lowercase_doctype",
    ],
)
def test_dtd_and_entity_payloads_are_refused_fast_and_small(name: str, canary: Path) -> None:  # noqa: F811
    payload = attack_payloads(canary)[name].replace(
        b"</Response>", b"<Clients><Client/></Clients></Response>"
    )
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(XpmUnavailable) as caught:
            read_clients(payload)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05
    assert peak < 10 * MB
    assert caught.value.reason == "dtd_forbidden"
    assert "CANARY" not in str(caught.value.to_problem())


def test_a_long_list_never_holds_its_whole_tree() -> None:
    """libxml2 parses the body 64 KB at a time and each mapped client is freed: at any moment the
    tree holds the clients of about one chunk, however long the list."""
    from lxml import etree

    from chalicelib.xpm.xml import parse_response_items

    body = listed(400)
    alive: list[int] = []

    def count(element: Any) -> None:
        alive.append(sum(1 for _ in element.getroottree().getroot().iter()))

    parse_response_items(body, ("Clients", "Client"), count)
    whole = sum(1 for _ in etree.fromstring(body).iter())
    assert len(alive) == 400
    assert len(body) > 10 * 64 * 1024
    assert max(alive) < whole / 5


_NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


@settings(max_examples=50, deadline=None)
@given(st.lists(_NAMES, max_size=8))
def test_any_names_read_the_same_both_ways(names: list[str]) -> None:
    from xml.sax.saxutils import escape

    clients = "".join(f"<Client><Name>{escape(n)}</Name><IsArchived>No</IsArchived></Client>" for n in names)
    body = f"<Response><Status>OK</Status><Clients>{clients}</Clients></Response>".encode()
    streamed, whole = both(body)
    assert streamed == whole
    assert [c["name"] for c in streamed] == [n.strip() or None for n in names]
