"""The OpenAPI 3.1 document of every API route, built from the pydantic models.

Served at ``GET /api/openapi.json``. The schemas come from
`pydantic.json_schema.models_json_schema` (JSON Schema 2020-12, which OpenAPI
3.1 uses as is), so the document cannot drift from the bodies the code sends.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic.json_schema import models_json_schema

from web.api import schemas
from web.api.problems import MEDIA_TYPE, parameters

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": _ref(schemas.Problem)}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request; `detail` says what to fix.",
        401: "Missing or wrong token.",
        404: "Not found (for conversations: not published).",
        503: "The server is missing its token setting.",
    }
    return {str(status): _problem(reasons[status]) for status in statuses}


def document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    responses = [
        schemas.ConversationList,
        schemas.ConversationResponse,
        schemas.MessageList,
        schemas.Problem,
        schemas.RecentMessagesResponse,
    ]
    _, definitions = models_json_schema(
        [(model, "serialization") for model in responses]
        + [(schemas.RecentMessagesRequest, "validation")],
        ref_template=_REF,
    )
    paths = {
        "/api/v1/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "Published conversations, most recently published first.",
                "tags": ["public"],
                "parameters": parameters(schemas.Paging, "query"),
                "responses": {
                    "200": _json(schemas.ConversationList, "A page of conversations."),
                    **_errors(400),
                },
            }
        },
        "/api/v1/conversations/search": {
            "get": {
                "operationId": "searchConversations",
                "summary": "Published conversations whose summary or messages contain the query.",
                "tags": ["public"],
                "parameters": parameters(schemas.SearchQuery, "query"),
                "responses": {
                    "200": _json(schemas.ConversationList, "A page of matches."),
                    **_errors(400),
                },
            }
        },
        "/api/v1/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "One published conversation with its redacted messages.",
                "tags": ["public"],
                "parameters": parameters(schemas.ConversationPath, "path"),
                "responses": {
                    "200": _json(schemas.ConversationResponse, "The conversation."),
                    **_errors(400, 404),
                },
            }
        },
        "/api/v1/messages": {
            "get": {
                "operationId": "listMessages",
                "summary": "The redacted messages of a published conversation, oldest first.",
                "tags": ["public"],
                "parameters": parameters(schemas.MessagesQuery, "query"),
                "responses": {
                    "200": _json(schemas.MessageList, "The messages."),
                    **_errors(400, 404),
                },
            }
        },
        "/api/v1/contacts.recent-messages": {
            "post": {
                "operationId": "contactRecentMessages",
                "summary": "A contact's recent messages grouped by conversation (internal).",
                "tags": ["internal"],
                "security": [{"bearerToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(schemas.RecentMessagesRequest)}
                    },
                },
                "responses": {
                    "200": _json(schemas.RecentMessagesResponse, "The messages."),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "tags": ["meta"],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    from web.agent_api import openapi_paths  # the agent apps' API (human handover)

    paths.update(openapi_paths())
    from web.studio_api import openapi_paths as studio_paths  # POST /api/v1/executions

    paths.update(studio_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley API",
            "version": "1.0.0",
            "description": "Published, redacted conversations (public) and a contact's "
            "recent messages (internal, INTERNAL_API_TOKEN).",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/api/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The OpenAPI document."""
    return jsonify(document())
