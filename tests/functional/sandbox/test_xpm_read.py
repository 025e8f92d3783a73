"""XPM reads over loopback HTTP: envelope, list, paged list, search, get, staff and groups (§3.2-§3.7)."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import requests

from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    client_names,
    control,
    document,
    error_description,
    find_uuid,
    ok,
    parse,
    stored_clients,
)

ZONELESS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


# -- envelope and routing ----------------------------------------------------------------------
def test_3_0_names_the_api_method_and_3_1_does_not(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    on_30 = api.on("3.0").get("client.api/list")
    on_31 = api.get("client.api/list")

    assert on_30.headers["Content-Type"].startswith("application/xml")
    assert ok(on_30).get("api-method") == "List"
    assert ok(on_31).get("api-method") is None
    assert ok(on_31).tag == "Response"
    uuid = find_uuid(api, "Joe Bloggs")
    assert ok(api.on("3.0").get(f"client.api/get/{uuid}")).get("api-method") == "Get"
    assert parse(api.on("3.0").get("client.api/get/nope")).get("api-method") == "Get"


def test_unknown_version_is_404_and_wrong_verb_is_405(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    assert api.on("2.0").get("client.api/list").status_code == 404
    assert api.post("client.api/list", b"<Client/>").status_code == 405
    assert api.get("client.api/add").status_code == 405
    assert api.post("client.api/update", document("Client", Name="x")).status_code == 405


# -- list ----------------------------------------------------------------------------------------
def test_list_includes_archived_clients_and_excludes_deleted_ones(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    stored = stored_clients(sandbox, api)
    archived, deleted = stored[10]["UUID"], stored[11]["UUID"]
    patch = f"practices/{api.tenant_id}/clients"
    assert control(sandbox, "PATCH", f"{patch}/{archived}", {"IsArchived": True}).status_code == 200
    assert control(sandbox, "PATCH", f"{patch}/{deleted}", {"IsDeleted": True}).status_code == 200

    listed = {c.findtext("UUID"): c for c in ok(api.get("client.api/list")).iterfind("Clients/Client")}

    assert len(listed) == len(stored) - 1
    assert deleted not in listed
    assert listed[archived].findtext("IsArchived") == "Yes"
    assert {c.findtext("IsDeleted") for c in listed.values()} == {"No"}


def test_plain_list_is_the_summary_and_detailed_list_adds_practice_fields(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    plain = ok(api.get("client.api/list")).find("Clients/Client")
    detailed = ok(api.get("client.api/list", {"detailed": "true"})).find("Clients/Client")

    assert plain is not None and detailed is not None
    assert plain.find("Contacts") is not None
    assert plain.find("TaxNumber") is None and plain.find("Relationships") is None
    assert detailed.findtext("BusinessStructure") == "Individual"
    assert (detailed.findtext("TaxNumber") or "").startswith("******")
    assert detailed.find("Relationships") is not None


def test_list_modifiedsince_returns_only_clients_changed_since(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    now = datetime.fromisoformat(control(sandbox, "GET", "clock").json()["now"])
    since = now.strftime("%Y-%m-%dT%H:%M:%S")  # UTC, no zone (§3.1)

    before = ok(api.get("client.api/list", {"modifiedsince": since}))
    target = stored_clients(sandbox, api)[5]
    path = f"practices/{api.tenant_id}/clients/{target['UUID']}"
    patched = control(sandbox, "PATCH", path, {"Phone": "123"})
    after = ok(api.get("client.api/list", {"modifiedsince": since}))

    assert before.find("Clients") is not None and len(before.find("Clients")) == 0
    assert patched.status_code == 200
    assert [c.findtext("UUID") for c in after.iterfind("Clients/Client")] == [target["UUID"]]
    assert after.findtext("Clients/Client/Phone") == "123"
    assert "modifiedsince" in error_description(api.get("client.api/list", {"modifiedsince": "yesterday"}))


# -- paged list ------------------------------------------------------------------------------------
def walk_pages(api: XpmApi, page_size: int) -> tuple[list[str], list[requests.Response]]:
    """Follow ``<Next>`` from the first page to the end; the UUIDs seen and every response."""
    seen: list[str] = []
    responses = [api.get("client.api/paged-list", {"pageSize": str(page_size)})]
    while True:
        root = ok(responses[-1])
        seen += [c.findtext("UUID") or "" for c in root.iterfind("Clients/Client")]
        next_url = root.findtext("Pagination/Links/Next")
        if next_url is None:
            return seen, responses
        assert next_url.startswith(f"{api.sandbox_url}/practicemanager/3.1/client.api/paged-list?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(next_url).query).items()}
        assert set(query) == {"pageToken", "pageSize"}
        responses.append(api.get("client.api/paged-list", query))


def test_paged_list_walks_every_active_client_exactly_once(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    stored = stored_clients(sandbox, api)
    active = [c["UUID"] for c in stored if not c["IsArchived"] and not c["IsDeleted"]]
    assert len(active) < len(stored)  # the seed archives some, so the filter is exercised

    seen, responses = walk_pages(api, 7)

    assert seen == active
    assert len(responses) == -(-len(active) // 7)
    first = ok(responses[0]).findtext("Pagination/Links/First")
    assert first == f"{api.sandbox_url}/practicemanager/3.1/client.api/paged-list?pageSize=7"
    assert b"&amp;pageSize=7</Next>" in responses[0].content
    assert ok(responses[-1]).find("Pagination/Links/Next") is None
    assert ok(responses[0]).find("Clients/Client/Contacts") is None  # as Xero's sample (§3.3.2)


def test_paged_list_default_page_size_is_50(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    assert len(ok(api.get("client.api/paged-list")).findall("Clients/Client")) == 50


def test_paged_list_shows_clients_added_while_paging(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    first = ok(api.get("client.api/paged-list", {"pageSize": "500"}))
    ok(api.post("client.api/add", document("Client", Name="Late Arrival Pty Ltd")))
    query = parse_qs(urlsplit(first.findtext("Pagination/Links/First") or "").query)

    again = ok(api.get("client.api/paged-list", {k: v[0] for k, v in query.items()}))

    assert "Late Arrival Pty Ltd" not in client_names(first)
    assert client_names(again)[-1] == "Late Arrival Pty Ltd"


def test_paged_list_is_3_1_only(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    assert api.on("3.0").get("client.api/paged-list").status_code == 404


def test_paged_list_rejects_bad_page_sizes_and_tokens(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    for size in ("0", "501", "ten"):
        assert "pageSize" in error_description(api.get("client.api/paged-list", {"pageSize": size}))
    assert "pageToken" in error_description(api.get("client.api/paged-list", {"pageToken": "not-a-token"}))
    assert len(ok(api.get("client.api/paged-list", {"pageSize": "500"})).findall("Clients/Client")) > 50


# -- search ----------------------------------------------------------------------------------------
def test_search_is_a_case_insensitive_substring_match_on_name(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    expected = [c["Name"] for c in stored_clients(sandbox, api) if "bloggs" in c["Name"].lower()]

    root = ok(api.get("client.api/search", {"query": "bLoGgS"}))

    assert client_names(root) == expected
    assert {"Joe Bloggs", "Bloggs Electrical Pty Ltd", "Bloggs Family Trust"} <= set(expected)
    assert root.find("Clients/Client/Contacts/Contact/Name") is not None
    assert root.find("Clients/Client/Relationships") is None
    assert ok(api.get("client.api/search", {"query": "ectrical pty"})).findtext("Clients/Client/Name") == (
        "Bloggs Electrical Pty Ltd"
    )


def test_search_detailed_returns_the_detail_shape(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    root = ok(api.get("client.api/search", {"query": "Bloggs Electrical", "detailed": "true"}))

    assert root.findtext("Clients/Client/BusinessStructure") == "Company"
    assert root.find("Clients/Client/Relationships/Relationship") is not None


def test_search_without_matches_is_an_empty_clients_element(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    response = api.get("client.api/search", {"query": "Zzyzx Holdings"})

    assert ok(response).find("Clients") is not None
    assert b"<Clients />" in response.content
    assert "query" in error_description(api.get("client.api/search"))


def test_search_includes_archived_and_excludes_deleted_clients(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    trust, joe = find_uuid(api, "Bloggs Family Trust"), find_uuid(api, "Joe Bloggs")
    ok(api.put("client.api/archive", document("Client", UUID=trust)))
    ok(api.post("client.api/delete", document("Client", UUID=joe)))

    names = client_names(ok(api.get("client.api/search", {"query": "Bloggs"})))

    assert "Bloggs Family Trust" in names
    assert "Joe Bloggs" not in names


# -- get -------------------------------------------------------------------------------------------
def test_get_renders_the_detailed_client(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    uuid = find_uuid(api, "Bloggs Electrical Pty Ltd")
    stored = control(sandbox, "GET", f"practices/{api.tenant_id}/clients/{uuid}").json()

    response = api.get(f"client.api/get/{uuid}")
    root = ok(response)
    client = root.find("Client")

    assert client is not None
    web_url = root.findtext("WebUrl") or ""
    assert re.fullmatch(r"https://practicemanager\.xero\.com/Client/\d+/Detail", web_url)
    assert client.findtext("UUID") == uuid
    assert client.findtext("TaxNumber") == "******" + stored["TaxNumber"][-3:]
    assert stored["TaxNumber"] not in response.text
    assert client.find("Website") is not None and client.find("WebSite") is None
    assert b"<Fax />" in response.content and b"<Fax/>" not in response.content
    assert client.findtext("IsArchived") == "No" and client.findtext("IsDeleted") == "No"
    assert client.findtext("BusinessStructure") == "Company"
    staff_names = [s.findtext("Name") for s in ok(api.get("staff.api/list")).iterfind("StaffList/Staff")]
    assert client.findtext("AccountManager/Name") in staff_names
    assert "Bloggs Family" in [g.findtext("Name") for g in client.iterfind("Groups/Group")]
    relationships = client.iterfind("Relationships/Relationship")
    roles = {(r.findtext("Type"), r.findtext("RelatedClient/Name")): r for r in relationships}
    assert ("Director", "Joe Bloggs") in roles and ("Director", "Jane Bloggs") in roles
    assert ("Public Officer", "Joe Bloggs") in roles
    shareholder = roles[("Shareholder", "Jane Bloggs")]
    assert shareholder.findtext("NumberOfShares") == "500"
    assert shareholder.findtext("RelatedClient/UUID") == find_uuid(api, "Jane Bloggs")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", shareholder.findtext("StartDate") or "")


def test_get_renders_dates_without_a_zone(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    joe = ok(api.get(f"client.api/get/{find_uuid(api, 'Joe Bloggs')}")).find("Client")
    detailed = ok(api.get("client.api/list", {"detailed": "true"}))
    note_dates = [d.text or "" for d in detailed.iterfind("Clients/Client/Notes/Note/Date")]

    assert joe is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00", joe.findtext("DateOfBirth") or "")
    assert note_dates and all(ZONELESS.fullmatch(d) for d in note_dates)


def test_get_unknown_or_deleted_client_is_an_error(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    joe = find_uuid(api, "Joe Bloggs")
    ok(api.post("client.api/delete", document("Client", UUID=joe)))

    unknown = api.get("client.api/get/00000000-0000-0000-0000-000000000000")

    assert unknown.status_code == 200  # the UNVERIFIED default (§3.2)
    assert error_description(unknown) == "Invalid client identifier"
    assert error_description(api.get(f"client.api/get/{joe}")) == "Invalid client identifier"


# -- staff and groups ------------------------------------------------------------------------------
def test_staff_list(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    staff = ok(api.get("staff.api/list")).findall("StaffList/Staff")

    assert [s.findtext("Name") for s in staff][:2] == ["Jo Bloggs", "John Smith"]
    for member in staff:
        assert [child.tag for child in member] == [
            "UUID", "Name", "Email", "Phone", "Mobile", "Address", "PayrollCode",
        ]  # fmt: skip
        assert member.findtext("UUID") and "@" in (member.findtext("Email") or "")


def test_client_group_list(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)

    groups = ok(api.get("clientgroup.api/list")).findall("Groups/Group")

    assert "Bloggs Family" in [g.findtext("Name") for g in groups]
    assert {g.findtext("Taxable") for g in groups} <= {"Yes", "No"}
    assert all([c.tag for c in g] == ["UUID", "Name", "Taxable"] for g in groups)
