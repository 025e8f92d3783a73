"""Unsigned routes: liveness, the OpenAPI document, and the hosted connect pages."""

from __future__ import annotations

import html
import secrets
import time
from http.cookies import CookieError, SimpleCookie
from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.config import get_settings
from chalicelib.openapi import VERSION
from chalicelib.web.pages import Headers, PageProblem, render, scope_items, security_headers

# Services are imported inside the views (see chalicelib/tenants/routes.py): /health stays light.

bp = Blueprint(__name__)
FORM = ["application/x-www-form-urlencoded", "multipart/form-data"]


@bp.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"status": "ok", "stage": get_settings().stage, "version": VERSION}


@bp.route("/openapi.json", methods=["GET"])
def openapi_document() -> dict[str, Any]:
    from chalicelib.openapi import build_document

    return build_document(get_settings())


def problem_page(problem: PageProblem, extra_headers: dict[str, str] | None = None) -> Response:
    body = render("problem", title=problem.title, message=problem.message, code=problem.code)
    return Response(
        body=body, status_code=problem.status, headers={**security_headers(), **(extra_headers or {})}
    )


@bp.route("/connect/{session_id}", methods=["GET"])
def connect_page(session_id: str) -> Response:
    from chalicelib.oauth.connect import session_problem
    from chalicelib.oauth.explanations import explain
    from chalicelib.oauth.sessions import load_session
    from chalicelib.tenants.connections import iso
    from chalicelib.tenants.vendors import get_vendor

    session = load_session(session_id)
    problem = session_problem(session, time.time())
    if problem is not None or session is None:
        return problem_page(problem or PageProblem(404, "unknown_session", "Link not found", "Not found."))
    vendor = get_vendor(session.vendor_id)
    explained = explain(session.error_code) if session.status == "failed" else None
    banner = ""
    if explained:
        title, words = (html.escape(part) for part in explained)
        banner = f'<div class="error"><p><strong>{title}.</strong> {words}</p></div>'

    body = render(
        "connect",
        title=f"Connect {vendor.name} to Xero",
        raw={"scope_items": scope_items(vendor.scopes), "banner": banner},
        vendor_name=vendor.name,
        session_id=session.session_id,
        expires_at=(iso(session.expires_at) or "").replace("T", " ").removesuffix("Z"),
    )
    return Response(body=body, status_code=200, headers=security_headers(authorize_origin()))


@bp.route("/connect/{session_id}/start", methods=["POST"], content_types=FORM)
def connect_start(session_id: str) -> Response:
    from chalicelib.oauth.connect import Started, start_authorization

    outcome = start_authorization(session_id)
    if isinstance(outcome, PageProblem):
        return problem_page(outcome)
    assert isinstance(outcome, Started)
    headers: Headers = {
        "Location": outcome.authorize_url,
        "Set-Cookie": outcome.set_cookie,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return Response(body="", status_code=303, headers=headers)


@bp.route("/oauth/callback", methods=["GET"])
def oauth_callback() -> Response:
    from chalicelib.oauth.connect import handle_callback

    request = bp.current_request
    params = {k: v for k, v in (request.query_params or {}).items() if isinstance(v, str)}
    outcome = handle_callback(params, _cookies(request.headers.get("cookie", "")))
    if outcome.page is not None:
        return problem_page(outcome.page, outcome.headers)
    headers: Headers = {
        **outcome.headers,
        "Location": outcome.redirect_url or "/",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return Response(body="", status_code=302, headers=headers)


def _cookies(header: str) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def authorize_origin() -> list[str]:
    """Xero's authorize endpoint, allowed as a form redirect target by the page's CSP."""
    from chalicelib.oauth.discovery import identity_provider

    try:
        return [identity_provider(get_settings().xero_identity_url).metadata().authorization_endpoint]
    except Exception:
        return []


@bp.route("/demo", methods=["GET"])
def demo_page() -> Response:
    from chalicelib.web import demo

    vendor = demo.demo_vendor()
    query = {k: v for k, v in (bp.current_request.query_params or {}).items() if isinstance(v, str)}
    nonce = secrets.token_urlsafe(16)
    body = demo.page(vendor, query, nonce)
    return Response(body=body, status_code=200, headers=security_headers(script_nonce=nonce))


@bp.route("/demo/search", methods=["GET"])
def demo_search() -> dict[str, Any]:
    from chalicelib.web import demo

    vendor = demo.demo_vendor()
    params: dict[str, str] = dict(bp.current_request.query_params or {})
    return demo.search(vendor, params.get("q", ""))


@bp.route("/demo/clients/{uuid}", methods=["GET"])
def demo_client(uuid: str) -> Response:
    from chalicelib.web import demo

    return Response(
        body=demo.client_page(demo.demo_vendor(), uuid), status_code=200, headers=security_headers()
    )


@bp.route("/demo/pushes/{push_id}", methods=["GET"])
def demo_push(push_id: str) -> Response:
    from chalicelib.web import demo

    return Response(
        body=demo.push_page(demo.demo_vendor(), push_id), status_code=200, headers=security_headers()
    )


@bp.route("/demo/{action}", methods=["POST"], content_types=FORM)
def demo_action(action: str) -> Response:
    from urllib.parse import parse_qs

    from chalicelib.web import demo

    vendor = demo.demo_vendor()
    if action in ("connect", "reconnect"):
        location = demo.start_connect(vendor, "connect" if action == "connect" else "reauthorise")
    elif action == "disconnect":
        demo.disconnect(vendor)
        location = "/demo"
    elif action == "push":
        raw = bp.current_request.raw_body or b""
        text = raw.decode() if isinstance(raw, bytes) else raw
        form = {k: v[0] for k, v in parse_qs(text).items()}
        location = f"/demo/pushes/{demo.push_company(vendor, form)}"
    else:
        return problem_page(PageProblem(404, "not_found", "Not found", "No such demo action."))
    return Response(body="", status_code=303, headers={"Location": location, "Cache-Control": "no-store"})


@bp.route("/demo/webhooks", methods=["POST"])
def demo_webhook_receiver() -> Response:
    """The demo vendor's webhook endpoint (local stack only): verify, dedupe, keep for the page."""
    from chalicelib.web import demo_inbox

    request = bp.current_request
    raw = request.raw_body or b""
    demo_inbox.receive(raw if isinstance(raw, bytes) else raw.encode(), dict(request.headers))
    return Response(body="", status_code=204)


@bp.route("/demo/webhooks", methods=["GET"])
def demo_webhooks_received() -> Response:
    from chalicelib.web import demo_inbox

    return Response(body=demo_inbox.received(), status_code=200, headers={"Cache-Control": "no-store"})
