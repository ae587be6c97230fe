"""The chat routes of the JSON API (mounted in project/api.py): thin views that parse, call one action, shape the answer."""

import json
from functools import partial
from typing import Literal
from uuid import UUID

from django.contrib.auth import aauthenticate
from django.contrib.auth.signals import user_logged_in
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404
from ninja import Header, Path, Query, Router

from .. import actions
from ..errors import ApiError
from ..llm import REASONING, TEXT
from ..llm.catalog import chat_models, model_named
from ..models import Generation, Message
from ..server.admission import get_admission
from ..transports.ai_sdk import message_metadata, ui_message_stream_response
from ..transports.common import resume_position
from ..transports.sse import generation_stream_response, posted_answer_response
from . import reads
from .auth import atoken_issue, live_tokens, token_revoke, tokens_revoke
from .pagination import MAX_ID
from .reads import generation_out, message_out, owned_conversation, owned_generation
from .schemas import (
    CHAT_ID,
    ChatRequestIn,
    ConversationIn,
    ConversationOut,
    ConversationPage,
    ConversationRenameIn,
    ErrorOut,
    GenerationOut,
    MessageIn,
    MessagePage,
    ModelList,
    PostedMessageOut,
    RegenerateIn,
    TokenIn,
    TokenInfoOut,
    TokenOut,
    UIMessageOut,
    clean_title,
)

router = Router()


def errors(*codes: int) -> dict:
    return {code: ErrorOut for code in codes}


# --- Auth ---------------------------------------------------------------------


@router.post("/auth/token", auth=None, response={201: TokenOut, **errors(400, 401, 413, 429)}, tags=["auth"])
async def issue_token(request, payload: TokenIn):
    """Exchange a username and password for a bearer token.

    Failed attempts are counted per username and client address together
    (django-axes, see docs/deploy.md): past the limit that pair gets 429 with
    `Retry-After`, while the same user from another address still logs in.
    """
    user = await aauthenticate(request, username=payload.username, password=payload.password)
    if user is None or not user.is_active:
        # A locked-out pair gets its 429 from AxesMiddleware, which replaces this answer.
        raise ApiError(401, "invalid_credentials", "The username or password is wrong.")
    # A token is a login: axes clears this pair's failures, Django records last_login.
    await user_logged_in.asend(sender=user.__class__, request=request, user=user)
    raw_key, token = await atoken_issue(user=user, name=payload.name)
    return 201, {"token": raw_key, "expires_at": token.expires_at}


@router.delete("/auth/token", response={204: None, **errors(400, 401, 403)}, tags=["auth"])
async def revoke_token(request):
    """Revoke the bearer token this request is authenticated with."""
    token = getattr(request, "api_token", None)
    if token is None:
        raise ApiError(
            400,
            "no_bearer_token",
            "Authenticate this request with the bearer token to revoke; a browser session ends by logging out.",
            "Authorization",
        )
    await token_revoke(token=token)
    return 204, None


@router.get("/auth/tokens", response={200: list[TokenInfoOut], **errors(401)}, tags=["auth"])
async def list_tokens(request):
    """The user's bearer tokens that still work, newest first: name, created, last used, expiry.

    A password change revokes them all (docs/mobile.md).
    """
    current = getattr(request, "api_token", None)
    return [
        {
            "id": token.id,
            "name": token.name,
            "prefix": token.prefix,
            "created_at": token.created_at,
            "last_used_at": token.last_used_at,
            "expires_at": token.expires_at,
            "current": current is not None and token.pk == current.pk,
        }
        async for token in live_tokens(request.auth)
    ]


@router.delete("/auth/tokens/{token_id}", response={204: None, **errors(400, 401, 403, 404)}, tags=["auth"])
async def revoke_one_token(request, token_id: int = Path(..., ge=1, le=MAX_ID)):
    """Revoke one of the user's tokens (a lost phone, say); another user's is a 404."""
    if not await tokens_revoke(user=request.auth, token_id=token_id):
        raise Http404("No such token.")
    return 204, None


