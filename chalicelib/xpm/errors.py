"""What can go wrong talking to XPM, as the contract's error codes (contract.md §4).

Nothing here ever carries raw upstream bodies, XML or tokens: only our own wording, XPM's
``ErrorDescription`` text after ``sanitise_description``, and a few parsed header values.
"""

from __future__ import annotations

import re
import unicodedata

from chalicelib.errors import BrokerError

MAX_DESCRIPTION = 500
# Xero sends Retry-After only for the minute and day limits (xero-reference §2.1); the
# concurrent limit clears as soon as a call in flight finishes, so a short wait is right.
DEFAULT_RETRY_AFTER = 1
_PROBLEM = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# A run of 8+ digits (spaces allowed, as in "123 456 782") standing alone: the shape of a TFN,
# IRD or ABN an error text might echo back. UUID groups are bordered by "-" and are left alone.
_LONG_NUMBER = re.compile(r"(?<![\w-])\d(?: ?\d){7,}(?![\w-])")


def sanitise_description(text: str) -> str:
    """XPM's ErrorDescription made safe to show and log: control characters out, whitespace
    collapsed, tax-number-like digit runs masked, at most ``MAX_DESCRIPTION`` characters."""
    printable = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)
    collapsed = " ".join(printable.split())
    masked = _LONG_NUMBER.sub(lambda m: "***" + m.group(0).replace(" ", "")[-3:], collapsed)
    if len(masked) > MAX_DESCRIPTION:
        return masked[: MAX_DESCRIPTION - 1] + "…"
    return masked


class XpmRateLimited(BrokerError):
    """429 ``rate_limited``: Xero said so (its 429 passed through) or the broker's governor did.

    ``retry_after`` is whole seconds (also sent as ``Retry-After``); ``problem`` names the limit
    (Xero's ``X-Rate-Limit-Problem``: ``minute``, ``day``, ``concurrent``, ``appminute``).
    """

    retry_after: int
    problem: str | None

    def __init__(self, retry_after: int | None, problem: str | None = None) -> None:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else max(1, int(retry_after))
        limit = problem if problem and _PROBLEM.match(problem) else None
        extra: dict[str, object] = {"retry_after": seconds}
        if limit:
            extra["limit"] = limit
        super().__init__(
            "rate_limited",
            429,
            "Rate limited",
            f"The XPM API budget for this practice is used up for now; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
            extra=extra,
        )
        self.retry_after = seconds
        self.problem = limit


class XpmValidationFailed(BrokerError):
    """422 ``xpm_validation_failed``: XPM answered ``<Status>ERROR</Status>`` (xero-reference §3.2)."""

    description: str

    def __init__(self, description: str) -> None:
        clean = sanitise_description(description) or "XPM rejected the request without saying why."
        super().__init__("xpm_validation_failed", 422, "XPM rejected the request", clean)
        self.description = clean


class XpmNotFound(BrokerError):
    """404 ``xpm_client_not_found``: the UUID names no (live) client in this practice.

    XPM has no 404 for this: it answers ``Status=ERROR`` "Invalid client identifier" (§3.2); see
    ``chalicelib.xpm.xml.check_status`` for the rule that turns that into this error.
    """

    def __init__(self, detail: str = "No XPM client with this UUID in the practice.") -> None:
        super().__init__("xpm_client_not_found", 404, "XPM client not found", detail)


class XpmUnavailable(BrokerError):
    """502 ``upstream_unavailable``: network error, timeout, 5xx, or a body we cannot trust
    (oversized, unparseable, a DTD, an unexpected shape). ``reason`` is a short tag for logs."""

    reason: str

    def __init__(self, reason: str, detail: str, *, upstream_status: int | None = None) -> None:
        extra: dict[str, object] = {} if upstream_status is None else {"upstream_status": upstream_status}
        super().__init__("upstream_unavailable", 502, "Xero unavailable", detail, extra=extra)
        self.reason = reason


class XpmTokenExpired(BrokerError):
    """Internal: Xero answered 401 ``TokenExpired`` (xero-reference §1.11).

    ``XpmClient`` catches it, refreshes once and retries. Should it ever escape it renders as a
    502, never as a 401 that a vendor would read as "your signature failed".
    """

    def __init__(self) -> None:
        super().__init__(
            "upstream_unavailable", 502, "Xero unavailable", "Xero refused the access token as expired."
        )


class XpmAuthorisationLost(BrokerError):
    """The connection no longer reaches the practice: 403 ``AuthenticationUnsuccessful`` (user
    revoked, lost "Connect third-party add-ons", tenant gone; §1.11, §5.3), or a 401 that a
    refresh did not cure. The caller marks the connection ``needs_reauthorisation``.

    ``reason``: ``forbidden`` (403), ``token_rejected`` (401 after/without refresh),
    ``insufficient_scope`` (401 naming a missing scope).
    """

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(
            "connection_not_active",
            409,
            "Connection not active",
            "Xero no longer lets this connection reach the practice; the firm must reconnect.",
        )
        self.reason = reason


class InvalidField(BrokerError):
    """422 ``invalid_request`` naming the offending input ``field`` (a JSON path such as
    ``contacts[0].email``) before anything is sent to XPM."""

    field: str

    def __init__(self, field: str, detail: str) -> None:
        super().__init__("invalid_request", 422, "Invalid request", detail, extra={"field": field})
        self.field = field
