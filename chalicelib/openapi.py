"""The OpenAPI 3.1 document served at GET /openapi.json.

Built from plain data so it costs nothing at import; it grows with the API (each area adds
its paths here). The signature scheme and the problem+json schema are described once.
"""

from __future__ import annotations

from typing import Any

from chalicelib.config import Settings
from chalicelib.tenants import CONNECTION_STATUSES as STATUSES

VERSION = "0.1.0"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable machine-readable code.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "request_id": {"type": "string"},
    },
}

SIGNATURE_DESCRIPTION = (
    "Every /v1 request is signed with RFC 9421 HTTP Message Signatures, algorithm hmac-sha256: "
    "`Signature-Input` and `Signature` headers with `keyid` (the vendor key id), `created` and "
    "`nonce` parameters, covering at least `@method`, `@authority`, `@target-uri` and, when there "
    "is a body, `content-digest` (RFC 9530, sha-256). `created` must be within 300 s of the "
    "broker's clock and a nonce is accepted once."
)


def _request_id_header() -> dict[str, Any]:
    return {
        "description": "Identifies this request in the broker's logs; echo it when asking for help.",
        "schema": {"type": "string"},
    }


def _problem_response(description: str = "An error (problem+json).") -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-Id": _request_id_header()},
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-Id": _request_id_header()},
        "content": {"application/json": {"schema": schema}},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _signed_errors() -> dict[str, Any]:
    return {
        "400": _problem_response("Malformed request (invalid_json)."),
        "401": _problem_response("Missing, invalid, expired or replayed signature (invalid_signature)."),
        "404": _problem_response("Unknown tenant, also another vendor's (tenant_not_found)."),
        "413": _problem_response("Body over 256 KiB (payload_too_large)."),
        "422": _problem_response("Invalid input (invalid_request and the codes named per operation)."),
        "503": _problem_response("Storage or key service briefly unavailable; retry."),
    }


TENANT_REF = {
    "name": "tenant_ref",
    "in": "path",
    "required": True,
    "description": "The vendor's own id for its customer (the firm).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}

HTML = {"text/html": {"schema": {"type": "string"}}}


def _vendor_paths() -> dict[str, Any]:
    return {
        "/v1/tenants/{tenant_ref}/connect-sessions": {
            "post": {
                "operationId": "createConnectSession",
                "summary": "Start connecting (or reauthorising) a tenant's XPM practice",
                "parameters": [TENANT_REF],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ConnectSessionRequest")}},
                },
                "responses": {
                    "201": _json_response(
                        "The hosted page to send the firm's user to.", _ref("ConnectSession")
                    ),
                    **_signed_errors(),
                },
            }
        },
        "/v1/tenants/{tenant_ref}/connection": {
            "get": {
                "operationId": "getConnection",
                "summary": "A tenant's connection status and metadata (never tokens)",
                "parameters": [TENANT_REF],
                "responses": {
                    "200": _json_response("The connection.", _ref("Connection")),
                    **_signed_errors(),
                },
            },
            "delete": {
                "operationId": "deleteConnection",
                "summary": "Disconnect: delete the Xero connection, revoke if unused, destroy tokens",
                "description": "Idempotent: disconnecting a revoked tenant answers 204 again.",
                "parameters": [TENANT_REF],
                "responses": {
                    "204": {
                        "description": "Disconnected.",
                        "headers": {"X-Request-Id": _request_id_header()},
                    },
                    **_signed_errors(),
                },
            },
        },
        "/v1/tenants": {
            "get": {
                "operationId": "listTenants",
                "summary": "The vendor's tenants, paged",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                ],
                "responses": {
                    "200": _json_response("A page of tenants.", _ref("TenantPage")),
                    **_signed_errors(),
                },
            }
        },
    }


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": (
        "1-255 characters [A-Za-z0-9_-]; the same key with the same body replays the first response "
        "for 24 hours (header Idempotent-Replayed: true)."
    ),
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,255}$"},
}
RATE = {
    name: {"schema": {"type": "string"}, "description": "Xero's remaining budget for this practice."}
    for name in ("X-MinLimit-Remaining", "X-DayLimit-Remaining", "X-AppMinLimit-Remaining")
}


