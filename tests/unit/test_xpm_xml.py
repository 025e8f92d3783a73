"""XPM XML intake and output: hardened parsing (F1/F2), size caps (F3), <Status> (F4), building (F5)."""

from __future__ import annotations

import gzip
import io
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from requests.adapters import BaseAdapter, HTTPAdapter

from chalicelib.oauth import xero_http
from chalicelib.xpm.client import XpmClient, read_body
from chalicelib.xpm.errors import (
    InvalidField,
    XpmNotFound,
    XpmRateLimited,
    XpmUnavailable,
    XpmValidationFailed,
    sanitise_description,
)
from chalicelib.xpm.xml import (
    ExternalResourceRefused,
    build,
    check_status,
    check_text,
    hardened_parser,
    parse_response,
    parse_xml,
)

MB = 1024 * 1024
OK = b"<?xml version='1.0' encoding='utf-8'?>\n<Response><Status>OK</Status></Response>"


# -- parsing ---------------------------------------------------------------------------------------
def test_parses_an_ok_envelope_with_or_without_declaration_or_bom() -> None:
    for body in (OK, b"<Response><Status>OK</Status></Response>", b"\xef\xbb\xbf" + OK):
        root = parse_response(body)
        assert root.tag == "Response"
        assert root.findtext("Status") == "OK"


def test_the_3_0_api_method_attribute_is_accepted() -> None:
    root = parse_response(b'<Response api-method="Get"><Status>OK</Status></Response>')
    check_status(root)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<Response><Status>OK</Status>",  # truncated
        b"<!doctype html><title>503</title><h1>Service Unavailable</h1>",
        b'{"title": "Forbidden", "status": 403}',
        "<?xml version='1.0' encoding='utf-16'?><Response/>".encode("utf-16"),
        b"<Response><Status>&undeclared;</Status></Response>",
    ],
)
def test_anything_but_well_formed_utf8_xml_is_upstream_unavailable(body: bytes) -> None:
    with pytest.raises(XpmUnavailable) as caught:
        parse_response(body)
    assert caught.value.status == 502
    assert caught.value.code == "upstream_unavailable"


def test_a_root_other_than_response_is_an_unexpected_shape() -> None:
    with pytest.raises(XpmUnavailable) as caught:
        parse_response(b"<Client><Name>x</Name></Client>")
    assert caught.value.reason == "unexpected_shape"


def test_a_document_over_the_cap_is_refused_before_parsing() -> None:
    with pytest.raises(XpmUnavailable) as caught:
        parse_response(OK, max_bytes=len(OK) - 1)
    assert caught.value.reason == "oversized"


# -- the defusedxml README payloads (F1/F2) --------------------------------------------------------
@pytest.fixture
def canary(tmp_path: Path) -> Path:
    secret = tmp_path / "canary.txt"
    secret.write_text("CANARY-7f3a9 local file that must never be read")
    return secret


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    ]
    return (
        f'<?xml version="1.0"?><!DOCTYPE Response [{"".join(entities)}]>'
        "<Response><Status>&lol9;</Status></Response>"
    ).encode()


def quadratic_blowup() -> bytes:
    a = "a" * 50_000
    return (
        f'<!DOCTYPE Response [<!ENTITY a "{a}">]><Response><Status>{"&a;" * 50_000}</Status></Response>'
    ).encode()


