"""Idempotency-Key for the creating POSTs (contract.md §4; security-checklist G1-G5).

``run_idempotent`` wraps one route's work. The store is Powertools' idempotency utility on the
``idempotency`` table (``DynamoDBPersistenceLayer``, hash key ``id``, TTL ``expiration``): a
conditional put writes an ``INPROGRESS`` record, the handler runs, and its response is saved as
``COMPLETED`` for replay, or the record is deleted when the handler raises.

What is stored for replay (G5: like Stripe, "do not store results for requests that failed
validation or hit a concurrency conflict"):

* stored: a ``StoredResponse`` the handler *returns* with a 2xx status, or 422 (the route returns
  422 ``xpm_validation_failed`` this way: XPM's verdict on that body is definitive, and
  re-sending it must not create anything);
* not stored: anything the handler *raises* (``BrokerError`` for the broker's own request-shape
  checks, 404, 409 ``connection_not_active``, 429, 502, or any bug). Powertools deletes the
  record, the error propagates, and a retry with the same key runs the handler again. As a
  guard, a returned response with any other status (409, 429, 5xx, …) is not stored either:
  it is answered once and the record is deleted.

Replays return the stored ``StoredResponse`` unchanged with ``replayed=True``; the route adds
``Idempotent-Replayed: true`` (``REPLAYED_HEADER``).

Where Powertools falls short, and what this module does instead:

* Powertools reads the wall clock itself for every expiry comparison, so no clock can be
  injected for reads. ``now`` sets the clock that *stamps* the records a call writes (their
  ``expiration`` and in-progress deadline); tests backdate a first request by 23 h or 25 h and
  replay it at the real time, which is the same comparison.
* Without a Lambda context Powertools writes no in-progress expiry, so a crashed request would
  hold the key for the whole retention period. Every call registers a deadline: the Lambda's
  remaining time, or ``DEFAULT_IN_PROGRESS_SECONDS`` (G4).
* Each ``DynamoDBPersistenceLayer`` registers a User-Agent hook on the boto3 client it is given,
  so building one per request over the shared client would grow that client's hooks and header
  forever. One layer per process (per table and TTL) is shared; it holds no per-request state
  because the key prefix is constant and the local cache is off (records written by other
  Lambdas are always read from DynamoDB, with consistent reads).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from chalicelib.config import Settings, get_settings
from chalicelib.errors import BrokerError, ConfigurationError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logging.getLogger("xpmb.idempotency")

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL_ENV = "XPMB_IDEMPOTENCY_TTL_SECONDS"
# Stripe keeps keys for at least 24 h; Powertools' default is only 1 h (G5).
DEFAULT_TTL_SECONDS = 86_400
# Bounds an in-progress record when there is no Lambda context (chalice local, the CLI), so a
# crashed request does not hold its key for the whole retention period (G4).
DEFAULT_IN_PROGRESS_SECONDS = 60
# Bumped if the scope layout below changes, so old and new records can never be confused.
KEY_PREFIX = "idem-v1"

_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,255}")
_STORABLE_CLIENT_ERRORS = frozenset({422})

# The clock that stamps the records of the current call (see the module docstring).
_stamp_clock: ContextVar[Callable[[], float]] = ContextVar("xpmb_idempotency_clock", default=time.time)
_layers: dict[tuple[str, str | None, str, int], DynamoDBPersistenceLayer] = {}
_layers_lock = threading.Lock()


@dataclass(frozen=True)
class StoredResponse:
    """What a creating POST answered; replayed byte-for-byte for the same key and body."""

    status: int
    body: str
    headers: dict[str, str]


def run_idempotent(
    *,
    vendor_id: str,
    tenant_ref: str,
    method: str,
    route: str,
    key: str | None,
    body: bytes,
    handler: Callable[[], StoredResponse],
    lambda_context: Any | None = None,
    now: Callable[[], float] | None = None,
) -> tuple[StoredResponse, bool]:
    """Run ``handler`` at most once per (vendor, tenant, method, route, key); ``(response, replayed)``.

    ``key`` is the raw ``Idempotency-Key`` header (None when absent), ``route`` the route template
    (``/v1/tenants/{tenant_ref}/xpm/clients``), ``body`` the raw request body. Raises
    ``BrokerError``: 400 ``idempotency_key_required`` / ``invalid_idempotency_key``, 409
    ``idempotency_in_progress``, 422 ``idempotency_key_reused``, 503 ``storage_unavailable``, or
    whatever the handler raised.
    """
    # Imported here: only the creating POSTs need Powertools and boto3 (cold start, style.md).
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        BaseError as PowertoolsIdempotencyError,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.storage import StorageUnavailable

    idempotency_key = _parse_key(key)
    settings = get_settings()
    _refuse_disabled_idempotency(settings)
    ttl_seconds = _ttl_seconds()
    layer = _persistence_layer(settings, ttl_seconds)
    clock = now or time.time
    config = _config(ttl_seconds)
    config.register_lambda_context(cast("LambdaContext", _InProgressDeadline(clock, lambda_context)))
    request = {
        # G2: the scope is hashed as a JSON list, so no component can smuggle a separator and
        # collide with another vendor's, tenant's or route's key.
        "scope": [vendor_id, tenant_ref, method.upper(), route, idempotency_key],
        "fingerprint": payload_fingerprint(body),  # G3
    }
    outcome: list[StoredResponse] = []

    def run_once(request: dict[str, Any]) -> dict[str, Any]:
        response = handler()
        outcome.append(response)
        if not _is_storable(response.status):
            raise _NotStored(response)
        return asdict(response)

    guarded = idempotent_function(
        run_once,
        data_keyword_argument="request",
        persistence_store=layer,
        config=config,
        key_prefix=KEY_PREFIX,
    )
    token = _stamp_clock.set(clock)
    try:
        result = guarded(request=request)
    except _NotStored as not_stored:
        return not_stored.response, False
    except IdempotencyAlreadyInProgressError as exc:
        raise _in_progress() from exc
    except IdempotencyValidationError as exc:
        raise _key_reused() from exc
    except (PowertoolsIdempotencyError, BotoCoreError, ClientError) as exc:
        if outcome:
            # The handler's side effect happened; only recording it failed. Answer the truth: the
            # record stays INPROGRESS until its deadline, then the handler's own reconciliation
            # (G6) covers a retry.
            logger.warning("idempotency record not completed for %s: %s", route, exc)
            return outcome[0], False
        logger.warning("idempotency store unavailable for %s: %s", route, exc)
        raise StorageUnavailable() from exc
    finally:
        _stamp_clock.reset(token)
    if outcome:
        return outcome[0], False
    return _response_from_record(result), True


def payload_fingerprint(body: bytes) -> str:
    """sha256 of the canonical JSON body (sorted keys, no whitespace); of the raw bytes otherwise.

    Canonical JSON is itself valid JSON, so a non-JSON body can never share a fingerprint with a
    JSON one.
    """
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def _parse_key(key: str | None) -> str:
    if key is None:
        raise BrokerError(
            "idempotency_key_required",
            400,
            "Idempotency-Key required",
            "This request creates something: send an Idempotency-Key header (a UUIDv4 is recommended).",
        )
    value = key.strip()
    # RFC 8941 sf-string form ("…"): the quotes are framing, not part of the key.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not _KEY_PATTERN.fullmatch(value):
        raise BrokerError(
            "invalid_idempotency_key",
            400,
            "Invalid Idempotency-Key",
            "An Idempotency-Key is 1-255 characters from A-Z, a-z, 0-9, '_' and '-'.",
        )
    return value


def _is_storable(status: int) -> bool:
    return 200 <= status < 300 or status in _STORABLE_CLIENT_ERRORS


def _refuse_disabled_idempotency(settings: Settings) -> None:
    from aws_lambda_powertools.shared.constants import IDEMPOTENCY_DISABLED_ENV
    from aws_lambda_powertools.shared.functions import strtobool

    # Powertools' kill switch would silently run every duplicate (G3-G5 off); it is for local
    # development only, so a deployed stage refuses to serve rather than create twice.
    if strtobool(os.environ.get(IDEMPOTENCY_DISABLED_ENV, "false")) and not settings.is_local:
        raise ConfigurationError(f"{IDEMPOTENCY_DISABLED_ENV} must not be set on stage {settings.stage}")


def _ttl_seconds() -> int:
    raw = os.environ.get(TTL_ENV, "")
    if not raw:
        return DEFAULT_TTL_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        raise ConfigurationError(f"{TTL_ENV} must be a whole number of seconds, not {raw!r}") from None
    if seconds < DEFAULT_TTL_SECONDS:
        # The published policy promises replays for at least 24 h (G5).
        raise ConfigurationError(f"{TTL_ENV} must be at least {DEFAULT_TTL_SECONDS}, not {seconds}")
    return seconds


def _config(ttl_seconds: int) -> IdempotencyConfig:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    return IdempotencyConfig(
        event_key_jmespath="scope",
        payload_validation_jmespath="fingerprint",
        raise_on_no_idempotency_key=True,  # G1: never run unprotected (our own check runs first)
        expires_after_seconds=ttl_seconds,
        # One source of truth for every Lambda: each read is a consistent DynamoDB read, never a
        # per-container copy that outlives a record deleted or expired in the table.
        use_local_cache=False,
        hash_function="sha256",
    )


def _persistence_layer(settings: Settings, ttl_seconds: int) -> DynamoDBPersistenceLayer:
    from chalicelib.aws import aws_client

    table_name = settings.table_name("idempotency")
    cache_key = (table_name, settings.aws_endpoint_url, settings.aws_region, ttl_seconds)
    with _layers_lock:
        layer = _layers.get(cache_key)
        if layer is None:
            client = aws_client("dynamodb", settings)
            layer = _stamped_layer_class()(table_name=table_name, boto3_client=client)
            # Powertools applies a config once per layer and marks the layer configured before
            # it finishes; configuring here, under the lock, keeps concurrent first requests
            # (chalice local is threaded) from hashing with a half-applied config.
            layer.configure(config=_config(ttl_seconds), key_prefix=KEY_PREFIX)
            _layers[cache_key] = layer
        return layer


@cache
def _stamped_layer_class() -> type[DynamoDBPersistenceLayer]:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    class StampedPersistenceLayer(DynamoDBPersistenceLayer):
        """Stamps ``expiration`` from the call's clock (Powertools hard-codes ``datetime.now()``)."""

        def _get_expiry_timestamp(self) -> int:
            return int(_stamp_clock.get()() + self.expires_after_seconds)

    return StampedPersistenceLayer


