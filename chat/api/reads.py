"""What the routes read: ownership lookups (another user's object is a 404), pages of conversations and messages,
and a generation with its answer, each shaped as its output schema (as dicts, which ninja validates fastest)."""

from datetime import datetime
from uuid import UUID

from django.db.models import Exists, OuterRef, Q
from django.http import Http404

from ..db import db_work
from ..models import Conversation, Generation, Message
from ..streaming.answers import persisted_answer
from ..streaming.jsonstream import InvalidJson, parse_document
from .pagination import decode_cursor, encode_cursor, valid_id, valid_time
from .schemas import GenerationOut


async def owned_conversation(request, conversation_id: int) -> Conversation:
    """The user's conversation; another user's is a 404, as if it did not exist."""
    conversation = await Conversation.objects.owned_by(request.auth).filter(pk=conversation_id).afirst()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


async def owned_generation(request, generation_id: UUID) -> Generation:
    """The user's generation; another user's is a 404, as if it did not exist."""
    generation = await Generation.objects.owned_by(request.auth).filter(pk=generation_id).afirst()
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


async def conversation_page(user, *, q: str | None, cursor: str | None, limit: int) -> dict:
    """The user's conversations, most recently active first, optionally only those matching `q`."""
    conversations = Conversation.objects.owned_by(user).order_by("-updated_at", "-id")
    if q is not None and q.strip():
        q = q.strip()
        matching_message = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=q)
        conversations = conversations.filter(Q(title__icontains=q) | Exists(matching_message))
    if cursor:
        updated_at, last_id = decode_cursor(cursor, "c", 2)
        updated_at, last_id = valid_time(updated_at), valid_id(last_id)
        conversations = conversations.filter(Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, id__lt=last_id))
    rows = [c async for c in conversations[: limit + 1]]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor("c", rows[-1].updated_at.isoformat(), rows[-1].id)
    return {"items": rows, "next_cursor": next_cursor}


async def message_page(conversation: Conversation, *, cursor: str | None, limit: int, order: str) -> dict:
    """A page of the conversation's messages; an assistant message names the generation that fills it."""
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
