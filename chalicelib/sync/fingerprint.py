"""What a synced client is, and how a change is recognised.

A snapshot keeps the client's *summary* fields: the ones every listing XPM offers returns alike
(3.0/3.1 ``client.api/list``, 3.1 ``paged-list``, and ``get``), so switching the API version or
reading a vanished client with ``get`` never looks like a change. Contacts (absent from
``paged-list``) and the Practice Management fields (``tax_number`` and friends, only in detailed
reads) are left out: the snapshot never holds a tax number (checklist E10), and
``GET …/xpm/clients/{uuid}`` serves the full client.

The fingerprint is the first 64 bits of SHA-256 over the canonical JSON of those fields: same
data, same fingerprint, whatever order XPM sent the elements in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.sync.models import ACTIVE, ARCHIVED, DELETED

SNAPSHOT_FIELDS = (
    "uuid",
    "name",
    "title",
    "gender",
    "first_name",
    "last_name",
    "other_name",
    "email",
    "date_of_birth",
    "address",
    "postal_address",
    "phone",
    "fax",
    "website",
    "referral_source",
    "export_code",
    "is_archived",
    "is_deleted",
    "is_prospect",
    "account_manager",
    "billing_client",
    "billing_type",
)


def snapshot_of(client: Mapping[str, Any]) -> dict[str, Any]:
    """The summary fields of a contract-JSON client (missing ones as ``None``)."""
    return {name: client.get(name) for name in SNAPSHOT_FIELDS}


def canonical(snapshot: Mapping[str, Any]) -> str:
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(snapshot: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(snapshot).encode()).hexdigest()[:16]


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Names of the summary fields whose values differ (sorted): what an update event carries."""
    return sorted(name for name in SNAPSHOT_FIELDS if before.get(name) != after.get(name))


def flag_of(snapshot: Mapping[str, Any]) -> str:
    if snapshot.get("is_deleted"):
        return DELETED
    if snapshot.get("is_archived"):
        return ARCHIVED
    return ACTIVE


@dataclass(frozen=True)
class Entry:
    """A fingerprint bucket entry: what the last sync stored for one client."""

    fingerprint: str
    version: int
    flag: str

    def encode(self) -> str:
        return f"{self.fingerprint} {self.version} {self.flag}"

    @classmethod
    def decode(cls, value: str) -> Entry:
        fp, version, flag = value.split(" ")
        return cls(fp, int(version), flag)

    @property
    def listed(self) -> bool:
        """Would a paged pass list this client (neither archived nor deleted)?"""
        return self.flag == ACTIVE
