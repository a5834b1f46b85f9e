"""The Celery app of a worker or beat process: ``celery -A tasks.worker worker``.

Builds the Flask app from the environment (``REDIS_URL`` must be set).
"""

from __future__ import annotations

from app import create_app

flask_app = create_app()
celery = flask_app.extensions.get("celery")
if celery is None:
    raise RuntimeError("REDIS_URL is not set: Celery workers need Redis as their broker")
