"""Request values read through pydantic models, and every error under ``/api/`` as JSON.

Each endpoint reads its query, path and body values through one model of
`web.api.schemas` (`parse`); a value the model refuses is a 400 whose detail
names the field and why, and nothing unchecked reaches the database. The
OpenAPI document is built from the same models (`parameters`), so it says
exactly what the code accepts.

Errors are RFC 9457 problem details (``application/problem+json``: ``type``,
``title``, ``status``, ``detail``; plus ``error``, the same text, for clients of
the earlier ``{"error": ...}`` shape), for the endpoints' own refusals and for
what Flask answers itself under ``/api/``: 404 for an unknown path or a
malformed path parameter, 405, 413, 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("parley.web.api")

Model = TypeVar("Model", bound=BaseModel)

MEDIA_TYPE = "application/problem+json"


class BadRequest(Exception):
    """A request value the endpoint's model refused; ``str()`` says which and why."""


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """A problem details response (RFC 9457) with `status` and `detail`."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    response = jsonify({**body, "error": detail})
    response.status_code = status
    response.mimetype = MEDIA_TYPE
    response.headers.update(dict(headers or {}))
    return response


def reasons(error: ValidationError) -> str:
    """Pydantic's errors as one line: ``field: why; other: why``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )


def parse(model: type[Model], values: Any) -> Model:
    """Check `values` (a query's or form's args, path values, a JSON body) with `model`.

    Only the first value of a repeated query parameter is read.

    Raises:
        BadRequest: a value is missing, malformed or out of bounds; says which.
    """
    if hasattr(values, "to_dict"):
        values = values.to_dict()
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise BadRequest(reasons(error)) from None


def parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    """OpenAPI parameter objects (``in: where``) for the fields of `model`."""
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    result = []
    for name, field_schema in schema["properties"].items():
        field_schema = {k: v for k, v in field_schema.items() if k not in ("title", "description")}
        result.append(
            {
                "name": name,
                "in": where,
                "required": where == "path" or name in required,
                "description": model.model_fields[name].description or "",
                "schema": field_schema,
            }
        )
    return result


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def init_app(app: Flask) -> None:
    """Answer every error under ``/api/`` with problem details; others as before."""

    @app.errorhandler(BadRequest)
    def _bad_request(error: BadRequest) -> Response:
        return problem(400, str(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if not _is_api():
            return error
        detail = error.description or ""
        if error.code == 500:
            detail = "the server failed; it was logged"
        elif error.code == 404:
            detail = f"no such resource: {request.path}"
        response = problem(error.code or 500, detail)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response
