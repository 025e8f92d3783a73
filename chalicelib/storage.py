"""PynamoDB plumbing: every model takes its physical table name from Settings on first use.

PynamoDB reads ``Meta`` when a class is defined, but the table prefix and region come from the
environment (and the Chalice test client sets env per request), so models declare a logical
table from ``chalicelib.resources`` and are bound to the current Settings lazily
(stack-notes.md §2.1). No client or table is touched at import.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.config import Settings, get_settings
from chalicelib.errors import BrokerError

logger = logging.getLogger("xpmb.storage")
_models: list[type[BrokerModel]] = []
_lock = threading.Lock()


class BrokerModel(Model):
    """Base for the broker's models; subclasses set ``logical_table`` (a resources.TABLES name)."""

    logical_table: ClassVar[str] = ""
    _bound_to: ClassVar[Settings | None] = None

    class Meta:
        table_name = "unbound"
        region = "us-east-1"
        # API Gateway gives a request 29 s: fail fast and answer 503 rather than time out.
        connect_timeout_seconds = 3
        read_timeout_seconds = 10
        max_retry_attempts = 3

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each model needs its own Meta: binding sets the table name per class.
        cls.Meta = type("Meta", (BrokerModel.Meta,), {})  # type: ignore[misc,assignment]
        super().__init_subclass__(**kwargs)
        if cls.logical_table:
            _models.append(cls)

    @classmethod
    def after_commit(cls, saved: Sequence[BrokerModel]) -> None:
        """Called with the items of this class a ``transaction()`` put, once it has committed."""

    @classmethod
    def _get_connection(cls) -> Any:
        settings = get_settings()
        if cls._bound_to is not settings:
            # Per class: a model imported after others were bound (lazy imports) binds itself.
            _bind_model(cls, settings)
        return super()._get_connection()


def registered_models() -> list[type[BrokerModel]]:
    return list(_models)


def _bind_model(model: type[BrokerModel], settings: Settings) -> None:
    with _lock:
        model.Meta.table_name = settings.table_name(model.logical_table)
        model.Meta.region = settings.aws_region
        model._connection = None
        model._bound_to = settings


def bind(settings: Settings) -> None:
    for model in list(_models):
        _bind_model(model, settings)


def ensure_bound() -> None:
    """Bind every model imported so far to the current Settings (transactions need this)."""
    settings = get_settings()
    for model in list(_models):
        if model._bound_to is not settings:
            _bind_model(model, settings)


def new_id(prefix: str) -> str:
    """An opaque id with a readable prefix, e.g. ``v_3kT...``."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def sortable_id(prefix: str = "", now: float | None = None) -> str:
    """A time-ordered id: millisecond timestamp then randomness (for events and audit rows)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}{millis:013d}{secrets.token_hex(5)}"


class StorageUnavailable(BrokerError):
    def __init__(self) -> None:
        super().__init__(
            "storage_unavailable", 503, "Storage unavailable", "Try again shortly.", {"Retry-After": "2"}
        )


class BrokerTransaction(TransactWrite):
    """``TransactWrite`` that tells each model class, after the commit, which of its items it put
    (the event outbox queues their first delivery then; a failed commit tells nobody)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._saved: list[BrokerModel] = []

    def save(self, model: Any, condition: Any = None, return_values: str | None = None) -> None:
        super().save(model, condition=condition, return_values=return_values)
        if isinstance(model, BrokerModel):
            self._saved.append(model)

    def _commit(self) -> Any:
        response = super()._commit()
        by_class: dict[type[BrokerModel], list[BrokerModel]] = {}
        for model in self._saved:
            by_class.setdefault(type(model), []).append(model)
        for model_class, items in by_class.items():
            try:
                model_class.after_commit(items)
            except Exception:  # the change is committed: a hook must never turn it into an error
                logger.warning("after-commit hook of %s failed", model_class.__name__, exc_info=True)
        return response


_tx_connections: dict[tuple[str, str | None], Any] = {}


def transaction() -> Any:
    """A PynamoDB ``TransactWrite`` on the configured region/endpoint (outbox writes, E9)."""
    from pynamodb.connection import Connection

    ensure_bound()
    settings = get_settings()
    key = (settings.aws_region, settings.aws_endpoint_url)
    with _lock:
        # One connection (and so one botocore client) per region/endpoint: building a client
        # loads the service model, ~0.3 s of JSON parsing that would otherwise hit every commit.
        connection = _tx_connections.get(key)
        if connection is None:
            connection = _tx_connections[key] = Connection(region=settings.aws_region)
    return BrokerTransaction(connection=connection)


def is_conditional_failure(exc: Exception) -> bool:
    cause = getattr(exc, "cause_response_code", None)
    if cause == "ConditionalCheckFailedException":
        return True
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return any(r is not None and getattr(r, "code", "") == "ConditionalCheckFailed" for r in reasons)


def ttl_at(epoch_seconds: float) -> Any:
    """A TTLAttribute value for an epoch time (cleanup only: reads still check expiry, D6)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(epoch_seconds), tz=UTC)


M = TypeVar("M", bound=BrokerModel)


def find(
    model: type[M], hash_key: str, range_key: str | None = None, *, consistent: bool = False
) -> M | None:
    """One item by key, or None; any other DynamoDB failure is a 503 (never a leaked botocore error)."""
    try:
        return model.get(hash_key, range_key, consistent_read=consistent)
    except model.DoesNotExist:
        return None
    except PynamoDBException as exc:
        raise StorageUnavailable() from exc
