"""The JSON API under /api/: thin views that parse, call one action, and shape the answer."""

import base64
import binascii
import json
import logging
from datetime import datetime
from pathlib import Path as FilePath
from typing import Literal
from uuid import UUID

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth import aauthenticate
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from ninja import Header, NinjaAPI, Path, Query, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError

from . import actions
from .auth import BearerAuth, SessionAuth, atoken_issue, token_revoke
from .errors import ApiError, error_body
from .jsonstream import InvalidJson, parse_document
from .models import Conversation, Generation, Message
from .schemas import (
    ConversationIn,
    ConversationOut,
    ConversationPage,
    ConversationRenameIn,
    ErrorOut,
    GenerationOut,
    MessageIn,
    MessagePage,
    PostedMessageOut,
    RegenerateIn,
    TokenIn,
    TokenOut,
)
from .answers import persisted_answer
from .db import db_work
from .transports.sse import generation_stream_response

logger = logging.getLogger(__name__)

DOCS_DIR = FilePath(settings.BASE_DIR) / "docs"
GUIDES = {"protocol.md", "mobile.md"}

DESCRIPTION = """\
Conversations with an LLM whose answers stream over Server-Sent Events and WebSockets and resume by event id.

**Authentication.** Mobile clients: `POST /api/auth/token` with a username and password, then send
`Authorization: Bearer <token>`. Browsers: the Django session, with the `X-CSRFToken` header on unsafe methods.

**Streams** are not JSON and are described in [the wire protocol](/api/guide/protocol.md):
`GET /api/generations/{id}/stream` (SSE, resumable with `Last-Event-ID`), the same events over a
WebSocket at `/ws/generations/{id}/`, and `json` events for `response_format: "json"`.

**Live events.** `GET /api/events/` is the user's own Server-Sent Events channel: conversation created,
renamed and deleted, and generation started, completed, interrupted, failed and cancelled. It resumes by its
own `Last-Event-ID`. See [the mobile guide](/api/guide/mobile.md).

**Retries.** `POST` of a message (and regenerate) honours an `Idempotency-Key` header.

**Errors** always have the shape `{"error": {"code", "message", "field"}}`.
"""

api = NinjaAPI(
    title="Chat streaming API",
    version="1",
    description=DESCRIPTION,
    auth=[BearerAuth(), SessionAuth()],
    urls_namespace="api",
    # Served from ninja's bundled static files; no validator badge, which would call out to swagger.io.
    docs=Swagger(settings={"validatorUrl": None, "persistAuthorization": True}),
)

# Postgres and SQLite both store ids as signed 64-bit integers.
MAX_ID = 2**63 - 1


def errors(*codes: int) -> dict:
    return {code: ErrorOut for code in codes}


# --- Errors: one shape everywhere ------------------------------------------


@api.exception_handler(ApiError)
def on_api_error(request, exc: ApiError):
    response = api.create_response(request, error_body(exc.code, exc.message, exc.field), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    elif exc.status == 429:
        response["Retry-After"] = "5" if exc.code == "too_many_generations" else "60"
    return response


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    location = [
        str(part) for part in first.get("loc", ()) if part not in ("body", "payload", "query", "path", "header")
    ]
    message = first.get("msg", "invalid input").removeprefix("Value error, ")
    return api.create_response(request, error_body("invalid", message, ".".join(location) or None), status=400)


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    code = "malformed_json" if exc.status_code == 400 else "error"
    return api.create_response(request, error_body(code, str(exc)), status=exc.status_code)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc):
    return api.create_response(request, error_body("unauthenticated", "Log in or send a bearer token."), status=401)


@api.exception_handler(Http404)
def on_not_found(request, exc):
    return api.create_response(request, error_body("not_found", str(exc) or "Not found."), status=404)


