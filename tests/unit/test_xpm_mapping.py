"""XPM client XML ↔ contract JSON (chalicelib/xpm/mapping.py; docs/xpm-json.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from chalicelib.xpm.errors import InvalidField
from chalicelib.xpm.mapping import (
    RELATIONSHIP_TYPES,
    add_client_request,
    client_json,
    client_uuid_request,
    clients_json,
    group_json,
    mask_tax_number,
    present_client,
    relationship_request,
    staff_json,
    update_client_request,
)
from chalicelib.xpm.xml import parse_response, parse_xml

# xero-reference §3.3.4 (get), the abridged parts filled in with §3.3.1's elements, plus elements
# XPM may add one day (they must be ignored).
DETAILED = b"""<?xml version="1.0" encoding="utf-8"?>
<Response api-method="Get">
  <Status>OK</Status>
  <WebUrl>https://practicemanager.xero.com/Client/123/Detail</WebUrl>
  <Client>
    <UUID>f8235e1a-d383-48b7-9139-ba97ab8ca889</UUID>
    <Name>Acmer Pty Ltd</Name>
    <Title>Mr</Title><Gender>Male</Gender>
    <FirstName>Joe</FirstName><LastName>Bloggs</LastName><OtherName>J</OtherName>
    <Email>someone@example.com</Email>
    <DateOfBirth>1970-11-26T00:00:00</DateOfBirth>
    <Address>1 Main St</Address><City>Sydney</City><Region>NSW</Region><PostCode>2000</PostCode>
    <Country>Australia</Country>
    <PostalAddress>P O Box 123</PostalAddress>
    <PostalCity>Wellington</PostalCity><PostalRegion /><PostalPostCode>6011</PostalPostCode><PostalCountry />
    <Phone>(02) 1723 5265</Phone><Fax /><Website>https://acmer.example</Website>
    <ReferralSource>Web</ReferralSource><ExportCode>ACM01</ExportCode>
    <IsProspect>No</IsProspect><IsArchived>No</IsArchived><IsDeleted>No</IsDeleted>
    <AccountManager><UUID>dc48df15-7a27-4a52-8e5a-b9d64f5a1f1e</UUID><Name>Jo Blogs</Name></AccountManager>
    <Type><Name>20th of Month</Name><CostMarkup>30.00</CostMarkup>
          <PaymentTerm>DayOfMonth</PaymentTerm><PaymentDay>20</PaymentDay></Type>
    <Contacts>
      <Contact>
        <UUID>10e45ad9-1c1e-4b1b-9d0b-64e0b1f3a111</UUID><Name>Samantha Benecke</Name>
        <Salutation>Sam</Salutation><Addressee>Mrs S Benecke</Addressee>
        <Mobile /><Email /><Phone />
        <IsDeleted>No</IsDeleted><IsPrimary>Yes</IsPrimary><Position />
        <Nickname>unknown-to-us</Nickname>
      </Contact>
    </Contacts>
    <Notes><Note><Title>Engagement</Title><Text>Signed.</Text><Folder/><Tag>onboarding</Tag>
      <Date>2008-09-12T13:00:00</Date><CreatedBy>Jo Blogs</CreatedBy></Note></Notes>
    <BillingClient><UUID>0b8e2a47-5c1d-4e0b-9a57-3f0a8d1c2b3e</UUID>
      <Name>Billing Client</Name></BillingClient>
    <JobManager><UUID>7c0b3a5e-1d2f-4e8a-9b6c-5d4e3f2a1b0c</UUID><Name>John Smith</Name></JobManager>
    <TaxNumber>******123</TaxNumber>
    <CompanyNumber>123456</CompanyNumber><BusinessNumber>51824753556</BusinessNumber>
    <BusinessStructure>Company</BusinessStructure>
    <BalanceMonth>6</BalanceMonth><PrepareGST>Yes</PrepareGST><GSTRegistered>No</GSTRegistered>
    <GSTPeriod>2 Monthly</GSTPeriod>
    <GSTBasis>Invoice</GSTBasis>
    <ProvisionalTaxBasis>Ratio Option</ProvisionalTaxBasis><ProvisionalTaxRatio>1.5</ProvisionalTaxRatio>
    <SignedTaxAuthority>Yes</SignedTaxAuthority><TaxAgent>Bloggs &amp; Co</TaxAgent>
    <AgencyStatus>With EOT</AgencyStatus><ReturnType>IR4</ReturnType>
    <PrepareActivityStatement>No</PrepareActivityStatement><PrepareTaxReturn>Yes</PrepareTaxReturn>
    <Groups><Group><UUID>0dd913a9-2b1c-4f5e-8d7a-6c5b4a392817</UUID>
      <Name>Bloggs Family</Name></Group></Groups>
    <Relationships>
      <Relationship>
        <UUID>1d44f4b8-094f-4b91-a73e-b00b83593f71</UUID>
        <Type>Shareholder</Type>
        <RelatedClient><UUID>7b57ae35-3e8f-4c1d-a2b9-0f6e5d4c3b2a</UUID>
          <Name>Bloggs Ltd</Name></RelatedClient>
        <NumberOfShares>1000</NumberOfShares>
        <Percentage>0</Percentage>
        <StartDate>2011-01-01</StartDate><EndDate>2013-03-31</EndDate>
      </Relationship>
    </Relationships>
    <FutureField>ignored</FutureField>
    <FutureList><Item>1</Item></FutureList>
  </Client>
