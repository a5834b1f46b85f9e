"""An outside JSON API on 127.0.0.1 for ``http`` steps, answering what a test scripts.

with FakeAPI() as api:
    api.answer("/orders/42", {"status": "shipped"})          # 200 JSON
    api.answer("/broken", {"error": "boom"}, status=500)
    api.answer("/slow", {"ok": True}, delay=2.0)               # answers after 2 s
    ... an `http` step calls f"{api.base_url}/orders/42" ...
    assert api.requests[0]["json"] == {...}
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Self

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class FakeAPI:
    """Answers each path as scripted (404 otherwise) and records every request.

    Attributes:
        requests: ``{"method", "path", "query", "headers", "json", "form", "body"}``
            of each request, in order.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._answers: dict[str, tuple[int, str, str, float]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def answer(
        self,
        path: str,
        body: Any,
        status: int = 200,
        delay: float = 0.0,
        content_type: str = "application/json",
    ) -> None:
        """Script the answer to `path`: `body` as JSON (a str is sent as it is)."""
        text = body if isinstance(body, str) else json.dumps(body)
        self._answers[path] = (status, text, content_type, delay)

    def reset(self) -> Self:
        """Forget scripted answers and recorded requests."""
        self._answers.clear()
        self.requests.clear()
        return self

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
        raw = request.get_data(as_text=True)
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.args.to_dict(),
                "headers": dict(request.headers),
                "json": json.loads(raw) if request.is_json and raw else None,
                "form": request.form.to_dict() if not request.is_json else {},
                "body": raw,
            }
        )
        status, text, content_type, delay = self._answers.get(
            request.path, (404, json.dumps({"error": "not found"}), "application/json", 0.0)
        )
        if delay:
            time.sleep(delay)  # a slow API, for the step's timeout
        return Response(text, status=status, content_type=content_type)(environ, start_response)
