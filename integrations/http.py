"""The HTTP port (`engine.ports.HTTP`) on ``httpx``: the requests of ``http`` steps.

Sources:
    - httpx's client, timeouts and exceptions: https://www.python-httpx.org/
      (``httpx.TimeoutException`` and ``httpx.TransportError`` both derive
      from ``httpx.RequestError``, raised when no answer came).
"""

from __future__ import annotations

import json as jsonlib
import os
from collections.abc import Mapping
from typing import Any

import httpx

from engine.ports import HTTPError, HTTPResponse

#: Bytes of an answer read at most; a larger one is an error (it would be stored
#: in the execution's step results).
MAX_RESPONSE_BYTES = 256 * 1024

USER_AGENT = "Parley-flows/1 (+https://github.com/parley)"


class HttpxHTTP:
    """Sends ``http`` steps' requests with one pooled ``httpx.Client``.

    Redirects are not followed (a 3xx is an answer, routed to ``fail``), and
    the client ignores proxy and certificate settings from the environment so
    a request goes where the flow says.
    """

    def __init__(self) -> None:
        self._pool: httpx.Client | None = None

    @property
    def _client(self) -> httpx.Client:
        # Made on first use: most deployments have no `http` step.
        if self._pool is None:
            self._pool = httpx.Client(
                follow_redirects=False, trust_env=False, headers={"User-Agent": USER_AGENT}
            )
        return self._pool

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json: Any = None,
        form: dict[str, str] | None = None,
        timeout: float,
    ) -> HTTPResponse:
        """Send the request and read the answer (see `engine.ports.HTTP.request`).

        Raises:
            HTTPError: a timeout, a connection error, an invalid URL, or an
                answer larger than `MAX_RESPONSE_BYTES`.
        """
        try:
            request = self._client.build_request(
                method, url, headers=headers, json=json, data=form, timeout=timeout
            )
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as error:
            raise HTTPError(f"timed out after {timeout:g}s") from error
        except (httpx.RequestError, httpx.InvalidURL, ValueError) as error:
            raise HTTPError(f"{type(error).__name__}: {error}") from error
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise HTTPError(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        except httpx.TimeoutException as error:
            raise HTTPError(f"timed out after {timeout:g}s") from error
        except httpx.RequestError as error:
            raise HTTPError(f"{type(error).__name__}: {error}") from error
        finally:
            response.close()
        text = bytes(body).decode(response.encoding or "utf-8", errors="replace")
        return HTTPResponse(status=response.status_code, json=_json_of(text), text=text)

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _json_of(text: str) -> Any:
    try:
        return jsonlib.loads(text) if text.strip() else None
    except ValueError:
        return None


def allowed_env(names: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables ``http`` steps may read: those `names` lists.

    Args:
        names: ``HTTP_ENV_ALLOWLIST``: names separated by commas or spaces.
        environ: Where to read them (``os.environ`` when None).

    Returns:
        Name → value for each listed name that is set.
    """
    source = os.environ if environ is None else environ
    return {name: source[name] for name in env_names(names) if source.get(name)}


def env_names(names: str | None) -> frozenset[str]:
    """The names of ``HTTP_ENV_ALLOWLIST`` (commas or spaces between them)."""
    return frozenset(part for part in (names or "").replace(",", " ").split() if part)
