"""Vendors, their API keys, and connections (one per vendor x tenant_ref)."""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.storage import BrokerModel


class Vendor(BrokerModel):
    logical_table = "vendors"

    vendor_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    xero_client_id = UnicodeAttribute()
    xero_client_secret_ct = UnicodeAttribute()  # envelope-encrypted (purpose xero-client-secret)
    return_urls = ListAttribute(of=UnicodeAttribute)
    webhook_url = UnicodeAttribute(null=True)
    webhook_secret_ct = UnicodeAttribute(null=True)  # envelope-encrypted (purpose webhook-secret)
    scopes = UnicodeAttribute()
    require_mfa_attestation = BooleanAttribute(default=False)
    allow_sensitive_fields = BooleanAttribute(default=False)
    # Set when Xero answered invalid_client for this vendor's app (one app.misconfigured event
    # per change of state, oauth/rotation.py); cleared by the next successful refresh.
    xero_app_misconfigured_at = NumberAttribute(null=True)
    created_at = NumberAttribute()
    # The webhook endpoint (chalicelib/webhooks/endpoint.py): the URL and secret above, plus
    webhook_event_types = ListAttribute(of=UnicodeAttribute, null=True)  # None: every type
    webhook_disabled_at = NumberAttribute(null=True)  # set: disabled (410, or failing too long)
    webhook_disabled_reason = UnicodeAttribute(null=True)
    webhook_failing_since = NumberAttribute(null=True)  # first failure since the last success
    webhook_previous_secret_ct = UnicodeAttribute(null=True)  # still signs during the grace period
    webhook_previous_secret_expires_at = NumberAttribute(null=True)
    webhook_secret_rotated_at = NumberAttribute(null=True)


class KeysByVendor(GlobalSecondaryIndex["VendorKey"]):
    class Meta:
        index_name = "by_vendor"
        projection = AllProjection()

    vendor_id = UnicodeAttribute(hash_key=True)


class VendorKey(BrokerModel):
    """A signing key (RFC 9421 hmac-sha256). Two may be active at once for rotation (B7)."""

    logical_table = "vendor_keys"

    key_id = UnicodeAttribute(hash_key=True)
    vendor_id = UnicodeAttribute()
    secret_ct = UnicodeAttribute()  # envelope-encrypted (purpose vendor-api-key)
    status = UnicodeAttribute(default="active")  # active | revoked
    created_at = NumberAttribute()
    revoked_at = NumberAttribute(null=True)
    by_vendor = KeysByVendor()


class AuthorisedBy(MapAttribute[str, str]):
    xero_user_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    email = UnicodeAttribute(null=True)


class ConnectionsByGrant(GlobalSecondaryIndex["Connection"]):
    class Meta:
        index_name = "by_grant"
        projection = AllProjection()

    grant_id = UnicodeAttribute(hash_key=True)


class Connection(BrokerModel):
    """The XPM practice a vendor's tenant is bound to. Never holds tokens (they live on the grant)."""

    logical_table = "connections"

    vendor_id = UnicodeAttribute(hash_key=True)
    tenant_ref = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute()  # active | needs_reauthorisation | revoked
    xero_tenant_id = UnicodeAttribute(null=True)
    xero_connection_id = UnicodeAttribute(null=True)
    grant_id = UnicodeAttribute(null=True)
    practice_name = UnicodeAttribute(null=True)
    scopes = UnicodeAttribute(null=True)  # space-separated, as Xero grants them
    authorised_by = AuthorisedBy(null=True)
    status_reason = UnicodeAttribute(null=True)
    connected_at = NumberAttribute(null=True)
    updated_at = NumberAttribute()
    revoked_at = NumberAttribute(null=True)
    by_grant = ConnectionsByGrant()


def authorised_by(xero_user_id: str, name: str | None, email: str | None) -> AuthorisedBy:
    return AuthorisedBy(xero_user_id=xero_user_id, name=name, email=email)
