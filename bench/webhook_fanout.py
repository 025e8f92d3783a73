"""Webhook fan-out: signed (Standard Webhooks) deliveries per second to a local receiver.

Not measurable yet: webhook delivery (issue 6) is not built; only the outbox model exists. This
module reports that instead of a number.
"""

from __future__ import annotations

from bench.context import RunContext
from bench.results import NotAvailable, Outcome

NAME = "webhook_fanout"
REASON = "webhook delivery (issue 6) is not built yet"


def run(context: RunContext) -> list[Outcome]:
    return [NotAvailable(NAME, REASON)]