def attack_payloads(canary: Path) -> dict[str, bytes]:
    uri = canary.as_uri()
    return {
        "billion_laughs": billion_laughs(),
        "quadratic_blowup": quadratic_blowup(),
        "external_entity": (
            f'<!DOCTYPE Response [<!ENTITY x SYSTEM "{uri}">]><Response><Status>&x;</Status></Response>'
        ).encode(),
        "parameter_entity": (
            f'<!DOCTYPE Response [<!ENTITY % p SYSTEM "{uri}"> %p;]><Response><Status>OK</Status></Response>'
        ).encode(),
        "remote_dtd": (
            b'<!DOCTYPE Response SYSTEM "http://127.0.0.1:9/evil.dtd"><Response><Status>OK</Status></Response>'
        ),
        "internal_subset_only": b"<!DOCTYPE Response []><Response><Status>OK</Status></Response>",
        "lowercase_doctype": b'<!doctype Response [<!entity x "y">]><Response><Status>OK</Status></Response>',
    }


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
def test_dtd_and_entity_payloads_are_refused_fast_small_and_without_reading_files(
    name: str, canary: Path
) -> None:
    payload = attack_payloads(canary)[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(XpmUnavailable) as caught:
            parse_response(payload)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05
    assert peak < 10 * MB
    # The error is ours: no upstream text, and certainly not the canary's.
    rendered = str(caught.value.to_problem())
    assert "CANARY" not in rendered
    assert "ENTITY" not in rendered


@pytest.mark.parametrize("name", ["billion_laughs", "quadratic_blowup", "external_entity", "remote_dtd"])
def test_the_parser_alone_expands_nothing(name: str, canary: Path) -> None:
    """F2: even without the pre-scan, the lxml parser's own settings keep entities unexpanded."""
    payload = attack_payloads(canary)[name]
    try:
        root = etree.fromstring(payload, hardened_parser())
    except (etree.XMLSyntaxError, ExternalResourceRefused):
        return  # refused outright (entity amplification limit, network, resolver)
    serialised = etree.tostring(root)
    assert b"CANARY" not in serialised
    assert len(serialised) < 1000


def test_the_parser_alone_reads_no_file_named_by_a_parameter_entity(tmp_path: Path) -> None:
    """A canary DTD declares ``leak``; had libxml2 read it, ``leak`` would be declared."""
    canary_dtd = tmp_path / "canary.dtd"
    canary_dtd.write_text('<!ENTITY leak "CANARY-READ">')
    payload = (
        f'<!DOCTYPE Response [<!ENTITY % p SYSTEM "{canary_dtd.as_uri()}"> %p;]>'
        "<Response><Status>&leak;</Status></Response>"
    ).encode()
    try:
        root = etree.fromstring(payload, hardened_parser())
    except ExternalResourceRefused:
        return
    dtd = root.getroottree().docinfo.internalDTD
    assert "leak" not in [entity.name for entity in dtd.iterentities()]


def test_a_doctype_hidden_behind_whitespace_is_still_found() -> None:
    with pytest.raises(XpmUnavailable):
        parse_xml(b"<!  DOCTYPE Response><Response/>")


# -- <Status> (F4) and the not-found rule --------------------------------------------------------
def error(description: str, api_method: str = "") -> Any:
    attribute = f' api-method="{api_method}"' if api_method else ""
    body = (
        f"<Response{attribute}><Status>ERROR</Status>"
        f"<ErrorDescription>{description}</ErrorDescription></Response>"
    )
    return parse_response(body.encode())


def test_ok_passes() -> None:
    check_status(parse_response(OK))
    check_status(parse_response(OK), names_client=True)


def test_error_is_a_validation_failure_carrying_xpms_message() -> None:
    with pytest.raises(XpmValidationFailed) as caught:
        check_status(error("Invalid business structure 'Cooperative'"))
    assert caught.value.status == 422
    assert caught.value.code == "xpm_validation_failed"
    assert caught.value.detail == "Invalid business structure 'Cooperative'"


@pytest.mark.parametrize(
    "description",
    ["Invalid client identifier", "invalid client identifier.", "Unknown client UUID", "Client not found"],
)
def test_an_unknown_client_is_not_found_when_the_call_names_a_client(description: str) -> None:
    with pytest.raises(XpmNotFound) as caught:
        check_status(error(description, "Get"), names_client=True)
    assert (caught.value.status, caught.value.code) == (404, "xpm_client_not_found")
    with pytest.raises(XpmValidationFailed):
        check_status(error(description))


@pytest.mark.parametrize(
    "description",
    ["Invalid billing client identifier", "Invalid related client identifier", "Name is required"],
)
def test_errors_about_body_fields_stay_validation_failures(description: str) -> None:
    with pytest.raises(XpmValidationFailed):
        check_status(error(description), names_client=True)


def test_an_error_without_description_still_says_something() -> None:
    with pytest.raises(XpmValidationFailed) as caught:
        check_status(parse_response(b"<Response><Status>ERROR</Status></Response>"))
    assert caught.value.detail


@pytest.mark.parametrize(
    "body",
    [
        b"<Response><Clients/></Response>",
        b"<Response><Status/></Response>",
        b"<Response><Status>WARNING</Status></Response>",
        b"<Response><Status>ok</Status></Response>",
    ],
)
def test_a_missing_or_unknown_status_is_unexpected(body: bytes) -> None:
    with pytest.raises(XpmUnavailable) as caught:
        check_status(parse_response(body))
    assert caught.value.reason == "unexpected_shape"


def test_the_description_is_sanitised() -> None:
    # XML can carry bidi overrides, zero-width and C1 characters; a description must not.
    hostile = (
        "Bad\u202e value\u200b\x85 for TaxNumber 123 456 782 (client 12345678-1234-1234-1234-123456789012)"
    )
    root = etree.fromstring(b"<Response><Status>ERROR</Status><ErrorDescription/></Response>")
    root.find("ErrorDescription").text = hostile + " " + "z" * 2000
    with pytest.raises(XpmValidationFailed) as caught:
        check_status(root)
    detail = caught.value.detail
    assert len(detail) <= 500
    assert not {"\u202e", "\u200b", "\x85"} & set(detail)
    assert "123 456 782" not in detail and "***782" in detail
    assert "12345678-1234-1234-1234-123456789012" in detail  # UUIDs are not tax numbers


def test_sanitise_description_strips_c0_controls_and_collapses_whitespace() -> None:
    assert sanitise_description("a\x00b\x07c\r\n\t d  ") == "a b c d"
    assert sanitise_description("IRD 123456789 rejected") == "IRD ***789 rejected"


# -- building (F5) ---------------------------------------------------------------------------------
def test_markup_and_ampersands_in_text_stay_literal_text() -> None:
    name = "Bloggs </Name><Evil/> & Sons <![CDATA[x]]> &amp;"
    body = build("Client", {"Name": name, "Email": "a@b.example"})
    root = parse_xml(body)
    assert [child.tag for child in root] == ["Name", "Email"]
    assert len(root.findall(".//Name")) == 1
    assert root.find("Evil") is None and not list(root.iter("Evil"))
    assert root.findtext("Name") == name


def test_build_emits_no_xml_declaration_and_utf8() -> None:
    body = build("Client", {"Name": "Zoë 😀"})
    assert body == "<Client><Name>Zoë 😀</Name></Client>".encode()


def test_none_is_an_empty_element_and_order_is_kept() -> None:
    body = build(
        "Client",
        {"Name": "A", "Phone": None, "Contacts": {"Contact": [{"Name": "X"}, {"Name": "Y"}]}, "Fax": ""},
    )
    assert body == (
        b"<Client><Name>A</Name><Phone/><Contacts><Contact><Name>X</Name></Contact>"
        b"<Contact><Name>Y</Name></Contact></Contacts><Fax></Fax></Client>"
    )


@pytest.mark.parametrize("bad", ["\x00", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\ufffe", "\ud800"])
def test_control_characters_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidField) as caught:
        build("Client", {"Contacts": {"Contact": [{"Name": "ok"}, {"Name": f"A{bad}B"}]}})
    assert caught.value.status == 422
    assert caught.value.code == "invalid_request"
    assert caught.value.to_problem()["field"] == "Client/Contacts/Contact[1]/Name"


def test_tab_newline_and_carriage_return_round_trip() -> None:
    text = "line 1\r\nline 2\n\tindented\r"
    assert check_text("x", text) == text
    assert parse_xml(build("Client", {"Address": text})).findtext("Address") == text


def test_tags_are_ours_and_checked() -> None:
    with pytest.raises(ValueError, match="element name"):
        build("Client", {"Bad Tag": "x"})


_TAGS = st.from_regex(r"\A[A-Z][A-Za-z0-9]{0,20}\Z")
_XML_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters=[chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20))]
        + [chr(c) for c in range(0x7F, 0xA0)]
        + ["\ufffe", "\uffff"],
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TAGS, _XML_TEXT, max_size=12))
def test_any_valid_field_strings_survive_build_and_parse(fields: dict[str, str]) -> None:
    root = parse_xml(build("Client", fields))
    assert {child.tag: child.text or "" for child in root} == fields


