"""The Chalice app: wiring only. Logic lives in chalicelib (see style.md)."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.tenants.routes import bp as vendor_api
from chalicelib.web import http
from chalicelib.web.routes import bp as web_routes

app = Chalice(app_name="xpm-broker")
app.register_blueprint(web_routes)
app.register_blueprint(vendor_api)
http.install(app)
