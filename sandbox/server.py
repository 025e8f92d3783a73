"""The sandbox's Flask app and a threaded server that tests and the dev stack start."""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.state import SandboxConfig, SandboxState


def create_app(state: SandboxState | None = None) -> Flask:
    from sandbox import connections, control, identity, xpm

    app = Flask("sandbox")
    app.config["SANDBOX_STATE"] = state or SandboxState()
    app.register_blueprint(identity.bp)
    app.register_blueprint(connections.bp)
    app.register_blueprint(xpm.bp)
    app.register_blueprint(control.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        # Sandbox-internal errors (bad control calls, unknown routes) as plain JSON.
        return jsonify({"error": exc.name, "detail": exc.description}), exc.code or 500

    return app


class SandboxServer:
    """A threaded HTTP server on 127.0.0.1 serving one SandboxState (port 0 = any free port)."""

    def __init__(self, state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or SandboxState(SandboxConfig())
        self.app = create_app(self.state)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server: BaseWSGIServer = make_server(host, port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        self._server.serve_forever()
