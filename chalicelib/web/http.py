"""Request ids and problem+json for every HTTP response (the one place errors are rendered).

Chalice turns a view's exceptions into its own 500 body before middleware runs, so the
translation wraps each view instead (``install``), and the middleware adds ``X-Request-Id``.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from chalice.app import Chalice, Response

from chalicelib.errors import BrokerError, internal_error

logger = logging.getLogger("xpmb.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_id_for(headers: Any, context: dict[str, Any] | None) -> str:
    """Honour a sane inbound X-Request-Id, else API Gateway's id, else a new UUID."""
    inbound = headers.get("x-request-id") if headers is not None else None
    if isinstance(inbound, str) and _REQUEST_ID.match(inbound):
        return inbound
    gateway_id = (context or {}).get("requestId")
    if isinstance(gateway_id, str) and _REQUEST_ID.match(gateway_id):
        return gateway_id
    return str(uuid.uuid4())


def problem_response(error: BrokerError, request_id: str | None) -> Response:
    status, headers, body = error.render(request_id)
    return Response(body=body, status_code=status, headers=dict(headers.items()))


def _current_request_id(app: Chalice) -> str | None:
    request = app.current_request
    return None if request is None else request.context.get("xpmb_request_id")


def _wrap_view(app: Chalice, view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(**kwargs: Any) -> Any:
        try:
            return view(**kwargs)
        except BrokerError as error:
            return problem_response(error, _current_request_id(app))
        except Exception:
            logger.exception("unhandled error in %s", view.__name__)
            return problem_response(internal_error(), _current_request_id(app))

    return wrapper


def install(app: Chalice) -> None:
    """Wrap every registered view and add the request-id middleware. Call after blueprints."""
    for methods in app.routes.values():
        for entry in methods.values():
            if not getattr(entry.view_function, "_xpmb_wrapped", False):
                entry.view_function = _wrap_view(app, entry.view_function)
                entry.view_function._xpmb_wrapped = True  # type: ignore[attr-defined]

    @app.middleware("http")
    def add_request_id(event: Any, get_response: Callable[[Any], Response]) -> Response:
        from chalicelib.observability import bind_context, clear_context, get_tracer

        started = time.perf_counter()
        request_id = request_id_for(event.headers, event.context)
        event.context["xpmb_request_id"] = request_id
        clear_context()
        bind_context(request_id=request_id, tenant_ref=(event.uri_params or {}).get("tenant_ref"))
        get_tracer()
        response = chalice_error_as_problem(get_response(event), request_id)
        response.headers["X-Request-Id"] = request_id
        if _serves_https():
            # Browsers must never fall back to http for the broker (Xero standard: TLS in transit).
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        _record_latency(event, response, time.perf_counter() - started)
        return response


HSTS = "max-age=63072000; includeSubDomains"


def _serves_https() -> bool:
    from chalicelib.config import get_settings

    return get_settings().public_url.startswith("https://")


def _record_latency(event: Any, response: Response, seconds: float) -> None:
    """Proxy latency of the XPM calls (issue 7 metrics), by operation and status class."""
    path = event.path or ""
    if "/xpm/" not in path:
        return
    from chalicelib.observability import record_metric

    record_metric(
        "ProxyLatency",
        round(seconds * 1000, 3),
        "Milliseconds",
        service="api",
        method=event.method,
        status=f"{response.status_code // 100}xx",
    )


# Chalice answers some requests itself, before any view runs, with {"Code", "Message"} bodies:
# a body type the route does not take (415), a method the path does not have (405). The
# contract wants problem+json for every error, so they are translated here.
_CHALICE_ERRORS = {
    "UnsupportedMediaType": ("unsupported_media_type", "Unsupported media type"),
    "MethodNotAllowedError": ("method_not_allowed", "Method not allowed"),
    "BadRequest": ("bad_request", "Bad request"),
    "BadRequestError": ("bad_request", "Bad request"),
}


def chalice_error_as_problem(response: Response, request_id: str) -> Response:
    body = response.body
    if response.status_code < 400 or not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return response
    code, title = _CHALICE_ERRORS.get(str(body["Code"]), ("request_rejected", "Request rejected"))
    detail = str(body["Message"])
    if code == "unsupported_media_type":
        detail = f"{detail}. Send the body as the operation documents (JSON for /v1 calls)."
    error = BrokerError(code, response.status_code, title, detail)
    translated = problem_response(error, request_id)
    for name in ("Allow", "allow"):
        if name in response.headers:
            translated.headers["Allow"] = response.headers[name]
    return translated
