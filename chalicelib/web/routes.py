"""Unsigned routes: liveness and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.config import get_settings
from chalicelib.openapi import VERSION, build_document

bp = Blueprint(__name__)


@bp.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"status": "ok", "stage": get_settings().stage, "version": VERSION}


@bp.route("/openapi.json", methods=["GET"])
def openapi_document() -> dict[str, Any]:
    return build_document(get_settings())
