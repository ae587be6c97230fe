"""Business logic: every write to conversations and generations lives here.

Views parse input, call one action and shape the output.
"""

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .events import Cancel, End
from .hub import control_group, get_hub, stream_group
from .llm import ChatMessage, get_provider
from .models import Conversation, Generation, Message, TokenChunk
from .runner import local_run, start_generation
from .stream import wait_for_end

logger = logging.getLogger(__name__)

# The model sees at most this many earlier messages of the conversation.
HISTORY_MESSAGES = 40
# How long a cancel waits to report the generation's terminal state.
CANCEL_WAIT_S = 5.0


async def conversation_create(*, owner, title: str = "") -> Conversation:
    return await Conversation.objects.acreate(owner=owner, title=title.strip())


def _history(conversation: Conversation, user_message: Message) -> list[ChatMessage]:
    messages = (
        Message.objects.filter(conversation=conversation, pk__lte=user_message.pk)
        .exclude(role=Message.Role.ASSISTANT, content="")
        .order_by("-pk")[:HISTORY_MESSAGES]
    )
    return [ChatMessage(m.role, m.content) for m in reversed(messages)]


def _create_generation(
    *, conversation: Conversation, user_message: Message, response_format: str
) -> tuple[Generation, list[ChatMessage]]:
    provider = get_provider()
    with transaction.atomic():
        assistant_message = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT)
        generation = Generation.objects.create(
            conversation=conversation,
            user_message=user_message,
            assistant_message=assistant_message,
            provider=provider.name,
            model=provider.model,
            response_format=response_format,
        )
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return generation, _history(conversation, user_message)


async def generation_start(
    *, conversation: Conversation, user_message: Message, response_format: str = "text"
) -> Generation:
    """Create the assistant message and its generation, and start producing it in the background."""
    generation, history = await sync_to_async(_create_generation)(
        conversation=conversation, user_message=user_message, response_format=response_format
    )
    start_generation(generation, history)
    return generation


async def message_post(
    *, conversation: Conversation, content: str, response_format: str = "text"
) -> tuple[Message, Generation]:
    """Add the user's message and start the answer to it."""
    message = await Message.objects.acreate(conversation=conversation, role=Message.Role.USER, content=content)
    generation = await generation_start(
        conversation=conversation, user_message=message, response_format=response_format
    )
    return message, generation


async def generation_wait(*, generation: Generation, timeout: float | None = None) -> Generation:
    """Wait for the generation to end (the non-streaming fallback) and return it fresh."""
    await wait_for_end(generation.id, timeout=timeout or settings.CHAT_NONSTREAM_TIMEOUT_S)
    return await Generation.objects.aget(pk=generation.id)


async def generation_cancel(*, generation: Generation) -> Generation:
    """Stop a running generation, wherever it runs; a finished one is left as it is."""
    if generation.is_terminal:
        return generation
    if run := local_run(generation.id):
        run.request_stop(Generation.Status.CANCELLED)
    else:
        # Another process runs it: flag it (checked at every heartbeat) and ask it directly.
        await Generation.objects.filter(pk=generation.id).aupdate(cancel_requested=True)
        await get_hub().publish(control_group(generation.id), Cancel())
        if await _is_orphaned(generation.id):
            await _end_orphan(generation.id, Generation.Status.CANCELLED)
    await wait_for_end(generation.id, timeout=CANCEL_WAIT_S)
    return await Generation.objects.aget(pk=generation.id)


async def _is_orphaned(generation_id) -> bool:
    """True if nobody has heartbeated the generation recently: its worker is gone."""
    stale_before = timezone.now() - timezone.timedelta(seconds=settings.CHAT_HEARTBEAT_STALE_S)
    row = await Generation.objects.filter(pk=generation_id).values("heartbeat_at", "created_at").afirst()
    return row is not None and (row["heartbeat_at"] or row["created_at"]) < stale_before


def _end_orphan_now(generation_id, status: str, reason: str) -> Generation | None:
    """End a generation whose worker is gone, keeping every persisted token as its text."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .filter(pk=generation_id, status__in=Generation.ACTIVE_STATUSES)
            .first()
        )
        if generation is None:
            return None
        chunks = TokenChunk.objects.filter(generation=generation).order_by("first_seq")
        text = "".join("".join(chunk.tokens) for chunk in chunks)
        last = chunks.last()
        generation.status = status
        generation.interrupt_reason = reason
        generation.last_seq = last.last_seq if last else generation.first_seq - 1
        generation.token_count = generation.last_seq - generation.first_seq + 1
        generation.finished_at = timezone.now()
        generation.save()
        message = generation.assistant_message
        message.content += text
        message.save(update_fields=["content", "updated_at"])
    return generation


async def _end_orphan(generation_id, status: str, reason: str = "") -> None:
    generation = await sync_to_async(_end_orphan_now)(generation_id, status, reason)
    if generation is not None:
        await get_hub().publish(stream_group(generation_id), End.of(generation))
