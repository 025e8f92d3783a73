"""XPM client XML ↔ the contract's client JSON (contract.md §4, xero-reference §3.3-§3.7).

Reading (XPM → JSON), the rules docs/xpm-json.md promises vendors:
- Keys are snake_case of XPM's element names, with three exceptions: the five street-address
  elements become ``address``/``postal_address`` objects ``{street, city, region, post_code,
  country}`` (null when all five are empty), ``Website``/``WebSite`` become ``website``, and the
  billing ``<Type>`` becomes ``billing_type`` (``type`` would read like a relationship type).
- Every documented key is always present. Empty or absent elements are null; list containers
  (contacts, notes, groups, relationships) are always arrays, ``[]`` when empty or absent (a
  search or plain list carries no notes/groups/relationships: read the client for those).
- Yes/No → booleans (anything else → null); NumberOfShares, Percentage, BalanceMonth, CostMarkup,
  PaymentDay → numbers; zone-less datetimes → UTC ``…Z`` (XPM's datetimes carry no zone, §3.1;
  we take them as UTC like ``modifiedsince``); dates stay ``yyyy-MM-dd`` (DateOfBirth, which XPM
  renders ``…T00:00:00``, is a date).
- Unknown elements are ignored, so new XPM fields never break a read.
- ``tax_number`` is what XPM says (already masked by XPM, §3.1); ``present_client`` masks it
  again to ``***123`` unless the vendor may see sensitive fields.

Writing (JSON → XPM request XML): the same snake_case keys, validated here (422
``invalid_request`` naming the field) so XPM only sees well-formed, plausible input; element
order follows the add sample (§3.3.5); ``WebSite`` and ``GSTPeriod`` 1|2|6 as XPM wants them.
"""

from __future__ import annotations

import math
import re
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from chalicelib.xpm.errors import InvalidField
from chalicelib.xpm.xml import MAX_DOCUMENT_BYTES, Element, XmlValue, build, check_text, parse_response_items

# Spelled exactly as XPM spells them, spaces included (xero-reference §3.5).
RELATIONSHIP_TYPES = (
    "Director", "Shareholder", "Trustee", "Beneficiary", "Partner", "Settlor", "Associate",
    "Secretary", "Public Officer", "Husband", "Wife", "Spouse", "Parent Of", "Child Of",
    "Appointer", "Member", "Auditor", "Owner",
)  # fmt: skip
# GSTPeriod is written 1|2|6 and read back as words (§3.10).
GST_PERIOD_WORDS = {"1": "Monthly", "2": "2 Monthly", "6": "6 Monthly"}
GST_BASES = ("Invoice", "Payment", "Hybrid")
PROVISIONAL_TAX_BASES = ("Standard Option", "Estimate Option", "Ratio Option")
AGENCY_STATUSES = ("With EOT", "Without EOT", "Unlinked")
RETURN_TYPES = ("IR3", "IR3NR", "IR4", "IR6", "IR7", "IR9", "PTS")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

MAX_NAME = 255
MAX_TEXT = 255
MAX_STREET = 1000  # XPM's address is a multi-line box
MAX_CONTACTS = 50
ADDRESS_PARTS = ("street", "city", "region", "post_code", "country")
_ADDRESS_TAGS = ("Address", "City", "Region", "PostCode", "Country")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


