"""The XPM API v3 (``/practicemanager/{3.0|3.1}/…``): clients, relationships, staff, client groups.

Each route names its ``Endpoint`` and a handler that fills the OK envelope; ``_serve`` runs the
gateway (sandbox/xpm_gateway.py), reads the body, holds the state lock and turns an ``XpmError``
into the ERROR envelope (§3.2). Paths, verbs and shapes follow xero-reference.md §3.3-§3.7; a
wrong verb is Flask's 405, an unknown version or a 3.1-only method on 3.0 is 404.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode
from xml.etree.ElementTree import Element as RequestElement

from flask import Blueprint, Response, abort, request
from lxml import etree

from sandbox import practice_control
from sandbox.practice import PracticeData, decode_page_token, encode_page_token
from sandbox.state import Connection, get_state
from sandbox.xpm_errors import XpmError
from sandbox.xpm_gateway import Endpoint, through_gateway
from sandbox.xpm_input import (
    read_client,
    read_client_uuid,
    read_new_relationship,
    read_relationship_update,
    read_relationship_uuid,
)
from sandbox.xpm_render import add_client, add_group_list, add_staff_list, client_web_url
from sandbox.xpm_xml import MAX_BODY_BYTES, add, envelope, error_envelope, parse_request, xml_response

bp = Blueprint("sandbox_xpm", __name__)
bp.register_blueprint(practice_control.bp)

VERSIONS = ("3.0", "3.1")
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 50, 500  # §3.10


@dataclass
class XpmCall:
    """One admitted call: the practice's data, the envelope to fill and the request body."""

    data: PracticeData
    version: str
    root: etree._Element
    now: float
    body: bytes

    def document(self, root_tag: str) -> RequestElement:
        return parse_request(self.body, root_tag)


Handler = Callable[..., None]


