"""Business logic: every write to conversations and generations lives here.

Views parse input, call one action and shape the output.
"""

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .errors import ApiError
from .events import Cancel, End
from .hub import control_group, get_hub, stream_group
from .llm import ChatMessage, get_provider
from .models import Conversation, Generation, Message, StreamConnection, TokenChunk
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


def generation_end_orphan(
    generation_id, *, status: str, reason: str = "", error: str = "", stale_before=None
) -> Generation | None:
    """End a generation whose worker is gone, keeping every persisted token as its text.

    Returns None if it had already ended (or, with `stale_before`, if it was
    heartbeated since), so several processes can race for it and only one
    does the work.
    """
    with transaction.atomic():
        # skip_locked: on PostgreSQL a process that loses the race moves on at
        # once; SQLite ignores it, and its IMMEDIATE transactions serialise us.
        candidates = Generation.objects.select_for_update(skip_locked=True).filter(
            pk=generation_id, status__in=Generation.ACTIVE_STATUSES
        )
        if stale_before is not None:
            candidates = candidates.filter(stale_heartbeat(stale_before))
        generation = candidates.first()
        if generation is None:
            return None
        chunks = TokenChunk.objects.filter(generation=generation).order_by("first_seq")
        text = "".join("".join(chunk.tokens) for chunk in chunks)
        last = chunks.last()
        generation.status = status
        generation.interrupt_reason = reason
        generation.error = error
        generation.last_seq = last.last_seq if last else generation.first_seq - 1
        generation.token_count = generation.last_seq - generation.first_seq + 1
        generation.finished_at = timezone.now()
        generation.save()
        message = generation.assistant_message
        message.content += text
        message.save(update_fields=["content", "updated_at"])
    return generation


def stale_heartbeat(stale_before) -> Q:
    """Generations not heartbeated since `stale_before` (or never, and created before it)."""
    return Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, created_at__lt=stale_before)


async def _end_orphan(generation_id, status: str, reason: str = "") -> Generation | None:
    generation = await sync_to_async(generation_end_orphan)(generation_id, status=status, reason=reason)
    if generation is not None:
        await get_hub().publish(stream_group(generation_id), End.of(generation))
    return generation


# --- Operator actions (the admin) -----------------------------------------

# Appended after the partial answer when asking the model to go on.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating any of it and without any preamble."
)


async def generation_retry(*, generation: Generation) -> Generation:
    """Answer the same prompt again, in a new assistant message, with the configured provider."""
    generation = await Generation.objects.select_related("conversation", "user_message").aget(pk=generation.pk)
    if not generation.is_terminal:
        raise ApiError(409, "generation_active", f"Generation {generation.id} is still {generation.status}; stop it first.")
    return await generation_start(
        conversation=generation.conversation,
        user_message=generation.user_message,
        response_format=generation.response_format,
    )


def _create_continuation(generation_id) -> tuple[Generation, list[ChatMessage]]:
    provider = get_provider()
    with transaction.atomic():
        # Locked, so two operators clicking at once get one continuation and one refusal.
        previous = (
            Generation.objects.select_for_update()
            .select_related("conversation", "user_message", "assistant_message")
            .get(pk=generation_id)
        )
        refusal = continuation_refusal(previous)
        if refusal:
            raise ApiError(409, "not_continuable", refusal)
        partial = previous.assistant_message.content
        continuation = Generation.objects.create(
            conversation=previous.conversation,
            user_message=previous.user_message,
            assistant_message=previous.assistant_message,
            continued_from=previous,
            provider=provider.name,
            model=provider.model,
            response_format=previous.response_format,
            first_seq=previous.last_seq + 1,
            last_seq=previous.last_seq,
        )
    history = _history(previous.conversation, previous.user_message)
    history += [ChatMessage(Message.Role.ASSISTANT, partial), ChatMessage(Message.Role.USER, CONTINUE_INSTRUCTION)]
    return continuation, history


def continuation_refusal(generation: Generation) -> str:
    """Why the generation cannot be continued, or "" if it can."""
    if not generation.is_terminal:
        return f"Generation {generation.id} is still {generation.status}."
    if generation.status == Generation.Status.COMPLETE and generation.finish_reason != "length":
        return f"Generation {generation.id} is complete; there is nothing to continue."
    newer = (
        Generation.objects.filter(assistant_message_id=generation.assistant_message_id, first_seq__gt=generation.last_seq)
        .exclude(pk=generation.pk)
        .values_list("pk", flat=True)
        .first()
    )
    if newer:
        return f"Generation {generation.id} was already continued by {newer}; continue that one."
    if not generation.assistant_message.content:
        return f"Generation {generation.id} has no partial text; retry it instead."
    return ""


async def generation_continue(*, generation: Generation) -> Generation:
    """Ask the model to go on from the partial text, into the same message, with sequence numbers going on.

    The new generation numbers its tokens from the old one's last_seq + 1, and
    the runner keeps the message's text as the prefix, so a client that follows
    it with Last-Event-ID = old.last_seq sees one seamless answer.
    """
    continuation, history = await sync_to_async(_create_continuation)(generation.pk)
    start_generation(continuation, history)
    return continuation


async def generation_mark_interrupted(*, generation: Generation) -> Generation | None:
    """End a stuck generation as interrupted (operator), keeping its persisted tokens.

    Returns None if it had already ended. A run of this process is asked to stop
    (it flushes first); one that does not, or that runs elsewhere or nowhere, is
    ended in the database.
    """
    if run := local_run(generation.id):
        run.request_stop(Generation.Status.INTERRUPTED, Generation.InterruptReason.OPERATOR)
        end = await wait_for_end(generation.id, timeout=CANCEL_WAIT_S)
        if end and end.reason == Generation.InterruptReason.OPERATOR:
            return await Generation.objects.aget(pk=generation.id)
    return await _end_orphan(generation.id, Generation.Status.INTERRUPTED, Generation.InterruptReason.OPERATOR)


def generation_chunks_delete(*, generations) -> tuple[int, int]:
    """Delete the token chunks of the finished ones among `generations`; their message text stays.

    Returns (generations affected, chunks deleted). A client that resumes one
    of them later gets its text in one `snapshot` event.
    """
    finished = [g.pk for g in generations if g.status in Generation.TERMINAL_STATUSES]
    deleted, _ = TokenChunk.objects.filter(generation_id__in=finished).delete()
    return len(finished), deleted


# --- Retention ----------------------------------------------------------------

PRUNE_BATCH = 1000


def streams_prune(*, older_than, dry_run: bool = False) -> dict:
    """Delete the token chunks and connection rows of generations finished more than `older_than` ago.

    Message texts stay. Rows go in batches, so that a large backlog never
    holds the database in one long transaction.
    """
    expired = Generation.objects.filter(
        status__in=Generation.TERMINAL_STATUSES, finished_at__lt=timezone.now() - older_than
    )
    chunks = TokenChunk.objects.filter(generation__in=expired)
    connections = StreamConnection.objects.filter(generation__in=expired)
    counts = {
        "generations": expired.filter(Q(chunks__isnull=False) | Q(connections__isnull=False)).distinct().count()
    }
    if dry_run:
        return {**counts, "chunks": chunks.count(), "connections": connections.count()}
    return {**counts, "chunks": _delete_in_batches(chunks), "connections": _delete_in_batches(connections)}


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while ids := list(queryset.values_list("pk", flat=True)[:PRUNE_BATCH]):
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted
