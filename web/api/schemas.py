"""The API's request and response bodies (pydantic); the OpenAPI document is built from them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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


class Error(BaseModel):
    """A refused request."""

    error: str = Field(description="Why, and how to fix the request.")


class RecentMessagesRequest(BaseModel):
    """``POST /api/v1/contacts.recent-messages`` (Airy's contacts.recent-messages shape)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = Field(default=None, description="The contact's id.")
    phone: str | None = Field(
        default=None, description="Or the contact's E.164 number (whatsapp: prefix allowed)."
    )
    source: Literal["whatsapp", "sms"] | None = Field(
        default=None, description="Only conversations on this channel."
    )
    page_size: int = Field(default=10, ge=1, le=100, description="Messages per conversation.")
    cursors: dict[str, str] = Field(
        default_factory=dict,
        description="Per conversation id, the next_cursor a previous answer gave: "
        "the page of older messages.",
    )


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
