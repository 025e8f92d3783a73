"""XPM client writes: add, update, archive, delete, and the validation behind them (§3.3.5, §3.3.6)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    client_names,
    document,
    element,
    error_description,
    find_uuid,
    ok,
    parse,
    restore_config,
    set_xpm_options,
    stored_client,
    stored_clients,
)


@pytest.fixture(autouse=True)
def _restore_config(sandbox: SandboxServer) -> Iterator[None]:
    yield
    restore_config(sandbox.state)


def staff_uuid(api: XpmApi, name: str) -> str:
    staff = ok(api.get("staff.api/list")).iterfind("StaffList/Staff")
    return next(s.findtext("UUID") or "" for s in staff if s.findtext("Name") == name)


# -- add -----------------------------------------------------------------------------------------
def test_add_answers_with_the_full_detail_and_the_client_is_gettable(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    manager = staff_uuid(api, "Priya Patel")
    contacts = element("Contacts")
    contacts.append(element("Contact", Name="Ann Acme", IsPrimary="Yes", Email="ann@acme.example"))
    contacts.append(element("Contact", Name="Bob Acme", IsPrimary="Yes", Position="CFO"))

    response = api.post(
        "client.api/add",
        document(
            "Client",
            ("Contacts", contacts),
            Name="Acme Widgets Pty Ltd",
            WebSite="https://acme.example",
            Email="accounts@acme.example",
            BusinessStructure="Company",
            TaxNumber="123456789",
            AccountManagerUUID=manager,
            GSTRegistered="Yes",
            GSTPeriod="2",
        ),
    )
    added = ok(response).find("Client")

    assert added is not None
    uuid = added.findtext("UUID") or ""
    assert added.findtext("Website") == "https://acme.example" and added.find("WebSite") is None
    assert added.findtext("TaxNumber") == "******789"
    assert added.findtext("AccountManager/UUID") == manager
    assert added.findtext("AccountManager/Name") == "Priya Patel"
    assert added.findtext("GSTPeriod") == "2 Monthly"  # written 1|2|6, read back as words (§3.10)
    assert added.findtext("IsArchived") == "No"
    primary = {c.findtext("Name"): c.findtext("IsPrimary") for c in added.iterfind("Contacts/Contact")}
    assert primary == {"Ann Acme": "No", "Bob Acme": "Yes"}  # the last primary wins (§3.3.5)
    fetched = ok(api.get(f"client.api/get/{uuid}")).find("Client")
    assert fetched is not None and fetched.findtext("Name") == "Acme Widgets Pty Ltd"
    assert stored_client(sandbox, api, uuid)["TaxNumber"] == "123456789"  # stored unmasked


def test_add_needs_only_a_name(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    added = ok(api.on("3.0").post("client.api/add", document("Client", Name="Just A Name")))

    assert added.get("api-method") == "Add"
    assert added.findtext("Client/Name") == "Just A Name"
    assert added.find("Client/BusinessStructure") is not None and not added.findtext(
        "Client/BusinessStructure"
    )


@pytest.mark.parametrize("date_of_birth", ["1980-05-17", "1980-05-17T00:00:00"])
def test_add_accepts_date_of_birth_as_date_or_datetime(sandbox: SandboxServer, date_of_birth: str) -> None:
    api = XpmApi.connect(sandbox)
    body = document(
        "Client",
        Name="Sam Person",
        FirstName="Sam",
        LastName="Person",
        DateOfBirth=date_of_birth,
        BusinessStructure="Individual",
    )

    added = ok(api.post("client.api/add", body))

    assert added.findtext("Client/DateOfBirth") == "1980-05-17T00:00:00"
    assert added.findtext("Client/FirstName") == "Sam"


def test_add_ignores_the_response_spelling_website(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    added = ok(
        api.post("client.api/add", document("Client", Name="Wrong Spelling Ltd", Website="https://x.example"))
    )

    assert added.find("Client/Website") is not None
    assert not added.findtext("Client/Website")


def test_special_characters_round_trip_escaped(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    name = "Smith & Jones <Holdings> \"Ltd\" 'AU' ü"

    added = ok(api.post("client.api/add", document("Client", Name=name)))

    assert added.findtext("Client/Name") == name
    assert client_names(ok(api.get("client.api/search", {"query": "& Jones <"}))) == [name]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (document("Client", Email="x@example.com"), "Name is required"),
        (document("Client", Name=""), "Name is required"),
        (document("Client", Name="X", BusinessStructure="Limited Company"), "business structure"),
        (document("Client", Name="X", BusinessStructure="company"), "business structure"),
        (document("Client", Name="X", AccountManagerUUID="7f1c0c2a-0000-0000-0000-000000000000"), "staff"),
        (document("Client", Name="X", JobManagerUUID="nope"), "staff"),
        (document("Client", Name="X", BillingClientUUID="nope"), "billing client"),
        (document("Client", Name="X", DateOfBirth="17/05/1980"), "DateOfBirth"),
        (document("Client", Name="X", GSTPeriod="Monthly"), "GSTPeriod"),
        (document("Client", Name="X", PrepareGST="Maybe"), "PrepareGST"),
        (document("Client", ("Contacts", element("Contacts", Contact="")), Name="X"), "Contact Name"),
        (document("Customer", Name="X"), "<Client>"),
        (b"<Client><Name>Broken</Client>", "not well-formed"),
        (b"", "not well-formed"),
    ],
    ids=[
        "missing-name", "empty-name", "unknown-structure", "structure-case", "unknown-account-manager",
        "unknown-job-manager", "unknown-billing-client", "bad-date-of-birth", "gst-period-words",
        "bad-yes-no", "contact-without-name", "wrong-root", "malformed", "empty-body",
    ],
)  # fmt: skip
def test_add_validation_errors(sandbox: SandboxServer, body: bytes, expected: str) -> None:
    api = XpmApi.connect(sandbox)
    before = len(stored_clients(sandbox, api))

    response = api.post("client.api/add", body)

    assert response.status_code == 200
    assert expected in error_description(response)
    assert parse(response).find("Client") is None
    assert len(stored_clients(sandbox, api)) == before


@pytest.mark.parametrize(
    "body",
    [
        # billion laughs: nested entity expansion
        b'<?xml version="1.0"?><!DOCTYPE Client [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<Client><Name>&c;</Name></Client>",
        # external entity (XXE)
        b'<!DOCTYPE Client [<!ENTITY x SYSTEM "file:///etc/passwd">]><Client><Name>&x;</Name></Client>',
        # a bare DTD
        b"<!DOCTYPE Client><Client><Name>Doctype</Name></Client>",
    ],
    ids=["entity-expansion", "external-entity", "doctype"],
)
def test_dtds_and_entities_are_rejected(sandbox: SandboxServer, body: bytes) -> None:
    api = XpmApi.connect(sandbox)
    before = len(stored_clients(sandbox, api))

    response = api.post("client.api/add", body)

    assert "DTD" in error_description(response)
    assert "root:" not in response.text
    assert len(stored_clients(sandbox, api)) == before


def test_oversized_body_is_413(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    body = document("Client", Name="Big", Email="x" * 1_100_000)

    response = api.post("client.api/add", body)

    assert response.status_code == 413
    assert "Big" not in client_names(ok(api.get("client.api/search", {"query": "Big"})))


def test_error_status_is_configurable(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    set_xpm_options(sandbox, xpm_error_status=400)

    response = api.post("client.api/add", document("Client", Email="no-name@example.com"))

    assert response.status_code == 400
    assert error_description(response) == "Name is required"


# -- update ----------------------------------------------------------------------------------------
def test_update_changes_the_named_fields_and_keeps_the_rest(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    uuid = find_uuid(api, "Bloggs Electrical Pty Ltd")
    before = stored_client(sandbox, api, uuid)
    ok(api.put("client.api/update", document("Client", UUID=uuid, Fax="(02) 5555 0000")))

    response = api.on("3.0").put(
        "client.api/update",
        document("Client", UUID=uuid, Email="new@bloggs.example", WebSite="https://bloggs.example", Fax=""),
    )
    updated = ok(response)

    assert updated.get("api-method") == "Update"
    assert updated.findtext("Client/Email") == "new@bloggs.example"
    assert updated.findtext("Client/Website") == "https://bloggs.example"
    assert updated.findtext("Client/Name") == "Bloggs Electrical Pty Ltd"
    assert updated.findtext("Client/Phone") == before["Phone"]  # absent: unchanged
    assert not updated.findtext("Client/Fax")  # empty element: cleared
    after = stored_client(sandbox, api, uuid)
    assert after["Email"] == "new@bloggs.example" and after["Modified"] > before["Modified"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"Name": "No UUID"}, "UUID is required"),
        ({"UUID": "00000000-0000-0000-0000-000000000000", "Name": "X"}, "Invalid client identifier"),
        ({"UUID": "<joe>", "Name": ""}, "Name is required"),
        ({"UUID": "<joe>", "BusinessStructure": "Corporation"}, "business structure"),
    ],
    ids=["missing-uuid", "unknown-uuid", "empty-name", "unknown-structure"],
)
def test_update_validation_errors(sandbox: SandboxServer, fields: dict[str, str], expected: str) -> None:
    api = XpmApi.connect(sandbox)
    joe = find_uuid(api, "Joe Bloggs")
    body = document("Client", **{k: (joe if v == "<joe>" else v) for k, v in fields.items()})

    response = api.put("client.api/update", body)

    assert expected in error_description(response)
    assert stored_client(sandbox, api, joe)["Name"] == "Joe Bloggs"


# -- archive and delete ----------------------------------------------------------------------------
def test_archive_keeps_the_client_in_list_and_get_but_not_in_the_paged_list(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    uuid = find_uuid(api, "Bloggs Family Trust")

    archived = ok(api.on("3.0").put("client.api/archive", document("Client", UUID=uuid)))

    assert archived.get("api-method") == "Archive"
    assert [child.tag for child in archived] == ["Status"]
    assert ok(api.get(f"client.api/get/{uuid}")).findtext("Client/IsArchived") == "Yes"
    listed = {
        c.findtext("UUID"): c.findtext("IsArchived") for c in ok(api.get("client.api/list")).iter("Client")
    }
    assert listed[uuid] == "Yes"
    paged = ok(api.get("client.api/paged-list", {"pageSize": "500"}))
    assert uuid not in [c.findtext("UUID") for c in paged.iter("Client")]
    assert "Invalid client identifier" in error_description(
        api.put("client.api/archive", document("Client", UUID="00000000-0000-0000-0000-000000000000"))
    )


def test_delete_removes_the_client_and_its_relationships(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    jane = find_uuid(api, "Jane Bloggs")
    company = find_uuid(api, "Bloggs Electrical Pty Ltd")

    deleted = ok(api.post("client.api/delete", document("Client", UUID=jane)))

    assert [child.tag for child in deleted] == ["Status"]
    assert error_description(api.get(f"client.api/get/{jane}")) == "Invalid client identifier"
    assert jane not in [c.findtext("UUID") for c in ok(api.get("client.api/list")).iter("Client")]
    assert "Jane Bloggs" not in client_names(ok(api.get("client.api/search", {"query": "Jane Bloggs"})))
    related = ok(api.get(f"client.api/get/{company}")).iterfind("Client/Relationships/Relationship")
    assert "Jane Bloggs" not in [r.findtext("RelatedClient/Name") for r in related]
    assert stored_client(sandbox, api, jane)["IsDeleted"] is True
    assert error_description(api.post("client.api/delete", document("Client", UUID=jane))) == (
        "Invalid client identifier"
    )