@router.delete("/auth/tokens", response={204: None, **errors(401, 403)}, tags=["auth"])
async def revoke_all_tokens(request):
    """Revoke every token of the user, the one this request uses included; browser sessions stay."""
    await tokens_revoke(user=request.auth)
    return 204, None


# --- Conversations -----------------------------------------------------------------

ConversationId = Path(..., ge=1, le=MAX_ID)
CURSOR = Query(
    None,
    max_length=200,
    pattern=r"^[A-Za-z0-9_-]+$",
    description="The `next_cursor` of the previous page, as it was given; anything else is a 400.",
)


@router.get("/conversations", response={200: ConversationPage, **errors(400, 401)}, tags=["conversations"])
async def list_conversations(
    request,
    cursor: str | None = CURSOR,
    limit: int = Query(20, ge=1, le=100),
    q: str | None = Query(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*$",
        description="Only conversations whose title or any message contains this text (case-insensitive).",
    ),
):
    """The user's conversations, most recently active first (`updated_at`, then id).

    A conversation that gets a new message moves to the top; a client paging
    through the list meanwhile learns of it from the event channel.
    """
    for name in ("q", "cursor"):
        if len(request.GET.getlist(name)) > 1:  # Which one would win is not the client's guess to make.
            raise ApiError(400, "invalid", f"{name} may be given only once.", name)
    return await reads.conversation_page(request.auth, q=q, cursor=cursor, limit=limit)


@router.post("/conversations", response={201: ConversationOut, **errors(400, 401, 403, 413)}, tags=["conversations"])
async def create_conversation(request, payload: ConversationIn):
    return 201, await actions.conversation_create(owner=request.auth, title=payload.title)


@router.get(
    "/conversations/{conversation_id}", response={200: ConversationOut, **errors(400, 401, 404)}, tags=["conversations"]
)
async def get_conversation(request, conversation_id: int = ConversationId):
    return await owned_conversation(request, conversation_id)


@router.patch(
    "/conversations/{conversation_id}",
    response={200: ConversationOut, **errors(400, 401, 403, 404, 413)},
    tags=["conversations"],
)
async def rename_conversation(request, payload: ConversationRenameIn, conversation_id: int = ConversationId):
    conversation = await owned_conversation(request, conversation_id)
    return await actions.conversation_rename(conversation=conversation, title=payload.title)


@router.delete(
    "/conversations/{conversation_id}", response={204: None, **errors(400, 401, 403, 404, 409)}, tags=["conversations"]
)
async def delete_conversation(request, conversation_id: int = ConversationId):
    """Delete the conversation with its messages and answers; a running answer is cancelled first."""
    conversation = await owned_conversation(request, conversation_id)
    await actions.conversation_delete(conversation=conversation)
    return 204, None


# --- Messages -----------------------------------------------------------------------


@router.get(
    "/conversations/{conversation_id}/messages",
    response={200: MessagePage, **errors(400, 401, 404)},
    tags=["messages"],
)
async def list_messages(
    request,
    conversation_id: int = ConversationId,
    cursor: str | None = CURSOR,
    limit: int = Query(50, ge=1, le=200),
    order: Literal["asc", "desc"] = Query(
        "asc", description="asc: oldest first; desc: newest first (open a chat at its end)."
    ),
):
    """The conversation's messages; an assistant message names the generation that fills it."""
    conversation = await owned_conversation(request, conversation_id)
    return await reads.message_page(conversation, cursor=cursor, limit=limit, order=order)


IDEMPOTENCY_KEY = Header(
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x20-\x7e]+$",
    description="Any unique string (a UUID) per new message; a retry with the same key and body returns the "
    "original message and generation instead of creating new ones. The same key with another body is a 409.",
)


