"""The baseline of `bench/load.py`: a bare Flask endpoint that stores one row and answers TwiML.

``gunicorn 'bench.bare:create_app()'`` with ``DATABASE_URL`` set; it creates
its one table on start.
"""

from __future__ import annotations

import datetime as dt
import os

import sqlalchemy as sa
from flask import Flask, Response, request
from twilio.twiml.messaging_response import MessagingResponse

from config import database_url

metadata = sa.MetaData()
bare_message = sa.Table(
    "bare_message",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_sid", sa.String(64), unique=True),
    sa.Column("body", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)


def create_app() -> Flask:
    """The bare app: ``POST /twilio/messages`` inserts the message and answers ``<Response/>``."""
    app = Flask(__name__)
    engine = sa.create_engine(
        database_url(os.environ["DATABASE_URL"], app.instance_path), pool_pre_ping=True
    )
    try:
        metadata.create_all(engine)
    except sa.exc.DBAPIError:
        # Another gunicorn worker created the table at the same moment (it
        # failed to boot, and took the whole server down, before this).
        metadata.create_all(engine)

    @app.post("/twilio/messages")
    def inbound() -> Response:
        with engine.begin() as connection:
            connection.execute(
                bare_message.insert().values(
                    message_sid=request.form.get("MessageSid"),
                    body=request.form.get("Body", ""),
                    created_at=dt.datetime.now(dt.UTC),
                )
            )
        return Response(str(MessagingResponse().to_xml()), mimetype="text/xml")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    return app
