"""boto3 clients for the CLI and the local stack, pointed at AWS_ENDPOINT_URL when set."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from chalicelib.config import Settings

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


def client(service: str, settings: Settings) -> Any:
    return boto3.session.Session().client(
        service,
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=_RETRIES,
    )
