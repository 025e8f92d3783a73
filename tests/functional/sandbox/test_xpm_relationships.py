"""Client-to-client relationships: add, update, delete and their validation (§3.5)."""

from __future__ import annotations

from datetime import datetime

import pytest
from lxml import etree

from sandbox.practice import RELATIONSHIP_TYPES
from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import XpmApi, control, document, error_description, ok


def add_client(api: XpmApi, name: str, structure: str | None) -> str:
    fields = {"Name": name} | ({"BusinessStructure": structure} if structure else {})
    return ok(api.post("client.api/add", document("Client", **fields))).findtext("Client/UUID") or ""


def relationships(api: XpmApi, client_uuid: str) -> list[etree._Element]:
    return list(ok(api.get(f"client.api/get/{client_uuid}")).iterfind("Client/Relationships/Relationship"))


@pytest.mark.parametrize(
    ("kind", "structure", "extra", "numbers"),
    [
        ("Director", "Company", {}, ("0", "0")),
        ("Shareholder", "Company", {"NumberOfShares": "250"}, ("250", "0")),
        ("Public Officer", "Company", {}, ("0", "0")),
        ("Parent Of", "Individual", {}, ("0", "0")),
        ("Partner", "Partnership", {"Percentage": "37.5"}, ("0", "37.5")),
        ("Owner", "Sole Trader", {"NumberOfShares": "100"}, ("100", "0")),
        ("Trustee", "Trust", {"StartDate": "2024-07-01", "EndDate": "2025-06-30"}, ("0", "0")),
        ("Child Of", "Individual", {}, ("0", "0")),
    ],
)
def test_added_relationship_shows_on_the_client(
    sandbox: SandboxServer, kind: str, structure: str, extra: dict[str, str], numbers: tuple[str, str]
) -> None:
    api = XpmApi.connect(sandbox)
    entity = add_client(api, f"Entity for {kind}", structure)
    person = add_client(api, "Pat Holder", "Individual")

    response = api.post(
        "client.api/addrelationship",
        document("Relationship", ClientUUID=entity, RelatedClientUUID=person, Type=kind, **extra),
    )
    [added] = relationships(api, entity)

    # Status only: the new UUID has to be read back through get (§3.5).
    assert [child.tag for child in ok(response)] == ["Status"]
    assert added.findtext("Type") == kind
    assert added.findtext("UUID")
    assert added.findtext("RelatedClient/UUID") == person
    assert added.findtext("RelatedClient/Name") == "Pat Holder"
    assert (added.findtext("NumberOfShares"), added.findtext("Percentage")) == numbers
    assert (added.findtext("StartDate") or "") == extra.get("StartDate", "")
    assert (added.findtext("EndDate") or "") == extra.get("EndDate", "")
    assert relationships(api, person) == []  # shown on the ClientUUID side only


