"""The Chalice app: wiring only. Logic lives in chalicelib (see style.md)."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate

from chalicelib.config import queue_name_for_handlers
from chalicelib.observability import observe_event
from chalicelib.sync.routes import bp as sync_api
from chalicelib.tenants.routes import bp as vendor_api
from chalicelib.web import http
from chalicelib.web.routes import bp as web_routes
from chalicelib.webhooks.routes import bp as webhook_api
from chalicelib.xpm.routes import bp as xpm_api

app = Chalice(app_name="xpm-broker")
app.register_blueprint(web_routes)
app.register_blueprint(vendor_api)
app.register_blueprint(xpm_api)
app.register_blueprint(webhook_api)
app.register_blueprint(sync_api)
http.install(app)
app.register_middleware(observe_event, "all")


@app.on_sqs_message(queue=queue_name_for_handlers("pushes"), batch_size=5)
def push_worker(event: Any) -> dict[str, Any]:
    """Entity pushes queued by POST …/xpm/pushes (partial batch failures reported)."""
    from chalicelib.xpm.pushes import handle_push_messages

    return handle_push_messages(event.to_dict(), event.context)


@app.schedule(Rate(1, unit=Rate.HOURS))
def rotation_planner(event: Any) -> dict[str, Any]:
    """Queue the grants due for a scheduled refresh (issue 5)."""
    from chalicelib.oauth.rotation import run_planner

    return run_planner(event.to_dict(), event.context)


# At most 5 workers at once: with batches of 5 they keep up with the default rotation rate
# (XPMB_ROTATION_PER_MINUTE, 600) while pacing.py spaces the refreshes (docs/rotation.md).
@app.on_sqs_message(queue=queue_name_for_handlers("rotation"), batch_size=5, maximum_concurrency=5)
def rotation_worker(event: Any) -> dict[str, Any]:
    """Refresh due grants through the single-flight path (partial batch failures reported)."""
    from chalicelib.oauth.rotation import handle_rotation_messages

    return handle_rotation_messages(event.to_dict(), event.context)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def webhook_dispatcher(event: Any) -> dict[str, Any]:
    """Queue every webhook attempt that is due (the outbox safety net, issue 6)."""
    from chalicelib.webhooks.delivery import run_dispatcher

    return run_dispatcher(event.to_dict(), event.context)


@app.on_sqs_message(queue=queue_name_for_handlers("webhooks"), batch_size=5)
def webhook_worker(event: Any) -> dict[str, Any]:
    """One signed delivery attempt per message (partial batch failures reported)."""
    from chalicelib.webhooks.delivery import handle_delivery_messages

    return handle_delivery_messages(event.to_dict(), event.context)


@app.on_sqs_message(queue=queue_name_for_handlers("token_rescue"), batch_size=5, maximum_concurrency=2)
def token_rescue_worker(event: Any) -> dict[str, Any]:
    """Store refreshed token sets that DynamoDB refused at first (checklist D3)."""
    from chalicelib.oauth.rescue import handle_rescue_messages

    return handle_rescue_messages(event.to_dict(), event.context)


@app.schedule(Rate(15, unit=Rate.MINUTES))
def sync_planner(event: Any) -> dict[str, Any]:
    """Start the change-feed syncs that are due (issue 6; XPMB_SYNC_INTERVAL_HOURS apart)."""
    from chalicelib.sync.handlers import run_planner

    return run_planner(event.to_dict(), event.context)


@app.on_sqs_message(queue=queue_name_for_handlers("sync"), batch_size=1)
def sync_worker(event: Any) -> dict[str, Any]:
    """Run (or continue) one practice's sync; rate limits defer it with a delayed message."""
    from chalicelib.sync.handlers import handle_sync_messages

    return handle_sync_messages(event.to_dict(), event.context)
