"""``XpmClient``: one practice's XPM API over the broker's one Xero HTTP session.

Each call: ``Authorization: Bearer`` + ``xero-tenant-id`` + XML (xero-reference §1.11, §3.1),
inside the governor's permit, with the response streamed and capped (security-checklist F3),
parsed hardened and its ``<Status>`` checked (F1, F2, F4), then mapped to contract JSON.

Status mapping (docs/xpm-json.md repeats it for vendors):
- network error, timeout, 5xx, 1xx/3xx, oversized/unparseable body → ``XpmUnavailable`` (502).
  Never retried here: a create that timed out may have been applied; the caller reconciles.
- 401 ``TokenExpired`` → one ``refreshed_access_token()`` and one retry (the gateway refused
  before doing any work, so retrying a write is safe); any other 401, or a second one →
  ``XpmAuthorisationLost``; 403 → ``XpmAuthorisationLost`` (caller answers 409).
- 429 → ``XpmRateLimited`` with Xero's ``Retry-After`` and ``X-Rate-Limit-Problem`` (§2.1).
- other 4xx with an XML ``ERROR`` envelope, or 2xx → ``check_status`` (422 / 404 / 502).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import time
import uuid as uuid_module
import zlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3

from chalicelib.oauth.xero_http import TIMEOUT, request
from chalicelib.observability import record_metric
from chalicelib.xpm import mapping
from chalicelib.xpm.errors import (
    InvalidField,
    XpmAuthorisationLost,
    XpmNotFound,
    XpmRateLimited,
    XpmTokenExpired,
    XpmUnavailable,
)
from chalicelib.xpm.xml import Element, check_status, check_text, parse_response

logger = logging.getLogger("xpmb.xpm")

CONCURRENT_RETRIES = 3
RATE_HEADERS = ("X-MinLimit-Remaining", "X-DayLimit-Remaining", "X-AppMinLimit-Remaining")
MAX_BODY = 5 * 1024 * 1024  # raw bytes on the wire (F3)
MAX_DECODED = 20 * 1024 * 1024  # after gzip/deflate (F3)
MAX_PAGE_SIZE = 500  # paged-list accepts 1-500 (§3.10)
_CHUNK = 64 * 1024
_ERROR_PEEK = 16 * 1024  # enough of a 401 body to find "TokenExpired"
_RETRY_AFTER = re.compile(r"^\s*(\d{1,9})\s*$")


class TokenSource(Protocol):
    """Access tokens for the connection's Xero user (the caller owns refresh and storage)."""

    def access_token(self) -> str: ...

    def refreshed_access_token(self) -> str:
        """Called once after Xero said ``TokenExpired``: refresh (single flight) and return."""
        ...


class Governor(Protocol):
    """The broker's rate governor. ``permit`` wraps each HTTP call and may raise
    ``XpmRateLimited`` before it. The value it yields may have ``observe(headers)`` (called with
    each response's headers) and ``upstream_limited(retry_after, problem)`` (called on a 429)."""

    def permit(self, tenant_id: str) -> AbstractContextManager[Any]: ...


