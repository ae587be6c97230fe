"""Request and response schemas of the JSON API; inputs and outputs kept apart."""

from datetime import datetime
from typing import Literal
from uuid import UUID

from django.conf import settings
from ninja import Schema
from pydantic import Field, field_validator


class ConversationIn(Schema):
    title: str = Field("", max_length=200)


class ConversationOut(Schema):
    id: int
    title: str
    created_at: datetime
    updated_at: datetime


class MessageIn(Schema):
    content: str = Field(min_length=1)
    stream: bool = True
    response_format: Literal["text", "json"] = "text"

    @field_validator("content")
    @classmethod
    def content_fits(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content must not be blank")
        limit = settings.CHAT_MAX_PROMPT_CHARS
        if len(content) > limit:
            raise ValueError(f"content is {len(content)} characters; the limit is {limit}")
        return content


class MessageOut(Schema):
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: datetime


class GenerationOut(Schema):
    id: UUID
    conversation_id: int
    user_message_id: int
    assistant_message_id: int
    status: str
    provider: str
    model: str
    response_format: str
    text: str | None = None
    first_seq: int
    last_seq: int
    token_count: int
    finish_reason: str
    reason: str
    error: str
    usage: dict
    created_at: datetime
    first_token_at: datetime | None
    finished_at: datetime | None
    stream_url: str


class PostedMessageOut(Schema):
    message: MessageOut
    generation: GenerationOut
