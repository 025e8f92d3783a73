"""Everything the sandbox remembers, behind one lock.

The world is deterministic for a given ``SandboxConfig`` (seed, clients per practice): the same
tenant ids, user ids and client UUIDs on every start, so docs and tests can name them.
"""

from __future__ import annotations

import copy
import random
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from flask import current_app

from sandbox.clock import SandboxClock
from sandbox.faults import FaultRegistry

NAMESPACE = uuid.UUID("6f1c3c52-0b9e-4f4e-9d0a-3d3f0f5c8a11")


def stable_uuid(*parts: object) -> str:
    """A UUID that is the same on every run for the same parts."""
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


@dataclass
class Limits:
    """Xero's per-tenant and app-wide limits (xero-reference.md §2.1), configurable."""

    concurrent: int = 5
    per_minute: int = 60
    per_day: int = 5000
    app_per_minute: int = 10_000


@dataclass
class SandboxConfig:
    seed: int = 42
    clients_per_practice: int = 200
    access_token_lifetime: int = 1800  # 30 minutes (§1.5)
    refresh_token_idle_expiry: int = 60 * 86400  # 60 days unused (§1.5)
    refresh_grace: int = 1800  # previous refresh token replayable for 30 minutes (§1.5)
    code_lifetime: int = 300  # UNVERIFIED (5 min vs 30 s): 5 minutes here
    id_token_lifetime: int = 300
    # UNVERIFIED what a refresh with the previous token inside the grace window returns:
    # "reissue" = yet another new pair; "same" = the pair issued by the first refresh again.
    grace_mode: str = "reissue"
    limits: Limits = field(default_factory=Limits)
    # XPM API behaviour (sandbox/xpm.py), settable with PUT /_sandbox/xpm-options.
    xpm_latency_seconds: float = 0.0  # added to every admitted XPM call, to exercise the concurrent limit
    # UNVERIFIED (§3.2, §8.11) which HTTP status accompanies <Status>ERROR</Status>: 200 as WFM v1 did.
    xpm_error_status: int = 200
    # The official /connections example shows tenantName null for a PRACTICEMANAGER tenant (§1.8);
    # True makes new XPM connections carry null so a broker's fallback naming gets exercised.
    practice_tenant_name_null: bool = False