@router.post(
    "/conversations/{conversation_id}/messages",
    response={200: PostedMessageOut, 201: PostedMessageOut, **errors(400, 401, 403, 404, 409, 413, 429)},
    by_alias=True,
    tags=["messages"],
)
async def post_message(
    request, payload: MessageIn, conversation_id: int = ConversationId, idempotency: str | None = IDEMPOTENCY_KEY
):
    """Post a user message and start the answer.

    The message follows `parent_id` (omitted: the newest message); posting after an earlier answer, or
    with an edited message's parent, starts a branch, and both branches stay (see `parent_id` on messages).
    With `stream: true` (the default) this answers 201 at once; follow `generation.stream_url`
    (SSE) or `generation.ws_url` (WebSocket). With `stream: true` and `Accept: text/event-stream`,
    the 201 is that SSE stream itself, one request instead of two: first a `posted` event holding
    this JSON body, then the tokens as `stream_url` sends them (resume there by `Last-Event-ID`).
    With `stream: false` it waits for the whole answer and answers 200 with it (the non-streaming
    fallback); `generation.json` then holds the parsed answer for `response_format: "json"`.
    """
    parent_id = payload.parent_id if "parent_id" in payload.model_fields_set else actions.NEWEST
    post = partial(
        actions.message_post,
        conversation_id=conversation_id,
        owner_id=request.auth.pk,
        content=payload.content,
        response_format=payload.response_format,
        model=payload.model,
        parent_id=parent_id,
        multitask=payload.multitask,
        idempotency=actions.Idempotency.of(
            idempotency,
            "message_post",
            conversation=conversation_id,
            **payload.model_dump(exclude={"parent_id"}),
            parent_id=parent_id,
        ),
        status_code=201 if payload.stream else 200,
    )
    if payload.stream and "text/event-stream" in request.headers.get("Accept", ""):
        return await posted_answer_response(request, post, posted_body)
    return await answer_out(await post())


async def answer_out(answer: actions.Answer) -> tuple[int, dict]:
    generation = answer.generation
    if answer.status_code == 201:
        return 201, {"message": message_out(answer.message), "generation": await generation_out(generation, with_text=False)}
    generation = await actions.generation_wait(generation=generation)
    return 200, {"message": message_out(answer.message), "generation": await generation_out(generation)}


async def posted_body(answer: actions.Answer) -> str:
    """The JSON the POST would have answered with: the stream's `posted` event."""
    _, body = await answer_out(answer)
    return json.dumps(PostedMessageOut.model_validate(body).model_dump(by_alias=True), cls=DjangoJSONEncoder)


# --- Models ---------------------------------------------------------------------------


@router.get("/models", response={200: ModelList, **errors(401)}, tags=["models"])
async def list_models(request):
    """The models a message or a regenerate may ask for (`model`); the first is the default."""
    return {"items": chat_models()}


# --- Generations ---------------------------------------------------------------------


@router.get(
    "/generations/{generation_id}",
    response={200: GenerationOut, **errors(400, 401, 404)},
    by_alias=True,
    tags=["generations"],
)
async def get_generation(request, generation_id: UUID):
    """Status, the text so far, the last persisted sequence number, usage and timings."""
    return await generation_out(await owned_generation(request, generation_id))


@router.post(
    "/generations/{generation_id}/cancel",
    response={200: GenerationOut, **errors(400, 401, 403, 404)},
    by_alias=True,
    tags=["generations"],
)
async def cancel_generation(request, generation_id: UUID):
    """Stop the generation; a finished one is returned as it is."""
    generation = await owned_generation(request, generation_id)
    return await generation_out(await actions.generation_cancel(generation=generation))


