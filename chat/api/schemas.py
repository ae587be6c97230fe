"""Request and response schemas of the JSON API; inputs and outputs kept apart."""

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.conf import settings
from ninja import Schema
from pydantic import ConfigDict, Field, StrictBool, StrictInt, field_validator

from ..errors import ApiError
from ..llm.catalog import chat_models
from .pagination import MAX_ID

NO_NUL = "^[^\\x00]*$"


def declare_no_nul(schema: dict) -> None:
    """Say in the spec what `no_nul` checks, so that clients (and schemathesis) know it."""
    for field in schema.get("properties", {}).values():
        for variant in field.get("anyOf", [field]):
            if variant.get("type") == "string" and not {"pattern", "enum", "format", "const"} & variant.keys():
                variant["pattern"] = NO_NUL


class StrictInput(Schema):
    """Unknown fields are a 400, so a typo in a field name is not silently ignored.

    No text field may hold a NUL character: PostgreSQL cannot store one (a 500
    there, silently stored on SQLite), so it is a 400 on every backend.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=declare_no_nul)

    @field_validator("*")
    @classmethod
    def no_nul(cls, value):
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL (U+0000) characters")
        return value


# --- Errors -----------------------------------------------------------------------


class ErrorDetail(Schema):
    code: str = Field(description="Stable, machine-readable: `not_found`, `invalid`, `idempotency_conflict`, ...")
    message: str = Field(description="For people; may change between versions.")
    field: str | None = Field(None, description="The input field (or header) at fault, if any.")


class ErrorOut(Schema):
    error: ErrorDetail


# --- Auth -------------------------------------------------------------------------


class TokenIn(StrictInput):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)
    name: str = Field("", max_length=100, description="A label for the device, shown to operators.")


class TokenOut(Schema):
    token: str = Field(description="Send as `Authorization: Bearer <token>`. Shown once; only its hash is stored.")
    expires_at: datetime | None = Field(description="When the token stops working; null if it never expires.")


class TokenInfoOut(Schema):
    id: int
    name: str = Field(description="The label given when the token was issued.")
    prefix: str = Field(description="The key's first characters, to tell tokens apart; the key itself is never shown again.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="To within 5 minutes; null if never used.")
    expires_at: datetime | None
    current: bool = Field(description="Whether this request is authenticated with this token.")


# --- Conversations ------------------------------------------------------------------


def clean_title(title: str) -> str:
    """One line, single spaces: titles show in narrow lists."""
    return " ".join(title.split())


class ConversationIn(StrictInput):
    title: str = Field("", max_length=200)

    @field_validator("title")
    @classmethod
    def one_line(cls, title: str) -> str:
        return clean_title(title)


class ConversationRenameIn(ConversationIn):
    title: str = Field(max_length=200)


class ConversationOut(Schema):
    id: int
    title: str
    model: str = Field(description="The id of the model its last message asked for (GET /api/models); \"\" before the first.")
    created_at: datetime
    updated_at: datetime


class ConversationPage(Schema):
    items: list[ConversationOut]
    next_cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page.")


# --- Messages -------------------------------------------------------------------------


def model_field() -> Any:
    """`model` on a message or regenerate: the spec lists the ids this deployment configures."""

    def configured_ids(schema: dict) -> None:
        schema["enum"] = [m.id for m in chat_models()] + [None]

    return Field(
        None,
        max_length=100,
        description="A model id from GET /api/models; omitted: the conversation's last model.",
        json_schema_extra=configured_ids,
    )


class MessageIn(StrictInput):
    content: str = Field(min_length=1)
    stream: StrictBool = Field(
        True, description="false: wait for the whole answer and return it (the non-streaming fallback)."
    )
    response_format: Literal["text", "json"] = Field(
        "text", description='"json": the answer is one JSON document, and the stream carries `json` events.'
    )
    model: str | None = model_field()
    parent_id: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="The answer (an assistant message of this conversation) the message follows. Omitted: the "
        "conversation's newest message. null: a new first message. To edit a message, post the new text with the "
        "edited message's parent_id: both versions stay, as branches.",
    )
    multitask: Literal["reject", "enqueue", "interrupt"] | None = Field(
        None,
        description="If an answer is still being generated in the conversation: `reject` (409 answer_running), "
        "`enqueue` (this answer waits, `queued`, and starts when that one has ended), `interrupt` (that one is "
        "stopped, keeping its partial text, then this one is answered). Omitted: answered at once, beside it.",
    )

    @field_validator("content")
    @classmethod
    def content_fits(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content must not be blank")
        limit = settings.CHAT_MAX_PROMPT_CHARS
        if len(content) > limit:
            raise ValueError(f"content is {len(content)} characters; the limit is {limit}")
        return content


class GenerationRef(Schema):
    id: UUID
    status: str
    model: str
    response_format: str
    reasoning_ms: int = Field(0, description="How long the model reasoned before and between the parts of its text.")
    stream_url: str
    ws_url: str


class MessageOut(Schema):
    id: int
    conversation_id: int
    role: str
    content: str = Field(description="An assistant message is empty while its answer is generated; follow its generation.")
    reasoning: str = Field(
        "", description="An assistant message's reasoning (the model's thinking before and between its text), apart from it."
    )
    created_at: datetime
    parent_id: int | None = Field(
        description="The message this one follows (null for a first message). Messages with one parent are "
        "versions of one another: edits of a user message, or answers to the same user message."
    )
    reply_to: int | None = Field(None, description="For an assistant message: the user message it answers.")
    generation: GenerationRef | None = Field(
        None, description="For an assistant message: the (latest) generation that fills it."
    )


class MessagePage(Schema):
    items: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page.")


# --- Generations ------------------------------------------------------------------------


class Timings(Schema):
    queued_ms: int | None = Field(description="From creation to the first token.")
    total_ms: int | None = Field(description="From creation to the end; null while running.")


class GenerationOut(Schema):
    id: UUID
    conversation_id: int
    user_message_id: int
    assistant_message_id: int
    status: Literal["queued", "streaming", "complete", "interrupted", "failed", "cancelled"]
    provider: str
    model: str
    response_format: str
    text: str | None = Field(None, description="The answer so far (the complete answer once ended).")
    reasoning: str | None = Field(None, description="The answer's reasoning so far, apart from its text (\"\" if none).")
    json_value: Any = Field(
        None,
        alias="json",
        description="response_format json, once complete: the parsed answer; null if it is not valid JSON.",
    )
    first_seq: int
    last_seq: int = Field(description="The last persisted token's sequence number: resume the stream from it.")
    token_count: int
    reasoning_ms: int = Field(description="How long the model spent reasoning (its `reasoning` parts), in ms; 0 if it did not.")
    runs: int = Field(description="Runs it took: 1, or more when workers handed it on (docs/protocol.md).")
    finish_reason: str = Field(description='"stop", "length" or "invalid_json" once complete; else "".')
    reason: str = Field(description="Why it was interrupted: upstream_stall, upstream_error, server_shutdown, ...")
    error: str
    usage: dict
    timings: Timings
    created_at: datetime
    first_token_at: datetime | None
    finished_at: datetime | None
    stream_url: str = Field(description="Server-Sent Events: see docs/protocol.md.")
    ws_url: str = Field(description="The same events over a WebSocket (a path; use ws:// or wss://).")


class PostedMessageOut(Schema):
    message: MessageOut
    generation: GenerationOut


class RegenerateIn(StrictInput):
    stream: StrictBool = Field(True, description="false: wait for the whole new answer and return it.")
    model: str | None = model_field()


# --- Models -----------------------------------------------------------------------------


class ModelOut(Schema):
    id: str = Field(description="What to send as `model`.")
    label: str
    provider: str
    model: str = Field(description="The name the provider is given.")


class ModelList(Schema):
    items: list[ModelOut] = Field(description="The models a user can pick; the first is the default.")


# --- AI SDK chats (docs/ai-sdk.md) ------------------------------------------------------

# A chat id as a URL path segment takes it (the SDK puts it in the resume URL): no "/", no dot segments.
CHAT_ID = r"^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,99}$"


class UIMessagePartIn(Schema):
    """A part of a UIMessage: of the client's messages only the text parts of the new one are read."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=100)
    text: str | None = None


