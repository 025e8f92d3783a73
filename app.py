"""The Chalice app: wiring only. Logic lives in chalicelib (see style.md)."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.web import http
from chalicelib.web.routes import bp as web_routes

app = Chalice(app_name="xpm-broker")
app.register_blueprint(web_routes)
http.install(app)