@router.post(
    "/generations/{generation_id}/continue",
    response={201: GenerationOut, **errors(400, 401, 403, 404, 409, 429)},
    by_alias=True,
    tags=["generations"],
)
async def continue_generation(request, generation_id: UUID):
    """Go on from an interrupted or failed answer's partial text, in the same message, sequence numbers going on.

    Returns the continuation: a new generation whose `first_seq` is the old one's `last_seq` + 1. Follow its
    stream with `Last-Event-ID` = the old `last_seq` to read one seamless answer. A generation still running,
    complete (unless it stopped at its token limit), already continued, or with no partial text is a 409
    (`not_continuable`, with the reason).
    """
    generation = await owned_generation(request, generation_id)
    return 201, await generation_out(await actions.generation_continue(generation=generation))


@router.post(
    "/generations/{generation_id}/regenerate",
    response={200: PostedMessageOut, 201: PostedMessageOut, **errors(400, 401, 403, 404, 409, 413, 429)},
    by_alias=True,
    tags=["generations"],
)
async def regenerate_generation(
    request, generation_id: UUID, payload: RegenerateIn, idempotency: str | None = IDEMPOTENCY_KEY
):
    """Answer the same user message again, as a new generation in a new assistant message.

    The new answer is a version beside the old one (both have the user message as `parent_id`). A generation still running is a 409:
    cancel it first. `message` in the answer is the user message being answered again.
    """
    generation = await owned_generation(request, generation_id)
    answer = await actions.generation_regenerate(
        generation=generation,
        model=payload.model,
        idempotency=actions.Idempotency.of(
            idempotency, "generation_regenerate", generation=generation.pk, **payload.model_dump()
        ),
        status_code=201 if payload.stream else 200,
    )
    return await answer_out(answer)


@router.get(
    "/generations/{generation_id}/stream",
    response={200: None, **errors(400, 401, 404)},
    tags=["generations"],
    openapi_extra={
        "description": "Server-Sent Events: `token` events (and `json` events for a JSON answer), then one of "
        "`done`, `interrupted`, `failed`, `cancelled`. Resume with the `Last-Event-ID` header or "
        "`?last_event_id=`. See [the wire protocol](/api/guide/protocol.md).",
        "responses": {200: {"description": "An SSE stream", "content": {"text/event-stream": {}}}},
    },
)
async def stream_generation(request, generation_id: UUID):
    generation = await owned_generation(request, generation_id)
    return await generation_stream_response(request, generation)


# --- AI SDK chats (docs/ai-sdk.md) -----------------------------------------------------

ChatId = Path(..., max_length=100, pattern=CHAT_ID)
UI_MESSAGE_STREAM = {
    "description": "The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`): `start`, "
    "`start-step`, `reasoning-start/-delta/-end`, `text-start/-delta/-end`, then `error` or `abort` if the answer "
    "did not complete, `finish-step`, `finish` and `data: [DONE]`; every event has our `id:`. See "
    "[docs/ai-sdk.md](/api/guide/ai-sdk.md).",
    "content": {"text/event-stream": {}},
}


@router.post(
    "/ai-sdk/chat",
    response={200: None, **errors(400, 401, 403, 404, 409, 413, 429)},
    tags=["ai-sdk"],
    openapi_extra={"responses": {200: UI_MESSAGE_STREAM}},
)
async def ai_sdk_chat(request, payload: ChatRequestIn):
    """A chat turn of the AI SDK's `useChat` (`DefaultChatTransport`): its answer as a UI message stream.

    `submit-message` posts the last message (the new user message) to the chat `id`, created on its first
    message; `regenerate-message` makes a new version of the answer `messageId`. The answer is an ordinary
    generation: it runs on if the client goes; resume with `GET /api/ai-sdk/chat/{id}/stream`.
    """
    model_named(payload.model)  # An unknown model is a 400 before the chat is created.
    admission = get_admission()
    slot = await admission.open_stream(request.auth.pk)  # Refused (429) before anything is created.
    try:
        if payload.trigger == "submit-message":
            client_id, content = payload.new_message()
            conversation = await actions.chat_open(owner=request.auth, chat_id=payload.id, title=chat_title(content))
            answer = await actions.chat_submit(
                conversation=conversation,
                client_id=client_id,
                content=content,
                model=payload.model,
                message_id=payload.messageId,
            )
        else:
            conversation = await actions.chat_conversation(owner=request.auth, chat_id=payload.id)
            answer = await actions.chat_regenerate(
                conversation=conversation, message_id=payload.messageId, model=payload.model
            )
    except BaseException:
        await admission.close_stream(slot)
        raise
    return await ui_message_stream_response(request, answer.generation, slot=slot)


