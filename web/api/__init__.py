"""The JSON APIs: public (published conversations), internal (token), and their OpenAPI document.

``PUBLIC_API_CORS_ORIGINS`` (comma-separated origins, or ``*``) lets the
website that shows the conversations call the public API from a browser;
unset, no CORS header is sent. The internal API never gets CORS headers.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS


def cors_origins(value: str | None) -> list[str] | str:
    """The origins from ``PUBLIC_API_CORS_ORIGINS``: a list, ``*``, or [] for none."""
    if not value:
        return []
    if value.strip() == "*":
        return "*"
    return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]


def init_app(app: Flask) -> None:
    """Register the API blueprints and CORS for the public routes."""
    from web.api.internal import bp as internal
    from web.api.openapi import bp as openapi
    from web.api.problems import init_app as init_problems
    from web.api.public import bp as public

    init_problems(app)

    app.register_blueprint(public)
    app.register_blueprint(internal)
    app.register_blueprint(openapi)
    origins = cors_origins(app.extensions["parley"].settings.public_api_cors_origins)
    if origins:
        public_routes = {"origins": origins, "methods": ["GET"], "max_age": 3600}
        CORS(
            app,
            resources={
                r"/api/v1/conversations*": public_routes,
                r"/api/v1/messages": public_routes,
                r"/api/openapi.json": public_routes,
            },
        )
