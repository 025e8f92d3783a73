"""The demo vendor (local stack only): a tiny vendor backend that signs its calls to /v1.

It uses the very client a Python vendor would (requests + requests-http-signature, RFC 9421)
against the broker's public URL, with the demo vendor's key that ``make run`` created and passed
in ``XPMB_DEMO_KEY_ID``/``XPMB_DEMO_KEY_SECRET``. Never served outside the local stage.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from chalicelib.config import get_settings
from chalicelib.errors import BrokerError
from chalicelib.oauth.explanations import explain
from chalicelib.web.pages import render, render_fragment

DEMO_TENANT = "demo-firm"


@dataclass(frozen=True)
class DemoVendor:
    vendor_id: str
    key_id: str
    key_secret: str
    name: str = "Demo Docs"


def demo_vendor() -> DemoVendor:
    settings = get_settings()
    key_id = os.environ.get("XPMB_DEMO_KEY_ID", "")
    if not settings.is_local or not key_id:
        raise BrokerError("not_found", 404, "Not found", "The demo page exists only on the local stack.")
    return DemoVendor(
        os.environ.get("XPMB_DEMO_VENDOR_ID", ""), key_id, os.environ.get("XPMB_DEMO_KEY_SECRET", "")
    )


def call_broker(
    vendor: DemoVendor, method: str, path: str, json_body: Any = None, key: str | None = None
) -> Any:
    import requests
    from requests_http_signature import HTTPSignatureAuth, algorithms

    auth = HTTPSignatureAuth(
        key=vendor.key_secret.encode(),
        key_id=vendor.key_id,
        signature_algorithm=algorithms.HMAC_SHA256,
        use_nonce=True,
    )
    headers = {"Idempotency-Key": key} if key else {}
    url = get_settings().public_url + path
    return requests.request(method, url, json=json_body, auth=auth, headers=headers, timeout=30)


def return_url() -> str:
    return f"{get_settings().public_url}/demo"


def start_connect(vendor: DemoVendor, mode: str) -> str:
    body: dict[str, Any] = {
        "return_url": return_url(),
        "mode": mode,
        "user": {"id": "demo-user", "mfa_verified": True},
    }
    if mode == "reauthorise":
        body["allow_practice_change"] = True
    response = call_broker(vendor, "POST", f"/v1/tenants/{DEMO_TENANT}/connect-sessions", body)
    if response.status_code != 201:
        raise BrokerError("demo_failed", 502, "Demo call failed", response.text[:300])
    return str(response.json()["connect_url"])


def disconnect(vendor: DemoVendor) -> None:
    call_broker(vendor, "DELETE", f"/v1/tenants/{DEMO_TENANT}/connection")


def page(vendor: DemoVendor, query: dict[str, str], nonce: str = "") -> str:
    response = call_broker(vendor, "GET", f"/v1/tenants/{DEMO_TENANT}/connection")
    connection: dict[str, Any] = response.json() if response.status_code == 200 else {}
    status = connection.get("status", "not connected")
    who = connection.get("authorised_by") or {}
    actions = []
    if status in ("not connected", "revoked"):
        actions.append(_button("/demo/connect", "Connect to Xero", "connect"))
    else:
        actions.append(_button("/demo/reconnect", "Reconnect", "reconnect", "secondary"))
        actions.append(_button("/demo/disconnect", "Disconnect", "disconnect", "danger"))
    tools = render_fragment("demo_tools", nonce=nonce) if status == "active" else ""
    return render(
        "demo",
        title="Demo vendor",
        raw={
            "banner": _banner(query),
            "actions": "\n".join(actions),
            "tools": tools,
            "webhooks": render_fragment("demo_webhooks", nonce=nonce),
        },
        vendor_name=vendor.name,
        tenant_ref=DEMO_TENANT,
        status=status,
        practice_name=connection.get("practice_name") or "-",
        authorised_by=" ".join(
            p for p in (who.get("name"), f"<{who['email']}>" if who.get("email") else "") if p
        )
        or "-",
        connected_at=connection.get("connected_at") or "-",
    )


def _button(action: str, label: str, element_id: str, kind: str = "") -> str:
    css = f' class="{kind}"' if kind else ""
    return (
        f'<form method="post" action="{action}"><button type="submit" id="{element_id}"{css}>'
        f"{html.escape(label)}</button></form>"
    )


def _banner(query: dict[str, str]) -> str:
    if query.get("status") == "connected":
        return '<div class="ok" id="banner"><p>Connected to Xero Practice Manager.</p></div>'
    if query.get("status") == "error":
        title, words = explain(query.get("error")) or ("Connection failed", "Please try again.")
        text = f"<strong>{html.escape(title)}.</strong> {html.escape(words)}"
        return f'<div class="error" id="banner"><p>{text}</p></div>'
    return ""


def search(vendor: DemoVendor, text: str) -> dict[str, Any]:
    response = call_broker(vendor, "GET", f"/v1/tenants/{DEMO_TENANT}/xpm/clients?search={quote(text)}")
    body: dict[str, Any] = response.json() if response.status_code == 200 else {"clients": []}
    return {"clients": [{"uuid": c.get("uuid"), "name": c.get("name")} for c in body.get("clients", [])]}


def client_page(vendor: DemoVendor, uuid: str) -> str:
    response = call_broker(vendor, "GET", f"/v1/tenants/{DEMO_TENANT}/xpm/clients/{quote(uuid)}")
    if response.status_code != 200:
        raise BrokerError("not_found", 404, "Not found", "No such client.")
    client: dict[str, Any] = response.json()
    shown = ("business_structure", "email", "phone", "date_of_birth", "tax_number", "company_number")
    cells = ((html.escape(k.replace("_", " ")), html.escape(str(client.get(k) or "-"))) for k in shown)
    rows = "\n".join(f"<tr><td>{label}</td><td>{value}</td></tr>" for label, value in cells)
    relationships = (
        "\n".join(
            f"<li>{html.escape(str(r.get('type')))}: "
            f"{html.escape(str((r.get('related_client') or {}).get('name') or '-'))}</li>"
            for r in client.get("relationships") or []
        )
        or "<li>none</li>"
    )
    return render(
        "demo_client",
        title=str(client.get("name") or "Client"),
        raw={"rows": rows, "relationships": relationships},
        client_name=client.get("name") or "-",
    )


def push_company(vendor: DemoVendor, form: dict[str, str]) -> str:
    import uuid

    directors = [
        ("d1", form.get("d1_first", ""), form.get("d1_last", "")),
        ("d2", form.get("d2_first", ""), form.get("d2_last", "")),
    ]
    body = {
        "entity": {"name": form.get("company", "").strip(), "business_structure": "Company"},
        "parties": [
            {"ref": ref, "first_name": first.strip(), "last_name": last.strip()}
            for ref, first, last in directors
        ],
        "relationships": [{"type": "Director", "related": ref} for ref, _, _ in directors],
    }
    response = call_broker(
        vendor, "POST", f"/v1/tenants/{DEMO_TENANT}/xpm/pushes", body, key=str(uuid.uuid4())
    )
    if response.status_code != 202:
        raise BrokerError("demo_failed", 502, "Push refused", response.text[:300])
    return str(response.json()["push_id"])


def push_page(vendor: DemoVendor, push_id: str) -> str:
    response = call_broker(vendor, "GET", f"/v1/tenants/{DEMO_TENANT}/xpm/pushes/{quote(push_id)}")
    if response.status_code != 200:
        raise BrokerError("not_found", 404, "Not found", "No such push.")
    push: dict[str, Any] = response.json()
    rows = "\n".join(
        f"<tr><td>{html.escape(str(r['ref']))}</td><td>{html.escape(str(r.get('name') or ''))}</td>"
        f"<td>{html.escape(str(r.get('action') or r['status']))}</td></tr>"
        for r in push["records"]
    )
    relationships = "\n".join(
        f"<li>{html.escape(r['type'])} {html.escape(r['related'])}: {html.escape(r['status'])}</li>"
        for r in push["relationships"]
    )
    done = push["status"] in ("completed", "failed")
    refresh = "" if done else '<meta http-equiv="refresh" content="1">'
    return render(
        "demo_push",
        title="Push",
        raw={"rows": rows, "relationships": relationships, "refresh": refresh},
        push_id=push_id,
        status=push["status"],
    )