def test_all_eighteen_types_are_accepted_as_spelled(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    entity = add_client(api, "Everything Pty Ltd", "Company")
    person = add_client(api, "Alex Allroles", "Individual")

    for kind in RELATIONSHIP_TYPES:
        body = document("Relationship", ClientUUID=entity, RelatedClientUUID=person, Type=kind)
        ok(api.on("3.0").post("client.api/addrelationship", body))

    assert len(RELATIONSHIP_TYPES) == 18
    assert [r.findtext("Type") for r in relationships(api, entity)] == list(RELATIONSHIP_TYPES)


def test_adding_a_relationship_counts_as_a_change_to_the_client(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    entity = add_client(api, "Changed Pty Ltd", "Company")
    person = add_client(api, "Dee Rector", "Individual")
    control(sandbox, "POST", "clock/advance", {"seconds": 120})
    since = datetime.fromisoformat(control(sandbox, "GET", "clock").json()["now"]).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )

    body = document("Relationship", ClientUUID=entity, RelatedClientUUID=person, Type="Director")
    ok(api.post("client.api/addrelationship", body))
    changed = ok(api.get("client.api/list", {"modifiedsince": since}))

    assert [c.findtext("UUID") for c in changed.iterfind("Clients/Client")] == [entity]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"Type": "director"}, "Invalid relationship type"),
        ({"Type": "PublicOfficer"}, "Invalid relationship type"),
        ({"Type": "Parent of"}, "Invalid relationship type"),
        ({"Type": ""}, "Invalid relationship type"),
        ({"ClientUUID": "00000000-0000-0000-0000-000000000000"}, "Invalid client identifier"),
        ({"RelatedClientUUID": "00000000-0000-0000-0000-000000000000"}, "Invalid related client"),
        ({"ClientUUID": "<plain>"}, "Business Structure"),
        ({"RelatedClientUUID": "<entity>"}, "itself"),
        ({"NumberOfShares": "100"}, "NumberOfShares"),
        ({"Type": "Shareholder", "NumberOfShares": "ten"}, "whole number"),
        ({"Percentage": "25"}, "Percentage"),
        ({"Type": "Partner", "Percentage": "125"}, "between 0 and 100"),
        ({"StartDate": "01/07/2024"}, "StartDate"),
        ({"StartDate": "2024-07-01", "EndDate": "2024-06-30"}, "EndDate"),
    ],
)
def test_addrelationship_validation_errors(
    sandbox: SandboxServer, fields: dict[str, str], expected: str
) -> None:
    api = XpmApi.connect(sandbox)
    ids = {
        "<entity>": add_client(api, "Valid Entity Pty Ltd", "Company"),
        "<person>": add_client(api, "Valid Person", "Individual"),
        "<plain>": add_client(api, "No Structure Co", None),
    }
    values = {"ClientUUID": "<entity>", "RelatedClientUUID": "<person>", "Type": "Director"} | fields
    body = document("Relationship", **{k: ids.get(v, v) for k, v in values.items()})

    response = api.post("client.api/addrelationship", body)

    assert response.status_code == 200
    assert expected in error_description(response)
    assert relationships(api, ids["<entity>"]) == []
    assert relationships(api, ids["<plain>"]) == []


def test_update_relationship_changes_its_values_but_not_its_type(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    entity = add_client(api, "Share Co Pty Ltd", "Company")
    person = add_client(api, "Shay Holder", "Individual")
    body = document(
        "Relationship", ClientUUID=entity, RelatedClientUUID=person, Type="Shareholder", NumberOfShares="10"
    )
    ok(api.post("client.api/addrelationship", body))
    [before] = relationships(api, entity)
    uuid = before.findtext("UUID") or ""

    response = api.on("3.0").put(
        "client.api/updaterelationship",
        document(
            "Relationship", UUID=uuid, NumberOfShares="40", StartDate="2024-07-01", EndDate="2026-06-30"
        ),
    )
    [after] = relationships(api, entity)
    retyped = api.put("client.api/updaterelationship", document("Relationship", UUID=uuid, Type="Director"))

    assert ok(response).get("api-method") == "UpdateRelationship"
    assert after.findtext("UUID") == uuid and after.findtext("Type") == "Shareholder"
    assert after.findtext("NumberOfShares") == "40"
    assert (after.findtext("StartDate"), after.findtext("EndDate")) == ("2024-07-01", "2026-06-30")
    assert "cannot be changed" in error_description(retyped)
    assert "Invalid relationship identifier" in error_description(
        api.put("client.api/updaterelationship", document("Relationship", UUID="nope", NumberOfShares="1"))
    )
    assert "Percentage" in error_description(
        api.put("client.api/updaterelationship", document("Relationship", UUID=uuid, Percentage="10"))
    )
    assert relationships(api, entity)[0].findtext("NumberOfShares") == "40"


def test_delete_relationship(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    entity = add_client(api, "Short Lived Pty Ltd", "Company")
    person = add_client(api, "Sec Retary", "Individual")
    for kind in ("Secretary", "Director"):
        body = document("Relationship", ClientUUID=entity, RelatedClientUUID=person, Type=kind)
        ok(api.post("client.api/addrelationship", body))
    secretary = relationships(api, entity)[0].findtext("UUID") or ""

    deleted = ok(api.post("client.api/deleterelationship", document("Relationship", UUID=secretary)))
    again = api.post("client.api/deleterelationship", document("Relationship", UUID=secretary))

    assert [child.tag for child in deleted] == ["Status"]
    assert [r.findtext("Type") for r in relationships(api, entity)] == ["Director"]
    assert error_description(again) == "Invalid relationship identifier"
    assert error_description(api.post("client.api/deleterelationship", document("Relationship"))) == (
        "UUID is required"
    )
