"""One XPM practice's data: clients, contacts, staff, groups and client-to-client relationships.

Records are stored unmasked and in XPM's own vocabulary (element names from xero-reference.md
§3.3.1/§3.3.4) so rendering is a table walk. Callers hold ``SandboxState.lock``: this class does no
locking of its own.

Scale: a practice may hold 20,000+ clients, so every read is one linear pass at most. Clients keep
their creation order in ``_order`` (a client's ``seq`` is its index there, never reused), which gives
the paged list a stable cursor that new clients cannot disturb.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Plain text fields of a client, in the order XPM renders them (§3.3.1). Present on every client;
# "" renders as an empty element (§3.1). ``Website`` is the response spelling (§3.10).
SUMMARY_FIELDS = (
    "Title", "Gender", "FirstName", "LastName", "OtherName", "Email", "DateOfBirth",
    "Address", "City", "Region", "PostCode", "Country",
    "PostalAddress", "PostalCity", "PostalRegion", "PostalPostCode", "PostalCountry",
    "Phone", "Fax", "Website", "ReferralSource", "ExportCode",
)  # fmt: skip
# Practice Management module fields, returned by get and detailed lists (§3.3.4).
DETAIL_FIELDS = (
    "TaxNumber", "CompanyNumber", "BusinessNumber", "BusinessStructure", "BalanceMonth",
    "PrepareGST", "GSTRegistered", "GSTPeriod", "GSTBasis", "ProvisionalTaxBasis",
    "ProvisionalTaxRatio", "SignedTaxAuthority", "TaxAgent", "AgencyStatus", "ReturnType",
    "PrepareActivityStatement", "PrepareTaxReturn",
)  # fmt: skip
CLIENT_FIELDS = SUMMARY_FIELDS + DETAIL_FIELDS
# Staff references held by a client: request element -> Client attribute (§3.3.5).
CLIENT_REFS = {
    "AccountManagerUUID": "account_manager_uuid",
    "JobManagerUUID": "job_manager_uuid",
    "BillingClientUUID": "billing_client_uuid",
}
CLIENT_FLAGS = {"IsArchived": "is_archived", "IsDeleted": "is_deleted", "IsProspect": "is_prospect"}

# Spelled exactly as XPM spells them, spaces included (§3.5).
RELATIONSHIP_TYPES = (
    "Director", "Shareholder", "Trustee", "Beneficiary", "Partner", "Settlor", "Associate",
    "Secretary", "Public Officer", "Husband", "Wife", "Spouse", "Parent Of", "Child Of",
    "Appointer", "Member", "Auditor", "Owner",
)  # fmt: skip
SHARE_TYPES = ("Shareholder", "Owner")  # the only types that carry NumberOfShares (§3.5)
PERCENTAGE_TYPES = ("Partner",)  # "only for partnership relationships" (§3.5)

DEFAULT_BUSINESS_STRUCTURES = (
    "Individual", "Company", "Trust", "Partnership", "Sole Trader", "Superannuation Fund",
    "Unit Trust", "Estate",
)  # fmt: skip


@dataclass
class Contact:
    uuid: str
    name: str
    salutation: str = ""
    addressee: str = ""
    phone: str = ""
    mobile: str = ""
    email: str = ""
    position: str = ""
    is_primary: bool = False
    is_deleted: bool = False


@dataclass
class Note:
    title: str
    text: str
    date: float  # epoch seconds
    created_by: str = ""
    folder: str = ""  # NULL since the 2025 notes change (§3.3.4)


@dataclass
class Staff:
    uuid: str
    name: str
    email: str = ""
    phone: str = ""
    mobile: str = ""
    address: str = ""
    payroll_code: str = ""


@dataclass
class BillingType:
    """A client's billing ``<Type>`` (§3.3.1); not settable through the API (§3.3.5)."""

    name: str
    cost_markup: str
    payment_term: str  # DayOfMonth | WithinDays
    payment_day: int


