"""The seeded practices (sandbox/seed.py), the practice control routes, and scale (20,000 clients)."""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from sandbox.practice import PracticeData
from sandbox.server import SandboxServer
from sandbox.state import SandboxConfig, SandboxState
from tests.functional.sandbox.xpm_helpers import (
    XpmApi,
    client_names,
    control,
    ok,
    practice_id,
    stored_clients,
)

SCALE = 20_000


def fingerprint(state: SandboxState) -> dict[str, list[tuple[str, ...]]]:
    """Each practice's clients (UUID, name, tax number) and relationships, in order."""
    result: dict[str, list[tuple[str, ...]]] = {}
    for tenant_id, practice in state.practices.items():
        data: PracticeData = practice.data
        result[tenant_id] = [(c.uuid, c.name, c.fields["TaxNumber"]) for c in data.clients.values()]
        result[tenant_id] += [
            (r.uuid, r.client_uuid, r.related_client_uuid, r.type) for r in data.relationships.values()
        ]
    return result


def test_the_same_seed_gives_the_same_world() -> None:
    first = SandboxState(SandboxConfig(seed=7, clients_per_practice=80))
    second = SandboxState(SandboxConfig(seed=7, clients_per_practice=80))
    other = SandboxState(SandboxConfig(seed=8, clients_per_practice=80))

    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(other)
    bloggs = practice_id("bloggs")
    assert [c[0] for c in fingerprint(first)[bloggs][:80]] == [c[0] for c in fingerprint(other)[bloggs][:80]]


def test_the_seed_is_a_realistic_practice() -> None:
    state = SandboxState(SandboxConfig(clients_per_practice=200))
    data: PracticeData = state.practices[practice_id("bloggs")].data
    clients = list(data.clients.values())

    assert len(clients) == 200
    structures = Counter(c.fields["BusinessStructure"] for c in clients)
    assert {"Individual", "Company", "Trust", "Superannuation Fund", "Partnership"} <= set(structures)
    assert structures["Individual"] > len(clients) / 3
    individuals = [c for c in clients if c.fields["BusinessStructure"] == "Individual"]
    assert all(
        c.fields["FirstName"] and c.fields["LastName"] and c.fields["DateOfBirth"] for c in individuals
    )
    assert all(len(c.fields["TaxNumber"]) == 9 for c in clients)
    types = Counter(r.type for r in data.relationships.values())
    assert {"Director", "Shareholder", "Trustee", "Beneficiary", "Partner", "Member"} <= set(types)
    assert len(types) >= 12
    shareholdings = [r for r in data.relationships.values() if r.type == "Shareholder"]
    assert all(r.number_of_shares for r in shareholdings)
    assert all(r.percentage for r in data.relationships.values() if r.type == "Partner")
    assert 0 < sum(c.is_archived for c in clients) < len(clients) / 5
    assert sum("Bloggs" in c.name for c in clients) >= 4
    assert len(data.staff) >= 3 and len(data.groups) >= 2
    assert all(c.account_manager_uuid in data.staff for c in clients)
    assert all(c.contacts for c in clients)
    harbour = state.practices[practice_id("harbour")].data
    assert len(harbour.clients) == 25 and not set(harbour.clients) & set(data.clients)


def test_control_routes_read_and_change_records(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    base = f"practices/{api.tenant_id}/clients"
    joe = stored_clients(sandbox, api)[0]

    patched = control(
        sandbox, "PATCH", f"{base}/{joe['UUID']}", {"Name": "Joseph Bloggs", "IsProspect": True}
    )
    inserted = control(sandbox, "POST", base, {"Name": "Direct Insert Pty Ltd", "TaxNumber": "987654321"})

    assert joe["Name"] == "Joe Bloggs" and len(joe["TaxNumber"]) == 9  # unmasked
    assert {"IsArchived", "IsDeleted", "Relationships", "Contacts", "Groups"} <= set(joe)
    assert patched.status_code == 200 and patched.json()["Name"] == "Joseph Bloggs"
    assert ok(api.get(f"client.api/get/{joe['UUID']}")).findtext("Client/IsProspect") == "Yes"
    assert inserted.status_code == 201
    new = ok(api.get(f"client.api/get/{inserted.json()['UUID']}"))
    assert new.findtext("Client/TaxNumber") == "******321"
    assert control(sandbox, "PATCH", f"{base}/{joe['UUID']}", {"Colour": "blue"}).status_code == 400
    assert control(sandbox, "PATCH", f"{base}/{joe['UUID']}", {"IsArchived": "yes"}).status_code == 400
    assert control(sandbox, "GET", f"{base}/nope").status_code == 404
    assert control(sandbox, "GET", "practices/nope/clients").status_code == 404
    assert control(sandbox, "POST", base, {"Email": "x@example.com"}).status_code == 400


def test_reseed_is_deterministic_and_validated(sandbox: SandboxServer) -> None:
    api = XpmApi.connect(sandbox)
    path = f"practices/{api.tenant_id}/reseed"

    assert control(sandbox, "POST", path, {"clients": 300}).status_code == 200
    first = [(c["UUID"], c["Name"]) for c in stored_clients(sandbox, api)]
    assert control(sandbox, "POST", path, {"clients": 300}).status_code == 200
    second = [(c["UUID"], c["Name"]) for c in stored_clients(sandbox, api)]

    assert len(first) == 300 and first == second
    assert control(sandbox, "POST", path, {"clients": 0}).status_code == 400
    assert control(sandbox, "POST", path, {"clients": "many"}).status_code == 400
    assert control(sandbox, "POST", "practices/nope/reseed", {"clients": 5}).status_code == 404


def test_twenty_thousand_clients(sandbox: SandboxServer) -> None:
    """Seed, list, page through and search a 20,000-client practice; each step stays linear."""
    api = XpmApi.connect(sandbox)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    reseeded = control(sandbox, "POST", f"practices/{api.tenant_id}/reseed", {"clients": SCALE})
    timings["reseed"] = time.perf_counter() - started
    assert reseeded.status_code == 200, reseeded.text

    started = time.perf_counter()
    listed = ok(api.get("client.api/list"))
    timings["list"] = time.perf_counter() - started
    archived = [c.findtext("IsArchived") for c in listed.iterfind("Clients/Client")]
    assert len(archived) == SCALE
    active = archived.count("No")

    started = time.perf_counter()
    seen: list[str] = []
    params = {"pageSize": "500"}
    while True:
        page = ok(api.get("client.api/paged-list", params))
        seen += [c.findtext("UUID") or "" for c in page.iterfind("Clients/Client")]
        next_url = page.findtext("Pagination/Links/Next")
        if next_url is None:
            break
        params = {k: v[0] for k, v in parse_qs(urlsplit(next_url).query).items()}
    timings["paged-list"] = time.perf_counter() - started
    assert len(seen) == active == len(set(seen))

    started = time.perf_counter()
    found = client_names(ok(api.get("client.api/search", {"query": "bloggs electrical"})))
    timings["search"] = time.perf_counter() - started
    assert found[0] == "Bloggs Electrical Pty Ltd"

    print("20k timings (s):", {k: round(v, 2) for k, v in timings.items()})
    assert timings["search"] < 2
    assert sum(timings.values()) < 60
