"""A small Python client for the xpm-broker vendor API (see docs/quickstart.md)."""

from xpmb_client.client import XpmBroker
from xpmb_client.errors import BrokerError, RateLimitedError, WebhookVerificationError
from xpmb_client.webhooks import verify_webhook

__all__ = ["BrokerError", "RateLimitedError", "WebhookVerificationError", "XpmBroker", "verify_webhook"]
