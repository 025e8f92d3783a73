"""Request bodies of the client and relationship endpoints, validated as XPM validates them.

Every failure is an ``XpmError`` whose text becomes the ``ErrorDescription`` (§3.2). Xero's exact
messages are UNVERIFIED (§3.3.5), so these say plainly what was wrong.

Choices on UNVERIFIED points (§8.14, §8.15):
- ``update`` is partial: an absent element leaves the value alone, an empty one clears it.
- ``DateOfBirth`` is accepted as ``yyyy-MM-dd`` or ``yyyy-MM-ddTHH:mm:ss``.
- ``Title``, ``Gender`` and ``IsProspect`` may be set; the billing ``Type`` may not.
- ``<Website>`` (the response spelling) is ignored in requests: only ``<WebSite>`` is read (§3.10).
- ``<Contacts>`` are read on add only; an update leaves contacts alone (the update sample has none).
- A relationship needs a ``BusinessStructure`` on its ``ClientUUID`` client, as the UI does (§3.5).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import Element as RequestElement

from sandbox.practice import (
    CLIENT_FIELDS,
    CLIENT_REFS,
    PERCENTAGE_TYPES,
    RELATIONSHIP_TYPES,
    SHARE_TYPES,
    ClientChanges,
    Contact,
    PracticeData,
    Relationship,
)
from sandbox.xpm_errors import XpmError
from sandbox.xpm_xml import text_of

# Request element -> stored field: requests spell it WebSite, responses Website (§3.10).
REQUEST_FIELDS = {("WebSite" if name == "Website" else name): name for name in CLIENT_FIELDS}
YES_NO_FIELDS = ("PrepareGST", "GSTRegistered", "PrepareActivityStatement", "PrepareTaxReturn")
# GSTPeriod is written as 1|2|6 and read back as words (§3.10).
GST_PERIODS = {"1": "Monthly", "2": "2 Monthly", "6": "6 Monthly"}
GST_BASES = ("Invoice", "Payment", "Hybrid")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CONTACT_FIELDS = ("Salutation", "Addressee", "Phone", "Mobile", "Email", "Position")


def read_client(element: RequestElement, data: PracticeData, *, new: bool) -> ClientChanges:
    """The changes a ``<Client>`` body asks for; ``new`` for add (Name required, contacts read)."""
    name = text_of(element, "Name")
    if (new and not name) or name == "":
        raise XpmError("Name is required")
    changes = ClientChanges(name=name)
    for tag, field_name in REQUEST_FIELDS.items():
        value = text_of(element, tag)
        if value is not None:
            changes.fields[field_name] = _client_field(field_name, value, data)
    for tag, attribute in CLIENT_REFS.items():
        value = text_of(element, tag)
        if value is not None:
            changes.refs[attribute] = _reference(tag, value, data)
    prospect = text_of(element, "IsProspect")
    if prospect:
        changes.flags["is_prospect"] = _yes_no("IsProspect", prospect) == "Yes"
    if new:
        changes.contacts = _read_contacts(element)
    return changes


def read_client_uuid(element: RequestElement, data: PracticeData) -> str:
    """The ``<UUID>`` of an existing, non-deleted client (update, archive, delete)."""
    value = text_of(element, "UUID")
    if not value:
        raise XpmError("UUID is required")
    if data.live_client(value) is None:
        raise XpmError("Invalid client identifier")
    return value


def read_new_relationship(element: RequestElement, data: PracticeData) -> Relationship:
    """A validated ``addrelationship`` body (§3.5), with a fresh UUID."""
    client_uuid = text_of(element, "ClientUUID") or ""
    related_uuid = text_of(element, "RelatedClientUUID") or ""
    client = data.live_client(client_uuid)
    if client is None:
        raise XpmError("Invalid client identifier")
    if data.live_client(related_uuid) is None:
        raise XpmError("Invalid related client identifier")
    if client_uuid == related_uuid:
        raise XpmError("A client cannot be related to itself")
    kind = text_of(element, "Type") or ""
    if kind not in RELATIONSHIP_TYPES:
        raise XpmError(f"Invalid relationship type '{kind}'. Must be one of: {', '.join(RELATIONSHIP_TYPES)}")
    if not client.fields["BusinessStructure"]:
        raise XpmError("The client must have a Business Structure before relationships can be added")
    relationship = Relationship(str(uuid.uuid4()), client_uuid, related_uuid, kind)
    _read_relationship_values(element, relationship)
    return relationship


def read_relationship_update(element: RequestElement, data: PracticeData) -> Relationship:
    """The relationship an ``updaterelationship`` body names, with its new values applied to a copy."""
    existing = data.relationships[read_relationship_uuid(element, data)]
    kind = text_of(element, "Type")
    if kind and kind != existing.type:
        # The update sample has no Type: change it by deleting and re-adding (§3.5).
        raise XpmError("The relationship type cannot be changed")
    updated = replace(existing)
    _read_relationship_values(element, updated)
    return updated


def read_relationship_uuid(element: RequestElement, data: PracticeData) -> str:
    value = text_of(element, "UUID")
    if not value:
        raise XpmError("UUID is required")
    if value not in data.relationships:
        raise XpmError("Invalid relationship identifier")
    return value


def _read_relationship_values(element: RequestElement, relationship: Relationship) -> None:
    shares = text_of(element, "NumberOfShares")
    if shares is not None:
        relationship.number_of_shares = _whole_number("NumberOfShares", shares)
    percentage = text_of(element, "Percentage")
    if percentage is not None:
        relationship.percentage = _percentage(percentage)
    for tag, attribute in (("StartDate", "start_date"), ("EndDate", "end_date")):
        value = text_of(element, tag)
        if value is not None:
            setattr(relationship, attribute, _iso_date(tag, value))
    if relationship.number_of_shares and relationship.type not in SHARE_TYPES:
        raise XpmError("NumberOfShares applies only to Shareholder and Owner relationships")
    if relationship.percentage and relationship.type not in PERCENTAGE_TYPES:
        raise XpmError("Percentage applies only to Partner relationships")
    if relationship.start_date and relationship.end_date and relationship.end_date < relationship.start_date:
        raise XpmError("EndDate must not be before StartDate")


def _client_field(name: str, value: str, data: PracticeData) -> str:
    if not value:
        return ""
    if name == "DateOfBirth":
        return _date_of_birth(value)
    if name == "BusinessStructure" and value not in data.business_structures:
        # Must match a Business Structure defined in the practice's Admin, exactly (§3.3.5).
        raise XpmError(f"Invalid business structure '{value}'")
    if name in YES_NO_FIELDS:
        return _yes_no(name, value)
    if name == "GSTPeriod":
        if value not in GST_PERIODS:
            raise XpmError("GSTPeriod must be 1, 2 or 6")
        return GST_PERIODS[value]
    if name == "GSTBasis" and value not in GST_BASES:
        raise XpmError("GSTBasis must be Invoice, Payment or Hybrid")
    if name == "BalanceMonth":
        return _balance_month(value)
    return value


def _reference(tag: str, value: str, data: PracticeData) -> str:
    if not value:
        return ""
    if tag == "BillingClientUUID":
        if data.live_client(value) is None:
            raise XpmError("Invalid billing client identifier")
    elif value not in data.staff:
        raise XpmError(f"Invalid staff identifier in {tag}")
    return value


def _read_contacts(element: RequestElement) -> list[Contact]:
    contacts = []
    for node in element.findall("Contacts/Contact"):
        name = text_of(node, "Name")
        if not name:
            raise XpmError("Contact Name is required")
        contact = Contact(uuid=str(uuid.uuid4()), name=name)
        for tag in CONTACT_FIELDS:
            setattr(contact, tag.lower(), text_of(node, tag) or "")
        primary = text_of(node, "IsPrimary") or ""
        contact.is_primary = bool(primary) and _yes_no("IsPrimary", primary) == "Yes"
        contacts.append(contact)
    return contacts


def _yes_no(tag: str, value: str) -> str:
    lowered = value.lower()
    if lowered in ("yes", "true"):
        return "Yes"
    if lowered in ("no", "false"):
        return "No"
    raise XpmError(f"{tag} must be Yes or No")


def _date_of_birth(value: str) -> str:
    for layout in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, layout).strftime("%Y-%m-%d")
        except ValueError:
            continue
    raise XpmError("DateOfBirth must be yyyy-MM-dd or yyyy-MM-ddTHH:mm:ss")


def _iso_date(tag: str, value: str) -> str:
    """Relationship dates are ``yyyy-MM-dd`` (§3.1); empty clears."""
    if not value:
        return ""
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError as exc:
        raise XpmError(f"{tag} must be yyyy-MM-dd") from exc


def _balance_month(value: str) -> str:
    """``Jan|1, Feb|2, …`` (§3.3.5), stored as the month number."""
    if value.isdigit() and 1 <= int(value) <= 12:
        return str(int(value))
    if value.title() in MONTHS:
        return str(MONTHS.index(value.title()) + 1)
    raise XpmError("BalanceMonth must be a month: Jan..Dec or 1..12")


def _whole_number(tag: str, value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise XpmError(f"{tag} must be a whole number")
    return int(value)


def _percentage(value: str) -> float | None:
    if not value:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise XpmError("Percentage must be a number") from exc
    if not number.is_finite() or not 0 <= number <= 100:
        raise XpmError("Percentage must be between 0 and 100")
    return float(number)
