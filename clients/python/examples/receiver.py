"""A webhook receiver for the quickstart: verifies every delivery, ignores repeats, prints events.

Run: ``python clients/python/examples/receiver.py`` (port ``RECEIVER_PORT``, default 9000;
secret ``XPMB_WEBHOOK_SECRET``). Answers 204 to what verifies, 401 to anything else.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xpmb_client import WebhookVerificationError, verify_webhook

SECRET = os.environ["XPMB_WEBHOOK_SECRET"]
PORT = int(os.environ.get("RECEIVER_PORT", "9000"))
seen: set[str] = set()  # webhook-ids already handled: delivery is at least once


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            event = verify_webhook(SECRET, body, dict(self.headers.items()))
        except WebhookVerificationError as error:
            print(f"rejected: {error}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        webhook_id = self.headers["webhook-id"]
        if webhook_id not in seen:
            seen.add(webhook_id)
            print(f"received {event['type']} {webhook_id} {event['data']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per event above
        return


if __name__ == "__main__":
    print(f"listening on http://127.0.0.1:{PORT}/webhooks", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