@dataclass
class ClientGroup:
    uuid: str
    name: str
    taxable: bool
    client_uuids: set[str] = field(default_factory=set)


@dataclass
class Relationship:
    uuid: str
    client_uuid: str  # the entity (company, trust, ...)
    related_client_uuid: str  # the holder of the role (director, trustee, ...)
    type: str
    number_of_shares: int | None = None
    percentage: float | None = None
    start_date: str = ""  # yyyy-MM-dd
    end_date: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "UUID": self.uuid,
            "ClientUUID": self.client_uuid,
            "RelatedClientUUID": self.related_client_uuid,
            "Type": self.type,
            "NumberOfShares": self.number_of_shares,
            "Percentage": self.percentage,
            "StartDate": self.start_date or None,
            "EndDate": self.end_date or None,
        }


@dataclass
class Client:
    uuid: str
    seq: int  # creation order; also the practice-side numeric id in WebUrl (§3.1)
    name: str
    modified: float  # sandbox-clock epoch seconds, for ``modifiedsince`` (§3.10)
    fields: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CLIENT_FIELDS, ""))
    account_manager_uuid: str = ""
    job_manager_uuid: str = ""
    billing_client_uuid: str = ""
    billing_type: str = ""
    contacts: list[Contact] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    is_archived: bool = False
    is_deleted: bool = False
    is_prospect: bool = False


@dataclass
class ClientChanges:
    """What an add, update or control PATCH sets; anything not named here is left as it was."""

    name: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # CLIENT_FIELDS names; "" clears
    refs: dict[str, str] = field(default_factory=dict)  # CLIENT_REFS attributes; "" clears
    flags: dict[str, bool] = field(default_factory=dict)  # CLIENT_FLAGS attributes
    contacts: list[Contact] = field(default_factory=list)  # appended


