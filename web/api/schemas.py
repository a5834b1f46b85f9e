"""The API's request and response bodies (pydantic); the OpenAPI document is built from them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator


class Person(BaseModel):
    """Who speaks, as the public sees them: never a phone number."""

    display_name: str = Field(description="A name fit to show, e.g. 'Parley coach' or 'Texter 12'.")
    kind: Literal["agent", "user"]


class Pagination(BaseModel):
    """Where a page sits in the whole list."""

    page: int = Field(ge=1)
    per_page: int = Field(ge=1, le=100)
    total: int = Field(ge=0, description="Items in the whole list.")
    total_pages: int = Field(ge=0)


class PublicMessage(BaseModel):
    """A message of a published conversation, redacted."""

    id: int
    conversation_id: int
    author: Literal["user", "agent"]
    display_name: str
    text: str = Field(description="The redacted text; private details appear as [PHONE], [NAME]…")
    sent_at: dt.datetime


class PublicConversation(BaseModel):
    """A published conversation as the website shows it."""

    id: int
    question: str = Field(description="The summary question the person brought.")
    answer: str = Field(description="The summary of the answer they got.")
    teaser: str
    tags: list[str]
    rating: int | None = Field(description="1 to 5, or null.")
    channel: Literal["whatsapp", "sms"]
    message_count: int
    published_at: dt.datetime | None
    started_at: dt.datetime
    agent: Person
    user: Person


class PublicConversationDetail(PublicConversation):
    """A published conversation with its redacted messages."""

    messages: list[PublicMessage]


class ConversationList(BaseModel):
    """A page of published conversations."""

    data: list[PublicConversation]
    pagination: Pagination


class ConversationResponse(BaseModel):
    """One published conversation."""

    data: PublicConversationDetail


class MessageList(BaseModel):
    """The redacted messages of a published conversation, oldest first."""

    data: list[PublicMessage]


class Problem(BaseModel):
    """A refused or failed request, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(default="about:blank", description="A URI naming the problem type.")
    title: str = Field(description="The HTTP status's phrase, e.g. 'Bad Request'.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="Why, and how to fix the request.")
    error: str = Field(description="The same as detail (an extension member older clients read).")


#: The largest id a row can have (PostgreSQL's bigint).
MAX_ID = 2**63 - 1
#: A phone number as the APIs take it: E.164, optionally with Twilio's whatsapp: prefix.
PHONE_PATTERN = r"^(whatsapp:)?\+[1-9][0-9]{7,14}$"
#: No C0 control characters but tab and newlines (PostgreSQL refuses NUL in text).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"

Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Paging(BaseModel):
    """``?page=&per_page=`` of a list."""

    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=1, ge=1, le=1_000_000, description="1-based page number.")
    per_page: int = Field(default=20, ge=1, le=100, description="Items per page.")


class SearchQuery(Paging):
    """``GET /api/v1/conversations/search``."""

    query: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]*[^\s\x00-\x1f][^\x00-\x1f]*$",
        description="Words to look for (not only spaces; no control characters).",
    )


class MessagesQuery(BaseModel):
    """``GET /api/v1/messages``."""

    model_config = ConfigDict(extra="ignore")

    conversation_id: Id = Field(description="The published conversation.")


class ConversationPath(BaseModel):
    """``/api/v1/conversations/{conversation_id}``."""

    conversation_id: Id = Field(description="The conversation's id.")


Cursor = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")]


def _one_of_contact(schema: dict[str, Any]) -> None:
    """The schema of `RecentMessagesRequest`: exactly one of contact_id and phone, not null."""
    properties = schema["properties"]
    for name in ("contact_id", "phone"):
        given = next(option for option in properties[name].pop("anyOf") if option != NULL)
        properties[name].update(given)
        properties[name].pop("default", None)
    properties["cursors"]["additionalProperties"] = False
    schema["oneOf"] = [{"required": ["contact_id"]}, {"required": ["phone"]}]


NULL = {"type": "null"}


class RecentMessagesRequest(BaseModel):
    """``POST /api/v1/contacts.recent-messages`` (Airy's contacts.recent-messages shape).

    Exactly one of ``contact_id`` and ``phone``.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_contact)

    contact_id: Id | None = Field(default=None, description="The contact's id.")
    phone: str | None = Field(
        default=None,
        pattern=PHONE_PATTERN,
        description="Or the contact's E.164 number (whatsapp: prefix allowed).",
    )
    source: Literal["whatsapp", "sms"] | None = Field(
        default=None, description="Only conversations on this channel."
    )
    page_size: int = Field(default=10, ge=1, le=100, description="Messages per conversation.")
    cursors: dict[Cursor, Cursor] = Field(
        default_factory=dict,
        description="Per conversation id, the next_cursor a previous answer gave: "
        "the page of older messages.",
    )

    @model_validator(mode="after")
    def _exactly_one_contact(self) -> RecentMessagesRequest:
        if (self.contact_id is None) == (self.phone is None):
            raise ValueError("give exactly one of contact_id or phone")
        return self


class Sender(BaseModel):
    """Who wrote a message."""

    type: Literal["contact", "bot", "agent", "system"]
    id: str | None = Field(description="The agent's id for agent messages.")


class InternalMessage(BaseModel):
    """A stored message, unredacted (internal API only)."""

    id: int
    content: str
    from_contact: bool
    sender: Sender
    delivery_state: str = Field(description="received, queued, sent, delivered, failed…")
    sent_at: dt.datetime
    flow_id: str | None
    step_id: str | None


class PaginationData(BaseModel):
    """Paging of one conversation's messages."""

    next_cursor: str | None = Field(description="Pass it in cursors for older messages.")
    page_size: int


class ConversationMessages(BaseModel):
    """A conversation's recent messages, newest first."""

    conversation_id: int
    source: Literal["whatsapp", "sms"]
    messages: list[InternalMessage]
    pagination_data: PaginationData


class RecentMessagesResponse(BaseModel):
    """The contact's recent messages grouped by conversation, most recent conversation first."""

    contact_id: int
    data: list[ConversationMessages]