def _xpm_errors() -> dict[str, Any]:
    return {
        **_signed_errors(),
        "409": _problem_response("connection_not_active, idempotency_in_progress or xpm_create_ambiguous."),
        "429": _problem_response("rate_limited (the broker's governor or Xero's); honour Retry-After."),
        "502": _problem_response("upstream_unavailable: Xero was unreachable or failed."),
    }


def _xpm_paths() -> dict[str, Any]:
    uuid = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    push_id = {"name": "push_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/tenants/{tenant_ref}/xpm/clients": {
            "get": {
                "operationId": "searchClients",
                "summary": "Live XPM client search (with search), or the synced client list (without)",
                "description": (
                    "With `search` (at least 3 characters): a live XPM search, `{clients}`. Without "
                    "it: the change feed's snapshot (docs/sync.md), paged by `cursor`/`limit`, "
                    "optionally only clients changed at or after `updated_since`; `synced: false` "
                    "and an empty list until the first sync of the practice has finished."
                ),
                "parameters": [
                    TENANT_REF,
                    {
                        "name": "search",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "minLength": 3},
                    },
                    *SYNCED_LIST_PARAMETERS,
                ],
                "responses": {
                    "200": {
                        **_json_response(
                            "Matching clients (search), or a page of the synced list.",
                            {"oneOf": [_ref("ClientList"), _ref("SyncedClientPage")]},
                        ),
                        "headers": {"X-Request-Id": _request_id_header(), **RATE},
                    },
                    **_xpm_errors(),
                },
            },
            "post": {
                "operationId": "createClient",
                "summary": "Create one XPM client, with optional relationships",
                "parameters": [TENANT_REF, IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ClientInput")}},
                },
                "responses": {"201": _json_response("The created client.", _ref("Client")), **_xpm_errors()},
            },
        },
        "/v1/tenants/{tenant_ref}/xpm/clients/{uuid}": {
            "get": {
                "operationId": "getClient",
                "summary": "One XPM client with contacts, groups and relationships",
                "parameters": [TENANT_REF, uuid],
                "responses": {"200": _json_response("The client.", _ref("Client")), **_xpm_errors()},
            }
        },
        "/v1/tenants/{tenant_ref}/xpm/pushes": {
            "post": {
                "operationId": "createPush",
                "summary": "Push an entity graph (entity, parties, relationships) to XPM as a job",
                "parameters": [TENANT_REF, IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PushRequest")}},
                },
                "responses": {"202": _json_response("Queued.", _ref("PushAccepted")), **_xpm_errors()},
            }
        },
        "/v1/tenants/{tenant_ref}/xpm/pushes/{push_id}": {
            "get": {
                "operationId": "getPush",
                "summary": "A push job's status with per-record results",
                "parameters": [TENANT_REF, push_id],
                "responses": {"200": _json_response("The job.", _ref("Push")), **_signed_errors()},
            }
        },
    }


SYNCED_LIST_PARAMETERS: list[dict[str, Any]] = [
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
    },
    {
        "name": "updated_since",
        "in": "query",
        "required": False,
        "description": "ISO 8601 date-time with a zone: only clients a sync saw change at or after it.",
        "schema": {"type": "string", "format": "date-time"},
    },
]


def _sync_paths() -> dict[str, Any]:
    return {
        "/v1/tenants/{tenant_ref}/xpm/sync": {
            "post": {
                "operationId": "startSync",
                "summary": "Sync the practice's clients now (the change feed); joins a sync in flight",
                "parameters": [TENANT_REF],
                "responses": {
                    "202": _json_response(
                        "The sync: a new one (started: true) or the one already queued or running.",
                        _ref("SyncStatus"),
                    ),
                    **_xpm_errors(),
                },
            },
            "get": {
                "operationId": "getSync",
                "summary": "The tenant's current or last sync",
                "parameters": [TENANT_REF],
                "responses": {"200": _json_response("The sync.", _ref("SyncStatus")), **_signed_errors()},
            },
        }
    }


