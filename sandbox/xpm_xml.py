"""XPM's XML on the wire: the response envelope, value formats, and safe parsing of request bodies.

Responses are built with lxml (it escapes all text); request bodies are parsed with defusedxml,
which refuses DTDs and entity declarations, so a billion-laughs body never expands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import Element as RequestElement
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_untrusted
from flask import Response
from lxml import etree

from sandbox.xpm_errors import XpmError

CONTENT_TYPE = "application/xml; charset=utf-8"
# Xero's gateway caps request bodies (10 MB for Accounting; XPM's cap is UNVERIFIED, §2.1, §8.20).
# A client or relationship is a few kilobytes, so 1 MB is generous and bounds the parser's work.
MAX_BODY_BYTES = 1_000_000


def envelope(version: str, api_method: str, status: str = "OK") -> etree._Element:
    """``<Response><Status>…</Status></Response>``; 3.0 also names the method (§3.2)."""
    root = etree.Element("Response")
    if version == "3.0":
        root.set("api-method", api_method)
    add(root, "Status", status)
    return root


def add(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    """Append ``<tag>text</tag>``; no text gives an empty element (``<Phone />``, §3.1)."""
    child = etree.SubElement(parent, tag)
    if text:
        child.text = text
    return child


def serialize(root: etree._Element) -> bytes:
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    # Xero (.NET's XmlSerializer) writes empty elements as `<Phone />` (§3.1) where lxml writes
    # `<Phone/>`. lxml escapes ">" in text and attribute values, so "/>" only ends empty tags.
    return xml.replace(b"/>", b" />")


def xml_response(root: etree._Element, status: int = 200) -> Response:
    return Response(serialize(root), status=status, content_type=CONTENT_TYPE)


def error_envelope(version: str, api_method: str, description: str) -> etree._Element:
    """``<Status>ERROR</Status><ErrorDescription>…`` (§3.2)."""
    root = envelope(version, api_method, "ERROR")
    add(root, "ErrorDescription", description)
    return root


def yes_no(value: bool) -> str:
    """Client and contact booleans are Yes/No (§3.1)."""
    return "Yes" if value else "No"


def xpm_datetime(epoch: float) -> str:
    """Response datetimes carry no zone: ``2008-09-12T13:00:00`` (§3.1)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def date_as_datetime(day: str) -> str:
    """A stored ``yyyy-MM-dd`` as XPM renders dates such as DateOfBirth (``…T00:00:00``, §3.3.1)."""
    return f"{day}T00:00:00" if day else ""


def parse_request(body: bytes, root_tag: str) -> RequestElement:
    """The request document, whose root must be ``root_tag`` (no ``<Request>`` wrapper, §3.1)."""
    try:
        root: RequestElement = parse_untrusted(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise XpmError("The request must not contain a DTD or entity declarations") from exc
    except ParseError as exc:
        raise XpmError(f"The request is not well-formed XML: {exc}") from exc
    if root.tag != root_tag:
        raise XpmError(f"The request root element must be <{root_tag}>")
    return root


def text_of(element: RequestElement, tag: str) -> str | None:
    """The stripped text of child ``tag``: None when absent, "" when present but empty."""
    child = element.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()
