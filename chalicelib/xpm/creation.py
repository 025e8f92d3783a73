"""Creating XPM clients safely: exact-match reuse and never a duplicate after an ambiguous failure.

XPM has no idempotency key (security-checklist G6). Before a create we note the UUIDs of the
clients that already carry exactly that name; if the create then times out or fails with a 5xx
(it may have been applied), we search again and adopt the one new client with that name
instead of posting again. A person given by UUID is reused; a new person that exactly matches
an existing client (same name and date of birth, or same name and email) is reused too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.errors import BrokerError
from chalicelib.xpm.client import XpmClient
from chalicelib.xpm.errors import XpmUnavailable


def normalise_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def same_name_uuids(client: XpmClient, name: str) -> list[str]:
    wanted = normalise_name(name)
    return [c["uuid"] for c in client.search_clients(name) if normalise_name(c.get("name") or "") == wanted]


def matching_person(client: XpmClient, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """An existing client with exactly this name and the same date of birth or email."""
    birth = _date(fields.get("date_of_birth"))
    email = (fields.get("email") or "").strip().casefold()
    if not birth and not email:
        return None
    wanted = normalise_name(name)
    for candidate in client.search_clients(name, detailed=True):
        if normalise_name(candidate.get("name") or "") != wanted or candidate.get("is_deleted"):
            continue
        if birth and _date(candidate.get("date_of_birth")) == birth:
            return candidate
        if email and (candidate.get("email") or "").strip().casefold() == email:
            return candidate
    return None


def create_once(
    client: XpmClient,
    fields: dict[str, Any],
    name: str,
    known_before: list[str] | None,
    remember: Callable[[list[str]], None],
) -> dict[str, Any]:
    """Create a client unless an earlier, ambiguous attempt already did.

    ``known_before`` are the same-name UUIDs noted before a previous attempt (None: first
    attempt); ``remember`` persists them before the create is sent.
    """
    if known_before is not None:
        adopted = _adopt(client, name, known_before)
        if adopted is not None:
            return adopted
    else:
        known_before = same_name_uuids(client, name)
        remember(known_before)
    try:
        return client.add_client(fields)
    except XpmUnavailable:
        adopted = _adopt(client, name, known_before)
        if adopted is not None:
            return adopted
        raise


def _adopt(client: XpmClient, name: str, known_before: list[str]) -> dict[str, Any] | None:
    new = [uuid for uuid in same_name_uuids(client, name) if uuid not in set(known_before)]
    if len(new) > 1:
        # Someone else created a same-name client meanwhile: adopting either could be wrong and
        # creating again could duplicate. Stop and say so.
        raise BrokerError(
            "xpm_create_ambiguous",
            409,
            "Create outcome ambiguous",
            f"Several new XPM clients named {name!r} appeared; none was adopted and none created.",
        )
    if len(new) == 1:
        return client.get_client(new[0])
    return None


def _date(value: Any) -> str:
    return value[:10] if isinstance(value, str) and len(value) >= 10 else ""