class _InProgressDeadline:
    """The part of a LambdaContext Powertools reads to expire an in-progress record (G4).

    The deadline is fixed when the call starts: the Lambda's remaining time, or a bounded default
    outside Lambda. Powertools adds the answer to its own clock, so the record's in-progress
    expiry lands on the deadline.
    """

    def __init__(self, clock: Callable[[], float], lambda_context: Any | None) -> None:
        budget = (
            lambda_context.get_remaining_time_in_millis() / 1000
            if lambda_context is not None
            else DEFAULT_IN_PROGRESS_SECONDS
        )
        self.deadline = clock() + budget

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.time()) * 1000)


class _NotStored(Exception):
    """Carries a non-storable response through Powertools, which then deletes the record."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(response.status)
        self.response = response


def _response_from_record(data: Any) -> StoredResponse:
    if not isinstance(data, dict):
        raise TypeError(f"idempotency record holds {type(data).__name__}, not a response")
    headers = data.get("headers") or {}
    return StoredResponse(
        status=int(data["status"]),
        body=str(data["body"]),
        headers={str(name): str(value) for name, value in headers.items()},
    )


def _in_progress() -> BrokerError:
    return BrokerError(
        "idempotency_in_progress",
        409,
        "Request in progress",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        {"Retry-After": "1"},
    )


def _key_reused() -> BrokerError:
    return BrokerError(
        "idempotency_key_reused",
        422,
        "Idempotency-Key reused",
        "This Idempotency-Key was used with a different request body; use a new key for a new request.",
    )
