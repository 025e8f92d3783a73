"""XPM's XML on the wire: hardened parsing, the ``<Status>`` check, and building request bodies.

Parsing (security-checklist F1/F2): a UTF-8-only lxml parser with every dangerous feature off,
set explicitly, behind a pre-scan that refuses any ``<!DOCTYPE``/``<!ENTITY`` before libxml2
sees it, and a post-parse check that no DTD or entity node survived. Xero never sends a DTD,
so refusing one costs nothing. Long lists are read streaming (``parse_response_items``): the same
parser settings and checks, but each listed item is handed to the caller when its end tag is
parsed and then freed, so the whole tree never exists at once (a 10,000-client detailed list is
~25 MB of XML, and libxml2's tree of it ~8x that).
Building (F5): lxml element construction only, so all text is escaped by lxml; characters XML
cannot carry are refused first with a 422 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar

from lxml import etree

from chalicelib.xpm.errors import InvalidField, XpmNotFound, XpmUnavailable, XpmValidationFailed

Element: TypeAlias = Any  # lxml.etree._Element (lxml ships no type stubs)
# A request field: text, an empty element (None), one nested element, or repeated elements of
# the key's tag (``{"Contact": [{...}, {...}]}``). Dict order is element order.
XmlValue: TypeAlias = "str | Mapping[str, XmlValue] | list[Mapping[str, XmlValue]] | None"

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # the decoded cap of F3; callers may pass less
_FEED_CHUNK = 64 * 1024  # bytes handed to the streaming parser at a time
T = TypeVar("T")
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
    parser = etree.XMLParser(**_HARDENED)
    parser.resolvers.add(_RefuseExternal())
    return parser


_HARDENED: dict[str, Any] = {
    "encoding": "utf-8",  # XPM sends UTF-8; forcing it keeps the byte pre-scan exact
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "recover": False,
    "collect_ids": False,
    "remove_pis": True,
}


def hardened_pull_parser(tag: str) -> Any:
    """``hardened_parser``'s settings and resolver on a feed parser reporting ``tag``'s end tags."""
    parser = etree.XMLPullParser(events=("end",), tag=tag, **_HARDENED)
    parser.resolvers.add(_RefuseExternal())
    return parser


def parse_xml(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Element:
    """The root element of an untrusted XML document, or XpmUnavailable (never a raw parser error)."""
    _check_before_parsing(body, max_bytes)
    try:
        root = etree.fromstring(body, hardened_parser())
    except (etree.XMLSyntaxError, ValueError, ExternalResourceRefused) as exc:
        raise _unparseable() from exc
    _check_parsed(root, root)
    return root


def _check_before_parsing(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise XpmUnavailable("oversized", "Xero Practice Manager sent a response larger than allowed.")
    if _MARKUP_DECLARATION.search(body):
        raise _dtd_forbidden()


def _check_parsed(root: Element, subtree: Element) -> None:
    """No DTD on the document and no entity node in ``subtree`` (defence in depth: the pre-scan
    and ``resolve_entities=False`` already keep both out)."""
    docinfo = root.getroottree().docinfo
    if (
        docinfo.doctype
        or docinfo.internalDTD is not None
        or next(subtree.iter(etree.Entity), None) is not None
    ):
        raise _dtd_forbidden()


def _dtd_forbidden() -> XpmUnavailable:
    return XpmUnavailable("dtd_forbidden", "Xero Practice Manager sent XML with a DTD; refused.")


def _unparseable() -> XpmUnavailable:
    return XpmUnavailable("unparseable", "Xero Practice Manager sent a response that is not XML.")


def parse_response_items(
    body: bytes,
    item_path: tuple[str, str],
    each: Callable[[Element], T],
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> tuple[Element, list[T]]:
    """``parse_response``, streaming: ``each`` of every ``<Response><{container}><{item}>``
    (``item_path`` = (container, item)), in order, and the root without those items.

    The same size cap, pre-scan, parser settings and post-parse checks as ``parse_response``,
    item by item: each item is checked for entity nodes, mapped, then cleared and unlinked, so
    memory holds one item's tree plus what ``each`` returns. Items elsewhere in the document
    (another depth or container) are left in the tree, as ``root.iterfind`` would skip them.
    Check ``<Status>`` on the returned root before using the items.
    """
    _check_before_parsing(body, max_bytes)
    container, item = item_path
    parser = hardened_pull_parser(item)
    results: list[T] = []
    try:
        for start in range(0, len(body), _FEED_CHUNK):
            parser.feed(body[start : start + _FEED_CHUNK])
            for _, element in parser.read_events():
                parent = element.getparent()
                if parent is None or parent.tag != container:
                    continue
                top = parent.getparent()
                if top is None or top.getparent() is not None:
                    continue
                if next(element.iter(etree.Entity), None) is not None:
                    raise _dtd_forbidden()
                results.append(each(element))
                element.clear()
                while element.getprevious() is not None:  # earlier items, already mapped
                    del parent[0]
        root = parser.close()
    except (etree.XMLSyntaxError, ValueError, ExternalResourceRefused) as exc:
        raise _unparseable() from exc
    _check_parsed(root, root)
    if root.tag != "Response":
        raise XpmUnavailable("unexpected_shape", "Xero Practice Manager sent an unexpected response.")
    return root, results


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