class UIMessageIn(Schema):
    model_config = ConfigDict(extra="allow")
    id: str = Field(max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[UIMessagePartIn]


class ChatRequestIn(Schema):
    """The body the AI SDK's `DefaultChatTransport` sends, plus `model` (its `body` option); other fields are ignored."""

    id: str = Field(
        max_length=100,
        pattern=CHAT_ID,
        description="The client's chat id: a chat of this user's, created by its first message.",
    )
    messages: list[UIMessageIn] = Field(
        description="The client's messages. Only the last, the new user message, is read (submit-message): the "
        "history is the server's."
    )
    trigger: Literal["submit-message", "regenerate-message"]
    messageId: str | None = Field(
        None,
        max_length=200,
        description="regenerate-message: the answer to make a new version of (default: the newest). "
        "submit-message: the user message being edited (its id in the client or the server's; the edit is a branch).",
    )
    model: str | None = model_field()

    def new_message(self) -> tuple[str, str]:
        """The new user message's id and text (its text parts, joined): a 400 when there is none, or it is too long."""
        if not self.messages or self.messages[-1].role != "user":
            raise ApiError(400, "invalid", "submit-message needs the new user message last in messages.", "messages")
        text = "\n".join(part.text for part in self.messages[-1].parts if part.type == "text" and part.text)
        limit = settings.CHAT_MAX_PROMPT_CHARS
        if not text.strip():
            raise ApiError(400, "invalid", "The new user message has no text part.", "messages")
        if len(text) > limit:
            raise ApiError(400, "invalid", f"The message is {len(text)} characters; the limit is {limit}.", "messages")
        if "\x00" in text:
            raise ApiError(400, "invalid", "The message must not contain NUL (U+0000) characters.", "messages")
        return self.messages[-1].id, text


class UIMessageOut(Schema):
    id: str = Field(
        description="A user message's: the id its client gave it (else the server's). An answer's: the server's, "
        "the `start` chunk's messageId."
    )
    role: Literal["user", "assistant", "system"]
    parts: list[dict] = Field(
        description='`{"type": "text", "text"}` and `{"type": "reasoning", "text"}`, after a `step-start` in an answer.'
    )
    metadata: dict | None = Field(None, description="An answer's: `generationId` and `status`.")