# -- reading: XPM XML → JSON ------------------------------------------------------------------
class _Node:
    """An element's direct children, and their direct texts, indexed by tag in one pass (the first
    of each tag wins; comments and PIs are never looked up, their ``tag`` is not a string).

    A client has ~60 children and we read nearly all of them: one pass that takes each child's
    text as it goes is the cheapest way lxml offers (every ``child.text`` or ``len(child)`` call
    crosses into C once), and keeps a 10,000-client list linear.
    """

    __slots__ = ("_children", "texts")

    def __init__(self, element: Element) -> None:
        children: dict[Any, Element] = {}
        texts: dict[Any, str | None] = {}
        for child in element.iterchildren(reversed=True):  # so the first of each tag is stored last
            tag = child.tag
            children[tag] = child
            raw = child.text
            if len(child):
                # Direct text only: around a comment or PI, not inside unexpected nested elements.
                raw = (raw or "") + "".join(node.tail or "" for node in child)
            texts[tag] = (raw.strip() or None) if raw else None
        self._children = children
        self.texts = texts

    def child(self, tag: str) -> _Node | None:
        element = self._children.get(tag)
        return None if element is None else _Node(element)

    def each(self, container: str, tag: str) -> list[_Node]:
        """``<Contacts><Contact/>…</Contacts>`` → the Contact nodes; none when absent or empty."""
        element = self._children.get(container)
        return [] if element is None else [_Node(item) for item in element.iterchildren(tag)]

    def text(self, tag: str) -> str | None:
        return self.texts.get(tag)

    def yes_no(self, tag: str) -> bool | None:
        return _yes_no(self.texts.get(tag))

    def number(self, tag: str) -> int | float | None:
        return _number(self.texts.get(tag))

    def reference(self, tag: str) -> dict[str, Any] | None:
        """``<AccountManager><UUID/><Name/></AccountManager>`` → ``{uuid, name}``; empty → null."""
        element = self._children.get(tag)
        if element is None:
            return None
        texts = _Node(element).texts
        uuid, name = texts.get("UUID"), texts.get("Name")
        return {"uuid": uuid, "name": name} if uuid or name else None

    def address(self, prefix: str) -> dict[str, Any] | None:
        get = self.texts.get
        parts = {part: get(prefix + tag) for part, tag in zip(ADDRESS_PARTS, _ADDRESS_TAGS, strict=True)}
        return parts if any(parts.values()) else None


_YES_NO = {"yes": True, "true": True, "no": False, "false": False}


def _yes_no(value: str | None) -> bool | None:
    return None if value is None else _YES_NO.get(value.lower())


def _number(value: str | None) -> int | float | None:
    if not value:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return int(number) if number == number.to_integral_value() else float(number)


def _date(value: str | None) -> str | None:
    """``yyyy-MM-dd`` from a date or a datetime (XPM renders dates of birth as datetimes)."""
    if not value:
        return None
    head = value[:10]
    try:
        day = date.fromisoformat(head) if _DATE.match(head) else None
    except ValueError:
        return None
    # .NET writes DateTime.MinValue for "no date"; it is never a real one.
    return head if day is not None and day.year > 1 else None


