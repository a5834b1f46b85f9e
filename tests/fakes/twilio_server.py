"""A stand-in for ``api.twilio.com``'s Messages resource, on 127.0.0.1, for the real client.

with FakeTwilio("AC...", "token") as twilio:
    sender = TwilioSender("AC...", "token", api_base_url=twilio.base_url)
    sender.send("whatsapp:+14155238886", "whatsapp:+15551234567", "Hi")
    assert twilio.requests[0]["form"]["Body"] == "Hi"
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from typing import Any, Self

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json")
MEDIA_PATH = re.compile(
    r"/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages/MM[0-9a-f]{32}/Media/ME[0-9a-f]{32}"
)


class FakeTwilio:
    """Answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` as Twilio does.

    Args:
        account_sid: The account whose Basic auth it accepts.
        auth_token: Its auth token.

    Attributes:
        requests: ``{"path", "form"}`` of each accepted message, in order.
        faults: HTTP statuses (429, 500, 503...) to answer the next requests
            with, one each, before accepting again; refused requests are not
            in `requests`.
        attempts: How many message requests arrived, refused ones included.
        media: Inbound media it serves (`add_media`), by path: (bytes, content type).
        media_requests: ``{"path", "authorized"}`` of each media download, in order.
    """

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[dict[str, Any]] = []
        self.faults: list[int] = []
        self.attempts = 0
        self.media: dict[str, tuple[bytes, str]] = {}
        self.media_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (replaces ``https://api.twilio.com``)."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def bodies(self) -> list[str]:
        """The ``Body`` of each message sent, in order."""
        return [request["form"].get("Body", "") for request in self.requests]

    def reset(self) -> None:
        """Forget the messages, faults, media and downloads (between tests)."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.attempts = 0
            self.media.clear()
            self.media_requests.clear()

    def add_media(self, data: bytes, content_type: str) -> str:
        """Serve `data` as an inbound message's media, as Twilio does (Basic auth required).

        Returns:
            Its ``MediaUrl``.
        """
        path = (
            f"/2010-04-01/Accounts/{self.account_sid}/Messages/MM{secrets.token_hex(16)}"
            f"/Media/ME{secrets.token_hex(16)}"
        )
        self.media[path] = (data, content_type)
        return self.base_url + path

    def _serve_media(self, request: Request) -> Response:
        """``GET`` a media URL: 401 without the account's Basic auth, 404 when unknown."""
        authorized = request.headers.get("Authorization") == self._basic()
        with self._lock:
            self.media_requests.append({"path": request.path, "authorized": authorized})
        if not authorized:
            return self._json({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        found = self.media.get(request.path)
        if found is None:
            error = {"code": 20404, "message": "The requested resource was not found"}
            return self._json({**error, "status": 404}, 404)
        data, content_type = found
        return Response(data, status=200, content_type=content_type)

    def _basic(self) -> str:
        pair = f"{self.account_sid}:{self.auth_token}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def __enter__(self) -> Self:
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.method == "GET" and MEDIA_PATH.fullmatch(request.path):
            return self._serve_media(request)(environ, start_response)
        match = MESSAGES_PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            return self._json({"code": 20404, "message": "Not Found", "status": 404}, 404)(
                environ, start_response
            )
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if request.headers.get("Authorization") != expected:
            error = {"code": 20003, "message": "Authenticate", "status": 401}
            return self._json(error, 401)(environ, start_response)
        form = request.form.to_dict()
        with self._lock:
            self.attempts += 1
            fault = self.faults.pop(0) if self.faults else None
            if fault is None:
                self.requests.append({"path": request.path, "form": form})
        if fault is not None:
            error = {"code": 20429 if fault == 429 else 20500, "message": "Fault", "status": fault}
            return self._json(error, fault)(environ, start_response)
        body = form.get("Body", "")
        if len(body) > 1600:
            error = {
                "code": 21617,
                "message": "The concatenated message body exceeds the 1600 character limit.",
                "more_info": "https://www.twilio.com/docs/errors/21617",
                "status": 400,
            }
            return self._json(error, 400)(environ, start_response)
        sid = "SM" + secrets.token_hex(16)
        account = match.group(1)
        message = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
            "date_sent": None,
            "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"
            },
            "to": form.get("To"),
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        return self._json(message, 201)(environ, start_response)

    @staticmethod
    def _json(data: dict[str, Any], status: int) -> Response:
        return Response(json.dumps(data), status=status, mimetype="application/json")