def _sync_schemas() -> dict[str, Any]:
    iso = {"type": ["string", "null"], "format": "date-time"}
    return {
        "SyncStatus": {
            "type": "object",
            "required": ["sync_id", "status", "synced"],
            "properties": {
                "sync_id": {"type": ["string", "null"]},
                "status": {
                    "type": "string",
                    "enum": ["not_started", "idle", "queued", "running", "completed", "failed"],
                },
                "started": {"type": "boolean", "description": "POST only: false when joined."},
                "trigger": {"type": ["string", "null"], "enum": ["schedule", "api", "cli", None]},
                "mode": {
                    "type": ["string", "null"],
                    "enum": ["paged", "full_list", "modified_since", None],
                    "description": "How XPM is read (docs/sync.md).",
                },
                "initial": {
                    "type": ["boolean", "null"],
                    "description": "The practice's first (baseline) sync: no per-client events.",
                },
                "requested_at": iso,
                "started_at": iso,
                "finished_at": iso,
                "error": {"type": ["string", "null"]},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "synced": {"type": "boolean", "description": "A finished snapshot of this practice exists."},
                "last_completed_at": iso,
                "next_sync_at": iso,
            },
        },
        "SyncedClientPage": {
            "type": "object",
            "required": ["clients", "next_cursor", "synced", "sync"],
            "properties": {
                "clients": {
                    "type": "array",
                    "items": _ref("Client"),
                    "description": "Summary fields (docs/sync.md) plus updated_at.",
                },
                "next_cursor": {"type": ["string", "null"]},
                "synced": {"type": "boolean"},
                "sync": _ref("SyncStatus"),
            },
        },
    }


def _browser_paths() -> dict[str, Any]:
    session = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
    page = {"description": "An HTML page.", "content": HTML}
    return {
        "/connect/{session_id}": {
            "get": {
                "operationId": "connectPage",
                "summary": "Hosted connect page (browser)",
                "security": [],
                "parameters": [session],
                "responses": {
                    "200": page,
                    "404": page,
                    "410": {"description": "Expired or used.", "content": HTML},
                },
            }
        },
        "/connect/{session_id}/start": {
            "post": {
                "operationId": "connectStart",
                "summary": "The page's Connect to Xero button: redirects to Xero's authorize endpoint",
                "security": [],
                "parameters": [session],
                "responses": {"303": {"description": "To Xero."}, "404": page, "410": page},
            }
        },
        "/oauth/callback": {
            "get": {
                "operationId": "oauthCallback",
                "summary": "Xero's redirect target",
                "description": (
                    "On success 302 to return_url?status=connected&tenant_ref=…&session_id=…; on failure "
                    "302 to return_url?status=error&error=CODE&session_id=… with CODE one of access_denied, "
                    "no_practice_manager_access, practice_mismatch, upstream_error. An unknown, expired or "
                    "reused state gets an HTML page and no redirect."
                ),
                "security": [],
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("code", "state", "error", "iss")
                ],
                "responses": {"302": {"description": "Back to the vendor."}, "400": page},
            }
        },
        "/demo": {
            "get": {
                "operationId": "demoPage",
                "summary": "Local stack only: a tiny vendor page (connect, reconnect, disconnect)",
                "security": [],
                "responses": {"200": page, "404": _problem_response("Not on the local stack.")},
            }
        },
        "/demo/search": {
            "get": {
                "operationId": "demoSearch",
                "summary": "Local stack only: the demo page's typeahead (names and UUIDs)",
                "security": [],
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": _json_response("Suggestions.", {"type": "object"}),
                    "404": _problem_response(),
                },
            }
        },
        "/demo/clients/{uuid}": {
            "get": {
                "operationId": "demoClient",
                "summary": "Local stack only: one client, as the demo vendor shows it",
                "security": [],
                "parameters": [
                    {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": page, "404": _problem_response()},
            }
        },
        "/demo/pushes/{push_id}": {
            "get": {
                "operationId": "demoPush",
                "summary": "Local stack only: a push job's progress",
                "security": [],
                "parameters": [
                    {"name": "push_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": page, "404": _problem_response()},
            }
        },
        "/demo/{action}": {
            "post": {
                "operationId": "demoAction",
                "summary": "Local stack only: the demo page's buttons",
                "security": [],
                "parameters": [
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["connect", "reconnect", "disconnect", "push"]},
                    }
                ],
                "responses": {"303": {"description": "Next page."}, "404": _problem_response()},
            }
        },
    }