def _datetime(value: str | None) -> str | None:
    """ISO 8601 UTC with ``Z``; XPM's datetimes carry no zone (§3.1) and are taken as UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.year <= 1:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(value: str | None) -> int | None:
    if value is None:
        return None
    number = _number(value)
    if isinstance(number, int) and 1 <= number <= 12:
        return number
    key = value[:3].lower()
    return MONTHS.index(key) + 1 if key in MONTHS else None


def _gst_period(value: str | None) -> str | None:
    return GST_PERIOD_WORDS.get(value, value) if value else None


def _billing_type(node: _Node) -> dict[str, Any] | None:
    billing_node = node.child("Type")
    if billing_node is None:
        return None
    billing = {
        "name": billing_node.text("Name"),
        "cost_markup": billing_node.number("CostMarkup"),
        "payment_term": billing_node.text("PaymentTerm"),
        "payment_day": billing_node.number("PaymentDay"),
    }
    return billing if any(v is not None for v in billing.values()) else None


def _contact_json(node: _Node) -> dict[str, Any]:
    return {
        "uuid": node.text("UUID"),
        "name": node.text("Name"),
        "salutation": node.text("Salutation"),
        "addressee": node.text("Addressee"),
        "mobile": node.text("Mobile"),
        "email": node.text("Email"),
        "phone": node.text("Phone"),
        "position": node.text("Position"),
        "is_primary": node.yes_no("IsPrimary"),
        "is_deleted": node.yes_no("IsDeleted"),
    }


def _note_json(node: _Node) -> dict[str, Any]:
    return {
        "title": node.text("Title"),
        "text": node.text("Text"),
        "folder": node.text("Folder"),  # NULL since the 2025 notes change (§3.3.4)
        "tag": node.text("Tag"),
        "date": _datetime(node.text("Date")),
        "created_by": node.text("CreatedBy"),
    }


def _relationship_json(node: _Node) -> dict[str, Any]:
    return {
        "uuid": node.text("UUID"),
        "type": node.text("Type"),
        "related_client": node.reference("RelatedClient"),
        "number_of_shares": node.number("NumberOfShares"),
        "percentage": node.number("Percentage"),
        "start_date": _date(node.text("StartDate")),
        "end_date": _date(node.text("EndDate")),
    }


def _group_ref(node: _Node) -> dict[str, Any]:
    return {"uuid": node.text("UUID"), "name": node.text("Name")}


def client_json(element: Element, *, web_url: str | None = None) -> dict[str, Any]:
    """One ``<Client>`` (list, search, get or add shape) as contract JSON; see docs/xpm-json.md."""
    node = _Node(element)
    t = node.texts.get
    yes_no = _yes_no
    return {
        "uuid": t("UUID"),
        "name": t("Name"),
        "title": t("Title"),
        "gender": t("Gender"),
        "first_name": t("FirstName"),
        "last_name": t("LastName"),
        "other_name": t("OtherName"),
        "email": t("Email"),
        "date_of_birth": _date(t("DateOfBirth")),
        "address": node.address(""),
        "postal_address": node.address("Postal"),
        "phone": t("Phone"),
        "fax": t("Fax"),
        # Responses say Website, requests WebSite (§3.10); accept either on the way in.
        "website": t("Website") or t("WebSite"),
        "referral_source": t("ReferralSource"),
        "export_code": t("ExportCode"),
        "is_archived": yes_no(t("IsArchived")),
        "is_deleted": yes_no(t("IsDeleted")),
        "is_prospect": yes_no(t("IsProspect")),
        "account_manager": node.reference("AccountManager"),
        "job_manager": node.reference("JobManager"),
        "billing_client": node.reference("BillingClient"),
        "billing_type": _billing_type(node),
        "contacts": [_contact_json(c) for c in node.each("Contacts", "Contact")],
        "notes": [_note_json(n) for n in node.each("Notes", "Note")],
        "tax_number": t("TaxNumber"),
        "company_number": t("CompanyNumber"),
        "business_number": t("BusinessNumber"),
        "business_structure": t("BusinessStructure"),
        "balance_month": _month(t("BalanceMonth")),
        "prepare_gst": yes_no(t("PrepareGST")),
        "gst_registered": yes_no(t("GSTRegistered")),
        "gst_period": _gst_period(t("GSTPeriod")),
        "gst_basis": t("GSTBasis"),
        "provisional_tax_basis": t("ProvisionalTaxBasis"),
        "provisional_tax_ratio": t("ProvisionalTaxRatio"),
        "signed_tax_authority": yes_no(t("SignedTaxAuthority")),
        "tax_agent": t("TaxAgent"),
        "agency_status": t("AgencyStatus"),
        "return_type": t("ReturnType"),
        "prepare_activity_statement": yes_no(t("PrepareActivityStatement")),
        "prepare_tax_return": yes_no(t("PrepareTaxReturn")),
        "groups": [_group_ref(g) for g in node.each("Groups", "Group")],
        "relationships": [_relationship_json(r) for r in node.each("Relationships", "Relationship")],
        "web_url": web_url,
    }


def clients_json(root: Element) -> list[dict[str, Any]]:
    """``<Response><Clients><Client>…`` → a list (``<Clients />`` or none → ``[]``, §3.3.3)."""
    return [client_json(c) for c in root.iterfind("Clients/Client")]


def read_clients(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[Element, list[dict[str, Any]]]:
    """``clients_json`` straight from the bytes, streaming (``xml.parse_response_items``): the
    root (``<Status>`` still to check, the clients removed) and the clients, mapped as parsed."""
    return parse_response_items(body, ("Clients", "Client"), client_json, max_bytes=max_bytes)


def group_json(element: Element) -> dict[str, Any]:
    """A ``clientgroup.api/list`` group (§3.6)."""
    node = _Node(element)
    return {**_group_ref(node), "taxable": node.yes_no("Taxable")}


def staff_json(element: Element) -> dict[str, Any]:
    """A ``staff.api/list`` member (§3.7)."""
    node = _Node(element)
    return {
        key: node.text(tag)
        for key, tag in (
            ("uuid", "UUID"),
            ("name", "Name"),
            ("email", "Email"),
            ("phone", "Phone"),
            ("mobile", "Mobile"),
            ("address", "Address"),
            ("payroll_code", "PayrollCode"),
        )
    }


# -- presenting to a vendor --------------------------------------------------------------------
def mask_tax_number(value: str | None) -> str | None:
    """``***`` and the last 3 characters (contract.md §4: ``"***123"``); short values hide fully."""
    if not value:
        return None
    value = value.strip()
    return "***" + value[-3:] if len(value) > 3 else "***"


def present_client(client: Mapping[str, Any], allow_sensitive: bool) -> dict[str, Any]:
    """The client as a vendor sees it: ``tax_number`` masked unless it holds the permission."""
    presented = dict(client)
    if not allow_sensitive and "tax_number" in presented:
        presented["tax_number"] = mask_tax_number(presented["tax_number"])
    return presented


# -- writing: JSON → XPM request XML -----------------------------------------------------------
def _string(field: str, value: Any, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be a string.")
    text = check_text(field, value.strip())
    if len(text) > max_len:
        raise InvalidField(field, f"{field} must be at most {max_len} characters.")
    return text


def _text_of(max_len: int) -> Callable[[str, Any], str]:
    return lambda field, value: _string(field, value, max_len)


def _email(field: str, value: Any) -> str:
    text = _string(field, value, 254)
    if not _EMAIL.match(text):
        raise InvalidField(field, f"{field} must look like an email address.")
    return text


def _uuid(field: str, value: Any) -> str:
    text = _string(field, value, 36)
    try:
        return str(uuid_module.UUID(text))
    except ValueError as exc:
        raise InvalidField(field, f"{field} must be a UUID.") from exc


def _iso_date(field: str, value: Any) -> str:
    """``yyyy-MM-dd`` (§3.1 for relationships; DateOfBirth's format is UNVERIFIED, §8.15)."""
    text = _string(field, value, 10)
    try:
        if _DATE.match(text):
            date.fromisoformat(text)
            return text
    except ValueError:
        pass
    raise InvalidField(field, f"{field} must be a date, yyyy-MM-dd.")


def _yes_no_out(field: str, value: Any) -> str:
    if not isinstance(value, bool):
        raise InvalidField(field, f"{field} must be true or false.")
    return "Yes" if value else "No"


def _gst_period_out(field: str, value: Any) -> str:
    """1|2|6 as XPM wants on input, from 1/2/6 or the words it answers with (§3.10)."""
    words = {w.lower(): n for n, w in GST_PERIOD_WORDS.items()}
    key = str(value).strip().lower() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if key in GST_PERIOD_WORDS:
        return key
    if key in words:
        return words[key]
    raise InvalidField(field, f"{field} must be 1, 2, 6, 'Monthly', '2 Monthly' or '6 Monthly'.")


def _month_out(field: str, value: Any) -> str:
    """``BalanceMonth``: 1..12 or a month name (``Jan|1``, §3.3.5), sent as the number."""
    month = None
    if isinstance(value, int) and not isinstance(value, bool):
        month = value if 1 <= value <= 12 else None
    elif isinstance(value, str):
        month = _month(value.strip())
    if month is None:
        raise InvalidField(field, f"{field} must be a month, 1-12 or Jan-Dec.")
    return str(month)


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def convert(field: str, value: Any) -> str:
        text = _string(field, value)
        for option in options:
            if option.lower() == text.lower():
                return option
        raise InvalidField(field, f"{field} must be one of: {', '.join(options)}.")

    return convert


def _decimal_out(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidField(field, f"{field} must be a number.")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidField(field, f"{field} must be a number.") from exc
    if not number.is_finite():
        raise InvalidField(field, f"{field} must be a number.")
    return str(number)


@dataclass(frozen=True)
class _Scalar:
    """A JSON key that is one XPM element."""

    tag: str
    convert: Callable[[str, Any], str]

    def write(self, field: str, value: Any) -> dict[str, XmlValue]:
        return {self.tag: self.convert(field, value)}

    def clear(self) -> dict[str, XmlValue]:
        return {self.tag: None}


@dataclass(frozen=True)
class _AddressOut:
    """``address``/``postal_address`` objects → the five flat elements (§3.3.5)."""

    prefix: str

    def write(self, field: str, value: Any) -> dict[str, XmlValue]:
        if not isinstance(value, Mapping):
            raise InvalidField(field, f"{field} must be an object with {', '.join(ADDRESS_PARTS)}.")
        _no_unknown_keys(field, value, ADDRESS_PARTS)
        out: dict[str, XmlValue] = {}
        for part, tag in zip(ADDRESS_PARTS, _ADDRESS_TAGS, strict=True):
            part_value = value.get(part)
            if part in value:
                limit = MAX_STREET if part == "street" else MAX_TEXT
                text = None if part_value is None else _string(f"{field}.{part}", part_value, limit)
                out[self.prefix + tag] = text or None
        return out

    def clear(self) -> dict[str, XmlValue]:
        return {self.prefix + tag: None for tag in _ADDRESS_TAGS}


_CONTACT_OUT: dict[str, tuple[str, Callable[[str, Any], str]]] = {
    # Element order as in the add sample (§3.3.5).
    "name": ("Name", _text_of(MAX_NAME)),
    "is_primary": ("IsPrimary", _yes_no_out),
    "salutation": ("Salutation", _text_of(MAX_TEXT)),
    "addressee": ("Addressee", _text_of(MAX_TEXT)),
    "phone": ("Phone", _text_of(MAX_TEXT)),
    "mobile": ("Mobile", _text_of(MAX_TEXT)),
    "email": ("Email", _email),
    "position": ("Position", _text_of(MAX_TEXT)),
}


@dataclass(frozen=True)
class _ContactsOut:
    """Inline new contacts on add (§3.3.5); the update sample has none, so update refuses them."""

    def write(self, field: str, value: Any) -> dict[str, XmlValue]:
        if not isinstance(value, list) or len(value) > MAX_CONTACTS:
            raise InvalidField(field, f"{field} must be a list of at most {MAX_CONTACTS} contacts.")
        contacts: list[Mapping[str, XmlValue]] = []
        for index, contact in enumerate(value):
            where = f"{field}[{index}]"
            if not isinstance(contact, Mapping):
                raise InvalidField(where, f"{where} must be an object.")
            _no_unknown_keys(where, contact, tuple(_CONTACT_OUT))
            if not isinstance(contact.get("name"), str) or not contact["name"].strip():
                raise InvalidField(f"{where}.name", f"{where}.name is required.")
            out: dict[str, XmlValue] = {}
            for key, (tag, convert) in _CONTACT_OUT.items():
                item = contact.get(key)
                if item is not None and item != "":
                    out[tag] = convert(f"{where}.{key}", item)
            contacts.append(out)
        return {"Contacts": {"Contact": contacts}}

    def clear(self) -> dict[str, XmlValue]:
        return {}


_Writer = _Scalar | _AddressOut | _ContactsOut
_TEXT = _text_of(MAX_TEXT)
# JSON key → writer, in the element order of the add sample (§3.3.5).
CLIENT_INPUT: dict[str, _Writer] = {
    "name": _Scalar("Name", _text_of(MAX_NAME)),
    "email": _Scalar("Email", _email),
    "address": _AddressOut(""),
    "postal_address": _AddressOut("Postal"),
    "phone": _Scalar("Phone", _TEXT),
    "fax": _Scalar("Fax", _TEXT),
    "website": _Scalar("WebSite", _TEXT),  # "WebSite" in requests, "Website" in responses (§3.10)
    "referral_source": _Scalar("ReferralSource", _TEXT),
    "export_code": _Scalar("ExportCode", _TEXT),
    "account_manager_uuid": _Scalar("AccountManagerUUID", _uuid),
    "contacts": _ContactsOut(),
    "billing_client_uuid": _Scalar("BillingClientUUID", _uuid),
    "first_name": _Scalar("FirstName", _TEXT),
    "last_name": _Scalar("LastName", _TEXT),
    "other_name": _Scalar("OtherName", _TEXT),
    "date_of_birth": _Scalar("DateOfBirth", _iso_date),
    "job_manager_uuid": _Scalar("JobManagerUUID", _uuid),
    "tax_number": _Scalar("TaxNumber", _text_of(50)),
    "company_number": _Scalar("CompanyNumber", _text_of(50)),
    "business_number": _Scalar("BusinessNumber", _text_of(50)),
    "business_structure": _Scalar("BusinessStructure", _text_of(100)),
    "balance_month": _Scalar("BalanceMonth", _month_out),
    "prepare_gst": _Scalar("PrepareGST", _yes_no_out),
    "gst_registered": _Scalar("GSTRegistered", _yes_no_out),
    "gst_period": _Scalar("GSTPeriod", _gst_period_out),
    "gst_basis": _Scalar("GSTBasis", _choice(GST_BASES)),
    "provisional_tax_basis": _Scalar("ProvisionalTaxBasis", _choice(PROVISIONAL_TAX_BASES)),
    "provisional_tax_ratio": _Scalar("ProvisionalTaxRatio", _decimal_out),
    "signed_tax_authority": _Scalar("SignedTaxAuthority", _yes_no_out),
    "tax_agent": _Scalar("TaxAgent", _TEXT),
    "agency_status": _Scalar("AgencyStatus", _choice(AGENCY_STATUSES)),
    "return_type": _Scalar("ReturnType", _choice(RETURN_TYPES)),
    "prepare_activity_statement": _Scalar("PrepareActivityStatement", _yes_no_out),
    "prepare_tax_return": _Scalar("PrepareTaxReturn", _yes_no_out),
}


def _no_unknown_keys(where: str, value: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        field = f"{where}.{unknown[0]}" if where else unknown[0]
        raise InvalidField(field, f"{field} is not a field XPM accepts here.")


def client_fields(data: Any, *, for_update: bool = False) -> dict[str, XmlValue]:
    """The ``<Client>`` children for ``data`` (contract JSON), validated, in XPM's order.

    Add: ``name`` required; null or "" leaves a field out. Update (partial, §3.3.6 UNVERIFIED):
    only the keys given are sent; null or "" sends an empty element, which clears the value
    in XPM; ``contacts`` is refused (XPM's update takes none).
    """
    if not isinstance(data, Mapping):
        raise InvalidField("", "The client must be a JSON object.")
    _no_unknown_keys("", data, tuple(CLIENT_INPUT))
    name = data.get("name")
    if (not for_update or "name" in data) and (not isinstance(name, str) or not name.strip()):
        raise InvalidField("name", "name is required (the client's display name).")
    if for_update and "contacts" in data:
        raise InvalidField("contacts", "contacts cannot be changed by an update.")
    fields: dict[str, XmlValue] = {}
    for key, writer in CLIENT_INPUT.items():
        if key not in data:
            continue
        value = data[key]
        if value is None or (isinstance(value, str) and not value.strip()):
            if for_update:
                fields.update(writer.clear())
            continue
        fields.update(writer.write(key, value))
    return fields


def add_client_request(data: Any) -> bytes:
    """The ``client.api/add`` body (§3.3.5)."""
    return build("Client", client_fields(data))


def update_client_request(client_uuid: str, data: Any) -> bytes:
    """The ``client.api/update`` body: ``<UUID>`` first, then the fields to change (§3.3.6)."""
    return build("Client", {"UUID": _uuid("uuid", client_uuid), **client_fields(data, for_update=True)})


def client_uuid_request(client_uuid: str) -> bytes:
    """``<Client><UUID/></Client>`` for ``archive`` and ``delete`` (§3.3.6)."""
    return build("Client", {"UUID": _uuid("uuid", client_uuid)})


RELATIONSHIP_INPUT = (
    "type",
    "related_client_uuid",
    "number_of_shares",
    "percentage",
    "start_date",
    "end_date",
)


def relationship_request(client_uuid: str, data: Any) -> bytes:
    """The ``client.api/addrelationship`` body (§3.5).

    ``client_uuid`` is the entity holding the relationship (XPM ``ClientUUID``: the company,
    trust, ...); ``related_client_uuid`` the client in the role (``RelatedClientUUID``: the
    director, trustee, ...). Which types suit which business structures is left to XPM.
    """
    if not isinstance(data, Mapping):
        raise InvalidField("relationship", "A relationship must be a JSON object.")
    _no_unknown_keys("", data, RELATIONSHIP_INPUT)
    kind = data.get("type")
    if kind not in RELATIONSHIP_TYPES:
        raise InvalidField("type", f"type must be one of XPM's: {', '.join(RELATIONSHIP_TYPES)}.")
    fields: dict[str, XmlValue] = {
        "ClientUUID": _uuid("client_uuid", client_uuid),
        "RelatedClientUUID": _uuid("related_client_uuid", data.get("related_client_uuid")),
        "Type": str(kind),
    }
    shares = data.get("number_of_shares")
    if shares is not None:
        if isinstance(shares, bool) or not isinstance(shares, int) or shares < 0:
            raise InvalidField("number_of_shares", "number_of_shares must be a whole number, 0 or more.")
        fields["NumberOfShares"] = str(shares)
    percentage = data.get("percentage")
    if percentage is not None:
        fields["Percentage"] = _percentage_out(percentage)
    dates = {key: data.get(key) for key in ("start_date", "end_date")}
    for key, tag in (("start_date", "StartDate"), ("end_date", "EndDate")):
        if dates[key] is not None:
            fields[tag] = _iso_date(key, dates[key])
    if dates["start_date"] and dates["end_date"] and str(dates["end_date"]) < str(dates["start_date"]):
        raise InvalidField("end_date", "end_date must not be before start_date.")
    return build("Relationship", fields)


def _percentage_out(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField("percentage", "percentage must be a number from 0 to 100.")
    if not 0 <= value <= 100:
        raise InvalidField("percentage", "percentage must be a number from 0 to 100.")
    return str(value) if isinstance(value, int) else format(Decimal(repr(value)).normalize(), "f")
