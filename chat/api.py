"""The JSON API under /api/: thin views that parse, call one action, and shape the answer."""

from uuid import UUID

from django.conf import settings
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import SessionAuth

from . import actions
from .errors import ApiError, error_body
from .models import Conversation, Generation
from .schemas import ConversationIn, ConversationOut, GenerationOut, MessageIn, PostedMessageOut
from .stream import persisted_answer
from .views import generation_stream_response

api = NinjaAPI(
    title="Chat streaming API",
    version="1",
    description=(
        "Conversations with an LLM whose answers stream over Server-Sent Events and resume by event id. "
        "The stream protocol is described in docs/protocol.md."
    ),
    auth=SessionAuth(),
    urls_namespace="api",
)


# --- Errors: one shape everywhere ------------------------------------------


@api.exception_handler(ApiError)
def on_api_error(request, exc: ApiError):
    return api.create_response(request, error_body(exc.code, exc.message, exc.field), status=exc.status)


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "payload", "query", "path")]
    message = first.get("msg", "invalid input").removeprefix("Value error, ")
    return api.create_response(
        request, error_body("invalid", message, ".".join(location) or None), status=400
    )


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


async def generation_out(generation: Generation, *, with_text: bool = True) -> dict:
    data = {
        field: getattr(generation, field)
        for field in GenerationOut.model_fields
        if hasattr(generation, field) and field not in ("text", "reason", "stream_url")
    }
    data["reason"] = generation.interrupt_reason
    data["stream_url"] = f"/api/generations/{generation.id}/stream"
    if with_text:
        data["text"], data["last_seq"] = await persisted_answer(generation)
    return data


# --- Endpoints ---------------------------------------------------------------


@api.post("/conversations", response={201: ConversationOut})
async def create_conversation(request, payload: ConversationIn):
    return 201, await actions.conversation_create(owner=request.auth, title=payload.title)


@api.post("/conversations/{conversation_id}/messages", response={200: PostedMessageOut, 201: PostedMessageOut})
async def post_message(request, conversation_id: int, payload: MessageIn):
    """Post a user message and start the answer.

    With `stream: true` (the default) this answers 201 at once; follow `generation.stream_url`.
    With `stream: false` it waits for the whole answer and returns it (the non-streaming fallback).
    """
    conversation = await owned_conversation(request, conversation_id)
    message, generation = await actions.message_post(
        conversation=conversation, content=payload.content, response_format=payload.response_format
    )
    if payload.stream:
        return 201, {"message": message, "generation": await generation_out(generation, with_text=False)}
    generation = await actions.generation_wait(generation=generation)
    return 200, {"message": message, "generation": await generation_out(generation)}


@api.get("/generations/{generation_id}", response=GenerationOut)
async def get_generation(request, generation_id: UUID):
    """Status, the text so far, and the last persisted sequence number."""
    return await generation_out(await owned_generation(request, generation_id))


@api.post("/generations/{generation_id}/cancel", response=GenerationOut)
async def cancel_generation(request, generation_id: UUID):
    """Stop the generation; a finished one is returned as it is."""
    generation = await owned_generation(request, generation_id)
    return await generation_out(await actions.generation_cancel(generation=generation))


@api.get("/generations/{generation_id}/stream", response={200: None}, openapi_extra={
    "description": "Server-Sent Events: `token` events, then one of `done`, `interrupted`, `failed`, "
    "`cancelled`. Resume with the `Last-Event-ID` header or `?last_event_id=`. See docs/protocol.md.",
    "responses": {"200": {"description": "An SSE stream", "content": {"text/event-stream": {}}}},
})
async def stream_generation(request, generation_id: UUID):
    generation = await owned_generation(request, generation_id)
    return await generation_stream_response(request, generation)
