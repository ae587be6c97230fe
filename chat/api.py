"""The chat routes of the JSON API (mounted in project/api.py): thin views that parse, call one action, shape the answer."""

import json
from datetime import datetime
from functools import partial
from typing import Literal
from uuid import UUID

from django.contrib.auth import aauthenticate
from django.contrib.auth.signals import user_logged_in
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Exists, OuterRef, Q
from django.http import Http404, StreamingHttpResponse
from ninja import Header, Path, Query, Router

from . import actions
from .admission import get_admission
from .answers import persisted_answer
from .auth import atoken_issue, token_revoke
from .db import db_work
from .errors import ApiError
from .jsonstream import InvalidJson, parse_document
from .llm.catalog import chat_models
from .models import Conversation, Generation, Message
from .pagination import MAX_ID, decode_cursor, encode_cursor, valid_id
from .schemas import (
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
    TokenOut,
)
from .sse import encode
from .transports.common import parse_coalesce_s
from .transports.sse import generation_stream_response

router = Router()


def errors(*codes: int) -> dict:
    return {code: ErrorOut for code in codes}


# --- Lookups that enforce ownership: another user's object is a 404 -------


async def owned_conversation(request, conversation_id: int) -> Conversation:
    conversation = await Conversation.objects.filter(pk=conversation_id, owner=request.auth).afirst()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


async def owned_generation(request, generation_id: UUID) -> Generation:
    generation = await Generation.objects.filter(pk=generation_id, conversation__owner=request.auth).afirst()
    if generation is None:
        raise Http404("No such generation.")
    return generation


def stream_urls(generation_id) -> dict:
    return {"stream_url": f"/api/generations/{generation_id}/stream", "ws_url": f"/ws/generations/{generation_id}/"}


def message_out(message: Message) -> dict:
    """A message as MessageOut, without its answer's fields: a dict, which ninja validates far faster
    than a model instance (it looks the missing fields up through Django's template variables)."""
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "created_at": message.created_at,
        "parent_id": message.parent_id,
    }


def milliseconds(start: datetime | None, end: datetime | None) -> int | None:
    return round((end - start).total_seconds() * 1000) if start and end else None


async def generation_out(generation: Generation, *, with_text: bool = True) -> dict:
    data = {
        field: getattr(generation, field)
        for field in GenerationOut.model_fields
        if hasattr(generation, field) and field not in ("text", "reasoning", "reason", "stream_url", "ws_url", "timings")
    }
    data["reason"] = generation.interrupt_reason
    data.update(stream_urls(generation.id))
    data["timings"] = {
        "queued_ms": milliseconds(generation.created_at, generation.first_token_at),
        "total_ms": milliseconds(generation.created_at, generation.finished_at),
    }
    data["json"] = None
    if with_text:
        answer, data["last_seq"] = await db_work(persisted_answer)(generation)
        data["text"], data["reasoning"] = answer.text, answer.reasoning
        if generation.response_format == "json" and generation.is_terminal:
            try:
                data["json"] = parse_document(data["text"])
            except InvalidJson:
                pass
    return data


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
    conversations = Conversation.objects.filter(owner=request.auth).order_by("-updated_at", "-id")
    if q is not None and q.strip():
        q = q.strip()
        matching_message = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=q)
        conversations = conversations.filter(Q(title__icontains=q) | Exists(matching_message))
    if cursor:
        updated_at, last_id = decode_cursor(cursor, "c", 2)
        try:
            updated_at = datetime.fromisoformat(updated_at)
        except (TypeError, ValueError):
            updated_at = None
        if updated_at is None or updated_at.tzinfo is None:
            raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out for this list.", "cursor")
        last_id = valid_id(last_id)
        conversations = conversations.filter(Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, id__lt=last_id))
    rows = [c async for c in conversations[: limit + 1]]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor("c", rows[-1].updated_at.isoformat(), rows[-1].id)
    return {"items": rows, "next_cursor": next_cursor}


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
    messages = Message.objects.filter(conversation=conversation).order_by("id" if order == "asc" else "-id")
    if cursor:
        (last_id,) = decode_cursor(cursor, "m" + order, 1)
        last_id = valid_id(last_id)
        messages = messages.filter(id__gt=last_id) if order == "asc" else messages.filter(id__lt=last_id)
    rows = [m async for m in messages[: limit + 1]]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor("m" + order, rows[-1].id)
    answering = {}
    assistant_ids = [m.id for m in rows if m.role == Message.Role.ASSISTANT]
    if assistant_ids:
        # A continuation fills the same message; the latest generation speaks for it.
        generations = (
            Generation.objects.filter(assistant_message_id__in=assistant_ids)
            .order_by("first_seq", "created_at")
            .values(
                "id", "status", "model", "response_format", "reasoning_ms", "assistant_message_id", "user_message_id"
            )
        )
        async for row in generations:
            answering[row["assistant_message_id"]] = row
    items = []
    for message in rows:
        item = message_out(message)
        if row := answering.get(message.id):
            item["reply_to"] = row["user_message_id"]
            item["generation"] = {
                "id": row["id"],
                "status": row["status"],
                "model": row["model"],
                "response_format": row["response_format"],
                "reasoning_ms": row["reasoning_ms"],
                **stream_urls(row["id"]),
            }
        items.append(item)
    return {"items": items, "next_cursor": next_cursor}


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
        return await answer_stream(request, post)
    return await answer_out(await post())


async def answer_out(answer: actions.Answer) -> tuple[int, dict]:
    generation = answer.generation
    if answer.status_code == 201:
        return 201, {"message": message_out(answer.message), "generation": await generation_out(generation, with_text=False)}
    generation = await actions.generation_wait(generation=generation)
    return 200, {"message": message_out(answer.message), "generation": await generation_out(generation)}


async def answer_stream(request, post) -> StreamingHttpResponse:
    """The new answer's SSE stream as the response to the POST that asked for it, after a `posted` event."""
    admission = get_admission()
    parse_coalesce_s(request.GET.get("coalesce_ms"))  # A bad window is a 400 before anything is created.
    slot = await admission.open_stream(request.auth.pk)  # Refused (429) before anything is created.
    try:
        answer = await post()
        generation = answer.generation
        _, body = await answer_out(answer)
        posted = PostedMessageOut.model_validate(body)
    except BaseException:
        await admission.close_stream(slot)
        raise
    first = encode(json.dumps(posted.model_dump(by_alias=True), cls=DjangoJSONEncoder), event="posted")
    response = await generation_stream_response(request, generation, slot=slot, status=201, first=first)
    response["Location"] = f"/api/generations/{generation.id}"
    return response


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
