"""The ``@target-uri`` a vendor signed, rebuilt from what the Lambda proxy event tells us.

Contract §2: "signatures cover URLs under" ``XPMB_PUBLIC_URL``. A vendor signs
``{XPMB_PUBLIC_URL}{path below the API root}[?query]``; the Host header and API Gateway's own
domain are never trusted for this (B5: the authority is ours, not the client's).

Path rule (one rule for API Gateway, ``chalice local`` and ``chalice.test.Client``):
the route template (``resource`` / ``requestContext.resourcePath``, e.g. ``/v1/tenants/{ref}``)
has N segments, so the path below the API root is the last N segments of the received path
(``path``, else ``requestContext.path``). Whatever API Gateway put in front of them (the stage,
as in ``/prod/v1/...``, or a custom domain's base-path mapping) is dropped, and the public URL's
own base path is prepended instead, so it is never doubled nor lost. Chalice's test client and
``chalice local`` send no stage and no top-level ``path``; ``requestContext.path`` is then the
route path itself. Without a usable template (a greedy ``{proxy+}`` route, or an event that is
not from a Chalice route) the public URL's base path is removed from the front of the received
path when present.

Query rule: REST API Gateway (payload 1.0) and Chalice pass decoded, multi-valued parameters,
not the raw query string, so the query is re-encoded in the usual spellings (see
``target_uri_candidates``). Parameters keep their received order; a vendor that interleaves a
repeated name (``a=1&b=2&a=3``) cannot be matched, because the event groups values by name.
Every candidate decodes to exactly the parameters the route will read, so accepting any of
them widens nothing an attacker could use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

# RFC 3986 pchar and "/", plus "%" so escapes that are already there are kept as sent.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
# What may stay literal inside a query value when a hand-written URL is requoted by `requests`:
# RFC 3986 query characters except the separators "&", "=", "+" (and "#").
_QUERY_VALUE_SAFE = "!$'()*,/:;?@"


def target_uri_candidates(
    public_url: str,
    path: str,
    query: Mapping[str, list[str]] | None,
    raw_query: str | None = None,
) -> list[str]:
    """Candidate URIs for ``path`` below ``public_url``, most exact first, without duplicates.

    Query spellings: ``raw_query`` when known; then the parameters as ``requests`` encodes
    ``params=`` (``urlencode(..., doseq=True)``: ``a+b``, ``%3A``); then RFC 3986 strict
    (``a%20b``, only unreserved characters bare); then a hand-written URL as ``requests``
    requotes it (``a%20b``, ``:`` ``/`` ``@`` bare).
    """
    base = public_url.rstrip("/") + _encoded_path(path)
    spellings = _query_spellings(query, raw_query)
    if not spellings:
        return [base]
    return list(dict.fromkeys(f"{base}?{spelling}" for spelling in spellings))


def target_uri_candidates_for_event(public_url: str, event: Mapping[str, Any]) -> list[str]:
    """Candidates for a Lambda proxy event (API Gateway REST, ``chalice local``, the test client)."""
    context = event.get("requestContext") or {}
    received = event.get("path") or context.get("path") or "/"
    template = event.get("resource") or context.get("resourcePath")
    path = route_path(public_url, received, template)
    return target_uri_candidates(public_url, path, _event_query(event), event.get("rawQueryString"))


def route_path(public_url: str, received: str, template: str | None) -> str:
    """The concrete path below the API root (the module docstring states the rule)."""
    if template and "+}" not in template:
        wanted = len(_segments(template))
        segments = _segments(received)
        if len(segments) >= wanted:
            trailing = "/" if wanted and received.endswith("/") else ""
            return "/" + "/".join(segments[len(segments) - wanted :]) + trailing
    base_path = urlsplit(public_url).path.rstrip("/")
    if base_path and (received == base_path or received.startswith(base_path + "/")):
        return received[len(base_path) :] or "/"
    return received


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


def _encoded_path(path: str) -> str:
    # REST API Gateway and Chalice pass the path still percent-encoded; quoting only what can
    # never appear literally keeps that spelling and makes a decoded path (HTTP APIs) valid.
    return quote(path if path.startswith("/") else "/" + path, safe=_PATH_SAFE)


def _query_spellings(query: Mapping[str, list[str]] | None, raw_query: str | None) -> list[str]:
    spellings = [raw_query] if raw_query else []
    pairs = [(name, value) for name, values in (query or {}).items() for value in values]
    if pairs:
        spellings.append(urlencode(pairs))
        spellings.append(urlencode(pairs, quote_via=quote))
        spellings.append(urlencode(pairs, safe=_QUERY_VALUE_SAFE, quote_via=quote))
    return spellings


def _event_query(event: Mapping[str, Any]) -> dict[str, list[str]] | None:
    multi = event.get("multiValueQueryStringParameters")
    if multi:
        return {name: list(values) for name, values in multi.items()}
    single = event.get("queryStringParameters")
    if single:
        return {name: [value] for name, value in single.items()}
    return None
