"""Single-flight refresh of a grant: a DynamoDB lease plus a version-fenced write (checklist D1, D2).

Xero refresh tokens are single use (xero-reference §1.5): two workers refreshing the same grant
would leave one of them holding a dead token. So exactly one worker refreshes; the others wait,
re-read and use the winner's token. The new pair is persisted before its access token is used,
and the old refresh token stays stored until the new one is (D3). ``invalid_grant`` after a
re-read that shows a newer version is a race, not a revocation.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.audit import audit_record
from chalicelib.crypto import KeyServiceUnavailable, get_cipher
from chalicelib.oauth.discovery import identity_provider
from chalicelib.oauth.errors import InvalidGrant, UpstreamError
from chalicelib.oauth.grants import apply_token_set, read_tokens, seal_tokens, token_context, xero_app_for
from chalicelib.oauth.models import Grant
from chalicelib.oauth.xero_clock import xero_now
from chalicelib.oauth.xero_identity import TokenSet, refresh
from chalicelib.storage import StorageUnavailable, find, is_conditional_failure, transaction
from chalicelib.tenants.models import Connection
from chalicelib.tenants.vendors import get_vendor
from chalicelib.webhooks.models import outbox_event

logger = logging.getLogger("xpmb.refresh")

LEASE_SECONDS = 60  # shorter than the Lambda timeout, longer than Xero's timeout plus the write
MIN_REMAINING = 60  # use an access token only while it has more than a minute left
WAIT_SECONDS = 20.0
WRITE_ATTEMPTS = 3
GRACE_SECONDS = 1800  # Xero accepts the previous refresh token for 30 minutes (§1.5)
PERSIST_SECONDS = 5.0  # default time to store a new pair (inside API Gateway's 29 s)
MAX_PAUSE = 2.0  # cap of the jittered pause between attempts to store it
_budget: ContextVar[float] = ContextVar("persistence_budget", default=PERSIST_SECONDS)


def load_grant(grant_id: str) -> Grant:
    grant = find(Grant, grant_id, consistent=True)
    if grant is None:
        raise _not_active("the connection's authorisation no longer exists")
    return grant


def valid_access_token(grant_id: str, now: float | None = None) -> tuple[str, int]:
    """An access token with more than ``MIN_REMAINING`` seconds left, and the grant version."""
    grant = load_grant(grant_id)
    _ensure_active(grant)
    current = time.time() if now is None else now
    if grant.access_expires_at - current > MIN_REMAINING:
        return read_tokens(grant).access_token, int(grant.version)
    tokens, version = refresh_grant(grant_id, seen_version=int(grant.version))
    return tokens.access_token, version


def refresh_grant(
    grant_id: str, *, seen_version: int | None = None, current: Grant | None = None
) -> tuple[TokenSet, int]:
    """Refresh the grant unless another worker already did since ``seen_version``.

    ``current``: the grant as the caller just read it (consistently), saving the first read.
    Returns the usable token set and the version it is stored under.
    """
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + WAIT_SECONDS
    delay = 0.05
    while True:
        grant, current = current or load_grant(grant_id), None
        _ensure_active(grant)
        if seen_version is not None and grant.version > seen_version:
            return read_tokens(grant), int(grant.version)  # someone else refreshed: use theirs
        if _acquire_lease(grant, owner):
            break
        if seen_version is None:
            seen_version = int(grant.version)
        if time.monotonic() > deadline:
            raise UpstreamError("another refresh of this connection is still in progress", status=503)
        time.sleep(delay + random.uniform(0, delay))  # noqa: S311 - jitter, not security
        delay = min(delay * 2, 0.5)
    return _refresh_holding_lease(grant, owner)


def _refresh_holding_lease(grant: Grant, owner: str) -> tuple[TokenSet, int]:
    vendor = get_vendor(grant.vendor_id)
    app = xero_app_for(vendor)
    token_endpoint = identity_provider(_issuer()).metadata().token_endpoint
    old = read_tokens(grant)
    try:
        new = refresh(app, token_endpoint, old.refresh_token)
    except InvalidGrant:
        latest = load_grant(grant.grant_id)
        if latest.version > grant.version and latest.status == "active":
            logger.info("invalid_grant after a newer version was stored: a race, using the winner's token")
            _record_refresh("race_lost")
            return read_tokens(latest), int(latest.version)
        reason = invalid_grant_reason(latest, xero_now())
        mark_needs_reauthorisation(latest, reason=reason)
        _record_refresh(f"invalid_grant.{reason}")
        raise
    except Exception as exc:
        # A timeout or a lost response may mean Xero rotated the token anyway: remember when,
        # so a later invalid_grant past the grace window reads as "superseded" (§1.5, D3).
        _release_lease(grant, owner, in_doubt=isinstance(exc, UpstreamError))
        _record_refresh("upstream_error" if isinstance(exc, UpstreamError) else type(exc).__name__)
        raise
    try:
        version = _persist(grant, owner, new)
    except Exception:
        _record_refresh("storage_error")  # the pair is parked or rescued, or Xero's grace remains
        raise
    _record_refresh("refreshed")
    return new, version


def _record_refresh(outcome: str) -> None:
    """Every refresh through the single flight, by outcome (issue 7 metric ``Refreshes``)."""
    from chalicelib.observability import record_metric

    record_metric("Refreshes", service="refresh", outcome=outcome)


def invalid_grant_reason(grant: Grant, now: float) -> str:
    """Why Xero refused the stored refresh token; Xero's answer is the same for all three (§1.6).

    expired: our own record says the 60-day idle expiry passed; superseded: an earlier refresh
    of this token got no answer (so Xero may have rotated it) more than the 30-minute grace ago;
    revoked: anything else (the user or an admin revoked the app, or Xero did).
    """
    if grant.refresh_expires_at and grant.refresh_expires_at < now:
        return "expired"
    if grant.in_doubt_since is not None and now - grant.in_doubt_since > GRACE_SECONDS:
        return "superseded"
    return "revoked"


def _acquire_lease(grant: Grant, owner: str) -> bool:
    now = time.time()
    try:
        grant.update(
            actions=[Grant.lease_owner.set(owner), Grant.lease_until.set(now + LEASE_SECONDS)],
            condition=(Grant.lease_until.does_not_exist() | (Grant.lease_until < now))
            & (Grant.version == grant.version),
        )
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    return True


def _release_lease(grant: Grant, owner: str, *, in_doubt: bool = False) -> None:
    actions: list[Any] = [Grant.lease_owner.remove(), Grant.lease_until.remove()]
    if in_doubt:
        actions.append(Grant.in_doubt_since.set(Grant.in_doubt_since | xero_now()))
    try:
        grant.update(actions=actions, condition=Grant.lease_owner == owner)
    except PynamoDBException:
        logger.warning("could not release the refresh lease of %s; it expires by itself", grant.grant_id)


def token_set_actions(
    grant: Grant, tokens: TokenSet, *, sealed: str | None = None, issued_at: float | None = None
) -> list[Any]:
    """The update actions that store a new pair as version + 1 and end any lease or parking."""
    version = int(grant.version)
    staged = Grant(grant.grant_id, vendor_id=grant.vendor_id, xero_user_id=grant.xero_user_id, created_at=0)
    apply_token_set(staged, tokens, issued_at, sealed=sealed)
    return [
        Grant.token_ct.set(staged.token_ct),
        Grant.scopes.set(staged.scopes or grant.scopes),
        Grant.access_expires_at.set(staged.access_expires_at),
        Grant.refresh_issued_at.set(staged.refresh_issued_at),
        Grant.refresh_expires_at.set(staged.refresh_expires_at),
        Grant.last_refreshed_at.set(staged.last_refreshed_at),
        Grant.rotation_shard.set(staged.rotation_shard),
        Grant.next_rotation_at.set(staged.next_rotation_at),
        Grant.version.set(version + 1),
        Grant.lease_owner.remove(),
        Grant.lease_until.remove(),
        Grant.in_doubt_since.remove(),
        Grant.pending_token_ct.remove(),
        Grant.pending_from_version.remove(),
        Grant.pending_owner.remove(),
        Grant.pending_issued_at.remove(),
    ]


def _write_tokens(grant: Grant, actions: list[Any], condition: Any) -> None:
    grant.update(actions=actions, condition=condition)


@contextmanager
def persistence_budget(seconds: float) -> Iterator[None]:
    """Let refreshes in this context keep trying to store a new pair for ``seconds`` (D3).

    The rotation worker passes what its Lambda has left; API requests keep the short default.
    """
    token = _budget.set(max(0.0, seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def _persist(grant: Grant, owner: str, tokens: TokenSet) -> int:
    """Store the pair Xero just issued as version + 1, fenced on our version and lease (D2).

    Never drop it (D3): the write is retried with full jitter; from the ``WRITE_ATTEMPTS``-th
    failure on, the pair (sealed under KMS, never in clear) is also secured where a later run
    applies it under the same fences: parked on the grant item, else sent to the token_rescue
    queue. KMS and DynamoDB throttling are retried by botocore first (aws.py, storage.py). When
    nothing lands before the budget ends, the old refresh token is still stored and Xero
    accepts it for 30 minutes (§1.5): the SQS retry refreshes again with it. A budget that ends
    before ``WRITE_ATTEMPTS`` failures still tries to secure the pair once, so how fast the failing
    writes fail does not decide whether the pair is secured.
    """
    version = int(grant.version)
    issued_at = xero_now()
    deadline = time.monotonic() + _budget.get()
    sealed: str | None = None
    failure: Exception | None = None
    failed_writes = 0
    for attempt in itertools.count(1):
        try:
            sealed = sealed or seal_tokens(grant, tokens)
            actions = token_set_actions(grant, tokens, sealed=sealed, issued_at=issued_at)
            _write_tokens(grant, actions, (Grant.version == version) & (Grant.lease_owner == owner))
            return version + 1
        except PynamoDBException as exc:
            if is_conditional_failure(exc):
                # Our lease expired and another worker stored a newer pair: keep theirs (D2).
                logger.warning("refresh fence lost for %s; keeping the stored token set", grant.grant_id)
                return int(load_grant(grant.grant_id).version)
            failure = exc
            failed_writes += 1
        except KeyServiceUnavailable as exc:
            failure = exc
        left = deadline - time.monotonic()
        # Secure the pair after WRITE_ATTEMPTS failed writes, or at the end of the budget however
        # few writes fitted in it (slow failures), before giving up.
        if (failed_writes >= WRITE_ATTEMPTS or left <= 0) and sealed is not None:
            if _secure(grant, owner, sealed, issued_at):
                raise StorageUnavailable() from failure
            left = deadline - time.monotonic()  # securing took time too
        if left <= 0:
            break
        # Jittered, but never past the deadline: the last attempt is made at the end of the budget.
        time.sleep(min(left, random.uniform(0, min(MAX_PAUSE, 0.1 * 2**attempt))))  # noqa: S311 - jitter
    # Never log the token. Xero's grace is the last resort now: the next run must come soon.
    logger.error("refresh_in_doubt: could not store or secure the new tokens of %s", grant.grant_id)
    raise StorageUnavailable() from failure


def _secure(grant: Grant, owner: str, sealed: str, issued_at: float) -> bool:
    """Park the sealed pair on the grant item, or failing that send it to the rescue queue."""
    from chalicelib.oauth.rescue import send_rescue

    if _park(grant, owner, sealed, issued_at):
        return True
    return send_rescue(grant, owner, sealed, issued_at)


def _park(grant: Grant, owner: str, sealed: str, issued_at: float) -> bool:
    """Keep the sealed pair where the next run applies it (D3).

    An unconditional update of the pending attributes only, so it may succeed where the fenced
    write did not. Our lease is kept (it expires by itself) so no other worker refreshes meanwhile.
    """
    try:
        grant.update(
            actions=[
                Grant.pending_token_ct.set(sealed),
                Grant.pending_from_version.set(int(grant.version)),
                Grant.pending_owner.set(owner),
                Grant.pending_issued_at.set(issued_at),
            ]
        )
    except Exception:
        logger.error("could not park refreshed tokens for %s", grant.grant_id)
        return False
    return True


def apply_parked_token_set(grant: Grant) -> int | None:
    """Store a parked pair as the next version; None when it is stale or was already applied."""
    if not grant.pending_token_ct or grant.pending_from_version != grant.version:
        return None
    return apply_sealed_token_set(
        grant, grant.pending_token_ct, int(grant.version), grant.pending_owner or "", grant.pending_issued_at
    )


def apply_sealed_token_set(
    grant: Grant, sealed: str, from_version: int, owner: str, issued_at: float | None
) -> int | None:
    """Store a pair secured earlier (parked or rescued) as ``from_version`` + 1.

    Fenced like ``_persist``: on the version it was refreshed from, and on a lease that is free,
    expired or still the securing worker's. None when the fence refuses (stale, or leased).
    """
    if int(grant.version) != from_version:
        return None
    tokens = TokenSet.from_storage(json.loads(get_cipher().decrypt(sealed, token_context(grant))))
    now = time.time()
    lease_free = Grant.lease_until.does_not_exist() | (Grant.lease_until < now) | (Grant.lease_owner == owner)
    actions = token_set_actions(grant, tokens, sealed=sealed, issued_at=issued_at)
    try:
        _write_tokens(grant, actions, (Grant.version == from_version) & lease_free)
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return None
        raise StorageUnavailable() from exc
    return from_version + 1


def mark_needs_reauthorisation(grant: Grant, *, reason: str) -> None:
    """The grant is dead at Xero: its connections need the firm to reconnect (one event each)."""
    connections = [c for c in Connection.by_grant.query(grant.grant_id) if c.status == "active"]
    now = time.time()
    # A transaction holds at most 100 items: the grant first, then 3 items per connection.
    batches = [connections[i : i + 30] for i in range(0, len(connections), 30)] or [[]]
    for number, batch in enumerate(batches):
        with transaction() as tx:
            if number == 0:
                tx.update(
                    grant,
                    actions=[
                        Grant.status.set("needs_reauthorisation"),
                        Grant.lease_owner.remove(),
                        Grant.lease_until.remove(),
                        # Out of the sparse rotation index: the planner reads only live grants.
                        Grant.rotation_shard.remove(),
                        Grant.next_rotation_at.remove(),
                    ],
                )
            for connection in batch:
                _mark_connection(tx, connection, reason, now)


def mark_connection_needs_reauthorisation(connection: Connection, *, reason: str) -> bool:
    """One tenant lost access (403 AuthenticationUnsuccessful: the authorising user lost the XPM
    permission or left the practice, xero-reference §1.11). One event per change of state:
    False when the connection was not active any more."""
    try:
        with transaction() as tx:
            _mark_connection(tx, connection, reason, time.time())
    except PynamoDBException as exc:
        if is_conditional_failure(exc):
            return False
        raise StorageUnavailable() from exc
    return True


def _mark_connection(tx: Any, connection: Connection, reason: str, now: float) -> None:
    tx.update(
        connection,
        actions=[
            Connection.status.set("needs_reauthorisation"),
            Connection.status_reason.set(reason),
            Connection.updated_at.set(now),
        ],
        condition=Connection.status == "active",
    )
    data = {"tenant_ref": connection.tenant_ref, "reason": reason}
    tx.save(outbox_event(connection.vendor_id, "connection.needs_reauthorisation", data, now))
    tx.save(
        audit_record(
            connection.vendor_id,
            "connection.needs_reauthorisation",
            "system",
            tenant_ref=connection.tenant_ref,
            detail={"reason": reason},
            now=now,
        )
    )


def _ensure_active(grant: Grant) -> None:
    if grant.status != "active" or not grant.token_ct:
        raise _not_active("the firm must reconnect to Xero")


def _not_active(detail: str) -> InvalidGrant:
    error = InvalidGrant()
    error.detail = f"The connection is not active: {detail}."
    return error


def _issuer() -> str:
    from chalicelib.config import get_settings

    return get_settings().xero_identity_url
