"""boto3 clients for Lambda code: built on first use, cached per process, AWS errors retried.

botocore's ``standard`` retry mode retries throttling (KMS ThrottlingException, DynamoDB
ProvisionedThroughputExceeded) with exponential backoff and jitter (security-checklist C3).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.config import Settings

_clients: dict[tuple[str, str | None, str], Any] = {}
_lock = threading.Lock()


def aws_client(service: str, settings: Settings | None = None) -> Any:
    """A cached client for ``service`` (default: the process Settings' endpoint and region)."""
    import boto3
    from botocore.config import Config

    from chalicelib.config import get_settings

    settings = settings or get_settings()
    cache_key = (service, settings.aws_endpoint_url, settings.aws_region)
    with _lock:
        if cache_key not in _clients:
            _clients[cache_key] = boto3.session.Session().client(
                service,
                region_name=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10
                ),
            )
        return _clients[cache_key]
