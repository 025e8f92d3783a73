"""A believable, deterministic practice: households of people and the entities they control.

Each household is one or two individuals (spouses, sometimes children) plus, by chance, a company
they direct and hold shares in, a family trust, an SMSF or a partnership, linked by XPM
relationships the way an accountant would add them (entity = ``ClientUUID``, role holder =
``RelatedClientUUID``, §3.5). The first household is always the Bloggs family so search demos
(``query=Bloggs``, §3.3.3) find something. UUIDs come from ``stable_uuid`` so docs can name them;
everything else comes from ``rng``, so the same rng state gives the same practice.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sandbox.practice import (
    BillingType,
    Client,
    ClientGroup,
    Contact,
    Note,
    PracticeData,
    Relationship,
    Staff,
)
from sandbox.state import Practice, stable_uuid

FIRST_NAMES = (
    "James", "Olivia", "William", "Charlotte", "Jack", "Amelia", "Noah", "Isla", "Thomas", "Mia",
    "Lucas", "Grace", "Henry", "Ava", "Oliver", "Chloe", "Leo", "Sophie", "Harry", "Ruby", "Liam",
    "Zoe", "Ethan", "Emily", "Samuel", "Hannah", "Daniel", "Ella", "Matthew", "Lily",
)  # fmt: skip
SURNAMES = (
    "Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson", "Martin",
    "White", "Anderson", "Walker", "Thompson", "Harris", "Lee", "Ryan", "Robinson", "Kelly",
    "King", "Davis", "Wright", "Campbell", "Mitchell", "Bloggs", "Murphy", "Singh", "Patel",
    "Clarke", "Young", "Chen",
)  # fmt: skip
TRADES = (
    "Electrical", "Plumbing", "Joinery", "Landscaping", "Consulting", "Design", "Logistics",
    "Bakery", "Dental", "Physio", "Motors", "Cafe", "Builders", "Media", "Engineering",
)  # fmt: skip
CITIES = (
    ("Sydney", "NSW", "2000"), ("Melbourne", "VIC", "3000"), ("Brisbane", "QLD", "4000"),
    ("Perth", "WA", "6000"), ("Adelaide", "SA", "5000"), ("Hobart", "TAS", "7000"),
    ("Canberra", "ACT", "2600"),
)  # fmt: skip
STREETS = ("George St", "King St", "High St", "Queen St", "Church St", "Station Rd", "Park Ave")
STAFF_NAMES = ("Jo Bloggs", "John Smith", "Priya Patel", "Mei Chen", "Tom Ryan", "Sarah Kelly")
# Seeded modified times fall in 2023-2024 so any ``modifiedsince`` from today on sees only changes
# made while the sandbox runs.
EPOCH_2023 = datetime(2023, 1, 1, tzinfo=UTC).timestamp()
TWO_YEARS = 2 * 365 * 86400
ARCHIVED_SHARE = 0.05


class _PracticeBuilder:
    """Adds clients until the practice holds ``n_clients``; relationships only between added ones."""

    def __init__(self, data: PracticeData, n_clients: int, rng: random.Random) -> None:
        self.data = data
        self.n_clients = n_clients
        self.rng = rng
        self.staff = list(data.staff)
        self.individuals: list[Client] = []

    @property
    def full(self) -> bool:
        return len(self.data.clients) >= self.n_clients

    def client(self, name: str, structure: str, email_name: str) -> Client | None:
        if self.full:
            return None
        rng, index = self.rng, len(self.data.clients)
        client = self.data.new_client(
            stable_uuid(self.data.tenant_id, "client", index),
            name,
            EPOCH_2023 + rng.uniform(0, TWO_YEARS),
        )
        city, region, postcode = rng.choice(CITIES)
        client.fields.update(
            Email=f"{email_name}{index}@example.com",
            Address=f"{rng.randint(1, 400)} {rng.choice(STREETS)}",
            City=city,
            Region=region,
            PostCode=postcode,
            Country="Australia",
            Phone=f"(0{rng.randint(2, 8)}) {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
            BusinessStructure=structure,
            TaxNumber=f"{rng.randrange(10**9):09d}",
        )
        client.account_manager_uuid = rng.choice(self.staff)
        if rng.random() < 0.6:
            client.job_manager_uuid = rng.choice(self.staff)
        client.billing_type = rng.choice(list(self.data.billing_types))
        client.is_prospect = rng.random() < 0.02
        if rng.random() < 0.3:
            client.notes.append(
                Note(
                    title="Engagement letter",
                    text=f"Signed engagement letter for {name}.",
                    date=float(int(EPOCH_2023 + rng.uniform(0, TWO_YEARS))),
                    created_by=self.data.staff[client.account_manager_uuid].name,
                )
            )
        return client

    def contact(self, client: Client, name: str, position: str = "") -> None:
        index = len(client.contacts)
        digits = f"{self.rng.randrange(10**8):08d}"
        client.contacts.append(
            Contact(
                uuid=stable_uuid(self.data.tenant_id, "contact", client.seq, index),
                name=name,
                salutation=name.split(maxsplit=1)[0],
                addressee=name,
                mobile=f"04{digits[:2]} {digits[2:5]} {digits[5:]}",
                email=f"{name.lower().replace(' ', '.')}@example.com",
                position=position,
                is_primary=index == 0,
            )
        )

    def relate(
        self,
        entity: Client | None,
        holder: Client | None,
        kind: str,
        *,
        shares: int | None = None,
        percentage: float | None = None,
    ) -> None:
        if entity is None or holder is None:
            return
        start = datetime.fromtimestamp(EPOCH_2023 - self.rng.uniform(0, 10 * 365 * 86400), tz=UTC)
        self.data.add_relationship(
            Relationship(
                uuid=stable_uuid(self.data.tenant_id, "relationship", len(self.data.relationships)),
                client_uuid=entity.uuid,
                related_client_uuid=holder.uuid,
                type=kind,
                number_of_shares=shares,
                percentage=percentage,
                start_date=start.strftime("%Y-%m-%d"),
            )
        )

    def person(self, first: str, surname: str) -> Client | None:
        rng = self.rng
        client = self.client(f"{first} {surname}", "Individual", f"{first}.{surname}".lower())
        if client is None:
            return None
        born = datetime(rng.randint(1945, 2005), rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC)
        client.fields.update(FirstName=first, LastName=surname, DateOfBirth=born.strftime("%Y-%m-%d"))
        if rng.random() < 0.2:
            client.fields["OtherName"] = rng.choice(FIRST_NAMES)
        self.contact(client, client.name)
        self.individuals.append(client)
        return client

    def entity(self, name: str, structure: str, people: list[Client]) -> Client | None:
        rng = self.rng
        client = self.client(name, structure, name.split(maxsplit=1)[0].lower())
        if client is None:
            return None
        client.fields.update(
            BusinessNumber=f"{rng.randrange(10**11):011d}",
            GSTRegistered="Yes" if rng.random() < 0.7 else "No",
            BalanceMonth="6",
        )
        if client.fields["GSTRegistered"] == "Yes":
            client.fields.update(PrepareGST="Yes", GSTPeriod=rng.choice(("Monthly", "2 Monthly")))
            client.fields["GSTBasis"] = rng.choice(("Invoice", "Payment"))
        if structure == "Company":
            client.fields["CompanyNumber"] = f"{rng.randrange(10**9):09d}"
        for person in people:
            self.contact(client, person.name, "Director" if structure == "Company" else "")
        return client

    def bloggs_household(self) -> list[Client]:
        """The fixed demo family the docs use: Joe and Jane, their company and their trust."""
        joe, jane = self.person("Joe", "Bloggs"), self.person("Jane", "Bloggs")
        self.relate(joe, jane, "Wife")
        adults = [p for p in (joe, jane) if p]
        company = self.entity("Bloggs Electrical Pty Ltd", "Company", adults)
        for person in adults:
            self.relate(company, person, "Director")
            self.relate(company, person, "Shareholder", shares=500)
        self.relate(company, jane, "Secretary")
        self.relate(company, joe, "Public Officer")
        trust = self.entity("Bloggs Family Trust", "Trust", adults)
        self.relate(trust, company, "Trustee")
        for person in adults:
            self.relate(trust, person, "Beneficiary")
        self.relate(trust, joe, "Appointer")
        self.relate(trust, jane, "Settlor")
        return [c for c in (joe, jane, company, trust) if c]

    def household(self, surname: str) -> list[Client]:
        """One or two adults, maybe a child, and by chance the entities the adults control."""
        rng = self.rng
        adults = [p for p in (self.person(rng.choice(FIRST_NAMES), surname),) if p]
        if adults and rng.random() < 0.7:
            spouse = self.person(rng.choice(FIRST_NAMES), surname)
            self.relate(adults[0], spouse, rng.choice(("Spouse", "Husband", "Wife")))
            adults += [spouse] if spouse else []
        members = list(adults)
        if adults and rng.random() < 0.25:
            child = self.person(rng.choice(FIRST_NAMES), surname)
            self.relate(adults[0], child, "Parent Of")
            self.relate(child, adults[0], "Child Of")
            members += [child] if child else []
        if not adults:
            return members
        company = self.company(surname, adults) if rng.random() < 0.5 else None
        members += [company] if company else []
        if rng.random() < 0.35:
            members += self.family_trust(surname, adults, members, company)
        if rng.random() < 0.2:
            members += self.super_fund(surname, adults)
        if rng.random() < 0.15:
            members += self.partnership(surname, adults)
        if rng.random() < 0.1:
            trader = self.entity(f"{adults[0].name} {rng.choice(TRADES)}", "Sole Trader", adults[:1])
            self.relate(trader, adults[0], "Owner", shares=1)
            members += [trader] if trader else []
        return members

    def company(self, surname: str, adults: list[Client]) -> Client | None:
        company = self.entity(f"{surname} {self.rng.choice(TRADES)} Pty Ltd", "Company", adults)
        for person in adults:
            self.relate(company, person, "Director")
            self.relate(company, person, "Shareholder", shares=100 // len(adults))
        self.relate(company, adults[0], "Secretary")
        self.relate(company, adults[-1], "Public Officer")
        return company

    def family_trust(
        self, surname: str, adults: list[Client], members: list[Client], company: Client | None
    ) -> list[Client]:
        trust = self.entity(f"{surname} Family Trust", "Trust", adults)
        self.relate(trust, company or adults[0], "Trustee")  # a corporate trustee when there is one
        for person in members:
            if person is not company:
                self.relate(trust, person, "Beneficiary")
        self.relate(trust, adults[0], "Appointer")
        self.relate(trust, adults[-1], "Settlor")
        return [trust] if trust else []

    def super_fund(self, surname: str, adults: list[Client]) -> list[Client]:
        fund = self.entity(f"{surname} Superannuation Fund", "Superannuation Fund", adults)
        for person in adults:
            self.relate(fund, person, "Member")
            self.relate(fund, person, "Trustee")
        # Funds are audited by someone outside the family: any earlier individual.
        self.relate(fund, self.rng.choice(self.individuals), "Auditor")
        return [fund] if fund else []

    def partnership(self, surname: str, adults: list[Client]) -> list[Client]:
        partner = self.person(self.rng.choice(FIRST_NAMES), self.rng.choice(SURNAMES))
        other = partner.fields["LastName"] if partner else "Co"
        firm = self.entity(f"{surname} & {other}", "Partnership", adults)
        share = round(100.0 / (len(adults) + (1 if partner else 0)), 2)
        for person in [*adults, partner]:
            self.relate(firm, person, "Partner", percentage=share)
        self.relate(partner, adults[0], "Associate")
        return [c for c in (partner, firm) if c]


def seed_practice_data(practice: Practice, n_clients: int, rng: random.Random) -> PracticeData:
    """The practice's seeded data: about ``n_clients`` clients, exactly that many when it allows."""
    tenant = practice.tenant_id
    staff = [
        Staff(
            uuid=stable_uuid(tenant, "staff", i),
            name=name,
            email=f"{name.lower().replace(' ', '.')}@practice.example",
            phone=f"(02) 9{i}00 00{i}{i}",
            payroll_code=f"P{100 + i}",
        )
        for i, name in enumerate(STAFF_NAMES)
    ]
    billing = [
        BillingType("20th of Month", "30.00", "DayOfMonth", 20),
        BillingType("Within 14 days", "0.00", "WithinDays", 14),
        BillingType("Within 7 days", "10.00", "WithinDays", 7),
    ]
    data = PracticeData(tenant, staff, billing)
    builder = _PracticeBuilder(data, n_clients, rng)
    households = [("Bloggs", builder.bloggs_household())]
    while not builder.full:
        surname = rng.choice(SURNAMES)
        households.append((surname, builder.household(surname)))
    first_surname, first_members = households[0]
    groups = [(f"{first_surname} Family", True, first_members)]
    groups += [(f"{s} Family", rng.random() < 0.5, m) for s, m in households[1:] if len(m) >= 4][:4]
    monthly = [c for c in data.clients.values() if c.fields["GSTPeriod"] == "Monthly"]
    groups.append(("Monthly GST", False, monthly))
    for index, (name, taxable, members) in enumerate(groups):
        uuid = stable_uuid(tenant, "group", index)
        data.groups[uuid] = ClientGroup(uuid, name, taxable, {c.uuid for c in members})
    protected = {c.uuid for c in first_members}  # keep the demo family visible in paged lists
    for client in data.clients.values():
        if client.uuid not in protected and rng.random() < ARCHIVED_SHARE:
            client.is_archived = True
    return data