</Response>"""

EXPECTED_DETAILED: dict[str, Any] = {
    "uuid": "f8235e1a-d383-48b7-9139-ba97ab8ca889",
    "name": "Acmer Pty Ltd",
    "title": "Mr",
    "gender": "Male",
    "first_name": "Joe",
    "last_name": "Bloggs",
    "other_name": "J",
    "email": "someone@example.com",
    "date_of_birth": "1970-11-26",
    "address": {
        "street": "1 Main St",
        "city": "Sydney",
        "region": "NSW",
        "post_code": "2000",
        "country": "Australia",
    },
    "postal_address": {
        "street": "P O Box 123",
        "city": "Wellington",
        "region": None,
        "post_code": "6011",
        "country": None,
    },
    "phone": "(02) 1723 5265",
    "fax": None,
    "website": "https://acmer.example",
    "referral_source": "Web",
    "export_code": "ACM01",
    "is_archived": False,
    "is_deleted": False,
    "is_prospect": False,
    "account_manager": {"uuid": "dc48df15-7a27-4a52-8e5a-b9d64f5a1f1e", "name": "Jo Blogs"},
    "job_manager": {"uuid": "7c0b3a5e-1d2f-4e8a-9b6c-5d4e3f2a1b0c", "name": "John Smith"},
    "billing_client": {"uuid": "0b8e2a47-5c1d-4e0b-9a57-3f0a8d1c2b3e", "name": "Billing Client"},
    "billing_type": {
        "name": "20th of Month",
        "cost_markup": 30,
        "payment_term": "DayOfMonth",
        "payment_day": 20,
    },
    "contacts": [
        {
            "uuid": "10e45ad9-1c1e-4b1b-9d0b-64e0b1f3a111",
            "name": "Samantha Benecke",
            "salutation": "Sam",
            "addressee": "Mrs S Benecke",
            "mobile": None,
            "email": None,
            "phone": None,
            "position": None,
            "is_primary": True,
            "is_deleted": False,
        }
    ],
    "notes": [
        {
            "title": "Engagement",
            "text": "Signed.",
            "folder": None,
            "tag": "onboarding",
            "date": "2008-09-12T13:00:00Z",
            "created_by": "Jo Blogs",
        }
    ],
    "tax_number": "******123",
    "company_number": "123456",
    "business_number": "51824753556",
    "business_structure": "Company",
    "balance_month": 6,
    "prepare_gst": True,
    "gst_registered": False,
    "gst_period": "2 Monthly",
    "gst_basis": "Invoice",
    "provisional_tax_basis": "Ratio Option",
    "provisional_tax_ratio": "1.5",
    "signed_tax_authority": True,
    "tax_agent": "Bloggs & Co",
    "agency_status": "With EOT",
    "return_type": "IR4",
    "prepare_activity_statement": False,
    "prepare_tax_return": True,
    "groups": [{"uuid": "0dd913a9-2b1c-4f5e-8d7a-6c5b4a392817", "name": "Bloggs Family"}],
    "relationships": [
        {
            "uuid": "1d44f4b8-094f-4b91-a73e-b00b83593f71",
            "type": "Shareholder",
            "related_client": {"uuid": "7b57ae35-3e8f-4c1d-a2b9-0f6e5d4c3b2a", "name": "Bloggs Ltd"},
            "number_of_shares": 1000,
            "percentage": 0,
            "start_date": "2011-01-01",
            "end_date": "2013-03-31",
        }
    ],
    "web_url": "https://practicemanager.xero.com/Client/123/Detail",
}

# xero-reference §3.3.1 (list), as printed.
LISTED = b"""<Response>
  <Status>OK</Status>
  <Clients>
    <Client>
      <UUID>720c21d3-e812-4bb1-9d6b-ddeb4745e7b9</UUID>
      <Name>XYZ Australia, NZ Business Unit</Name>
      <Title /><Gender />
      <FirstName /><LastName /><OtherName />
      <Email>someone@example.com</Email>
      <DateOfBirth>1970-11-26T00:00:00</DateOfBirth>
      <Address /><City /><Region /><PostCode /><Country />
      <PostalAddress>P O Box 123</PostalAddress>
      <PostalCity>Wellington</PostalCity><PostalRegion />
      <PostalPostCode>6011</PostalPostCode><PostalCountry />
      <Phone>(02) 1723 5265</Phone><Fax /><Website />
      <ReferralSource /><ExportCode />
      <IsArchived>No</IsArchived><IsDeleted>No</IsDeleted>
      <AccountManager><UUID>dc48df15-0000-4000-8000-000000000001</UUID><Name>Jo Blogs</Name></AccountManager>
      <Type><Name>20th of Month</Name><CostMarkup>30.00</CostMarkup>
            <PaymentTerm>DayOfMonth</PaymentTerm><PaymentDay>20</PaymentDay></Type>
      <Contacts>
        <Contact>
          <UUID>10e45ad9-0000-4000-8000-000000000002</UUID><Name>Samantha Benecke</Name>
          <Salutation>Sam</Salutation><Addressee>Mrs S Benecke</Addressee>
          <Mobile /><Email /><Phone />
          <IsDeleted>No</IsDeleted><IsPrimary>Yes</IsPrimary><Position />
        </Contact>
      </Contacts>
      <BillingClient><UUID>f8235e1a-0000-4000-8000-000000000003</UUID>
        <Name>Billing Client</Name></BillingClient>
    </Client>
  </Clients>
