"""Single-use request nonces in the ``request_nonces`` table (security-checklist B6, D6).

The model is built on first use from Settings, not at import: PynamoDB reads ``Meta`` when the
class is created, and the table name and endpoint are only known then (stack-notes §2.1).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.config import Settings
from chalicelib.resources import table_def
from chalicelib.storage import StorageUnavailable, is_conditional_failure

logger = logging.getLogger("xpmb.auth")
_TABLE = table_def("request_nonces")


class RequestNonce(Model):
    """One claimed ``{key_id}#{nonce}``; concrete subclasses carry Meta (see ``nonce_model``)."""

    nonce_key = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute()  # what correctness reads (D6: TTL deletion is only hygiene)
    expires_at_ttl = TTLAttribute()
    claim_id = UnicodeAttribute(null=True)  # who wrote it: tells our own retried write from a replay


@lru_cache(maxsize=8)
def nonce_model(physical_name: str, region_name: str, endpoint: str | None) -> type[RequestNonce]:
    """The model class for one table; cached so PynamoDB's connection is reused across calls."""
    meta: dict[str, object] = {
        "table_name": physical_name,
        "region": region_name,
        # API Gateway gives us 29 s; fail fast and answer 503 rather than time out.
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 5,
        "max_retry_attempts": 2,
    }
    if endpoint:
        meta["host"] = endpoint
    return type("RequestNonceTable", (RequestNonce,), {"Meta": type("Meta", (), meta)})


class DynamoNonceStore:
    """``NonceStore`` over DynamoDB: a conditional put decides, so concurrent replays lose (B6)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock

    def _model(self) -> type[RequestNonce]:
        settings = self._settings
        return nonce_model(settings.table_name(_TABLE.name), settings.aws_region, settings.aws_endpoint_url)

    def claim(self, key_id: str, nonce: str, expires_at: float) -> bool:
        model = self._model()
        claim_id = secrets.token_hex(8)
        item = model(
            f"{key_id}#{nonce}",
            expires_at=expires_at,
            expires_at_ttl=datetime.fromtimestamp(math.ceil(expires_at), tz=UTC),
            claim_id=claim_id,
        )
        # New, or held by a claim whose window has passed: DynamoDB deletes expired items only
        # "typically within two days" (D6), so an expired row must not block a fresh claim.
        condition = model.nonce_key.does_not_exist() | (model.expires_at < self._clock())
        try:
            item.save(condition=condition)
        except PynamoDBException as error:
            if is_conditional_failure(error):
                # The SDK retries a write whose answer was slow or lost; if that first write in
                # fact landed, the retry fails its condition on our own row. Only another
                # writer's row is a replay.
                return self._written_by(model, item.nonce_key, claim_id)
            # botocore's text names tables and endpoints: our log gets the code, the caller a 503.
            cause = error.cause_response_code or type(error.cause).__name__
            logger.warning("nonce store unavailable: %s", cause)
            raise StorageUnavailable() from None
        return True

    @staticmethod
    def _written_by(model: type[RequestNonce], nonce_key: str, claim_id: str) -> bool:
        try:
            stored = model.get(nonce_key, consistent_read=True)
        except PynamoDBException:
            return False
        return bool(stored.claim_id == claim_id)