# -- size caps incl. decompression (F3) --------------------------------------------------------------
def canned_response(body: bytes, headers: dict[str, str], status: int = 200) -> requests.Response:
    """A streamed requests.Response over an in-memory socket, as HTTPAdapter builds it."""
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(body), headers=headers, status=status, preload_content=False, decode_content=False
    )
    return HTTPAdapter().build_response(requests.Request("GET", "https://xpm.test/").prepare(), raw)


def gzip_bomb(decoded_mb: int) -> bytes:
    """``decoded_mb`` MB of zeros in about 1 KB per MB: multi-member gzip, one member per MB."""
    member = gzip.compress(b"\0" * MB, compresslevel=9)
    return member * decoded_mb


def test_read_body_decodes_gzip_and_deflate() -> None:
    assert (
        read_body(
            canned_response(gzip.compress(OK), {"Content-Encoding": "gzip"}), max_body=MB, max_decoded=MB
        )
        == OK
    )
    assert (
        read_body(
            canned_response(zlib.compress(OK), {"Content-Encoding": "deflate"}), max_body=MB, max_decoded=MB
        )
        == OK
    )
    assert read_body(canned_response(OK, {}), max_body=MB, max_decoded=MB) == OK


def test_a_gzip_bomb_stops_at_the_decoded_cap_in_little_memory() -> None:
    bomb = gzip_bomb(1024)  # ~1 MB on the wire, 1 GB inflated
    assert len(bomb) < 2 * MB
    response = canned_response(bomb, {"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        with pytest.raises(XpmUnavailable) as caught:
            read_body(response, max_body=5 * MB, max_decoded=20 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "oversized"
    assert peak < 64 * MB


def test_a_single_member_bomb_also_stops_at_the_cap() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join([compressor.compress(b"\0" * MB) for _ in range(64)] + [compressor.flush()])
    with pytest.raises(XpmUnavailable, match="larger than allowed"):
        read_body(canned_response(bomb, {"Content-Encoding": "gzip"}), max_body=5 * MB, max_decoded=20 * MB)


def test_raw_bytes_over_the_cap_are_refused_even_without_content_length() -> None:
    response = canned_response(b"<" * (MB + 1), {})
    with pytest.raises(XpmUnavailable, match="larger than allowed"):
        read_body(response, max_body=MB, max_decoded=20 * MB)


def test_a_declared_content_length_over_the_cap_is_refused_before_reading() -> None:
    response = canned_response(b"", {"Content-Length": str(6 * MB)})
    with pytest.raises(XpmUnavailable, match="larger than allowed"):
        read_body(response, max_body=5 * MB, max_decoded=20 * MB)


@pytest.mark.parametrize("encoding", ["gzip, gzip", "br", "zstd", "compress"])
def test_stacked_or_unknown_codings_are_refused(encoding: str) -> None:
    with pytest.raises(XpmUnavailable) as caught:
        read_body(canned_response(b"x", {"Content-Encoding": encoding}), max_body=MB, max_decoded=MB)
    assert caught.value.reason == "unsupported_encoding"


@pytest.mark.parametrize("body", [gzip.compress(OK)[:-8], b"\x1f\x8bnot really gzip"])
def test_corrupt_or_truncated_gzip_is_unavailable(body: bytes) -> None:
    with pytest.raises(XpmUnavailable) as caught:
        read_body(canned_response(body, {"Content-Encoding": "gzip"}), max_body=MB, max_decoded=MB)
    assert caught.value.reason == "unparseable"


class BrokenStream(io.BytesIO):
    """A socket that hands out one chunk and then fails, as a reset mid-body does."""

    def __init__(self, first: bytes, failure: Exception) -> None:
        super().__init__(first)
        self.failure, self.reads = failure, 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise self.failure
        return super().read(size)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(ConnectionResetError("reset by peer"), "network"), (TimeoutError("timed out"), "timeout")],
)
def test_a_body_broken_off_midway_is_unavailable(failure: Exception, reason: str) -> None:
    raw = urllib3.HTTPResponse(
        body=BrokenStream(b"<Response><Status>OK", failure),
        status=200,
        preload_content=False,
        decode_content=False,
    )
    response = HTTPAdapter().build_response(requests.Request("GET", "https://xpm.test/").prepare(), raw)
    with pytest.raises(XpmUnavailable) as caught:
        read_body(response, max_body=MB, max_decoded=MB)
    assert caught.value.reason == reason


class CannedAdapter(BaseAdapter):
    """A transport that answers every request with the same canned response."""

    def __init__(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        super().__init__()
        self.body, self.headers, self.status, self.requests = body, headers, status, 0
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.requests += 1
        self.sent.append(request)
        assert kwargs.get("stream") is True  # the client must stream to enforce its caps
        return canned_response(self.body, self.headers, self.status)

    def close(self) -> None:
        pass


class StaticTokens:
    def access_token(self) -> str:
        return "token"

    def refreshed_access_token(self) -> str:
        raise AssertionError("no refresh expected")


@pytest.fixture
def canned_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[CannedAdapter]:
    """The broker's one Xero session, with a canned adapter mounted (this thread only)."""
    session = requests.Session()
    adapter = CannedAdapter(b"", {})
    session.mount("https://", adapter)
    monkeypatch.setattr(xero_http._local, "session", session, raising=False)
    yield adapter


def test_the_client_refuses_a_gzip_bomb_from_the_wire(canned_transport: CannedAdapter) -> None:
    canned_transport.body = gzip_bomb(100)
    canned_transport.headers = {"Content-Encoding": "gzip", "Content-Type": "application/xml"}
    client = XpmClient(base_url="https://xpm.test/practicemanager/3.0/", tenant_id="t", tokens=StaticTokens())
    with pytest.raises(XpmUnavailable) as caught:
        client.list_staff()
    assert caught.value.reason == "oversized"
    assert canned_transport.requests == 1


def test_the_client_reads_a_gzipped_answer(canned_transport: CannedAdapter) -> None:
    staff = (
        b"<Response><Status>OK</Status>"
        b"<StaffList><Staff><UUID>u</UUID><Name>Jo</Name></Staff></StaffList></Response>"
    )
    canned_transport.body = gzip.compress(staff)
    canned_transport.headers = {"Content-Encoding": "gzip"}
    client = XpmClient(base_url="https://xpm.test/practicemanager/3.0/", tenant_id="t", tokens=StaticTokens())
    assert client.list_staff()[0]["name"] == "Jo"


# -- odd answers the sandbox never gives, through the client -------------------------------------
def canned_client() -> XpmClient:
    return XpmClient(
        base_url="https://xpm.test/practicemanager/3.0", tenant_id="tenant-1", tokens=StaticTokens()
    )


def test_the_request_carries_xeros_headers_and_xml(canned_transport: CannedAdapter) -> None:
    canned_transport.body = b"<Response><Status>OK</Status></Response>"
    canned_client().add_relationship(
        "94bfb8c1-d8f8-4457-84c5-d978a0d71de9",
        {"type": "Public Officer", "related_client_uuid": "38794f37-2bbd-4906-84ad-1693df5cc3ad"},
    )
    [sent] = canned_transport.sent
    assert sent.method == "POST"
    assert sent.url == "https://xpm.test/practicemanager/3.0/client.api/addrelationship"
    assert sent.headers["Authorization"] == "Bearer token"
    assert sent.headers["xero-tenant-id"] == "tenant-1"
    assert sent.headers["Accept"] == "application/xml"
    assert sent.headers["Content-Type"] == "application/xml"
    assert isinstance(sent.body, bytes) and not sent.body.startswith(b"<?xml")
    assert parse_xml(sent.body).findtext("Type") == "Public Officer"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"Oops, <b>not xml", "unparseable"),
        (200, b"<Response><Clients/></Response>", "unexpected_shape"),
        (302, b"", "http_302"),
        (400, b'{"title": "Bad Request"}', "http_400"),
        (404, b"<Response><Status>OK</Status></Response>", "http_404"),
        (
            500,
            b"<Response><Status>ERROR</Status><ErrorDescription>boom</ErrorDescription></Response>",
            "http_5xx",
        ),
    ],
)
def test_odd_answers_are_unavailable(
    canned_transport: CannedAdapter, status: int, body: bytes, reason: str
) -> None:
    canned_transport.status, canned_transport.body = status, body
    with pytest.raises(XpmUnavailable) as caught:
        canned_client().list_groups()
    assert caught.value.reason == reason
    assert "boom" not in str(caught.value.to_problem()) and "Oops" not in str(caught.value.to_problem())


