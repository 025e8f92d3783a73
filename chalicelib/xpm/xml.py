"""XPM's XML on the wire: hardened parsing, the ``<Status>`` check, and building request bodies.

Parsing (security-checklist F1/F2): a UTF-8-only lxml parser with every dangerous feature off,
set explicitly, behind a pre-scan that refuses any ``<!DOCTYPE``/``<!ENTITY`` before libxml2
sees it, and a post-parse check that no DTD or entity node survived. Xero never sends a DTD,
so refusing one costs nothing. Building (F5): lxml element construction only, so all text is
escaped by lxml; characters XML cannot carry are refused first with a 422 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeAlias

from lxml import etree

from chalicelib.xpm.errors import InvalidField, XpmNotFound, XpmUnavailable, XpmValidationFailed

Element: TypeAlias = Any  # lxml.etree._Element (lxml ships no type stubs)
# A request field: text, an empty element (None), one nested element, or repeated elements of
# the key's tag (``{"Contact": [{...}, {...}]}``). Dict order is element order.
XmlValue: TypeAlias = "str | Mapping[str, XmlValue] | list[Mapping[str, XmlValue]] | None"

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # the decoded cap of F3; callers may pass less
_MARKUP_DECLARATION = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
# XML 1.0 cannot hold C0 controls other than TAB/LF/CR, surrogates, U+FFFE/U+FFFF; C1 controls
# and DEL are legal but never meaningful in a client record, so they are refused too (F5).
_FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# The not-found rule (see check_status): XPM's wording for an unknown client UUID (§3.2).
_CLIENT_NOT_FOUND = re.compile(
    r"\b(?:invalid|unknown) client (?:identifier|uuid|id)\b"
    r"|^(?:the )?client(?: uuid)? (?:was |could )?not (?:be )?found\b"
    r"|^(?:the )?client does not exist\b",
    re.IGNORECASE,
)


class ExternalResourceRefused(Exception):
    """libxml2 asked to load an external DTD or entity; we never let it."""


class _RefuseExternal(etree.Resolver):  # type: ignore[misc]  # lxml ships no stubs
    def resolve(self, url: str, pubid: str, context: Any) -> Any:
        raise ExternalResourceRefused("external XML resources are refused")


def hardened_parser() -> Any:
    """A fresh lxml parser (they are not thread-safe) with F2's flags, all explicit.

    The flags alone are not enough: with them libxml2 still opens a local file named by an
    external *parameter* entity (``<!ENTITY % p SYSTEM "file:…"> %p;``), so a resolver that
    refuses every external resource is added (tests/unit/test_xpm_xml.py proves the difference).
    """
    parser = etree.XMLParser(
        encoding="utf-8",  # XPM sends UTF-8; forcing it keeps the byte pre-scan exact
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        recover=False,
        collect_ids=False,
        remove_pis=True,
    )
    parser.resolvers.add(_RefuseExternal())
    return parser


def parse_xml(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Element:
    """The root element of an untrusted XML document, or XpmUnavailable (never a raw parser error)."""
    if len(body) > max_bytes:
        raise XpmUnavailable("oversized", "Xero Practice Manager sent a response larger than allowed.")
    if _MARKUP_DECLARATION.search(body):
        raise XpmUnavailable("dtd_forbidden", "Xero Practice Manager sent XML with a DTD; refused.")
    try:
        root = etree.fromstring(body, hardened_parser())
    except (etree.XMLSyntaxError, ValueError, ExternalResourceRefused) as exc:
        raise XpmUnavailable("unparseable", "Xero Practice Manager sent a response that is not XML.") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or next(root.iter(etree.Entity), None) is not None:
        raise XpmUnavailable("dtd_forbidden", "Xero Practice Manager sent XML with a DTD; refused.")
    return root


def parse_response(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Element:
    """The ``<Response>`` root of an XPM answer (§3.2); any other root is an unexpected shape."""
    root = parse_xml(body, max_bytes=max_bytes)
    if root.tag != "Response":
        raise XpmUnavailable("unexpected_shape", "Xero Practice Manager sent an unexpected response.")
    return root


def check_status(root: Element, *, names_client: bool = False) -> None:
    """Return if ``<Status>`` is ``OK``; otherwise raise the typed error (F4, xero-reference §3.2).

    The rule:
    - ``ERROR`` whose ``ErrorDescription`` says the client UUID is unknown ("Invalid client
      identifier", "Unknown client UUID", "Client not found", "Client does not exist"; not
      "Invalid billing client identifier" or "Invalid related client identifier", which name
      a field of the body) → ``XpmNotFound``, but only when the call names one client by UUID
      (``names_client``: get, update, archive).
    - any other ``ERROR`` → ``XpmValidationFailed`` carrying the sanitised description.
    - a missing, empty or other ``<Status>`` → ``XpmUnavailable`` (unexpected shape).
    The same rule applies whatever the HTTP status was (200 or 4xx: UNVERIFIED, §8.11).
    """
    status = (root.findtext("Status") or "").strip()
    if status == "OK":
        return
    if status != "ERROR":
        raise XpmUnavailable("unexpected_shape", "Xero Practice Manager sent a response without a status.")
    description = root.findtext("ErrorDescription") or ""
    if names_client and _CLIENT_NOT_FOUND.search(" ".join(description.split())):
        raise XpmNotFound()
    raise XpmValidationFailed(description)


def check_text(field: str, value: str) -> str:
    """``value`` if XML can carry it as text, else 422 ``invalid_request`` naming ``field``."""
    bad = _FORBIDDEN_CHARS.search(value)
    if bad:
        raise InvalidField(
            field, f"{field} contains a control character (U+{ord(bad.group()):04X}); remove it."
        )
    return value


def build(tag: str, fields: Mapping[str, XmlValue]) -> bytes:
    """``<tag>…</tag>`` as UTF-8 bytes with no XML declaration (§3.1: XPM needs none)."""
    root = etree.Element(_checked_tag(tag))
    _fill(root, fields, tag)
    body: bytes = etree.tostring(root, encoding="utf-8", xml_declaration=False)
    return body


def _fill(parent: Element, fields: Mapping[str, XmlValue], path: str) -> None:
    for name, value in fields.items():
        where = f"{path}/{name}"
        if isinstance(value, list):
            for index, item in enumerate(value):
                child = etree.SubElement(parent, _checked_tag(name))
                _fill(child, item, f"{where}[{index}]")
            continue
        child = etree.SubElement(parent, _checked_tag(name))
        if isinstance(value, str):
            child.text = check_text(where, value)
        elif value is not None:
            _fill(child, value, where)


def _checked_tag(tag: str) -> str:
    # Tags are ours, never a vendor's; a bad one is a programming error, not a 422.
    if not _TAG.match(tag):
        raise ValueError(f"not an XPM element name: {tag!r}")
    return tag
