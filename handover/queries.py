"""Reads the agent apps' API makes before a control event (web/agent_api.py)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models.curation import User
from models.entities import Conversation


def is_active_agent(session: Session, user_id: int) -> bool:
    """Whether `user_id` is a console user who may act (exists and is active)."""
    user = session.get(User, user_id)
    return user is not None and user.active


def conversation_exists(session: Session, conversation_id: int) -> bool:
    """Whether there is a conversation `conversation_id`."""
    return session.get(Conversation, conversation_id) is not None
