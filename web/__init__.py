"""The HTTP edges: Flask blueprints."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    """Register every blueprint of Parley with the app."""
    from web.security import init_app as init_security

    init_security(app)
    from web.home import bp as home
    from web.stripe import bp as stripe
    from web.studio import bp as studio
    from web.studio_steps import run_step as _studio_steps  # noqa: F401  (routes on `studio`)
    from web.twilio import bp as twilio

    app.register_blueprint(home)
    app.register_blueprint(twilio)
    app.register_blueprint(stripe)
    app.register_blueprint(studio)
    from web.studio_api import bp as studio_api

    app.register_blueprint(studio_api)
    from web.admin import init_app as init_admin
    from web.api import init_app as init_api

    init_admin(app)
    init_api(app)
    from web.simulator import bp as simulator

    app.register_blueprint(simulator)
    from web.agent_api import bp as agent_api

    app.register_blueprint(agent_api)
