"""The OpenAPI 3.1 document served at GET /openapi.json.

Built from plain data so it costs nothing at import; it grows with the API (each area adds
its paths here). The signature scheme and the problem+json schema are described once.
"""

from __future__ import annotations

from typing import Any

from chalicelib.config import Settings

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


def build_document(settings: Settings) -> dict[str, Any]:
    problem_response = {
        "description": "An error (problem+json).",
        "headers": {"X-Request-Id": _request_id_header()},
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
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
        "paths": {
            "/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The broker is up.",
                            "headers": {"X-Request-Id": _request_id_header()},
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                            },
                        },
                        "default": problem_response,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "headers": {"X-Request-Id": _request_id_header()},
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "default": problem_response,
                    },
                }
            },
        },
        "components": {
            "schemas": {
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
            },
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