class XpmClient:
    """XPM for one practice (``tenant_id``); methods return contract JSON (chalicelib.xpm.mapping).

    Results are what XPM says: ``tax_number`` is not masked here (``mapping.present_client``
    does that for vendors). ``last_rate_headers`` holds the rate-limit headers of the last
    response (§2.1) so routes can show the budget left.
    """

    def __init__(
        self,
        *,
        base_url: str,
        tenant_id: str,
        tokens: TokenSource,
        governor: Governor | None = None,
        max_body: int = MAX_BODY,
        max_decoded: int = MAX_DECODED,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        self._base = base_url.rstrip("/") + "/"
        # paged-list exists on 3.1 only (§3.3.2), whichever version the rest uses.
        self._base_31 = re.sub(r"/practicemanager/3\.\d+/$", "/practicemanager/3.1/", self._base)
        self._tenant_id = tenant_id
        self._tokens = tokens
        self._governor = governor
        self._max_body = max_body
        self._max_decoded = max_decoded
        self._timeout = timeout
        self.last_rate_headers: dict[str, str] = {}

    # -- clients: reads ---------------------------------------------------------------------
    def search_clients(self, query: str, *, detailed: bool = False) -> list[dict[str, Any]]:
        """``client.api/search?query=`` (§3.3.3): name matches; ``[]`` when none."""
        text = check_text("search", query.strip())
        if not text:
            raise InvalidField("search", "search must not be empty.")
        params = {"query": text, **({"detailed": "true"} if detailed else {})}
        return self._call_clients("GET", "client.api/search", params=params)[1]

    def get_client(self, uuid: str) -> dict[str, Any]:
        """``client.api/get/{uuid}`` (§3.3.4): the detailed client with ``web_url``."""
        client_uuid = _client_uuid(uuid)
        root = self._call("GET", f"client.api/get/{client_uuid}", names_client=True)
        return self._one_client(root)

    def list_clients(
        self, *, detailed: bool = False, modified_since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """``client.api/list`` (§3.3): every client in one response, archived included.

        Unpaged: about 1.3 KB a client (2.5 KB detailed), so past ~4,000 clients the default
        5 MB cap refuses it. Walk ``paged_clients`` for whole practices; use this with
        ``modified_since`` (sent as UTC ``yyyy-MM-ddTHH:mm:ss``, §3.1; naive means UTC).
        """
        params: dict[str, str] = {"detailed": "true"} if detailed else {}
        if modified_since is not None:
            moment = modified_since if modified_since.tzinfo else modified_since.replace(tzinfo=UTC)
            params["modifiedsince"] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self._call_clients("GET", "client.api/list", params=params)[1]

    def paged_clients(
        self, page_size: int = 100, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``client.api/paged-list`` (3.1, §3.3.2) and the token of the next, or None.

        Only the ``pageToken`` is taken from XPM's ``<Next>`` URL; the URL itself is never
        followed, so a response cannot send our bearer token to another host.
        """
        if isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidField("page_size", f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        params = {"pageSize": str(page_size)}
        if page_token is not None:
            params["pageToken"] = check_text("page_token", page_token)
        root, clients = self._call_clients("GET", "client.api/paged-list", params=params, base=self._base_31)
        return clients, _next_page_token(root)

    # -- clients: writes --------------------------------------------------------------------
    def add_client(self, client_json: Mapping[str, Any]) -> dict[str, Any]:
        """``client.api/add`` (§3.3.5) → the created client as XPM returns it."""
        body = mapping.add_client_request(client_json)
        return self._one_client(self._call("POST", "client.api/add", body=body))

    def update_client(self, uuid: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``client.api/update`` (§3.3.6) with only ``fields`` → the client after the change."""
        client_uuid = _client_uuid(uuid)
        body = mapping.update_client_request(client_uuid, fields)
        root = self._call("PUT", "client.api/update", body=body, names_client=True)
        if root.find("Client") is None:
            return self.get_client(client_uuid)
        return self._one_client(root)

    def archive_client(self, uuid: str) -> None:
        """``client.api/archive`` (§3.3.6)."""
        body = mapping.client_uuid_request(_client_uuid(uuid))
        self._call("PUT", "client.api/archive", body=body, names_client=True)

    def add_relationship(self, client_uuid: str, relationship_json: Mapping[str, Any]) -> None:
        """``client.api/addrelationship`` (§3.5): ``client_uuid`` is the entity (``ClientUUID``).

        XPM answers without the new relationship's UUID; read the client to see it.
        """
        body = mapping.relationship_request(client_uuid, relationship_json)
        self._call("POST", "client.api/addrelationship", body=body)

    # -- staff and groups -------------------------------------------------------------------
    def list_staff(self) -> list[dict[str, Any]]:
        """``staff.api/list`` (§3.7): needs ``practicemanager.staff[.read]``."""
        root = self._call("GET", "staff.api/list")
        return [mapping.staff_json(s) for s in root.iterfind("StaffList/Staff")]

    def list_groups(self) -> list[dict[str, Any]]:
        """``clientgroup.api/list`` (§3.6)."""
        root = self._call("GET", "clientgroup.api/list")
        return [mapping.group_json(g) for g in root.iterfind("Groups/Group")]

    # -- one call ---------------------------------------------------------------------------
    def _one_client(self, root: Element) -> dict[str, Any]:
        node = root.find("Client")
        if node is None or not (node.findtext("UUID") or "").strip():
            raise XpmUnavailable("unexpected_shape", "Xero Practice Manager sent a client without a UUID.")
        web_url = (root.findtext("WebUrl") or "").strip()
        # Vendors may render it as a link: only Xero's https deep links pass (§3.2).
        return mapping.client_json(node, web_url=web_url if web_url.startswith("https://") else None)

    def _call_clients(
        self, method: str, path: str, *, params: Mapping[str, str], base: str | None = None
    ) -> tuple[Element, list[dict[str, Any]]]:
        """``_call`` for a client list: the clients are mapped while the body is parsed
        (``mapping.read_clients``), so a long list never exists as a whole tree."""
        clients: list[dict[str, Any]] = []
        return self._call(method, path, params=params, base=base, clients=clients), clients

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        names_client: bool = False,
        base: str | None = None,
        clients: list[dict[str, Any]] | None = None,
    ) -> Element:
        """The checked ``<Response>`` root; with ``clients``, a 2xx body's clients go there."""
        url = (base or self._base) + path
        try:
            root = self._exchange_patiently(
                method, url, self._tokens.access_token(), params, body, clients=clients
            )
        except XpmTokenExpired:
            logger.info("XPM said TokenExpired for %s %s; refreshing once", method, path)
            try:
                root = self._exchange_patiently(
                    method, url, self._tokens.refreshed_access_token(), params, body, clients=clients
                )
            except XpmTokenExpired as exc:
                raise XpmAuthorisationLost("token_rejected") from exc
        check_status(root, names_client=names_client)
        return root

    def _exchange_patiently(
        self,
        method: str,
        url: str,
        token: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        *,
        clients: list[dict[str, Any]] | None = None,
    ) -> Element:
        """Xero's *concurrent* limit clears as soon as a call in flight ends, and a 429 means the
        request was not processed (so a write may be sent again): wait a moment and retry a few
        times before passing the 429 on. Minute and day limits are passed on at once."""
        for attempt in range(CONCURRENT_RETRIES + 1):
            try:
                return self._exchange(method, url, token, params, body, clients=clients)
            except XpmRateLimited as limited:
                if limited.problem != "concurrent" or attempt == CONCURRENT_RETRIES:
                    raise
                time.sleep(0.1 * 2**attempt + random.uniform(0, 0.1))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    def _exchange(
        self,
        method: str,
        url: str,
        token: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        *,
        clients: list[dict[str, Any]] | None = None,
    ) -> Element:
        headers = {
            "Authorization": f"Bearer {token}",
            "xero-tenant-id": self._tenant_id,
            "Accept": "application/xml",
            "Accept-Encoding": "gzip, deflate",  # the codings read_body can decode under its caps
        }
        if body is not None:
            headers["Content-Type"] = "application/xml"
        permit_scope = self._governor.permit(self._tenant_id) if self._governor else contextlib.nullcontext()
        with permit_scope as permit:
            started = time.monotonic()
            try:
                response = request(
                    method, url, headers=headers, params=params, data=body, stream=True, timeout=self._timeout
                )
            except requests.Timeout as exc:
                raise XpmUnavailable("timeout", "Xero Practice Manager did not answer in time.") from exc
            except requests.RequestException as exc:
                raise XpmUnavailable("network", "Xero Practice Manager could not be reached.") from exc
            with contextlib.closing(response):
                logger.info(
                    "XPM %s %s -> %s in %.0f ms",
                    method,
                    urlsplit(url).path,  # no query string: search text is client data
                    response.status_code,
                    (time.monotonic() - started) * 1000,
                )
                self._observe(response, permit)
                return self._interpret(response, permit, clients)

    def _observe(self, response: requests.Response, permit: Any) -> None:
        self.last_rate_headers = {
            name: response.headers[name] for name in RATE_HEADERS if name in response.headers
        }
        observe = getattr(permit, "observe", None)
        if callable(observe):
            observe(response.headers)

    def _interpret(
        self, response: requests.Response, permit: Any, clients: list[dict[str, Any]] | None = None
    ) -> Element:
        status = response.status_code
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            problem = response.headers.get("X-Rate-Limit-Problem")
            record_metric("Upstream429", service="xpm", problem=problem or "unknown")
            upstream_limited = getattr(permit, "upstream_limited", None)
            if callable(upstream_limited) and problem != "concurrent":
                upstream_limited(retry_after, problem)
            raise XpmRateLimited(retry_after, problem)
        if status == 401:
            raise _unauthorised(response)
        if status == 403:
            raise XpmAuthorisationLost("forbidden")
        if 200 <= status < 300:
            if clients is None:
                return parse_response(self._read(response), max_bytes=self._max_decoded)
            root, clients[:] = mapping.read_clients(self._read(response), max_bytes=self._max_decoded)
            return root
        if 400 <= status < 500:
            # XPM may send its ERROR envelope with a 4xx (UNVERIFIED, §8.11): read it as such.
            try:
                root = parse_response(self._read(response), max_bytes=self._max_decoded)
            except XpmUnavailable as exc:
                raise _http_failure(status) from exc
            if (root.findtext("Status") or "").strip() != "ERROR":
                raise _http_failure(status)
            return root
        raise _http_failure(status)

    def _read(self, response: requests.Response) -> bytes:
        return read_body(response, max_body=self._max_body, max_decoded=self._max_decoded)


def _client_uuid(value: str) -> str:
    """A canonical client UUID; anything else names no client (and never reaches the URL path)."""
    try:
        return str(uuid_module.UUID(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise XpmNotFound() from exc


def _next_page_token(root: Element) -> str | None:
    """``pageToken`` of ``<Pagination><Links><Next>``; no ``<Next>`` is the last page (§8.16)."""
    next_url = (root.findtext("Pagination/Links/Next") or "").strip()
    if not next_url:
        return None
    tokens = parse_qs(urlsplit(next_url).query).get("pageToken")
    if not tokens or not tokens[0]:
        raise XpmUnavailable("unexpected_shape", "Xero Practice Manager sent a next page without a token.")
    return tokens[0]


def _retry_after(value: str | None) -> int | None:
    """Seconds from ``Retry-After``: Xero sends seconds (§2.1); RFC 9110 also allows a date."""
    match = _RETRY_AFTER.match(value or "")
    if match:
        return int(match.group(1))
    try:
        when = parsedate_to_datetime(value or "")
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(1, math.ceil((when - datetime.now(UTC)).total_seconds()))


def _unauthorised(response: requests.Response) -> Exception:
    """401: ``TokenExpired`` in the problem detail (§1.11) is curable by a refresh; nothing else is."""
    try:
        peek = read_body(response, max_body=_ERROR_PEEK, max_decoded=_ERROR_PEEK)
    except XpmUnavailable:
        peek = b""
    if b"TokenExpired" in peek:
        return XpmTokenExpired()
    challenge = response.headers.get("WWW-Authenticate", "")
    return XpmAuthorisationLost(
        "insufficient_scope" if "insufficient_scope" in challenge else "token_rejected"
    )


def _http_failure(status: int) -> XpmUnavailable:
    reason = "http_5xx" if status >= 500 else f"http_{status}"
    return XpmUnavailable(reason, f"Xero Practice Manager answered HTTP {status}.", upstream_status=status)


# -- reading a body under caps (F3) -------------------------------------------------------------
def read_body(response: requests.Response, *, max_body: int, max_decoded: int) -> bytes:
    """The response body, decoded, refusing more than ``max_body`` bytes on the wire or
    ``max_decoded`` after decompression (a gzip bomb stops at the cap, never inflating past it).

    We decode ourselves (``decode_content=False``) because only then can each inflate step be
    bounded; one coding (gzip or deflate) is accepted, as we only ask for those.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise _oversized()
    inflater = _inflater(response.headers.get("Content-Encoding", ""))
    body = bytearray()
    received = 0
    try:
        for chunk in response.raw.stream(_CHUNK, decode_content=False):
            received += len(chunk)
            if received > max_body:
                raise _oversized()
            for piece in inflater.feed(chunk) if inflater else (chunk,):
                body += piece
                if len(body) > max_decoded:
                    raise _oversized()
    # Reading ``raw`` directly, failures mid-body are urllib3's, not requests' (which
    # ``request()``'s caller catches): a stalled or reset body is just as unavailable.
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise XpmUnavailable("timeout", "Xero Practice Manager did not answer in time.") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise XpmUnavailable("network", "Xero Practice Manager broke off its answer.") from exc
    if inflater is not None:
        inflater.finish()
    return bytes(body)


def _oversized() -> XpmUnavailable:
    return XpmUnavailable("oversized", "Xero Practice Manager sent a response larger than allowed.")


class _Inflater:
    """Streaming gzip/deflate that yields at most ``_CHUNK`` bytes per step."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._z = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while True:
                piece = self._z.decompress(data, _CHUNK)
                if piece:
                    yield piece
                data = self._z.unconsumed_tail
                if self._z.eof and self._z.unused_data:
                    data = self._z.unused_data  # a multi-member gzip: the next member follows
                    self._z = zlib.decompressobj(self._wbits)
                elif not data and len(piece) < _CHUNK:
                    return
        except zlib.error as exc:
            raise XpmUnavailable(
                "unparseable", "Xero Practice Manager sent a corrupt compressed body."
            ) from exc

    def finish(self) -> None:
        if not self._z.eof:
            raise XpmUnavailable("unparseable", "Xero Practice Manager sent a truncated compressed body.")


def _inflater(content_encoding: str) -> _Inflater | None:
    codings = [
        c.strip().lower() for c in content_encoding.split(",") if c.strip().lower() not in ("", "identity")
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip"):
        return _Inflater(16 + zlib.MAX_WBITS)
    if len(codings) == 1 and codings[0] == "deflate":
        return _Inflater(32 + zlib.MAX_WBITS)  # zlib-wrapped (RFC 9110 §8.4.1.2); 32 also takes gzip
    # Stacked codings multiply a bomb's ratio layer by layer; Xero sends one, so refuse more.
    raise XpmUnavailable("unsupported_encoding", "Xero Practice Manager sent an unsupported encoding.")