@dataclass
class RegisteredApp:
    """A Xero app (developer portal registration): credentials and exact redirect URIs."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str = "Sandbox app"

    def to_json(self, *, with_secret: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": self.client_id,
            "name": self.name,
            "redirect_uris": list(self.redirect_uris),
        }
        if with_secret:
            body["client_secret"] = self.client_secret
        return body


@dataclass
class XeroUser:
    """A Xero login. ``practices`` maps tenant id -> holds "Connect third-party add-ons" (§5.3)."""

    user_id: str
    email: str
    given_name: str
    family_name: str
    practices: dict[str, bool]

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "practices": [
                {"tenant_id": t, "can_connect_third_party_addons": ok} for t, ok in self.practices.items()
            ],
        }


@dataclass
class Practice:
    """An XPM practice (a PRACTICEMANAGER tenant). ``data`` holds its clients, staff and groups."""

    tenant_id: str
    name: str
    data: Any = None  # sandbox.practice.PracticeData


@dataclass
class AuthCode:
    code: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: list[str]
    auth_event_id: str
    issued_at: float
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used: bool = False


@dataclass
class Grant:
    """The token set Xero keeps for one (app, user): refresh tokens rotate on every use (§1.5)."""

    grant_id: str
    client_id: str
    user_id: str
    scope: list[str]
    auth_event_id: str
    refresh_token: str
    refresh_issued_at: float
    previous_refresh_token: str | None = None
    previous_valid_until: float = 0.0
    last_issued: dict[str, Any] | None = None  # the response of the latest refresh ("same" grace mode)
    revoked: bool = False
    global_session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    auth_time: float = 0.0  # when the user signed in (the tokens' auth_time claim, §1.9)


@dataclass
class Connection:
    """A row of GET /connections (§1.8): one per (app, user, tenant)."""

    id: str
    client_id: str
    user_id: str
    auth_event_id: str
    tenant_id: str
    tenant_type: str
    tenant_name: str | None
    created_at: float
    updated_at: float


class SandboxState:
    """The whole sandbox world. Hold ``lock`` while reading or changing more than one field."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._initial_config = copy.deepcopy(self.config)
        self.lock = threading.RLock()
        self.clock = SandboxClock()
        self.faults = FaultRegistry()
        self.calls: Counter[str] = Counter()
        self.apps: dict[str, RegisteredApp] = {}
        self.users: dict[str, XeroUser] = {}
        self.practices: dict[str, Practice] = {}
        self.codes: dict[str, AuthCode] = {}
        self.grants: dict[str, Grant] = {}
        self.connections: dict[str, Connection] = {}
        self.extra: dict[str, Any] = {}  # per-area scratch (rate-limit windows, ...)
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the seeded world: config, data, tokens, connections, faults, counters, clock."""
        with self.lock:
            initial = copy.deepcopy(self._initial_config)
            for option in fields(SandboxConfig):
                setattr(self.config, option.name, getattr(initial, option.name))
            self.clock.reset()
            self.faults.clear()
            self.calls.clear()
            self.codes.clear()
            self.grants.clear()
            self.connections.clear()
            self.extra.clear()
            self.apps.clear()
            self._seed_world()

    def _seed_world(self) -> None:
        from sandbox.seed import seed_practice_data

        rng = random.Random(self.config.seed)
        practices = [
            ("bloggs", "Bloggs & Co Chartered Accountants", self.config.clients_per_practice),
            ("harbour", "Harbour Tax Advisers", max(10, self.config.clients_per_practice // 8)),
        ]
        self.practices = {}
        for key, name, n_clients in practices:
            tenant_id = stable_uuid("practice", key)
            practice = Practice(tenant_id=tenant_id, name=name)
            practice.data = seed_practice_data(practice, n_clients, rng)
            self.practices[tenant_id] = practice
        bloggs, harbour = (stable_uuid("practice", k) for k, _, _ in practices)
        users = [
            ("alice", "Alice", "Adviser", {bloggs: True, harbour: True}),
            ("bob", "Bob", "Bookkeeper", {bloggs: False}),
            ("carol", "Carol", "Controller", {harbour: True}),
        ]
        self.users = {}
        for key, given, family, practice_rights in users:
            user_id = stable_uuid("user", key)
            self.users[user_id] = XeroUser(
                user_id=user_id,
                email=f"{key}@sandbox.example",
                given_name=given,
                family_name=family,
                practices=practice_rights,
            )
        # One app is always registered so the sandbox works out of the box; the dev stack and
        # tests register their own with POST /_sandbox/apps.
        demo = RegisteredApp(
            client_id="sandbox-demo-client",
            client_secret=self.extra.get("demo_secret") or secrets.token_urlsafe(32),
            redirect_uris=["http://127.0.0.1:8000/oauth/callback", "http://localhost:8000/oauth/callback"],
            name="Sandbox demo app",
        )
        self.apps[demo.client_id] = demo

    # -- helpers shared by the areas -----------------------------------------------------
    def count(self, endpoint: str) -> None:
        with self.lock:
            self.calls[endpoint] += 1

    def register_app(
        self,
        redirect_uris: list[str],
        name: str = "Sandbox app",
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> RegisteredApp:
        app = RegisteredApp(
            client_id=client_id or uuid.uuid4().hex.upper(),
            client_secret=client_secret or secrets.token_urlsafe(32),
            redirect_uris=list(redirect_uris),
            name=name,
        )
        with self.lock:
            self.apps[app.client_id] = app
        return app

    def user_by_email(self, email: str) -> XeroUser | None:
        for user in self.users.values():
            if user.email.lower() == email.lower():
                return user
        return None


def get_state() -> SandboxState:
    """The state of the Flask app serving the current request."""
    state: SandboxState = current_app.config["SANDBOX_STATE"]
    return state
