"""Practice records as XPM renders them (xero-reference.md §3.3.1, §3.3.4, §3.6, §3.7).

Every element appears on every record, empty when unset (``<Fax />``), as in Xero's samples.
Tax numbers are masked on the way out and only here (§3.1).
"""

from __future__ import annotations

from lxml import etree

from sandbox.practice import DETAIL_FIELDS, SUMMARY_FIELDS, Client, PracticeData, Relationship
from sandbox.xpm_xml import add, date_as_datetime, xpm_datetime, yes_no

WEB_URL = "https://practicemanager.xero.com/Client/{id}/Detail"


def mask_tax_number(value: str) -> str:
    """Only the last 3 characters stay visible, as since 17 Jan 2018 (§3.1)."""
    return f"******{value[-3:]}" if value else ""


def client_web_url(client: Client) -> str:
    # Deep links still use the practice-side numeric id, not the UUID (§3.1).
    return WEB_URL.format(id=client.seq + 1)


def add_client(
    parent: etree._Element, client: Client, data: PracticeData, *, detail: bool, contacts: bool = True
) -> etree._Element:
    """``<Client>``: the list/search shape (§3.3.1), or with ``detail`` the get shape (§3.3.4)."""
    element = add(parent, "Client")
    add(element, "UUID", client.uuid)
    add(element, "Name", client.name)
    for name in SUMMARY_FIELDS:
        value = client.fields[name]
        add(element, name, date_as_datetime(value) if name == "DateOfBirth" else value)
    add(element, "IsProspect", yes_no(client.is_prospect))
    add(element, "IsArchived", yes_no(client.is_archived))
    add(element, "IsDeleted", yes_no(client.is_deleted))
    _add_staff_ref(element, "AccountManager", data, client.account_manager_uuid)
    _add_billing_type(element, data, client.billing_type)
    if contacts:
        _add_contacts(element, client)
    _add_client_ref(element, "BillingClient", data, client.billing_client_uuid)
    if detail:
        _add_notes(element, client)
        _add_staff_ref(element, "JobManager", data, client.job_manager_uuid)
        for name in DETAIL_FIELDS:
            value = client.fields[name]
            add(element, name, mask_tax_number(value) if name == "TaxNumber" else value)
        groups = add(element, "Groups")
        for group in data.groups_of(client.uuid):
            node = add(groups, "Group")
            add(node, "UUID", group.uuid)
            add(node, "Name", group.name)
        relationships = add(element, "Relationships")
        for relationship in data.relationships_of(client.uuid):
            _add_relationship(relationships, relationship, data)
    return element


def add_staff_list(parent: etree._Element, data: PracticeData) -> None:
    """``<StaffList><Staff>…`` (§3.7)."""
    staff_list = add(parent, "StaffList")
    for staff in data.staff.values():
        node = add(staff_list, "Staff")
        for tag, value in (
            ("UUID", staff.uuid),
            ("Name", staff.name),
            ("Email", staff.email),
            ("Phone", staff.phone),
            ("Mobile", staff.mobile),
            ("Address", staff.address),
            ("PayrollCode", staff.payroll_code),
        ):
            add(node, tag, value)


def add_group_list(parent: etree._Element, data: PracticeData) -> None:
    """``<Groups><Group><UUID/><Name/><Taxable>Yes|No</Taxable></Group>`` (§3.6)."""
    groups = add(parent, "Groups")
    for group in data.groups.values():
        node = add(groups, "Group")
        add(node, "UUID", group.uuid)
        add(node, "Name", group.name)
        add(node, "Taxable", yes_no(group.taxable))


def _add_staff_ref(parent: etree._Element, tag: str, data: PracticeData, uuid: str) -> None:
    node = add(parent, tag)
    staff = data.staff.get(uuid)
    if staff is not None:
        add(node, "UUID", staff.uuid)
        add(node, "Name", staff.name)


def _add_client_ref(parent: etree._Element, tag: str, data: PracticeData, uuid: str) -> None:
    node = add(parent, tag)
    client = data.live_client(uuid)
    if client is not None:
        add(node, "UUID", client.uuid)
        add(node, "Name", client.name)


def _add_billing_type(parent: etree._Element, data: PracticeData, name: str) -> None:
    node = add(parent, "Type")
    billing = data.billing_types.get(name)
    if billing is not None:
        add(node, "Name", billing.name)
        add(node, "CostMarkup", billing.cost_markup)
        add(node, "PaymentTerm", billing.payment_term)
        add(node, "PaymentDay", str(billing.payment_day))


def _add_contacts(parent: etree._Element, client: Client) -> None:
    contacts = add(parent, "Contacts")
    # IsPrimary/Position are only returned for non-deleted linked contacts (§3.4).
    for contact in (c for c in client.contacts if not c.is_deleted):
        node = add(contacts, "Contact")
        for tag, value in (
            ("UUID", contact.uuid),
            ("Name", contact.name),
            ("Salutation", contact.salutation),
            ("Addressee", contact.addressee),
            ("Mobile", contact.mobile),
            ("Email", contact.email),
            ("Phone", contact.phone),
            ("IsDeleted", yes_no(contact.is_deleted)),
            ("IsPrimary", yes_no(contact.is_primary)),
            ("Position", contact.position),
        ):
            add(node, tag, value)


def _add_notes(parent: etree._Element, client: Client) -> None:
    notes = add(parent, "Notes")
    for note in client.notes:
        node = add(notes, "Note")
        add(node, "Title", note.title)
        add(node, "Text", note.text)
        add(node, "Folder", note.folder)
        add(node, "Date", xpm_datetime(note.date))
        add(node, "CreatedBy", note.created_by)


def _add_relationship(parent: etree._Element, relationship: Relationship, data: PracticeData) -> None:
    node = add(parent, "Relationship")
    add(node, "UUID", relationship.uuid)
    add(node, "Type", relationship.type)
    related = add(node, "RelatedClient")
    add(related, "UUID", relationship.related_client_uuid)
    add(related, "Name", data.clients[relationship.related_client_uuid].name)
    # Both numbers are always present, 0 when unset, as in Xero's sample (§3.3.4).
    add(node, "NumberOfShares", str(relationship.number_of_shares or 0))
    add(node, "Percentage", format(relationship.percentage or 0, "g"))
    add(node, "StartDate", relationship.start_date)
    add(node, "EndDate", relationship.end_date)