</Response>"""


def one_client(body: bytes) -> dict[str, Any]:
    root = parse_response(body)
    web_url = root.findtext("WebUrl")
    return client_json(root.find("Client"), web_url=web_url)


def client_from(children: str) -> dict[str, Any]:
    return one_client(f"<Response><Status>OK</Status><Client>{children}</Client></Response>".encode())


# -- reading ---------------------------------------------------------------------------------------
def test_every_element_of_a_detailed_client() -> None:
    assert one_client(DETAILED) == EXPECTED_DETAILED


def test_the_list_sample() -> None:
    [client] = clients_json(parse_response(LISTED))
    assert set(client) == set(EXPECTED_DETAILED)  # every key, always
    assert client["uuid"] == "720c21d3-e812-4bb1-9d6b-ddeb4745e7b9"
    assert client["title"] is None and client["first_name"] is None and client["website"] is None
    assert client["date_of_birth"] == "1970-11-26"
    assert client["address"] is None  # all five parts empty
    assert client["postal_address"] == {
        "street": "P O Box 123",
        "city": "Wellington",
        "region": None,
        "post_code": "6011",
        "country": None,
    }
    assert client["is_prospect"] is None  # not in the sample: absent is null
    assert client["contacts"][0]["is_primary"] is True
    assert client["billing_client"] == {
        "uuid": "f8235e1a-0000-4000-8000-000000000003",
        "name": "Billing Client",
    }
    # Detail-only elements are absent from a list: null, and the containers empty arrays.
    assert client["tax_number"] is None and client["job_manager"] is None and client["web_url"] is None
    assert client["notes"] == [] and client["groups"] == [] and client["relationships"] == []


def test_one_element_lists_stay_lists_and_several_keep_their_order() -> None:
    one = client_from("<Groups><Group><UUID>a</UUID><Name>A</Name></Group></Groups>")
    two = client_from("<Groups><Group><Name>A</Name></Group><Group><Name>B</Name></Group></Groups>")
    assert one["groups"] == [{"uuid": "a", "name": "A"}]
    assert [g["name"] for g in two["groups"]] == ["A", "B"]


@pytest.mark.parametrize("container", ["Contacts", "Notes", "Groups", "Relationships"])
def test_empty_or_absent_containers_are_empty_arrays(container: str) -> None:
    key = container.lower()
    assert client_from(f"<{container} />")[key] == []
    assert client_from("")[key] == []


def test_empty_elements_and_whitespace_are_null() -> None:
    client = client_from("<Name>  </Name><Phone /><Email></Email><AccountManager /><BillingClient /><Type />")
    assert client["name"] is None and client["phone"] is None and client["email"] is None
    assert client["account_manager"] is None and client["billing_client"] is None
    assert client["billing_type"] is None


def test_a_client_with_no_elements_has_every_key_null_or_empty() -> None:
    client = client_from("")
    assert set(client) == set(EXPECTED_DETAILED)
    for key, value in client.items():
        assert value == ([] if key in ("contacts", "notes", "groups", "relationships") else None), key


@pytest.mark.parametrize(
    ("text", "expected"), [("Yes", True), ("No", False), ("yes", True), ("true", True), ("false", False)]
)
def test_yes_no_become_booleans(text: str, expected: bool) -> None:
    assert client_from(f"<IsArchived>{text}</IsArchived>")["is_archived"] is expected


@pytest.mark.parametrize("text", ["", "Maybe", "1"])
def test_anything_else_in_a_boolean_is_null(text: str) -> None:
    assert client_from(f"<PrepareGST>{text}</PrepareGST>")["prepare_gst"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2008-09-12T13:00:00", "2008-09-12T13:00:00Z"),
        ("2008-09-12T13:00:00.5", "2008-09-12T13:00:00Z"),
        ("2008-09-12T13:00:00+13:00", "2008-09-12T00:00:00Z"),
        ("2008-09-12T13:00:00Z", "2008-09-12T13:00:00Z"),
        ("0001-01-01T00:00:00", None),
        ("12/09/2008", None),
    ],
)
def test_zone_less_datetimes_become_utc(text: str, expected: str | None) -> None:
    assert client_from(f"<Notes><Note><Date>{text}</Date></Note></Notes>")["notes"][0]["date"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1970-11-26T00:00:00", "1970-11-26"), ("1970-11-26", "1970-11-26"), ("1970-02-30", None), ("x", None)],
)
def test_dates_stay_dates(text: str, expected: str | None) -> None:
    assert client_from(f"<DateOfBirth>{text}</DateOfBirth>")["date_of_birth"] == expected
    relationship = client_from(
        f"<Relationships><Relationship><StartDate>{text}</StartDate></Relationship></Relationships>"
    )
    assert relationship["relationships"][0]["start_date"] == expected


def test_website_is_read_in_either_spelling() -> None:
    assert client_from("<Website>https://a.example</Website>")["website"] == "https://a.example"
    assert client_from("<WebSite>https://b.example</WebSite>")["website"] == "https://b.example"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Monthly", "Monthly"),
        ("2 Monthly", "2 Monthly"),
        ("6 Monthly", "6 Monthly"),
        ("1", "Monthly"),
        ("6", "6 Monthly"),
    ],
)
def test_gst_period_reads_as_xpms_words(text: str, expected: str) -> None:
    assert client_from(f"<GSTPeriod>{text}</GSTPeriod>")["gst_period"] == expected


@pytest.mark.parametrize(("text", "expected"), [("6", 6), ("Jun", 6), ("june", 6), ("13", None), ("", None)])
def test_balance_month_is_a_number(text: str, expected: int | None) -> None:
    assert client_from(f"<BalanceMonth>{text}</BalanceMonth>")["balance_month"] == expected


def test_relationship_numbers_are_numbers() -> None:
    client = client_from(
        "<Relationships><Relationship><NumberOfShares>250</NumberOfShares><Percentage>12.5</Percentage>"
        "</Relationship><Relationship><NumberOfShares>lots</NumberOfShares><Percentage/></Relationship>"
        "</Relationships>"
    )
    first, second = client["relationships"]
    assert first["number_of_shares"] == 250 and isinstance(first["number_of_shares"], int)
    assert first["percentage"] == 12.5
    assert second["number_of_shares"] is None and second["percentage"] is None
    assert second["related_client"] is None


def test_unexpected_structure_never_crashes() -> None:
    client = client_from(
        "<Contacts>text, not contacts<Other/></Contacts>"
        "<Groups><Group><UUID><Deep>x</Deep></UUID></Group></Groups>"
        "<Name><!-- a comment -->Real<?pi x?></Name><AccountManager>just text</AccountManager>"
    )
    assert client["contacts"] == []
    assert client["groups"] == [{"uuid": None, "name": None}]
    assert client["name"] == "Real"
    assert client["account_manager"] is None


_ANY_TAG = st.sampled_from(
    ["Name", "Contacts", "Contact", "Groups", "Group", "UUID", "IsPrimary", "Relationships", "Relationship",
     "RelatedClient", "Notes", "Note", "Date", "Type", "Unknown", "BalanceMonth", "Percentage"]
)  # fmt: skip
_TREES = st.recursive(
    st.text(alphabet="abcYesNo0123456789-T:. ", max_size=20),
    lambda children: st.lists(st.tuples(_ANY_TAG, children), max_size=4),
    max_leaves=25,
)


def _to_xml(tree: Any) -> str:
    if isinstance(tree, str):
        return tree
    return "".join(f"<{tag}>{_to_xml(child)}</{tag}>" for tag, child in tree)


@settings(max_examples=150, deadline=None)
@given(_TREES)
def test_any_shape_of_known_and_unknown_elements_maps_without_crashing(tree: Any) -> None:
    client = client_from(_to_xml(tree))
    assert set(client) == set(EXPECTED_DETAILED)
    assert all(isinstance(client[k], list) for k in ("contacts", "notes", "groups", "relationships"))


def test_staff_and_groups() -> None:
    root = parse_response(
        b"<Response><Status>OK</Status><StaffList><Staff><UUID>s1</UUID><Name>Jo Bloggs</Name>"
        b"<Email>jo@bloggs.net</Email><Phone /><Mobile /><Address /><PayrollCode>P1</PayrollCode></Staff>"
        b"</StaffList><Groups><Group><UUID>g1</UUID><Name>Family</Name><Taxable>Yes</Taxable></Group></Groups>"
        b"</Response>"
    )
    assert staff_json(root.find("StaffList/Staff")) == {
        "uuid": "s1",
        "name": "Jo Bloggs",
        "email": "jo@bloggs.net",
        "phone": None,
        "mobile": None,
        "address": None,
        "payroll_code": "P1",
    }
    assert group_json(root.find("Groups/Group")) == {"uuid": "g1", "name": "Family", "taxable": True}


# -- masking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [("******123", "***123"), ("123456789", "***789"), ("12", "***"), ("", None), (None, None)],
)
def test_mask_tax_number(value: str | None, expected: str | None) -> None:
    assert mask_tax_number(value) == expected


def test_present_client_masks_unless_sensitive_fields_are_allowed() -> None:
    client = one_client(DETAILED)
    client["tax_number"] = "123456789"  # as if XPM ever returned it whole
    assert present_client(client, allow_sensitive=False)["tax_number"] == "***789"
    assert present_client(client, allow_sensitive=True)["tax_number"] == "123456789"
    assert client["tax_number"] == "123456789"  # the input is not changed
    assert present_client({**client, "tax_number": None}, allow_sensitive=False)["tax_number"] is None


# -- writing: add ------------------------------------------------------------------------------------
FULL_INPUT: dict[str, Any] = {
    "name": "Bloggs Family Trust",
    "email": "trustee@example.com",
    "address": {
        "street": "1 Main St",
        "city": "Sydney",
        "region": "NSW",
        "post_code": "2000",
        "country": "Australia",
    },
    "postal_address": {"street": "PO Box 9", "city": "Sydney"},
    "phone": "02 9000 0000",
    "fax": "02 9000 0001",
    "website": "https://bloggs.example",
    "referral_source": "Referral",
    "export_code": "BFT",
    "account_manager_uuid": "DC48DF15-7A27-4A52-8E5A-B9D64F5A1F1E",
    "contacts": [{"name": "Jo Bloggs", "is_primary": True, "email": "jo@example.com", "position": "Trustee"}],
    "billing_client_uuid": "0b8e2a47-5c1d-4e0b-9a57-3f0a8d1c2b3e",
    "first_name": "Jo",
    "last_name": "Bloggs",
    "other_name": "Q",
    "date_of_birth": "1980-02-29",
    "job_manager_uuid": "7c0b3a5e-1d2f-4e8a-9b6c-5d4e3f2a1b0c",
    "tax_number": "123456782",
    "company_number": "C1",
    "business_number": "51824753556",
    "business_structure": "Trust",
    "balance_month": "Jun",
    "prepare_gst": False,
    "gst_registered": True,
    "gst_period": "2 Monthly",
    "gst_basis": "payment",
    "provisional_tax_basis": "Standard Option",
    "provisional_tax_ratio": 1.5,
    "signed_tax_authority": True,
    "tax_agent": "Agent",
    "agency_status": "Unlinked",
    "return_type": "IR3",
    "prepare_activity_statement": True,
    "prepare_tax_return": False,
}

SAMPLE_ORDER = [
    "Name", "Email", "Address", "City", "Region", "PostCode", "Country", "PostalAddress", "PostalCity",
    "PostalRegion", "PostalPostCode", "PostalCountry", "Phone", "Fax", "WebSite", "ReferralSource",
    "ExportCode", "AccountManagerUUID", "Contacts", "BillingClientUUID", "FirstName", "LastName",
    "OtherName", "DateOfBirth", "JobManagerUUID", "TaxNumber", "CompanyNumber", "BusinessNumber",
    "BusinessStructure", "BalanceMonth", "PrepareGST", "GSTRegistered", "GSTPeriod", "GSTBasis",
    "ProvisionalTaxBasis", "ProvisionalTaxRatio", "SignedTaxAuthority", "TaxAgent", "AgencyStatus",
    "ReturnType", "PrepareActivityStatement", "PrepareTaxReturn",
]  # fmt: skip


def test_add_request_follows_the_sample_order_and_spellings() -> None:
    root = parse_xml(add_client_request(FULL_INPUT))
    assert root.tag == "Client"
    present = [child.tag for child in root]
    assert present == [
        tag for tag in SAMPLE_ORDER if tag not in ("PostalRegion", "PostalPostCode", "PostalCountry")
    ]
    values = {child.tag: child.text for child in root if child.tag != "Contacts"}
    assert values["WebSite"] == "https://bloggs.example"
    assert root.find("Website") is None
    assert values["AccountManagerUUID"] == "dc48df15-7a27-4a52-8e5a-b9d64f5a1f1e"
    assert values["DateOfBirth"] == "1980-02-29"
    assert values["BalanceMonth"] == "6"
    assert (values["PrepareGST"], values["GSTRegistered"], values["SignedTaxAuthority"]) == (
        "No",
        "Yes",
        "Yes",
    )
    assert values["GSTPeriod"] == "2"
    assert values["GSTBasis"] == "Payment"
    assert values["ProvisionalTaxRatio"] == "1.5"
    assert values["PostalAddress"] == "PO Box 9" and values["Country"] == "Australia"
    [contact] = root.findall("Contacts/Contact")
    assert [c.tag for c in contact] == ["Name", "IsPrimary", "Email", "Position"]
    assert contact.findtext("IsPrimary") == "Yes"


def test_add_request_needs_only_a_name_and_leaves_out_nulls() -> None:
    body = add_client_request({"name": "  Solo  ", "phone": None, "email": "", "address": None})
    assert body == b"<Client><Name>Solo</Name></Client>"


@pytest.mark.parametrize(
    ("value", "expected"), [(1, "1"), (2, "2"), (6, "6"), ("6", "6"), ("Monthly", "1"), ("6 monthly", "6")]
)
def test_gst_period_is_sent_as_1_2_or_6(value: Any, expected: str) -> None:
    root = parse_xml(add_client_request({"name": "A", "gst_period": value}))
    assert root.findtext("GSTPeriod") == expected


def test_hostile_names_round_trip_as_literal_text() -> None:
    name = "Evil </Name><Evil/> & Co <!-- x -->"
    root = parse_xml(add_client_request({"name": name, "contacts": [{"name": "</Contact>&amp;"}]}))
    assert root.findtext("Name") == name
    assert len(root.findall(".//Name")) == 2
    assert not list(root.iter("Evil"))
    assert root.findtext("Contacts/Contact/Name") == "</Contact>&amp;"


@given(st.text(min_size=1, max_size=255).filter(lambda s: s.strip() and s == s.strip()))
@settings(max_examples=150, deadline=None)
def test_any_clean_name_round_trips_or_is_refused_naming_the_field(name: str) -> None:
    try:
        body = add_client_request({"name": name})
    except InvalidField as exc:
        assert exc.field == "name"
        return
    assert parse_xml(body).findtext("Name") == name


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 42}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "A\x00B"}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "email": "a@b\x1b.example"}, "email"),
        ({"name": "A", "nickname": "x"}, "nickname"),
        ({"name": "A", "uuid": "f8235e1a-d383-48b7-9139-ba97ab8ca889"}, "uuid"),
        ({"name": "A", "address": "1 Main St"}, "address"),
        ({"name": "A", "address": {"street": "1", "suburb": "x"}}, "address.suburb"),
        ({"name": "A", "address": {"city": "Syd\x07ney"}}, "address.city"),
        ({"name": "A", "contacts": {"name": "x"}}, "contacts"),
        ({"name": "A", "contacts": [{"email": "a@b.c"}]}, "contacts[0].name"),
        ({"name": "A", "contacts": [{"name": "ok"}, {"name": "B\x0bB"}]}, "contacts[1].name"),
        ({"name": "A", "contacts": [{"name": "ok", "is_primary": "Yes"}]}, "contacts[0].is_primary"),
        ({"name": "A", "prepare_gst": "Yes"}, "prepare_gst"),
        ({"name": "A", "gst_period": 3}, "gst_period"),
        ({"name": "A", "gst_period": True}, "gst_period"),
        ({"name": "A", "gst_period": "Quarterly"}, "gst_period"),
        ({"name": "A", "gst_basis": "Cash"}, "gst_basis"),
        ({"name": "A", "balance_month": 13}, "balance_month"),
        ({"name": "A", "date_of_birth": "2023-02-29"}, "date_of_birth"),
        ({"name": "A", "date_of_birth": "26/11/1970"}, "date_of_birth"),
        ({"name": "A", "account_manager_uuid": "jo"}, "account_manager_uuid"),
        ({"name": "A", "tax_number": "1" * 51}, "tax_number"),
        ({"name": "A", "provisional_tax_ratio": "lots"}, "provisional_tax_ratio"),
        ({"name": "A", "return_type": "1040"}, "return_type"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        add_client_request(data)
    problem = caught.value.to_problem()
    assert (problem["status"], problem["code"], problem["field"]) == (422, "invalid_request", field)


def test_a_name_of_exactly_255_characters_is_fine() -> None:
    assert parse_xml(add_client_request({"name": "x" * 255})).findtext("Name") == "x" * 255


def test_the_body_must_be_an_object() -> None:
    with pytest.raises(InvalidField):
        add_client_request(["name", "A"])


# -- writing: update, archive ----------------------------------------------------------------------
def test_update_sends_the_uuid_first_and_only_the_given_fields() -> None:
    body = update_client_request(
        "F8235E1A-D383-48B7-9139-BA97AB8CA889", {"phone": None, "website": "https://x.example"}
    )
    assert body == (
        b"<Client><UUID>f8235e1a-d383-48b7-9139-ba97ab8ca889</UUID><Phone/>"
        b"<WebSite>https://x.example</WebSite></Client>"
    )


def test_update_clears_a_whole_address_with_null() -> None:
    root = parse_xml(update_client_request("f8235e1a-d383-48b7-9139-ba97ab8ca889", {"postal_address": None}))
    assert [c.tag for c in root][1:] == [
        "PostalAddress",
        "PostalCity",
        "PostalRegion",
        "PostalPostCode",
        "PostalCountry",
    ]
    assert all(c.text is None for c in root[1:])


@pytest.mark.parametrize(("data", "field"), [({"name": None}, "name"), ({"contacts": []}, "contacts")])
def test_update_refuses_a_null_name_and_contacts(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        update_client_request("f8235e1a-d383-48b7-9139-ba97ab8ca889", data)
    assert caught.value.field == field


def test_archive_body() -> None:
    body = client_uuid_request("f8235e1a-d383-48b7-9139-ba97ab8ca889")
    assert body == b"<Client><UUID>f8235e1a-d383-48b7-9139-ba97ab8ca889</UUID></Client>"


# -- writing: relationships ------------------------------------------------------------------------
ENTITY = "94bfb8c1-d8f8-4457-84c5-d978a0d71de9"
PERSON = "38794f37-2bbd-4906-84ad-1693df5cc3ad"


def test_the_eighteen_relationship_types_as_xpm_spells_them() -> None:
    assert RELATIONSHIP_TYPES == (
        "Director", "Shareholder", "Trustee", "Beneficiary", "Partner", "Settlor", "Associate",
        "Secretary", "Public Officer", "Husband", "Wife", "Spouse", "Parent Of", "Child Of",
        "Appointer", "Member", "Auditor", "Owner",
    )  # fmt: skip


@pytest.mark.parametrize("kind", RELATIONSHIP_TYPES)
def test_every_relationship_type_builds(kind: str) -> None:
    root = parse_xml(relationship_request(ENTITY, {"type": kind, "related_client_uuid": PERSON}))
    assert [(c.tag, c.text) for c in root] == [
        ("ClientUUID", ENTITY),
        ("RelatedClientUUID", PERSON),
        ("Type", kind),
    ]


def test_a_full_relationship_in_xpms_order() -> None:
    body = relationship_request(
        ENTITY,
        {
            "type": "Shareholder",
            "related_client_uuid": PERSON,
            "number_of_shares": 1000,
            "percentage": 25.5,
            "start_date": "2024-07-01",
            "end_date": None,
        },
    )
    assert (
        body
        == (
            f"<Relationship><ClientUUID>{ENTITY}</ClientUUID><RelatedClientUUID>{PERSON}</RelatedClientUUID>"
            "<Type>Shareholder</Type><NumberOfShares>1000</NumberOfShares><Percentage>25.5</Percentage>"
            "<StartDate>2024-07-01</StartDate></Relationship>"
        ).encode()
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "director", "related_client_uuid": PERSON}, "type"),
        ({"type": "CEO", "related_client_uuid": PERSON}, "type"),
        ({"related_client_uuid": PERSON}, "type"),
        ({"type": "Director"}, "related_client_uuid"),
        ({"type": "Director", "related_client_uuid": "jo"}, "related_client_uuid"),
        (
            {"type": "Director", "related_client_uuid": PERSON, "related_client": {"name": "x"}},
            "related_client",
        ),
        ({"type": "Shareholder", "related_client_uuid": PERSON, "number_of_shares": -1}, "number_of_shares"),
        ({"type": "Shareholder", "related_client_uuid": PERSON, "number_of_shares": 1.5}, "number_of_shares"),
        (
            {"type": "Shareholder", "related_client_uuid": PERSON, "number_of_shares": True},
            "number_of_shares",
        ),
        ({"type": "Partner", "related_client_uuid": PERSON, "percentage": 101}, "percentage"),
        ({"type": "Partner", "related_client_uuid": PERSON, "percentage": "50"}, "percentage"),
        ({"type": "Partner", "related_client_uuid": PERSON, "start_date": "2024-13-01"}, "start_date"),
        (
            {
                "type": "Partner",
                "related_client_uuid": PERSON,
                "start_date": "2024-07-01",
                "end_date": "2024-06-30",
            },
            "end_date",
        ),
    ],
)
def test_invalid_relationships_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        relationship_request(ENTITY, data)
    assert caught.value.field == field
    assert caught.value.status == 422


def test_the_entity_uuid_is_checked_too() -> None:
    with pytest.raises(InvalidField) as caught:
        relationship_request("not-a-uuid", {"type": "Director", "related_client_uuid": PERSON})
    assert caught.value.field == "client_uuid"


def test_round_trip_through_xpms_response_spelling() -> None:
    """What we send for add comes back through client_json as the same JSON (WebSite → Website)."""
    request = parse_xml(add_client_request(FULL_INPUT))
    response = etree.Element("Client")
    for child in request:
        tag = {"WebSite": "Website", "GSTPeriod": "GSTPeriod"}.get(child.tag, child.tag)
        if tag.endswith("UUID") or tag == "Contacts":
            continue
        etree.SubElement(response, tag).text = child.text
    response.find("GSTPeriod").text = "2 Monthly"  # XPM answers in words (§3.10)
    client = client_json(response)
    for key in (
        "name",
        "email",
        "phone",
        "website",
        "first_name",
        "date_of_birth",
        "business_structure",
        "tax_agent",
    ):
        assert client[key] == FULL_INPUT[key], key
    assert client["address"] == FULL_INPUT["address"]
    assert client["postal_address"] == {
        **dict.fromkeys(("region", "post_code", "country")),
        **FULL_INPUT["postal_address"],
    }
    assert (client["balance_month"], client["gst_period"], client["gst_registered"]) == (6, "2 Monthly", True)
