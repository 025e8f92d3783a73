"""One frozen Settings object, built from the environment once and lazily.

Precedence: explicit argument > environment > default (contract.md §2). Nothing is read at
import time, so the Chalice test client (which patches env per request) and the CLI share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from chalicelib.errors import ConfigurationError

STAGES = ("local", "dev", "prod")
DEFAULT_SCOPES = "openid profile email offline_access practicemanager.client practicemanager.staff.read"


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    stage: str
    public_url: str
    xero_identity_url: str
    xero_api_url: str
    aws_endpoint_url: str | None
    aws_region: str
    table_prefix: str
    queue_prefix: str
    kms_key_id: str
    xero_scopes: str
    xero_pkce: bool
    xpm_api_version: str = "3.0"
    extra: Mapping[str, str] = field(default_factory=dict)
    # Scheduled rotation (issue 5): refreshes per minute per Xero app, all workers together
    # (docs/rotation.md), and on the local stage only the sandbox clock to follow for the demo.
    rotation_per_minute: int = 600
    xero_clock_url: str | None = None
    sync_interval_seconds: float = 12 * 3600  # XPMB_SYNC_INTERVAL_HOURS: change feed (docs/sync.md)

    @property
    def is_local(self) -> bool:
        return self.stage == "local"

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/oauth/callback"

    @property
    def xpm_base_url(self) -> str:
        return f"{self.xero_api_url}/practicemanager/{self.xpm_api_version}/"

    def table_name(self, logical: str) -> str:
        return f"{self.table_prefix}{logical}"

    def queue_name(self, logical: str) -> str:
        return f"{self.queue_prefix}{logical}"


def build_settings(env: Mapping[str, str] | None = None, **overrides: str) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``); keyword overrides win."""
    source = dict(os.environ if env is None else env)
    source.update(overrides)
    endpoint = source.get("AWS_ENDPOINT_URL") or None
    stage = source.get("XPMB_STAGE") or ("local" if endpoint else "")
    if not stage:
        raise ConfigurationError("XPMB_STAGE is required when AWS_ENDPOINT_URL is not set")
    if stage not in STAGES:
        raise ConfigurationError(f"XPMB_STAGE must be one of {', '.join(STAGES)}, not {stage!r}")
    kms_key_id = source.get("XPMB_KMS_KEY_ID") or (f"alias/xpmb-{stage}" if endpoint else "")
    if not kms_key_id:
        raise ConfigurationError("XPMB_KMS_KEY_ID is required on AWS")
    version = source.get("XPMB_XPM_API_VERSION", "3.0")
    if version not in {"3.0", "3.1"}:
        raise ConfigurationError(f"XPMB_XPM_API_VERSION must be 3.0 or 3.1, not {version!r}")
    public_url = source.get("XPMB_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    if stage != "local" and not public_url.startswith("https://"):
        # Codes, cookies and signatures travel under this URL: never plain http on AWS (C, TLS).
        raise ConfigurationError(f"XPMB_PUBLIC_URL must be an https:// URL on stage {stage}")
    return Settings(
        stage=stage,
        public_url=public_url,
        xero_identity_url=source.get("XERO_IDENTITY_URL", "https://identity.xero.com").rstrip("/"),
        xero_api_url=source.get("XERO_API_URL", "https://api.xero.com").rstrip("/"),
        aws_endpoint_url=endpoint,
        aws_region=source.get("AWS_REGION") or source.get("AWS_DEFAULT_REGION") or "us-east-1",
        table_prefix=source.get("XPMB_TABLE_PREFIX", f"xpmb-{stage}-"),
        queue_prefix=source.get("XPMB_QUEUE_PREFIX", f"xpmb-{stage}-"),
        kms_key_id=kms_key_id,
        xero_scopes=source.get("XPMB_XERO_SCOPES", DEFAULT_SCOPES),
        xero_pkce=_truthy(source.get("XPMB_XERO_PKCE", "true")),
        xpm_api_version=version,
        rotation_per_minute=_rotation_rate(source),
        xero_clock_url=_xero_clock_url(source, stage),
        sync_interval_seconds=_sync_interval(source.get("XPMB_SYNC_INTERVAL_HOURS", "12")),
    )


def _rotation_rate(source: Mapping[str, str]) -> int:
    raw = source.get("XPMB_ROTATION_PER_MINUTE", "").strip() or "600"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"XPMB_ROTATION_PER_MINUTE must be a positive integer, not {raw!r}")
    return int(raw)


def _xero_clock_url(source: Mapping[str, str], stage: str) -> str | None:
    """The sandbox clock a local demo follows (``/_sandbox/clock``); never anywhere but local."""
    url = source.get("XPMB_XERO_CLOCK_URL", "").strip() or None
    if url and stage != "local":
        raise ConfigurationError("XPMB_XERO_CLOCK_URL is for the local stack only")
    return url


def _sync_interval(hours: str) -> float:
    try:
        value = float(hours)
    except ValueError:
        value = 0.0
    if not 0.25 <= value <= 24 * 7:
        raise ConfigurationError(f"XPMB_SYNC_INTERVAL_HOURS must be from 0.25 to 168, not {hours!r}")
    return value * 3600


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings (built on first use, never at import)."""
    return build_settings()


def reset_settings() -> None:
    """Forget the cached Settings (tests and the dev supervisor change env)."""
    get_settings.cache_clear()


def queue_name_for_handlers(logical: str) -> str:
    """A queue's name for ``@app.on_sqs_message``, which Chalice needs when app.py is imported.

    Reads only env (no clients, no I/O); falls back to the local stage where nothing is set,
    e.g. under the Chalice test client, which sets stage variables per request only.
    """
    stage = os.environ.get("XPMB_STAGE") or "local"
    prefix = os.environ.get("XPMB_QUEUE_PREFIX", f"xpmb-{stage}-")
    return f"{prefix}{logical}"
