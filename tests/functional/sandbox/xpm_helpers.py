"""Calling the sandbox's XPM API over loopback HTTP without the OAuth dance.

``XpmApi.connect`` does what a finished consent leaves behind: a registered app, a Connection for
(app, user, practice) and an access token with the claims Xero puts in one (xero-reference.md
§1.9), then sends requests with ``Authorization`` and ``xero-tenant-id`` (§1.11).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import requests
from lxml import etree

from sandbox.server import SandboxServer
from sandbox.state import Connection, Limits, RegisteredApp, SandboxState, stable_uuid
from sandbox.tokens import issue_jwt

DEFAULT_SCOPES = (
    "openid",
    "profile",
    "email",
    "offline_access",
    "practicemanager.client",
    "practicemanager.staff.read",
)
TIMEOUT = 30


def practice_id(key: str) -> str:
    """Tenant id of a seeded practice: ``bloggs`` or ``harbour``."""
    return stable_uuid("practice", key)


def user_id(key: str) -> str:
    """Xero user id of a seeded user: ``alice``, ``bob`` or ``carol``."""
    return stable_uuid("user", key)


def connect(state: SandboxState, app: RegisteredApp, xero_user_id: str, tenant_id: str) -> Connection:
    """Insert the Connection a consent for (app, user, tenant) would have created (§1.8)."""
    now = state.clock.now()
    connection = Connection(
        id=str(uuid.uuid4()),
        client_id=app.client_id,
        user_id=xero_user_id,
        auth_event_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        tenant_type="PRACTICEMANAGER",
        tenant_name=state.practices[tenant_id].name,
        created_at=now,
        updated_at=now,
    )
    with state.lock:
        state.connections[connection.id] = connection
    return connection


def mint_access_token(
    state: SandboxState, issuer: str, app: RegisteredApp, xero_user_id: str, scopes: tuple[str, ...]
) -> str:
    """An RS256 access token shaped like Xero's (§1.9), valid for 30 minutes of sandbox time."""
    now = int(state.clock.now())
    return issue_jwt(
        {
            "iss": issuer,
            "aud": f"{issuer}/resources",
            "client_id": app.client_id,
            "xero_userid": xero_user_id,
            "authentication_event_id": str(uuid.uuid4()),
            "global_session_id": str(uuid.uuid4()),
            "scope": list(scopes),
            "sub": uuid.uuid5(uuid.NAMESPACE_URL, xero_user_id).hex,
            "jti": uuid.uuid4().hex,
            "nbf": now,
            "iat": now,
            "exp": now + 1800,
        }
    )