def test_an_error_envelope_with_http_200_is_still_an_error(canned_transport: CannedAdapter) -> None:
    canned_transport.body = (
        b"<Response><Status>ERROR</Status><ErrorDescription>Nope</ErrorDescription></Response>"
    )
    with pytest.raises(XpmValidationFailed, match="Nope"):
        canned_client().list_staff()


def test_retry_after_as_an_http_date(canned_transport: CannedAdapter) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    canned_transport.status = 429
    canned_transport.headers = {
        "Retry-After": format_datetime(when, usegmt=True),
        "X-Rate-Limit-Problem": "day",
    }
    with pytest.raises(XpmRateLimited) as caught:
        canned_client().list_staff()
    assert 110 <= caught.value.retry_after <= 121
    assert caught.value.problem == "day"


@pytest.mark.parametrize(("header", "expected"), [(None, 1), ("soon", 1), ("0", 1), ("30", 30)])
def test_retry_after_defaults_to_a_second(
    canned_transport: CannedAdapter, header: str | None, expected: int
) -> None:
    canned_transport.status = 429
    canned_transport.headers = {
        "X-Rate-Limit-Problem": "concurrent",
        **({"Retry-After": header} if header else {}),
    }
    with pytest.raises(XpmRateLimited) as caught:
        canned_client().list_staff()
    assert caught.value.retry_after == expected
    assert caught.value.headers["Retry-After"] == str(expected)


