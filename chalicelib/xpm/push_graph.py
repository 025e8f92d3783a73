"""The entity graph a vendor pushes: validated before anything is queued (contract.md §4).

Shape::

    {"entity": {<client fields>, "business_structure": "Company"},
     "parties": [{"ref": "joe", "xpm_uuid": "…"} | {"ref": "jane", <client fields>}],
     "relationships": [{"type": "Director", "related": "jane", "client": "entity",
                        "number_of_shares": 100, "percentage": 50, "start_date": "2024-07-01",
                        "end_date": null}]}

``client`` defaults to ``"entity"``: the client holding the relationship is the entity (XPM's
``ClientUUID``) and ``related`` the party in the role (``RelatedClientUUID``), e.g. a company's
Director (xero-reference §3.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import BrokerError
from chalicelib.xpm.mapping import RELATIONSHIP_TYPES

REF = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENTITY = "entity"
MAX_PARTIES = 50
MAX_RELATIONSHIPS = 200
RELATIONSHIP_FIELDS = {
    "type",
    "related",
    "client",
    "number_of_shares",
    "percentage",
    "start_date",
    "end_date",
}


def invalid(detail: str, field_name: str) -> BrokerError:
    return BrokerError("invalid_request", 422, "Invalid request", detail, extra={"field": field_name})


@dataclass(frozen=True)
class Party:
    ref: str
    xpm_uuid: str | None
    fields: dict[str, Any]

    @property
    def display_name(self) -> str:
        name = self.fields.get("name")
        if isinstance(name, str) and name.strip():
            return " ".join(name.split())
        parts = [self.fields.get("first_name"), self.fields.get("last_name")]
        return " ".join(str(p).strip() for p in parts if isinstance(p, str) and p.strip())


@dataclass(frozen=True)
class Relationship:
    index: int
    type: str
    client: str
    related: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PushGraph:
    entity: Party
    parties: list[Party]
    relationships: list[Relationship]

    def party(self, ref: str) -> Party:
        if ref == ENTITY:
            return self.entity
        return next(p for p in self.parties if p.ref == ref)


def parse_graph(body: Any, *, require_structure: bool = True) -> PushGraph:
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.", "")
    entity_fields = body.get("entity")
    if not isinstance(entity_fields, dict):
        raise invalid("entity must be an object with the new client's fields.", "entity")
    structure = entity_fields.get("business_structure")
    if require_structure and (not isinstance(structure, str) or not structure):
        raise invalid("entity.business_structure is required (e.g. Company, Trust, Partnership).", "entity")
    entity = _party({**entity_fields, "ref": ENTITY}, "entity", allow_uuid=False)
    raw_parties = body.get("parties", [])
    if not isinstance(raw_parties, list) or len(raw_parties) > MAX_PARTIES:
        raise invalid(f"parties must be a list of at most {MAX_PARTIES} objects.", "parties")
    parties = [_party(p, f"parties[{i}]") for i, p in enumerate(raw_parties)]
    refs = [p.ref for p in parties]
    if len(set(refs)) != len(refs) or ENTITY in refs:
        raise invalid("party refs must be unique and not 'entity'.", "parties")
    raw_relationships = body.get("relationships", [])
    if not isinstance(raw_relationships, list) or len(raw_relationships) > MAX_RELATIONSHIPS:
        raise invalid(f"relationships must be a list of at most {MAX_RELATIONSHIPS}.", "relationships")
    known = {ENTITY, *refs}
    relationships = [_relationship(r, i, known) for i, r in enumerate(raw_relationships)]
    return PushGraph(entity, parties, relationships)


def _party(raw: Any, where: str, *, allow_uuid: bool = True) -> Party:
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be an object.", where)
    ref = raw.get("ref")
    if not isinstance(ref, str) or not REF.match(ref):
        raise invalid(f"{where}.ref must match {REF.pattern}.", f"{where}.ref")
    xpm_uuid = raw.get("xpm_uuid")
    fields = {k: v for k, v in raw.items() if k not in {"ref", "xpm_uuid"}}
    if xpm_uuid is not None:
        if not allow_uuid or not isinstance(xpm_uuid, str) or not re.match(r"^[0-9a-fA-F-]{36}$", xpm_uuid):
            raise invalid(f"{where}.xpm_uuid must be an XPM client UUID.", f"{where}.xpm_uuid")
        return Party(ref, xpm_uuid, {})
    party = Party(ref, None, fields)
    if not party.display_name:
        raise invalid(f"{where} needs a name, or first_name and last_name.", where)
    return party


def _relationship(raw: Any, index: int, known: set[str]) -> Relationship:
    where = f"relationships[{index}]"
    if not isinstance(raw, dict) or set(raw) - RELATIONSHIP_FIELDS:
        raise invalid(f"{where} must be an object with {sorted(RELATIONSHIP_FIELDS)}.", where)
    kind = raw.get("type")
    if kind not in RELATIONSHIP_TYPES:
        raise invalid(f"{where}.type must be one of XPM's relationship types.", f"{where}.type")
    client = raw.get("client", ENTITY)
    related = raw.get("related")
    if client not in known or related not in known or client == related:
        raise invalid(f"{where}: client and related must be two different known refs.", where)
    details = {k: v for k, v in raw.items() if k not in {"type", "client", "related"} and v is not None}
    return Relationship(index, str(kind), str(client), str(related), details)


def graph_from_client_request(body: Any) -> dict[str, Any]:
    """``POST …/xpm/clients`` (one client + relationships) as a graph (contract.md §4)."""
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.", "")
    fields = {k: v for k, v in body.items() if k != "relationships"}
    raw = body.get("relationships", [])
    if not isinstance(raw, list) or len(raw) > MAX_PARTIES:
        raise invalid(f"relationships must be a list of at most {MAX_PARTIES}.", "relationships")
    parties: list[dict[str, Any]] = []
    relationships: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        where = f"relationships[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object.", where)
        ref = f"related-{index}"
        if isinstance(item.get("related_client_uuid"), str) and "related_client" not in item:
            parties.append({"ref": ref, "xpm_uuid": item["related_client_uuid"]})
        elif isinstance(item.get("related_client"), dict) and "related_client_uuid" not in item:
            parties.append({**item["related_client"], "ref": ref})
        else:
            raise invalid(f"{where} needs related_client_uuid or related_client (one of them).", where)
        details = {k: v for k, v in item.items() if k not in {"related_client_uuid", "related_client"}}
        relationships.append({**details, "related": ref})
    return {"entity": fields, "parties": parties, "relationships": relationships}