def _schemas() -> dict[str, Any]:
    iso = {"type": ["string", "null"], "format": "date-time"}
    return {
        "Problem": PROBLEM_SCHEMA,
        "Health": {
            "type": "object",
            "required": ["status", "stage", "version"],
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "stage": {"type": "string"},
                "version": {"type": "string"},
            },
        },
        "ConnectSessionRequest": {
            "type": "object",
            "required": ["return_url"],
            "properties": {
                "return_url": {
                    "type": "string",
                    "description": "Exactly one of the vendor's registered URLs.",
                },
                "mode": {"type": "string", "enum": ["connect", "reauthorise"], "default": "connect"},
                "allow_practice_change": {"type": "boolean", "default": False},
                "user": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "email": {"type": "string"},
                        "mfa_verified": {"type": "boolean"},
                    },
                },
            },
        },
        "ConnectSession": {
            "type": "object",
            "required": ["connect_url", "session_id", "expires_at"],
            "properties": {
                "connect_url": {"type": "string", "format": "uri"},
                "session_id": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"},
            },
        },
        "Connection": {
            "type": "object",
            "required": ["tenant_ref", "status"],
            "properties": {
                "tenant_ref": {"type": "string"},
                "status": {"type": "string", "enum": list(STATUSES)},
                "status_reason": {"type": ["string", "null"]},
                "xero_tenant_id": {"type": ["string", "null"]},
                "practice_name": {"type": ["string", "null"]},
                "authorised_by": {
                    "type": ["object", "null"],
                    "properties": {
                        "xero_user_id": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                        "email": {"type": ["string", "null"]},
                    },
                },
                "scopes": {"type": "array", "items": {"type": "string"}},
                "connected_at": iso,
                "updated_at": iso,
                "revoked_at": iso,
                "last_refreshed_at": iso,
                "refresh_token_expires_at": iso,
                "next_rotation_at": iso,
            },
        },
        "Client": {
            "type": "object",
            "description": "An XPM client in snake_case (docs/xpm-json.md); lists are arrays, empties null.",
            "required": ["uuid", "name"],
            "properties": {
                "uuid": {"type": "string"},
                "name": {"type": "string"},
                "tax_number": {"type": ["string", "null"], "description": "Masked (***123) by default."},
                "contacts": {"type": "array", "items": {"type": "object"}},
                "groups": {"type": "array", "items": {"type": "object"}},
                "relationships": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        },
        "ClientList": {
            "type": "object",
            "required": ["clients"],
            "properties": {"clients": {"type": "array", "items": _ref("Client")}},
        },
        "ClientInput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 255},
                "business_structure": {"type": "string"},
                "relationships": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {"type": "string"},
                            "related_client_uuid": {"type": "string"},
                            "related_client": {"type": "object"},
                            "number_of_shares": {"type": "number"},
                            "percentage": {"type": "number"},
                            "start_date": {"type": "string", "format": "date"},
                            "end_date": {"type": "string", "format": "date"},
                        },
                    },
                },
            },
            "additionalProperties": True,
        },
        "PushRequest": {
            "type": "object",
            "required": ["entity"],
            "properties": {
                "entity": {"type": "object", "required": ["name", "business_structure"]},
                "parties": {"type": "array", "items": {"type": "object", "required": ["ref"]}},
                "relationships": {
                    "type": "array",
                    "items": {"type": "object", "required": ["type", "related"]},
                },
            },
        },
        "PushAccepted": {
            "type": "object",
            "required": ["push_id", "status"],
            "properties": {"push_id": {"type": "string"}, "status": {"type": "string"}},
        },
        "Push": {
            "type": "object",
            "required": ["push_id", "status", "records", "relationships"],
            "properties": {
                "push_id": {"type": "string"},
                "tenant_ref": {"type": "string"},
                "status": {"type": "string", "enum": ["queued", "running", "completed", "failed"]},
                "error": {"type": ["string", "null"]},
                "attempts": {"type": "integer"},
                "created_at": iso,
                "updated_at": iso,
                "records": {"type": "array", "items": {"type": "object"}},
                "relationships": {"type": "array", "items": {"type": "object"}},
            },
        },
        "TenantPage": {
            "type": "object",
            "required": ["tenants", "next_cursor"],
            "properties": {
                "tenants": {"type": "array", "items": _ref("Connection")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
    }


def _with_common_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Answers every operation can give: 415 for a body it does not take (Chalice checks first)."""
    for operations in paths.values():
        for method, operation in operations.items():
            if method in {"post", "put", "patch"}:
                operation["responses"].setdefault(
                    "415", _problem_response("A body of another content type (unsupported_media_type).")
                )
    return paths


def _webhook_paths() -> dict[str, Any]:
    endpoint = {"200": _json_response("The endpoint (never its secret).", _ref("WebhookEndpoint"))}
    event_id = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/webhook-endpoint": {
            "put": {
                "operationId": "putWebhookEndpoint",
                "summary": "Set where webhooks go and which types; re-enables a disabled endpoint",
                "description": (
                    "The URL must be https on port 443 or 8443 and every address its host resolves to "
                    "must be public (invalid_url otherwise). See docs/webhooks.md."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WebhookEndpointInput")}},
                },
                "responses": {**endpoint, **_signed_errors()},
            },
            "get": {
                "operationId": "getWebhookEndpoint",
                "summary": "The endpoint: URL, event types, status, secret rotation state",
                "responses": {**endpoint, **_signed_errors()},
            },
        },
        "/v1/webhook-endpoint/secret:rotate": {
            "post": {
                "operationId": "rotateWebhookSecret",
                "summary": "A new signing secret (shown once); the old one signs too for 24 hours",
                "responses": {
                    "200": _json_response("The new secret and the endpoint.", _ref("RotatedWebhookSecret")),
                    "409": _problem_response("rotation_in_progress: rotated concurrently; read and retry."),
                    **_signed_errors(),
                },
            }
        },
        "/v1/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "The durable event log, oldest first, with each event's delivery status",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "Only events after this event id (the previous page's next_after).",
                        "schema": {"type": "string", "pattern": "^evt_[0-9]{13}[0-9a-f]{10}$"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                ],
                "responses": {
                    "200": _json_response("A page of events.", _ref("EventPage")),
                    **_signed_errors(),
                },
            }
        },
        "/v1/events/{event_id}/redeliver": {
            "post": {
                "operationId": "redeliverEvent",
                "summary": "Deliver one event again: a new round of attempts, signed with the current secret",
                "parameters": [event_id],
                "responses": {
                    "202": _json_response("Queued.", _ref("Event")),
                    "404": _problem_response("event_not_found (also another vendor's event)."),
                    "409": _problem_response(
                        "webhook_endpoint_not_configured, webhook_endpoint_disabled or "
                        "event_delivery_in_progress."
                    ),
                    **{k: v for k, v in _signed_errors().items() if k != "404"},
                },
            }
        },
        "/demo/webhooks": {
            "post": {
                "operationId": "demoWebhookReceiver",
                "summary": "Local stack only: the demo vendor's receiver (verifies Standard Webhooks)",
                "security": [],
                "responses": {
                    "204": {"description": "Verified and stored."},
                    "401": _problem_response("The signature does not verify."),
                    "404": _problem_response("Not on the local stack."),
                },
            },
            "get": {
                "operationId": "demoWebhooksReceived",
                "summary": "Local stack only: the webhooks the demo vendor received (the demo page polls it)",
                "security": [],
                "responses": {
                    "200": _json_response("Received events, newest first.", {"type": "object"}),
                    "404": _problem_response("Not on the local stack."),
                },
            },
        },
    }


def _webhook_schemas() -> dict[str, Any]:
    iso = {"type": ["string", "null"], "format": "date-time"}
    from chalicelib.webhooks.models import DELIVERY_STATUSES, EVENT_TYPES

    types = {"type": "string", "enum": sorted(EVENT_TYPES)}
    return {
        "WebhookEndpointInput": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2048},
                "event_types": {
                    "type": "array",
                    "items": types,
                    "minItems": 1,
                    "description": "Default: all.",
                },
            },
        },
        "WebhookEndpoint": {
            "type": "object",
            "required": ["url", "event_types", "status", "secret_rotation"],
            "properties": {
                "url": {"type": ["string", "null"]},
                "event_types": {"type": "array", "items": types},
                "status": {"type": "string", "enum": ["active", "disabled", "not_configured"]},
                "disabled_at": iso,
                "disabled_reason": {
                    "type": ["string", "null"],
                    "description": "gone (the endpoint answered 410) or failing_for_retry_window.",
                },
                "failing_since": iso,
                "secret_rotation": {
                    "type": "object",
                    "properties": {
                        "rotated_at": iso,
                        "previous_secret_active": {"type": "boolean"},
                        "previous_secret_expires_at": iso,
                    },
                },
            },
        },
        "RotatedWebhookSecret": {
            "allOf": [
                _ref("WebhookEndpoint"),
                {
                    "type": "object",
                    "required": ["secret"],
                    "properties": {"secret": {"type": "string", "pattern": "^whsec_"}},
                },
            ]
        },
        "Event": {
            "type": "object",
            "required": ["id", "type", "timestamp", "data", "delivery"],
            "properties": {
                "id": {"type": "string", "description": "Also the webhook-id header: dedupe on it."},
                "type": types,
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"type": "object"},
                "delivery": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
                        "attempts": {"type": "integer"},
                        "last_attempt_at": iso,
                        "last_response_status": {"type": ["integer", "null"]},
                        "last_error": {"type": ["string", "null"]},
                        "next_attempt_at": iso,
                        "delivered_at": iso,
                        "failed_at": iso,
                        "failed_reason": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "EventPage": {
            "type": "object",
            "required": ["events", "has_more", "next_after"],
            "properties": {
                "events": {"type": "array", "items": _ref("Event")},
                "has_more": {"type": "boolean"},
                "next_after": {"type": ["string", "null"]},
            },
        },
    }


def build_document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xpm-broker",
            "version": VERSION,
            "description": (
                "OAuth broker and webhook API that connects SaaS products to Xero Practice Manager."
            ),
        },
        "servers": [{"url": settings.public_url}],
        "paths": _with_common_errors(
            {
                "/health": {
                    "get": {
                        "operationId": "getHealth",
                        "summary": "Liveness",
                        "security": [],
                        "responses": {
                            "200": _json_response("The broker is up.", _ref("Health")),
                            "default": _problem_response(),
                        },
                    }
                },
                "/openapi.json": {
                    "get": {
                        "operationId": "getOpenApi",
                        "summary": "This document",
                        "security": [],
                        "responses": {
                            "200": _json_response("The OpenAPI 3.1 document.", {"type": "object"}),
                            "default": _problem_response(),
                        },
                    }
                },
                **_vendor_paths(),
                **_xpm_paths(),
                **_sync_paths(),
                **_browser_paths(),
                **_webhook_paths(),
            }
        ),
        "components": {
            "schemas": {**_schemas(), **_webhook_schemas(), **_sync_schemas()},
            "securitySchemes": {
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": SIGNATURE_DESCRIPTION,
                }
            },
        },
        "security": [{"httpMessageSignature": []}],
    }