def test_a_hostile_rate_limit_problem_is_dropped(canned_transport: CannedAdapter) -> None:
    canned_transport.status = 429
    canned_transport.headers = {"X-Rate-Limit-Problem": "<script>alert(1)</script>", "Retry-After": "5"}
    with pytest.raises(XpmRateLimited) as caught:
        canned_client().list_staff()
    assert caught.value.problem is None and "limit" not in caught.value.to_problem()


def test_only_https_web_urls_are_passed_on(canned_transport: CannedAdapter) -> None:
    canned_transport.body = (
        b"<Response><Status>OK</Status><WebUrl>javascript:alert(1)</WebUrl>"
        b"<Client><UUID>f8235e1a-d383-48b7-9139-ba97ab8ca889</UUID><Name>A</Name></Client></Response>"
    )
    assert canned_client().get_client("f8235e1a-d383-48b7-9139-ba97ab8ca889")["web_url"] is None


def test_a_get_without_a_client_is_an_unexpected_shape(canned_transport: CannedAdapter) -> None:
    canned_transport.body = b"<Response><Status>OK</Status></Response>"
    with pytest.raises(XpmUnavailable) as caught:
        canned_client().get_client("f8235e1a-d383-48b7-9139-ba97ab8ca889")
    assert caught.value.reason == "unexpected_shape"


def test_a_next_link_without_a_page_token_is_an_unexpected_shape(canned_transport: CannedAdapter) -> None:
    canned_transport.body = (
        b"<Response><Status>OK</Status><Clients/><Pagination><Links>"
        b"<Next>https://elsewhere.example/steal?pageSize=100</Next></Links></Pagination></Response>"
    )
    with pytest.raises(XpmUnavailable):
        canned_client().paged_clients()
    # paged-list goes to 3.1 even when the client was made for 3.0 (§3.3.2).
    assert canned_transport.sent[0].url.startswith(
        "https://xpm.test/practicemanager/3.1/client.api/paged-list?"
    )