class PracticeData:
    """Everything one practice holds. Mutators take ``now`` (sandbox clock) to stamp ``modified``."""

    def __init__(
        self,
        tenant_id: str,
        staff: list[Staff],
        billing_types: list[BillingType],
        business_structures: tuple[str, ...] = DEFAULT_BUSINESS_STRUCTURES,
    ) -> None:
        self.tenant_id = tenant_id
        self.staff = {s.uuid: s for s in staff}
        self.billing_types = {b.name: b for b in billing_types}
        self.business_structures = business_structures
        self.clients: dict[str, Client] = {}
        self.groups: dict[str, ClientGroup] = {}
        self.relationships: dict[str, Relationship] = {}
        self._order: list[str] = []
        self._relationships_by_client: dict[str, list[str]] = {}

    # -- clients -------------------------------------------------------------------------
    def new_client(self, uuid: str, name: str, now: float) -> Client:
        """Create and store a client with only a name; callers then fill in its fields."""
        if uuid in self.clients:
            raise ValueError(f"client {uuid} already exists")
        client = Client(uuid=uuid, seq=len(self._order), name=name, modified=now)
        if self.billing_types:
            # Every XPM client has a billing type; new ones get the practice's first (default).
            client.billing_type = next(iter(self.billing_types))
        self.clients[uuid] = client
        self._order.append(uuid)
        return client

    def add_client(self, uuid: str, changes: ClientChanges, now: float) -> Client:
        client = self.new_client(uuid, changes.name or "", now)
        self.update_client(client, changes, now)
        return client

    def update_client(self, client: Client, changes: ClientChanges, now: float) -> None:
        if changes.name is not None:
            client.name = changes.name
        client.fields.update(changes.fields)
        for attribute, value in (changes.refs | changes.flags).items():
            setattr(client, attribute, value)
        if any(c.is_primary for c in changes.contacts):
            # "If several are marked primary, the last one wins" (§3.3.5).
            for contact in client.contacts:
                contact.is_primary = False
            last = [c for c in changes.contacts if c.is_primary][-1]
            for contact in changes.contacts:
                contact.is_primary = contact is last
        client.contacts.extend(changes.contacts)
        client.modified = now

    def live_client(self, uuid: str) -> Client | None:
        """The client with this UUID unless it is unknown or deleted (XPM forgets deleted ones)."""
        client = self.clients.get(uuid)
        return client if client is not None and not client.is_deleted else None

    def archive_client(self, client: Client, now: float) -> None:
        client.is_archived = True
        client.modified = now

    def delete_client(self, client: Client, now: float) -> None:
        """Mark deleted and drop the relationships it takes part in on either side."""
        client.is_deleted = True
        client.modified = now
        doomed = [
            r.uuid
            for r in self.relationships.values()
            if client.uuid in (r.client_uuid, r.related_client_uuid)
        ]
        for rel_uuid in doomed:
            self.delete_relationship(rel_uuid)

    def listed_clients(self, modified_since: float | None = None) -> Iterator[Client]:
        """``client.api/list``: archived included (IsArchived=Yes), deleted excluded (§3.3, §8.13)."""
        for client in self.clients.values():
            if client.is_deleted:
                continue
            if modified_since is not None and client.modified < modified_since:
                continue
            yield client

    def search_clients(self, query: str) -> list[Client]:
        """Case-insensitive substring match on Name; archived included, deleted excluded (§8.12)."""
        needle = query.casefold()
        return [c for c in self.clients.values() if not c.is_deleted and needle in c.name.casefold()]

    def client_page(self, after_seq: int, size: int) -> tuple[list[Client], int | None]:
        """Up to ``size`` non-archived, non-deleted clients created after ``after_seq`` (§3.3.2).

        Returns the page and the ``seq`` to continue after, or None on the last page. Looks ahead
        for one more eligible client so the last page carries no ``<Next>`` (§8.16); each skipped
        client is visited at most twice over a full walk, so paging stays linear.
        """
        page: list[Client] = []
        for position in range(after_seq + 1, len(self._order)):
            client = self.clients[self._order[position]]
            if client.is_archived or client.is_deleted:
                continue
            if len(page) == size:
                return page, page[-1].seq
            page.append(client)
        return page, None

    # -- relationships -------------------------------------------------------------------
    def add_relationship(self, relationship: Relationship) -> None:
        self.relationships[relationship.uuid] = relationship
        self._relationships_by_client.setdefault(relationship.client_uuid, []).append(relationship.uuid)

    def replace_relationship(self, relationship: Relationship) -> None:
        """Store new values for an existing relationship (same UUID, same ClientUUID)."""
        existing = self.relationships[relationship.uuid]
        if existing.client_uuid != relationship.client_uuid:
            raise ValueError("a relationship cannot move to another client")
        self.relationships[relationship.uuid] = relationship

    def delete_relationship(self, uuid: str) -> None:
        relationship = self.relationships.pop(uuid)
        self._relationships_by_client[relationship.client_uuid].remove(uuid)

    def relationships_of(self, client_uuid: str) -> list[Relationship]:
        """Relationships added on this client (it is the ``ClientUUID``), oldest first."""
        return [self.relationships[u] for u in self._relationships_by_client.get(client_uuid, [])]

    # -- groups --------------------------------------------------------------------------
    def groups_of(self, client_uuid: str) -> list[ClientGroup]:
        # Practices have a handful of groups, so a scan per client is cheap.
        return [g for g in self.groups.values() if client_uuid in g.client_uuids]


def encode_page_token(after_seq: int) -> str:
    """An opaque cursor for ``paged-list`` (§3.3.2): callers must not parse it."""
    raw = json.dumps({"after": after_seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The ``seq`` a token continues after; ValueError for anything this sandbox did not issue."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after = json.loads(raw)["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError("invalid page token") from exc
    if not isinstance(after, int) or after < -1:
        raise ValueError("invalid page token")
    return after
