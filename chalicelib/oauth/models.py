"""Grants (Xero token sets), connect sessions and one-time OAuth states."""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.storage import BrokerModel


class GrantsByNextRotation(GlobalSecondaryIndex["Grant"]):
    class Meta:
        index_name = "by_next_rotation"
        projection = AllProjection()

    rotation_shard = UnicodeAttribute(hash_key=True)
    next_rotation_at = NumberAttribute(range_key=True)


class Grant(BrokerModel):
    """One Xero token set per vendor x Xero user (tokens belong to the user: xero-reference §1.5).

    ``token_ct`` holds the encrypted refresh + access token pair; ``version`` fences writes and
    ``lease_owner``/``lease_until`` make refreshes single-flight (checklist D1, D2).
    """

    logical_table = "grants"

    grant_id = UnicodeAttribute(hash_key=True)
    vendor_id = UnicodeAttribute()
    xero_user_id = UnicodeAttribute()
    token_ct = UnicodeAttribute(null=True)  # envelope-encrypted JSON (purpose xero-token-set)
    version = NumberAttribute(default=0)
    status = UnicodeAttribute(default="active")  # active | needs_reauthorisation | revoked
    scopes = UnicodeAttribute(default="")
    access_expires_at = NumberAttribute(default=0)
    refresh_issued_at = NumberAttribute(default=0)
    refresh_expires_at = NumberAttribute(default=0)
    last_refreshed_at = NumberAttribute(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    rotation_shard = UnicodeAttribute(null=True)
    next_rotation_at = NumberAttribute(null=True)
    # Scheduled rotation and health (oauth/rotation.py, issue 5):
    health = UnicodeAttribute(null=True)  # None (healthy) | provider_unavailable
    consecutive_failures = NumberAttribute(null=True)  # transient refresh failures in a row
    in_doubt_since = NumberAttribute(null=True)  # first refresh whose answer we never got (§1.5 grace)
    expiring_soon_notified_at = NumberAttribute(null=True)
    # A refreshed pair Xero issued but the fenced write could not store (checklist D3): encrypted
    # like token_ct, applied by the next run if the version is still ``pending_from_version``.
    pending_token_ct = UnicodeAttribute(null=True)
    pending_from_version = NumberAttribute(null=True)
    pending_owner = UnicodeAttribute(null=True)
    pending_issued_at = NumberAttribute(null=True)  # when Xero issued it (its 60 days run from then)
    created_at = NumberAttribute()
    by_next_rotation = GrantsByNextRotation()


class SessionUser(MapAttribute[str, object]):
    id = UnicodeAttribute(null=True)
    email = UnicodeAttribute(null=True)
    mfa_verified = BooleanAttribute(null=True)


class ConnectSession(BrokerModel):
    """A vendor-initiated connect flow: single use, 10 minutes (checklist A9)."""

    logical_table = "connect_sessions"

    session_id = UnicodeAttribute(hash_key=True)
    vendor_id = UnicodeAttribute()
    tenant_ref = UnicodeAttribute()
    return_url = UnicodeAttribute()
    mode = UnicodeAttribute(default="connect")  # connect | reauthorise
    allow_practice_change = BooleanAttribute(default=False)
    user = SessionUser(null=True)
    status = UnicodeAttribute(default="pending")  # pending | started | completed | failed
    error_code = UnicodeAttribute(null=True)  # the last failure, explained on the hosted page
    created_at = NumberAttribute()
    expires_at = NumberAttribute()
    expires_at_ttl = TTLAttribute(null=True)


class OAuthState(BrokerModel):
    """The server side of one authorization request: consumed once by the callback (A1, A2, A7)."""

    logical_table = "oauth_states"

    state = UnicodeAttribute(hash_key=True)
    session_id = UnicodeAttribute()
    vendor_id = UnicodeAttribute()
    browser_binding = UnicodeAttribute()  # sha256 of the cookie value, never the value itself
    secrets_ct = UnicodeAttribute()  # envelope-encrypted {"code_verifier", "nonce"} (purpose oauth-state)
    issuer = UnicodeAttribute()
    redirect_uri = UnicodeAttribute()
    expires_at = NumberAttribute()
    expires_at_ttl = TTLAttribute(null=True)


def session_user(**fields: object) -> SessionUser:
    return SessionUser(**fields)