@api.exception_handler(RequestDataTooBig)
def on_body_too_big(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return api.create_response(
        request, error_body("body_too_large", f"The request body is larger than {limit} bytes."), status=413
    )


@api.exception_handler(Exception)
def on_unexpected(request, exc):
    logger.exception("unexpected error in %s %s", request.method, request.path)
    return api.create_response(request, error_body("internal_error", "Something went wrong on our side."), status=500)


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


def milliseconds(start: datetime | None, end: datetime | None) -> int | None:
    return round((end - start).total_seconds() * 1000) if start and end else None


async def generation_out(generation: Generation, *, with_text: bool = True) -> dict:
    data = {
        field: getattr(generation, field)
        for field in GenerationOut.model_fields
        if hasattr(generation, field) and field not in ("text", "reason", "stream_url", "ws_url", "timings")
    }
    data["reason"] = generation.interrupt_reason
    data.update(stream_urls(generation.id))
    data["timings"] = {
        "queued_ms": milliseconds(generation.created_at, generation.first_token_at),
        "total_ms": milliseconds(generation.created_at, generation.finished_at),
    }
    data["json"] = None
    if with_text:
        data["text"], data["last_seq"] = await db_work(persisted_answer)(generation)
        if generation.response_format == "json" and generation.is_terminal:
            try:
                data["json"] = parse_document(data["text"])
            except InvalidJson:
                pass
    return data


# --- Cursors: opaque to clients, keyset pagination underneath -------------------


def encode_cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(raw: str, kind: str, length: int) -> list:
    """The `length` parts of a cursor this API gave out for `kind`; anything else is a 400."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(parts, list) and len(parts) == length + 1 and parts[0] == kind:
            return parts[1:]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out for this list.", "cursor")


def valid_id(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out for this list.", "cursor")
    return value


# --- Auth ---------------------------------------------------------------------


@api.post("/auth/token", auth=None, response={201: TokenOut, **errors(400, 401, 413, 429)}, tags=["auth"])
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


@api.delete("/auth/token", response={204: None, **errors(400, 401, 403)}, tags=["auth"])
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


@api.get("/conversations", response={200: ConversationPage, **errors(400, 401)}, tags=["conversations"])
async def list_conversations(
    request, cursor: str | None = CURSOR, limit: int = Query(20, ge=1, le=100)
):
    """The user's conversations, most recently active first (`updated_at`, then id).

    A conversation that gets a new message moves to the top; a client paging
    through the list meanwhile learns of it from the event channel.
    """
    conversations = Conversation.objects.filter(owner=request.auth).order_by("-updated_at", "-id")
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


@api.post("/conversations", response={201: ConversationOut, **errors(400, 401, 403, 413)}, tags=["conversations"])
async def create_conversation(request, payload: ConversationIn):
    return 201, await actions.conversation_create(owner=request.auth, title=payload.title)


@api.get(
    "/conversations/{conversation_id}", response={200: ConversationOut, **errors(400, 401, 404)}, tags=["conversations"]
)
async def get_conversation(request, conversation_id: int = ConversationId):
    return await owned_conversation(request, conversation_id)


@api.patch(
    "/conversations/{conversation_id}",
    response={200: ConversationOut, **errors(400, 401, 403, 404, 413)},
    tags=["conversations"],
)
async def rename_conversation(request, payload: ConversationRenameIn, conversation_id: int = ConversationId):
    conversation = await owned_conversation(request, conversation_id)
    return await actions.conversation_rename(conversation=conversation, title=payload.title)


@api.delete(
    "/conversations/{conversation_id}", response={204: None, **errors(400, 401, 403, 404, 409)}, tags=["conversations"]
)
async def delete_conversation(request, conversation_id: int = ConversationId):
    """Delete the conversation with its messages and answers; a running answer is cancelled first."""
    conversation = await owned_conversation(request, conversation_id)
    await actions.conversation_delete(conversation=conversation)
    return 204, None


# --- Messages -----------------------------------------------------------------------


@api.get(
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
            .values("id", "status", "assistant_message_id", "user_message_id")
        )
        async for row in generations:
            answering[row["assistant_message_id"]] = row
    items = []
    for message in rows:
        item = {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at,
        }
        if row := answering.get(message.id):
            item["reply_to"] = row["user_message_id"]
            item["generation"] = {"id": row["id"], "status": row["status"], **stream_urls(row["id"])}
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


@api.post(
    "/conversations/{conversation_id}/messages",
    response={200: PostedMessageOut, 201: PostedMessageOut, **errors(400, 401, 403, 404, 409, 413, 429)},
    by_alias=True,
    tags=["messages"],
)
async def post_message(
    request, payload: MessageIn, conversation_id: int = ConversationId, idempotency: str | None = IDEMPOTENCY_KEY
):
    """Post a user message and start the answer.

    With `stream: true` (the default) this answers 201 at once; follow `generation.stream_url`
    (SSE) or `generation.ws_url` (WebSocket). With `stream: false` it waits for the whole answer
    and answers 200 with it (the non-streaming fallback); `generation.json` then holds the parsed
    answer for `response_format: "json"`.
    """
    conversation = await owned_conversation(request, conversation_id)
    answer = await actions.message_post(
        conversation=conversation,
        content=payload.content,
        response_format=payload.response_format,
        idempotency=actions.Idempotency.of(
            idempotency, "message_post", conversation=conversation.pk, **payload.model_dump()
        ),
        status_code=201 if payload.stream else 200,
    )
    return await answer_out(answer)


async def answer_out(answer: actions.Answer) -> tuple[int, dict]:
    generation = answer.generation
    if answer.status_code == 201:
        return 201, {"message": answer.message, "generation": await generation_out(generation, with_text=False)}
    generation = await actions.generation_wait(generation=generation)
    return 200, {"message": answer.message, "generation": await generation_out(generation)}


# --- Generations ---------------------------------------------------------------------


@api.get(
    "/generations/{generation_id}",
    response={200: GenerationOut, **errors(400, 401, 404)},
    by_alias=True,
    tags=["generations"],
)
async def get_generation(request, generation_id: UUID):
    """Status, the text so far, the last persisted sequence number, usage and timings."""
    return await generation_out(await owned_generation(request, generation_id))


@api.post(
    "/generations/{generation_id}/cancel",
    response={200: GenerationOut, **errors(400, 401, 403, 404)},
    by_alias=True,
    tags=["generations"],
)
async def cancel_generation(request, generation_id: UUID):
    """Stop the generation; a finished one is returned as it is."""
    generation = await owned_generation(request, generation_id)
    return await generation_out(await actions.generation_cancel(generation=generation))


@api.post(
    "/generations/{generation_id}/regenerate",
    response={200: PostedMessageOut, 201: PostedMessageOut, **errors(400, 401, 403, 404, 409, 413, 429)},
    by_alias=True,
    tags=["generations"],
)
async def regenerate_generation(
    request, generation_id: UUID, payload: RegenerateIn, idempotency: str | None = IDEMPOTENCY_KEY
):
    """Answer the same user message again, as a new generation in a new assistant message.

    The old answer stays in the conversation's history. A generation still running is a 409:
    cancel it first. `message` in the answer is the user message being answered again.
    """
    generation = await owned_generation(request, generation_id)
    answer = await actions.generation_regenerate(
        generation=generation,
        idempotency=actions.Idempotency.of(
            idempotency, "generation_regenerate", generation=generation.pk, **payload.model_dump()
        ),
        status_code=201 if payload.stream else 200,
    )
    return await answer_out(answer)


@api.get(
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


# --- Guides linked from the description -------------------------------------------------


@api.get("/guide/{name}", auth=None, include_in_schema=False)
def guide(request, name: str):
    """Serve docs/protocol.md and docs/mobile.md, so the links in the spec work offline."""
    if name not in GUIDES or not (DOCS_DIR / name).is_file():
        raise Http404("No such guide.")
    return HttpResponse((DOCS_DIR / name).read_text(), content_type="text/markdown; charset=utf-8")


@sync_and_async_middleware
def method_not_allowed_middleware(get_response):
    """ninja answers a wrong method with a bare-text 405: give it the API's error shape (and keep `Allow`)."""

    def reshape(request, response):
        if response.status_code == 405 and request.path.startswith("/api/") and not isinstance(response, JsonResponse):
            allowed = response.get("Allow", "")
            response = JsonResponse(error_body("method_not_allowed", f"Use {allowed} on this path."), status=405)
            response["Allow"] = allowed
        return response

    if iscoroutinefunction(get_response):

        async def middleware(request):
            return reshape(request, await get_response(request))

    else:

        def middleware(request):
            return reshape(request, get_response(request))

    return middleware


def not_found(request, path: str = ""):
    """Any other path under /api/: a 404 in the API's error shape, not an HTML page."""
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)