def chat_title(content: str) -> str:
    """The first line, as the chat page titles a conversation."""
    line = clean_title(content.strip().split("\n")[0])
    return f"{line[:57]}…" if len(line) > 60 else line


@router.get(
    "/ai-sdk/chat/{chat_id}/stream",
    response={200: None, 204: None, **errors(400, 401, 404)},
    tags=["ai-sdk"],
    openapi_extra={"responses": {200: UI_MESSAGE_STREAM}},
)
async def ai_sdk_resume(request, chat_id: str = ChatId):
    """The AI SDK's resume (`resume: true`, `reconnectToStream`): 204 when no answer is running.

    Else the running answer's UI message stream from its start, as the SDK rebuilds the message; with
    `Last-Event-ID`, exactly what follows that event (a part it cut is opened again).
    """
    conversation = await actions.chat_conversation(owner=request.auth, chat_id=chat_id)
    generation = await actions.chat_running_generation(conversation=conversation)
    if generation is None:
        return 204, None
    raw = request.headers.get("Last-Event-ID", "")
    after_seq = resume_position(raw, generation, field="Last-Event-ID") if raw.strip() else 0
    return await ui_message_stream_response(request, generation, after_seq=after_seq)


@router.get(
    "/ai-sdk/chat/{chat_id}/messages",
    response={200: list[UIMessageOut], **errors(400, 401, 404)},
    exclude_none=True,
    tags=["ai-sdk"],
)
async def ai_sdk_messages(request, chat_id: str = ChatId):
    """The chat's messages as UIMessages, oldest first (`useChat`'s `messages`): the branch of its newest message.

    An answer still running has no text here yet: `resume: true` streams it.
    """
    conversation = await actions.chat_conversation(owner=request.auth, chat_id=chat_id)
    messages = await actions.chat_branch(conversation=conversation)
    answering = {}
    generations = (
        Generation.objects.filter(assistant_message_id__in=[m.id for m in messages if m.role == Message.Role.ASSISTANT])
        .order_by("first_seq", "created_at")
        .values("id", "status", "assistant_message_id")
    )
    async for row in generations:
        answering[row["assistant_message_id"]] = row  # A continuation's, the latest, speaks for the message.
    return [ui_message(message, answering.get(message.id)) for message in messages]


def ui_message(message: Message, generation: dict | None) -> dict:
    if message.role != Message.Role.ASSISTANT:
        # A user message keeps the id its client gave it, so the client's copy and this one are one message.
        message_id = message.client_id or str(message.id)
        return {"id": message_id, "role": message.role, "parts": [{"type": "text", "text": message.content}]}
    parts = [{"type": "step-start"}]
    for kind, text in ((REASONING, message.reasoning), (TEXT, message.content)):
        if text:
            parts.append({"type": kind, "text": text, "state": "done"})
    metadata = message_metadata(generation["id"], generation["status"]) if generation else None
    return {"id": str(message.id), "role": message.role, "parts": parts, "metadata": metadata}


@router.post("/ai-sdk/chat/{chat_id}/cancel", response={204: None, **errors(400, 401, 403, 404)}, tags=["ai-sdk"])
async def ai_sdk_cancel(request, chat_id: str = ChatId):
    """Stop the chat's running answer, if any: wire the SDK's `stop()` here, which only disconnects."""
    conversation = await actions.chat_conversation(owner=request.auth, chat_id=chat_id)
    generation = await actions.chat_running_generation(conversation=conversation)
    if generation is not None:
        await actions.generation_cancel(generation=generation)
    return 204, None