@dataclass
class XpmApi:
    """An authorised XPM caller: one app, one user, one practice, one API version."""

    sandbox_url: str
    app: RegisteredApp
    headers: dict[str, str] = field(default_factory=dict)
    version: str = "3.1"

    @classmethod
    def connect(
        cls,
        sandbox: SandboxServer,
        user: str = "alice",
        practice: str = "bloggs",
        *,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        app: RegisteredApp | None = None,
        version: str = "3.1",
    ) -> XpmApi:
        state = sandbox.state
        app = app or state.register_app(["http://127.0.0.1:9/callback"], name="xpm tests")
        tenant_id = practice_id(practice)
        connect(state, app, user_id(user), tenant_id)
        token = mint_access_token(state, sandbox.url, app, user_id(user), scopes)
        headers = {"Authorization": f"Bearer {token}", "xero-tenant-id": tenant_id}
        return cls(sandbox.url, app, headers, version)

    @property
    def tenant_id(self) -> str:
        return self.headers["xero-tenant-id"]

    def on(self, version: str) -> XpmApi:
        return replace(self, version=version)

    def url(self, path: str) -> str:
        return f"{self.sandbox_url}/practicemanager/{self.version}/{path}"

    def get(self, path: str, params: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, params=params, **kwargs)

    def post(self, path: str, body: bytes, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, data=body, **kwargs)

    def put(self, path: str, body: bytes, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, data=body, **kwargs)

    def request(self, verb: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Accept": "application/xml", "Content-Type": "application/xml", **self.headers}
        headers.update(kwargs.pop("headers", {}))
        timeout = kwargs.pop("timeout", TIMEOUT)
        return requests.request(verb, self.url(path), headers=headers, timeout=timeout, **kwargs)


# -- XML ---------------------------------------------------------------------------------------
def parse(response: requests.Response) -> etree._Element:
    """The XML root of a sandbox response (our own server, so lxml's defaults are fine)."""
    assert response.headers["Content-Type"].startswith("application/xml"), response.text
    return etree.fromstring(response.content)


def ok(response: requests.Response) -> etree._Element:
    """The root of a 200 ``<Status>OK</Status>`` response."""
    root = parse(response)
    assert response.status_code == 200, response.text
    assert root.findtext("Status") == "OK", response.text
    return root


def error_description(response: requests.Response) -> str:
    """The ``ErrorDescription`` of an ERROR envelope (§3.2)."""
    root = parse(response)
    assert root.findtext("Status") == "ERROR", response.text
    description = root.findtext("ErrorDescription") or ""
    assert description, response.text
    return str(description)


def document(tag: str, *children: tuple[str, Any], **fields: str) -> bytes:
    """``<tag><Field>value</Field>…</tag>``: keyword fields, then (tag, value-or-element) pairs."""
    root = etree.Element(tag)
    for name, value in [*fields.items(), *children]:
        if isinstance(value, etree._Element):
            root.append(value)
        else:
            etree.SubElement(root, name).text = value
    body: bytes = etree.tostring(root)
    return body


def element(tag: str, **fields: str) -> etree._Element:
    root = etree.Element(tag)
    for name, value in fields.items():
        etree.SubElement(root, name).text = value
    return root


def client_names(root: etree._Element) -> list[str]:
    return [c.findtext("Name") or "" for c in root.iterfind("Clients/Client")]


def find_uuid(api: XpmApi, name: str) -> str:
    """The first client named exactly ``name``: the seeded demo family comes first (sandbox/seed.py)."""
    root = ok(api.get("client.api/search", {"query": name}))
    matches = [c.findtext("UUID") for c in root.iterfind("Clients/Client") if c.findtext("Name") == name]
    assert matches, client_names(root)
    return str(matches[0])


# -- control API -------------------------------------------------------------------------------
def control(sandbox: SandboxServer, verb: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(verb, f"{sandbox.url}/_sandbox/{path}", json=body, timeout=TIMEOUT)


def stored_clients(sandbox: SandboxServer, api: XpmApi) -> list[dict[str, Any]]:
    """Every client record of the caller's practice as stored (unmasked, deleted included)."""
    response = control(sandbox, "GET", f"practices/{api.tenant_id}/clients")
    assert response.status_code == 200
    clients: list[dict[str, Any]] = response.json()
    return clients


def stored_client(sandbox: SandboxServer, api: XpmApi, uuid: str) -> dict[str, Any]:
    response = control(sandbox, "GET", f"practices/{api.tenant_id}/clients/{uuid}")
    assert response.status_code == 200
    client: dict[str, Any] = response.json()
    return client


def advance_clock(sandbox: SandboxServer, seconds: float) -> None:
    assert control(sandbox, "POST", "clock/advance", {"seconds": seconds}).status_code == 200


def set_limits(sandbox: SandboxServer, **limits: int) -> None:
    assert control(sandbox, "PUT", "limits", limits).status_code == 200


def set_xpm_options(sandbox: SandboxServer, **options: float) -> None:
    assert control(sandbox, "PUT", "xpm-options", options).status_code == 200


def restore_config(state: SandboxState) -> None:
    """Put limits and XPM options back: ``state.reset()`` keeps config, and the server is shared."""
    defaults = type(state.config)()
    with state.lock:
        for name, value in asdict(Limits()).items():
            setattr(state.config.limits, name, value)
        state.config.xpm_latency_seconds = defaults.xpm_latency_seconds
        state.config.xpm_error_status = defaults.xpm_error_status


def wait_until_idle(seconds: float) -> None:
    """Let a deliberately slow server-side call finish before the next test resets the state."""
    time.sleep(seconds)