def xpm_route(
    resource: str,
    method: str,
    verb: str,
    api_method: str,
    *,
    path: str | None = None,
    write: bool = False,
    versions: tuple[str, ...] = VERSIONS,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` at ``/practicemanager/<version>/{resource}.api/{path or method}``."""
    endpoint = Endpoint(resource, method, api_method, write, versions)

    def register(handler: Handler) -> Handler:
        def view(version: str, **params: str) -> Response:
            return _serve(version, endpoint, lambda call: handler(call, **params))

        rule = f"/practicemanager/<version>/{resource}.api/{path or method}"
        bp.add_url_rule(rule, f"{resource}_{method}".replace("-", "_"), view, methods=[verb])
        return handler

    return register


def _serve(version: str, endpoint: Endpoint, handler: Callable[[XpmCall], None]) -> Response:
    if version not in endpoint.versions:
        abort(404)
    state = get_state()

    def work(connection: Connection) -> Response:
        body = _read_body() if endpoint.write else b""
        if body is None:
            too_large = {"title": "Payload Too Large", "status": 413, "detail": "Request body too large"}
            return Response(json.dumps(too_large), status=413, content_type="application/json")
        with state.lock:
            practice = state.practices.get(connection.tenant_id)
            if practice is None or practice.data is None:
                abort(403)
            root = envelope(version, endpoint.api_method)
            call = XpmCall(practice.data, version, root, state.clock.now(), body)
            try:
                handler(call)
            except XpmError as exc:
                failure = error_envelope(version, endpoint.api_method, exc.description)
                return xml_response(failure, state.config.xpm_error_status)
        return xml_response(call.root)

    return through_gateway(state, endpoint, work)


def _read_body() -> bytes | None:
    """The request body, or None when it is over MAX_BODY_BYTES (read no further than that)."""
    body = b""
    while len(body) <= MAX_BODY_BYTES:
        chunk = request.stream.read(MAX_BODY_BYTES + 1 - len(body))  # a stream may return less
        if not chunk:
            return body
        body += chunk
    while request.stream.read(64 * 1024):
        pass  # drain, so the client reads our 413 instead of a reset connection
    return None


# -- clients: reads --------------------------------------------------------------------------
def _detailed() -> bool:
    return request.args.get("detailed", "").lower() == "true"


@xpm_route("client", "list", "GET", "List")
def client_list(call: XpmCall) -> None:
    """Every client in one response, archived included, deleted not (§3.3, §3.10)."""
    since = _modified_since(request.args.get("modifiedsince"))
    clients = add(call.root, "Clients")
    detailed = _detailed()
    for client in call.data.listed_clients(since):
        add_client(clients, client, call.data, detail=detailed)


def _modified_since(value: str | None) -> float | None:
    """``modifiedsince=yyyy-MM-ddTHH:mm:ss``, in UTC (§3.1)."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise XpmError("modifiedsince must be yyyy-MM-ddTHH:mm:ss") from exc


@xpm_route("client", "paged-list", "GET", "PagedList", versions=("3.1",))
def client_paged_list(call: XpmCall) -> None:
    """Non-archived, non-deleted clients a page at a time; no ``<Next>`` on the last page (§3.3.2)."""
    raw_size = request.args.get("pageSize", str(PAGE_SIZE_DEFAULT))
    if not raw_size.isdigit() or not 1 <= int(raw_size) <= PAGE_SIZE_MAX:
        raise XpmError(f"pageSize must be between 1 and {PAGE_SIZE_MAX}")
    size = int(raw_size)
    token = request.args.get("pageToken")
    try:
        after = decode_page_token(token) if token else -1
    except ValueError as exc:
        raise XpmError("Invalid pageToken") from exc
    page, next_after = call.data.client_page(after, size)
    clients = add(call.root, "Clients")
    for client in page:
        add_client(clients, client, call.data, detail=False, contacts=False)  # the sample has no Contacts
    base = f"{request.host_url}practicemanager/{call.version}/client.api/paged-list"
    links = add(add(call.root, "Pagination"), "Links")
    add(links, "First", f"{base}?{urlencode({'pageSize': size})}")
    if next_after is not None:
        query = urlencode({"pageToken": encode_page_token(next_after), "pageSize": size})
        add(links, "Next", f"{base}?{query}")


@xpm_route("client", "search", "GET", "Search")
def client_search(call: XpmCall) -> None:
    query = request.args.get("query", "").strip()
    if not query:
        raise XpmError("query is required")
    clients = add(call.root, "Clients")  # no match renders as <Clients /> (§3.3.3)
    detailed = _detailed()
    for client in call.data.search_clients(query):
        add_client(clients, client, call.data, detail=detailed)


@xpm_route("client", "get", "GET", "Get", path="get/<client_uuid>")
def client_get(call: XpmCall, client_uuid: str) -> None:
    client = call.data.live_client(client_uuid)
    if client is None:
        raise XpmError("Invalid client identifier")
    add(call.root, "WebUrl", client_web_url(client))
    add_client(call.root, client, call.data, detail=True)


# -- clients: writes -------------------------------------------------------------------------
@xpm_route("client", "add", "POST", "Add", write=True)
def client_add(call: XpmCall) -> None:
    """Create a client (and inline contacts); answer with its full detail (§3.3.5)."""
    changes = read_client(call.document("Client"), call.data, new=True)
    client = call.data.add_client(str(uuid.uuid4()), changes, call.now)
    add_client(call.root, client, call.data, detail=True)


@xpm_route("client", "update", "PUT", "Update", write=True)
def client_update(call: XpmCall) -> None:
    document = call.document("Client")
    client = call.data.clients[read_client_uuid(document, call.data)]
    changes = read_client(document, call.data, new=False)
    call.data.update_client(client, changes, call.now)
    add_client(call.root, client, call.data, detail=True)


@xpm_route("client", "archive", "PUT", "Archive", write=True)
def client_archive(call: XpmCall) -> None:
    client = call.data.clients[read_client_uuid(call.document("Client"), call.data)]
    call.data.archive_client(client, call.now)


@xpm_route("client", "delete", "POST", "Delete", write=True)
def client_delete(call: XpmCall) -> None:
    client = call.data.clients[read_client_uuid(call.document("Client"), call.data)]
    call.data.delete_client(client, call.now)


# -- relationships (§3.5): status-only answers; the UUID is read back through get -----------
@xpm_route("client", "addrelationship", "POST", "AddRelationship", write=True)
def relationship_add(call: XpmCall) -> None:
    relationship = read_new_relationship(call.document("Relationship"), call.data)
    call.data.add_relationship(relationship)
    call.data.clients[relationship.client_uuid].modified = call.now


@xpm_route("client", "updaterelationship", "PUT", "UpdateRelationship", write=True)
def relationship_update(call: XpmCall) -> None:
    relationship = read_relationship_update(call.document("Relationship"), call.data)
    call.data.replace_relationship(relationship)
    call.data.clients[relationship.client_uuid].modified = call.now


@xpm_route("client", "deleterelationship", "POST", "DeleteRelationship", write=True)
def relationship_delete(call: XpmCall) -> None:
    relationship_uuid = read_relationship_uuid(call.document("Relationship"), call.data)
    client_uuid = call.data.relationships[relationship_uuid].client_uuid
    call.data.delete_relationship(relationship_uuid)
    call.data.clients[client_uuid].modified = call.now


# -- staff and groups ------------------------------------------------------------------------
@xpm_route("staff", "list", "GET", "List")
def staff_list(call: XpmCall) -> None:
    add_staff_list(call.root, call.data)


@xpm_route("clientgroup", "list", "GET", "List")
def group_list(call: XpmCall) -> None:
    add_group_list(call.root, call.data)
