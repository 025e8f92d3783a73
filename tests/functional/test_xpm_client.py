"""XpmClient against the Xero sandbox over loopback HTTP (sandbox/xpm.py, docs/sandbox.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.xpm.client import XpmClient
from chalicelib.xpm.errors import (
    InvalidField,
    XpmAuthorisationLost,
    XpmNotFound,
    XpmRateLimited,
    XpmUnavailable,
    XpmValidationFailed,
)
from sandbox.server import SandboxServer
from tests.functional.sandbox.xpm_helpers import (
    DEFAULT_SCOPES,
    XpmApi,
    advance_clock,
    control,
    mint_access_token,
    set_limits,
    set_xpm_options,
    stored_client,
    stored_clients,
    user_id,
    wait_until_idle,
)

UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"


@dataclass
class FakeTokens:
    """A TokenSource that counts refreshes; ``refresh`` makes the token handed out after one."""

    token: str
    refresh: Callable[[], str]
    refreshes: int = 0

    def access_token(self) -> str:
        return self.token

    def refreshed_access_token(self) -> str:
        self.refreshes += 1
        self.token = self.refresh()
        return self.token


@dataclass
class FakePermit:
    observed: list[dict[str, str]] = field(default_factory=list)
    limited: list[tuple[int | None, str | None]] = field(default_factory=list)

    def observe(self, headers: Mapping[str, str]) -> None:
        self.observed.append(dict(headers))

    def upstream_limited(self, retry_after: int | None, problem: str | None) -> None:
        self.limited.append((retry_after, problem))


@dataclass
class FakeGovernor:
    """Records each permit; ``refuse`` makes it refuse before the call, as a full budget would."""

    permits: list[str] = field(default_factory=list)
    permit_values: list[FakePermit] = field(default_factory=list)
    refuse: bool = False

    @contextmanager
    def permit(self, tenant_id: str) -> Iterator[FakePermit]:
        self.permits.append(tenant_id)
        if self.refuse:
            raise XpmRateLimited(42, "governor")
        value = FakePermit()
        self.permit_values.append(value)
        yield value


@dataclass
class Setup:
    sandbox: SandboxServer
    api: XpmApi
    tokens: FakeTokens
    client: XpmClient

    def calls(self, endpoint: str) -> int:
        return self.sandbox.state.calls[endpoint]

    def fresh_token(self) -> str:
        return mint_access_token(
            self.sandbox.state, self.sandbox.url, self.api.app, user_id("alice"), DEFAULT_SCOPES
        )


def connect(
    sandbox: SandboxServer,
    *,
    version: str = "3.0",
    governor: FakeGovernor | None = None,
    timeout: float | tuple[float, float] = 10.0,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
) -> Setup:
    api = XpmApi.connect(sandbox, scopes=scopes)
    tokens = FakeTokens(api.headers["Authorization"].removeprefix("Bearer "), refresh=lambda: "never")
    client = XpmClient(
        base_url=f"{sandbox.url}/practicemanager/{version}/",
        tenant_id=api.tenant_id,
        tokens=tokens,
        governor=governor,
        timeout=timeout,
    )
    setup = Setup(sandbox, api, tokens, client)
    tokens.refresh = setup.fresh_token
    return setup


def arm(sandbox: SandboxServer, target: str, kind: str, **params: Any) -> None:
    response = control(sandbox, "POST", "faults", {"target": target, "kind": kind, **params})
    assert response.status_code == 201, response.text


def uuid_named(setup: Setup, name: str) -> str:
    return next(c["uuid"] for c in setup.client.search_clients(name) if c["name"] == name)


# -- reads -----------------------------------------------------------------------------------------
def test_search_finds_the_bloggs_family_as_contract_json(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)

    found = setup.client.search_clients("bloggs")

    names = [c["name"] for c in found]
    assert {"Joe Bloggs", "Jane Bloggs", "Bloggs Family Trust"} <= set(names)
    assert all("bloggs" in n.lower() for n in names)
    joe = found[names.index("Joe Bloggs")]
    assert joe["first_name"] == "Joe" and joe["date_of_birth"] is not None
    assert isinstance(joe["contacts"], list) and len(joe["contacts"]) == 1  # one contact, still a list
    assert joe["contacts"][0]["is_primary"] is True
    assert joe["tax_number"] is None  # summary shape: no detail fields
    assert setup.client.search_clients("no such client zzz") == []


def test_detailed_search_carries_detail_fields(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    [joe] = [
        c for c in setup.client.search_clients("Joe Bloggs", detailed=True) if c["name"] == "Joe Bloggs"
    ][:1]
    assert joe["business_structure"] == "Individual"
    assert joe["tax_number"].startswith("******")


def test_get_maps_relationships_contacts_groups_as_stored(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    trust_uuid = uuid_named(setup, "Bloggs Family Trust")

    trust = setup.client.get_client(trust_uuid)

    stored = stored_client(sandbox, setup.api, trust_uuid)
    assert trust["uuid"] == trust_uuid and trust["name"] == stored["Name"]
    assert trust["business_structure"] == stored["BusinessStructure"]
    assert trust["email"] == stored["Email"]
    assert trust["address"] == {
        "street": stored["Address"],
        "city": stored["City"],
        "region": stored["Region"],
        "post_code": stored["PostCode"],
        "country": stored["Country"],
    }
    assert trust["postal_address"] is None  # the seed leaves it empty: all parts empty → null
    # XPM masks the tax number (******123); the client passes on what XPM says.
    assert trust["tax_number"] == "******" + stored["TaxNumber"][-3:]
    assert trust["web_url"] is not None and trust["web_url"].startswith("https://practicemanager.xero.com/")
    assert [g["uuid"] for g in trust["groups"]] == [g["UUID"] for g in stored["Groups"]]
    assert [c["uuid"] for c in trust["contacts"]] == [
        c["UUID"] for c in stored["Contacts"] if not c["IsDeleted"]
    ]
    assert trust["relationships"], "the seeded family trust has trustees and beneficiaries"
    assert [(r["uuid"], r["type"], r["related_client"]["uuid"]) for r in trust["relationships"]] == [
        (r["UUID"], r["Type"], r["RelatedClientUUID"]) for r in stored["Relationships"]
    ]
    for relationship in trust["relationships"]:
        assert isinstance(relationship["number_of_shares"], int)
        assert isinstance(relationship["percentage"], int | float)


def test_get_of_an_unknown_uuid_is_not_found(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    with pytest.raises(XpmNotFound) as caught:
        setup.client.get_client(UNKNOWN_UUID)
    assert caught.value.to_problem()["code"] == "xpm_client_not_found"
    assert setup.calls("xpm.client.get") == 1


@pytest.mark.parametrize("bad", ["not-a-uuid", "../staff.api/list", ""])
def test_get_of_a_malformed_uuid_is_not_found_without_calling_xpm(sandbox: SandboxServer, bad: str) -> None:
    setup = connect(sandbox)
    with pytest.raises(XpmNotFound):
        setup.client.get_client(bad)
    assert setup.calls("xpm.client.get") == 0 and setup.calls("xpm.staff.list") == 0


def test_list_and_modified_since(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    everyone = setup.client.list_clients()
    live = [c for c in stored_clients(sandbox, setup.api) if not c["IsDeleted"]]
    assert sorted(c["uuid"] for c in everyone) == sorted(c["UUID"] for c in live)
    assert any(c["is_archived"] for c in everyone)  # the list includes archived clients

    now = datetime.fromtimestamp(sandbox.state.clock.now(), UTC)
    assert setup.client.list_clients(modified_since=now - timedelta(seconds=1)) == []
    advance_clock(sandbox, 5)
    changed = everyone[3]["uuid"]
    patched = control(
        sandbox, "PATCH", f"practices/{setup.api.tenant_id}/clients/{changed}", {"Phone": "0400 000 000"}
    )
    assert patched.status_code == 200, patched.text

    recent = setup.client.list_clients(modified_since=now + timedelta(seconds=1), detailed=True)

    assert [(c["uuid"], c["phone"]) for c in recent] == [(changed, "0400 000 000")]
    assert recent[0]["tax_number"] is not None  # detailed


def test_paged_list_on_3_1_walks_every_live_client_once(sandbox: SandboxServer) -> None:
    setup = connect(sandbox, version="3.0")  # paged-list is 3.1 only: the client switches for it
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page, token = setup.client.paged_clients(page_size=60, page_token=token)
        seen += [c["uuid"] for c in page]
        pages += 1
        if token is None:
            break
    expected = [
        c["UUID"] for c in stored_clients(sandbox, setup.api) if not c["IsArchived"] and not c["IsDeleted"]
    ]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert pages == -(-len(expected) // 60)
    with pytest.raises(InvalidField):
        setup.client.paged_clients(page_size=501)


def test_staff_and_groups(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    staff = setup.client.list_staff()
    groups = setup.client.list_groups()
    assert "Jo Bloggs" in [s["name"] for s in staff]
    assert all(s["uuid"] for s in staff)
    bloggs = next(g for g in groups if g["name"] == "Bloggs Family")
    assert isinstance(bloggs["taxable"], bool)


# -- writes ----------------------------------------------------------------------------------------
def test_add_client_and_relationships_round_trip(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    manager = setup.client.list_staff()[0]["uuid"]
    company = setup.client.add_client(
        {
            "name": "Harbourside Widgets </Name><Evil/> & Co Pty Ltd",
            "business_structure": "Company",
            "email": "accounts@harbourside.example",
            "website": "https://harbourside.example",
            "address": {"street": "1 Quay St", "city": "Sydney", "region": "NSW", "post_code": "2000"},
            "account_manager_uuid": manager,
            "tax_number": "123456782",
            "gst_registered": True,
            "gst_period": "2 Monthly",
            "balance_month": 6,
            "contacts": [{"name": "Front Desk", "is_primary": True, "email": "desk@harbourside.example"}],
        }
    )
    people = {
        name: setup.client.add_client(
            {
                "name": name,
                "first_name": name.split()[0],
                "last_name": "Harbour",
                "business_structure": "Individual",
            }
        )["uuid"]
        for name in ("Ann Harbour", "Ben Harbour", "Cat Harbour")
    }
    relationships = [
        {"type": "Director", "related_client_uuid": people["Ann Harbour"], "start_date": "2024-07-01"},
        {"type": "Shareholder", "related_client_uuid": people["Ann Harbour"], "number_of_shares": 600},
        {"type": "Shareholder", "related_client_uuid": people["Ben Harbour"], "number_of_shares": 400},
        {"type": "Public Officer", "related_client_uuid": people["Cat Harbour"]},
        {"type": "Secretary", "related_client_uuid": people["Ben Harbour"], "end_date": None},
    ]
    for relationship in relationships:
        assert setup.client.add_relationship(company["uuid"], relationship) is None

    again = setup.client.get_client(company["uuid"])

    assert company["name"] == "Harbourside Widgets </Name><Evil/> & Co Pty Ltd"
    assert company["website"] == "https://harbourside.example"  # sent as WebSite, read as Website
    assert (company["gst_registered"], company["gst_period"], company["balance_month"]) == (
        True,
        "2 Monthly",
        6,
    )
    assert company["address"] == {
        "street": "1 Quay St",
        "city": "Sydney",
        "region": "NSW",
        "post_code": "2000",
        "country": None,
    }
    assert company["account_manager"]["uuid"] == manager
    assert company["tax_number"] == "******782"
    assert [c["name"] for c in company["contacts"]] == ["Front Desk"]
    stored = stored_client(sandbox, setup.api, company["uuid"])
    assert stored["Website"] == "https://harbourside.example" and stored["TaxNumber"] == "123456782"
    assert [
        (r["type"], r["related_client"]["uuid"], r["number_of_shares"]) for r in again["relationships"]
    ] == [
        ("Director", people["Ann Harbour"], 0),
        ("Shareholder", people["Ann Harbour"], 600),
        ("Shareholder", people["Ben Harbour"], 400),
        ("Public Officer", people["Cat Harbour"], 0),
        ("Secretary", people["Ben Harbour"], 0),
    ]
    assert again["relationships"][0]["start_date"] == "2024-07-01"
    assert all(r["uuid"] for r in again["relationships"])


def test_trust_and_partnership_relationship_types(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    trust = setup.client.add_client({"name": "Harbour Family Trust", "business_structure": "Trust"})["uuid"]
    firm = setup.client.add_client({"name": "Harbour & Partners", "business_structure": "Partnership"})[
        "uuid"
    ]
    ann = setup.client.add_client({"name": "Ann Harbour", "business_structure": "Individual"})["uuid"]
    ben = setup.client.add_client({"name": "Ben Harbour", "business_structure": "Individual"})["uuid"]
    for kind in ("Trustee", "Beneficiary", "Appointer", "Settlor"):
        setup.client.add_relationship(trust, {"type": kind, "related_client_uuid": ann})
    setup.client.add_relationship(firm, {"type": "Partner", "related_client_uuid": ann, "percentage": 62.5})
    setup.client.add_relationship(firm, {"type": "Partner", "related_client_uuid": ben, "percentage": 37.5})

    assert [r["type"] for r in setup.client.get_client(trust)["relationships"]] == [
        "Trustee",
        "Beneficiary",
        "Appointer",
        "Settlor",
    ]
    assert [r["percentage"] for r in setup.client.get_client(firm)["relationships"]] == [62.5, 37.5]


def test_update_and_archive(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    created = setup.client.add_client(
        {"name": "Temporary Ltd", "phone": "01", "business_structure": "Company"}
    )

    updated = setup.client.update_client(created["uuid"], {"phone": None, "fax": "02"})
    setup.client.archive_client(created["uuid"])

    assert (updated["phone"], updated["fax"], updated["name"]) == (None, "02", "Temporary Ltd")
    assert setup.client.get_client(created["uuid"])["is_archived"] is True
    with pytest.raises(XpmNotFound):
        setup.client.update_client(UNKNOWN_UUID, {"fax": "03"})
    with pytest.raises(XpmNotFound):
        setup.client.archive_client(UNKNOWN_UUID)


@pytest.fixture(params=[200, 400, 404, 422], ids=lambda s: f"error_status_{s}")
def error_status(request: pytest.FixtureRequest, sandbox: SandboxServer) -> int:
    status: int = request.param
    set_xpm_options(sandbox, xpm_error_status=status)
    return status


def test_xpm_validation_errors_carry_xpms_message(sandbox: SandboxServer, error_status: int) -> None:
    setup = connect(sandbox)
    with pytest.raises(XpmValidationFailed) as caught:
        setup.client.add_client({"name": "Co-op Ltd", "business_structure": "Cooperative"})
    assert caught.value.to_problem()["status"] == 422
    assert caught.value.detail == "Invalid business structure 'Cooperative'"

    no_structure = setup.client.add_client({"name": "Unstructured"})["uuid"]
    person = uuid_named(setup, "Joe Bloggs")
    with pytest.raises(XpmValidationFailed) as caught:
        setup.client.add_relationship(no_structure, {"type": "Director", "related_client_uuid": person})
    assert "Business Structure" in caught.value.detail

    with pytest.raises(XpmValidationFailed) as caught:
        setup.client.add_relationship(no_structure, {"type": "Director", "related_client_uuid": UNKNOWN_UUID})
    assert caught.value.detail == "Invalid related client identifier"


def test_unknown_uuid_is_not_found_whatever_the_error_status(
    sandbox: SandboxServer, error_status: int
) -> None:
    setup = connect(sandbox)
    with pytest.raises(XpmNotFound):
        setup.client.get_client(UNKNOWN_UUID)


def test_our_own_validation_stops_bad_input_before_xpm(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    with pytest.raises(InvalidField) as caught:
        setup.client.add_relationship(UNKNOWN_UUID, {"type": "CEO", "related_client_uuid": UNKNOWN_UUID})
    assert caught.value.field == "type"
    with pytest.raises(InvalidField):
        setup.client.add_client({"name": "Bell\x07 Ltd"})
    assert setup.calls("xpm.client.addrelationship") == 0 and setup.calls("xpm.client.add") == 0


# -- tokens and authorisation ---------------------------------------------------------------------
def test_an_expired_token_is_refreshed_once_then_the_call_succeeds(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    advance_clock(sandbox, 31 * 60)  # access tokens live 30 minutes (§0.2)

    found = setup.client.search_clients("Bloggs")

    assert found
    assert setup.tokens.refreshes == 1
    assert setup.calls("xpm.client.search") == 2


def test_a_second_401_after_the_refresh_is_authorisation_lost(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    expired = setup.tokens.token
    setup.tokens.refresh = lambda: expired  # the "refreshed" token is no better
    advance_clock(sandbox, 31 * 60)

    with pytest.raises(XpmAuthorisationLost) as caught:
        setup.client.add_client({"name": "Never Made Ltd"})

    assert setup.tokens.refreshes == 1
    assert setup.calls("xpm.client.add") == 2
    assert (caught.value.status, caught.value.code) == (409, "connection_not_active")
    assert "Never Made Ltd" not in [c["Name"] for c in stored_clients(sandbox, setup.api)]


def test_a_user_who_lost_the_permission_is_authorisation_lost(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    setup.client.search_clients("Bloggs")
    revoked = control(
        sandbox,
        "PUT",
        f"users/{user_id('alice')}/permissions",
        {"tenant_id": setup.api.tenant_id, "can_connect": False},
    )
    assert revoked.status_code == 200, revoked.text

    with pytest.raises(XpmAuthorisationLost) as caught:
        setup.client.search_clients("Bloggs")

    assert caught.value.reason == "forbidden"
    assert caught.value.to_problem()["code"] == "connection_not_active"
    assert setup.tokens.refreshes == 0


def test_a_missing_scope_is_authorisation_lost(sandbox: SandboxServer) -> None:
    scopes = tuple(s for s in DEFAULT_SCOPES if s != "practicemanager.staff.read")
    setup = connect(sandbox, scopes=scopes)
    with pytest.raises(XpmAuthorisationLost) as caught:
        setup.client.list_staff()
    assert caught.value.reason == "insufficient_scope"
    assert setup.tokens.refreshes == 0


# -- faults, limits and the governor --------------------------------------------------------------
def test_a_429_passes_retry_after_and_the_problem_to_caller_and_governor(sandbox: SandboxServer) -> None:
    governor = FakeGovernor()
    setup = connect(sandbox, governor=governor)
    arm(sandbox, "xpm.client.search", "rate_limit", retry_after=17, problem="day")

    with pytest.raises(XpmRateLimited) as caught:
        setup.client.search_clients("Bloggs")

    assert (caught.value.retry_after, caught.value.problem) == (17, "day")
    status, headers, _ = caught.value.render()
    assert (status, headers["Retry-After"]) == (429, "17")
    assert governor.permit_values[-1].limited == [(17, "day")]


def test_the_sandboxs_real_minute_limit(sandbox: SandboxServer) -> None:
    set_limits(sandbox, per_minute=2)
    setup = connect(sandbox)
    setup.client.list_groups()
    setup.client.list_groups()
    assert setup.client.last_rate_headers["X-MinLimit-Remaining"] == "0"
    with pytest.raises(XpmRateLimited) as caught:
        setup.client.list_groups()
    assert caught.value.problem == "minute"
    assert 1 <= caught.value.retry_after <= 60


def test_the_governor_sees_every_call_and_its_headers(sandbox: SandboxServer) -> None:
    governor = FakeGovernor()
    setup = connect(sandbox, governor=governor)

    setup.client.list_staff()
    setup.client.list_groups()

    assert governor.permits == [setup.api.tenant_id, setup.api.tenant_id]
    first, second = governor.permit_values
    assert first.observed[0]["X-MinLimit-Remaining"] == "59"
    assert second.observed[0]["X-MinLimit-Remaining"] == "58"
    assert setup.client.last_rate_headers == {
        "X-MinLimit-Remaining": "58",
        "X-DayLimit-Remaining": "4998",
        "X-AppMinLimit-Remaining": "9998",
    }
    assert first.limited == []


def test_a_governor_refusal_sends_nothing(sandbox: SandboxServer) -> None:
    setup = connect(sandbox, governor=FakeGovernor(refuse=True))
    with pytest.raises(XpmRateLimited) as caught:
        setup.client.add_client({"name": "Held Back Ltd"})
    assert caught.value.retry_after == 42
    assert setup.calls("xpm.client.add") == 0


def test_a_server_error_is_unavailable(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    arm(sandbox, "xpm.client.search", "server_error", status=503)
    with pytest.raises(XpmUnavailable) as caught:
        setup.client.search_clients("Bloggs")
    problem = caught.value.to_problem()
    assert (problem["status"], problem["code"], problem["upstream_status"]) == (
        502,
        "upstream_unavailable",
        503,
    )
    assert "<" not in problem["detail"]  # never the upstream body


def test_writes_are_never_retried_automatically(sandbox: SandboxServer) -> None:
    setup = connect(sandbox)
    arm(sandbox, "xpm.client.add", "server_error", status=500)
    with pytest.raises(XpmUnavailable):
        setup.client.add_client({"name": "Once Only Ltd"})
    assert setup.calls("xpm.client.add") == 1

    # The answer is lost after XPM created it: the caller must reconcile, not post again.
    arm(sandbox, "xpm.client.add", "drop_response")
    with pytest.raises(XpmUnavailable):
        setup.client.add_client({"name": "Ghost Ltd"})
    assert setup.calls("xpm.client.add") == 2
    assert [c["Name"] for c in stored_clients(sandbox, setup.api)].count("Ghost Ltd") == 1


def test_a_timeout_is_unavailable(sandbox: SandboxServer) -> None:
    setup = connect(sandbox, timeout=(2.0, 0.5))
    arm(sandbox, "xpm.client.search", "timeout", seconds=1.5)
    with pytest.raises(XpmUnavailable) as caught:
        setup.client.search_clients("Bloggs")
    assert caught.value.reason == "timeout"
    assert setup.calls("xpm.client.search") == 1
    wait_until_idle(1.5)
