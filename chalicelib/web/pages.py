"""Hosted HTML pages: rendered from files next to this module, every value escaped.

No third-party assets, no scripts; ``Referrer-Policy: no-referrer`` so codes and states never
leak through Referer (checklist A5), and a CSP that only allows our own forms plus Xero's
authorize endpoint (the form's redirect target).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

TEMPLATES = Path(__file__).with_name("templates")
Headers = dict[str, str | list[str]]  # what chalice.Response accepts

SCOPE_WORDS = {
    "openid": "who you are in Xero (your Xero user id)",
    "profile": "your name",
    "email": "your email address",
    "offline_access": "continued access until the connection is removed, without signing in again",
    "practicemanager": "your practice's XPM data",
    "practicemanager.client": "your XPM clients: view them, and create clients and client relationships",
    "practicemanager.client.read": "your XPM clients (read only)",
    "practicemanager.staff": "your XPM staff list (view and manage)",
    "practicemanager.staff.read": "your XPM staff list (read only), to assign account managers",
    "practicemanager.job": "your XPM jobs (view and manage)",
    "practicemanager.job.read": "your XPM jobs (read only)",
    "practicemanager.time": "your XPM time entries (view and manage)",
    "practicemanager.time.read": "your XPM time entries (read only)",
}


@dataclass(frozen=True)
class PageProblem:
    """An HTML page instead of a redirect: used whenever the browser's request is not trusted."""

    status: int
    code: str
    title: str
    message: str


@lru_cache(maxsize=16)
def _template(name: str) -> Template:
    return Template((TEMPLATES / f"{name}.html").read_text(encoding="utf-8"))


def render(name: str, *, title: str, raw: dict[str, str] | None = None, **values: Any) -> str:
    """Render ``name`` inside the layout; ``values`` are escaped, ``raw`` are trusted fragments."""
    fields = {k: html.escape(str(v)) for k, v in {"title": title, **values}.items()}
    fields.update(raw or {})
    content = _template(name).substitute(fields)
    return _template("layout").substitute(title=html.escape(title), content=content)


def render_fragment(name: str, **values: Any) -> str:
    """A template without the layout (for pieces embedded in a page); values are escaped."""
    return _template(name).substitute({k: html.escape(str(v)) for k, v in values.items()})


def scope_items(scopes: str) -> str:
    words = [SCOPE_WORDS.get(s, s) for s in scopes.split() if s != "openid"]
    return "\n".join(f"<li>{html.escape(w)}</li>" for w in dict.fromkeys(words))


def security_headers(form_targets: list[str] | None = None, script_nonce: str | None = None) -> Headers:
    origins = " ".join(sorted({_origin(u) for u in form_targets or [] if _origin(u)}))
    scripts = f"script-src 'nonce-{script_nonce}'; connect-src 'self'; " if script_nonce else ""
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; {scripts}"
        f"frame-ancestors 'none'; form-action 'self' {origins}".strip()
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": csp,
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
