"""Business logic: every write to conversations and generations lives here.

Views parse input, call one action and shape the output.
"""

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import live
from .errors import ApiError
from .events import Cancel, End
from .hub import control_group, get_hub, stream_group
from .llm import CONTINUE_INSTRUCTION, ChatMessage, get_provider
from .models import Conversation, Generation, IdempotencyKey, Message, StreamConnection, TokenChunk
from .runner import local_run, start_generation
from .stream import wait_for_end

logger = logging.getLogger(__name__)

# The model sees at most this many earlier messages of the conversation.
HISTORY_MESSAGES = 40
# How long a cancel waits to report the generation's terminal state.
CANCEL_WAIT_S = 5.0


async def conversation_create(*, owner, title: str = "") -> Conversation:
    conversation = await Conversation.objects.acreate(owner=owner, title=title.strip())
    await live.conversation_changed(conversation, "conversation.created")
    return conversation


async def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = title.strip()
    await conversation.asave(update_fields=["title", "updated_at"])
    await live.conversation_changed(conversation, "conversation.renamed")
    return conversation


async def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation and everything in it, cancelling its running answers first.

    A run must end before its rows go: the process's token writer would
    otherwise keep failing to insert chunks of a generation that is gone.
    """
    running = [g async for g in Generation.objects.filter(conversation=conversation, status__in=Generation.ACTIVE_STATUSES)]
    if running:
        await asyncio.gather(*(generation_cancel(generation=g) for g in running))
    owner_id, conversation_id = conversation.owner_id, conversation.pk
    await sync_to_async(_delete_conversation)(conversation)
    await live.conversation_deleted(owner_id=owner_id, conversation_id=conversation_id)


def _delete_conversation(conversation: Conversation) -> None:
    with transaction.atomic():
        # The owner's lock keeps a message posted meanwhile from starting a new answer in it.
        _lock_user(conversation.owner_id)
        if Generation.objects.filter(conversation=conversation, status__in=Generation.ACTIVE_STATUSES).exists():
            raise ApiError(
                409,
                "generation_active",
                "An answer in this conversation is still stopping; try the delete again in a few seconds.",
            )
        conversation.delete()


def _lock_user(user_id) -> None:
    """Serialise one user's writes that check a limit or a key (a no-op lock on SQLite, which serialises writers)."""
    list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))


def _history(conversation: Conversation, user_message: Message) -> list[ChatMessage]:
    messages = (
        Message.objects.filter(conversation=conversation, pk__lte=user_message.pk)
        .exclude(role=Message.Role.ASSISTANT, content="")
        .order_by("-pk")[:HISTORY_MESSAGES]
    )
    return [ChatMessage(m.role, m.content) for m in reversed(messages)]


def _new_generation(*, conversation: Conversation, user_message: Message, response_format: str) -> Generation:
    """Create an empty assistant message and the generation that will fill it (in the caller's transaction)."""
    provider = get_provider()
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
    return generation


async def _launch(generation: Generation, history: list[ChatMessage]) -> None:
    # Announced first, so that `generation.started` always precedes its end on the channel.
    await live.generation_changed(generation.id)
    start_generation(generation, history)


@dataclass(frozen=True)
class Idempotency:
    """A client's Idempotency-Key, and the fingerprint of the request it came with."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str | None, operation: str, **request) -> "Idempotency | None":
        if key is None:
            return None
        canonical = json.dumps({"operation": operation, **request}, sort_keys=True, default=str)
        return cls(key, hashlib.sha256(canonical.encode()).hexdigest())


@dataclass(frozen=True)
class Answer:
    """A user message and the generation answering it, new or (for a retried key) the original ones."""

    message: Message
    generation: Generation
    status_code: int
    replayed: bool = False


async def message_post(
    *,
    conversation: Conversation,
    content: str,
    response_format: str = "text",
    idempotency: Idempotency | None = None,
    status_code: int = 201,
) -> Answer:
    """Add the user's message and start the answer to it.

    With an idempotency key already used for the same request, return what
    that request created instead; with a different request, refuse (409).
    """
    answer, history = await sync_to_async(_answer_idempotently)(
        conversation=conversation,
        user_message=None,
        content=content,
        response_format=response_format,
        idempotency=idempotency,
        status_code=status_code,
    )
    if history is not None:
        await _launch(answer.generation, history)
    return answer


async def generation_regenerate(
    *, generation: Generation, idempotency: Idempotency | None = None, status_code: int = 201
) -> Answer:
    """Answer the same user message again, in a new assistant message; the old answer stays in history."""
    generation = await Generation.objects.select_related("conversation", "user_message").aget(pk=generation.pk)
    if not generation.is_terminal:
        raise ApiError(
            409, "generation_active", f"Generation {generation.id} is still {generation.status}; cancel it first."
        )
    answer, history = await sync_to_async(_answer_idempotently)(
        conversation=generation.conversation,
        user_message=generation.user_message,
        content=None,
        response_format=generation.response_format,
        idempotency=idempotency,
        status_code=status_code,
    )
    if history is not None:
        await _launch(answer.generation, history)
    return answer


def _answer_idempotently(**kwargs) -> tuple[Answer, list[ChatMessage] | None]:
    """Create the answer, or find the one an earlier request with the same key created.

    Returns the history to generate from, or None when nothing was created.
    """
    try:
        return _answer(**kwargs)
    except IntegrityError:
        idempotency, owner_id = kwargs["idempotency"], kwargs["conversation"].owner_id
        if idempotency is None:
            raise
        # A concurrent request with the same key committed first: answer what it created.
        replay = _replay(owner_id, idempotency)
        if replay is None:
            raise
        return replay, None


def _answer(
    *,
    conversation: Conversation,
    user_message: Message | None,
    content: str | None,
    response_format: str,
    idempotency: Idempotency | None,
    status_code: int,
) -> tuple[Answer, list[ChatMessage] | None]:
    owner_id = conversation.owner_id
    with transaction.atomic():
        _lock_user(owner_id)
        if idempotency is not None:
            IdempotencyKey.objects.filter(user_id=owner_id, created_at__lt=_idempotency_cutoff()).delete()
            replay = _replay(owner_id, idempotency)
            if replay is not None:
                return replay, None
        limit = settings.CHAT_MAX_ACTIVE_GENERATIONS_PER_USER
        if limit:
            active = Generation.objects.filter(
                conversation__owner_id=owner_id, status__in=Generation.ACTIVE_STATUSES
            ).count()
            if active >= limit:
                raise ApiError(
                    429,
                    "too_many_generations",
                    f"You have {active} answers being generated; the limit is {limit}. "
                    "Wait for one to finish, or cancel one.",
                )
        if user_message is None:
            user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content)
        generation = _new_generation(
            conversation=conversation, user_message=user_message, response_format=response_format
        )
        if idempotency is not None:
            # The unique (user, key) constraint is the last word on a race between retries.
            IdempotencyKey.objects.create(
                user_id=owner_id,
                key=idempotency.key,
                fingerprint=idempotency.fingerprint,
                status_code=status_code,
                message=user_message,
                generation=generation,
            )
    return Answer(user_message, generation, status_code), _history(conversation, user_message)


def _replay(owner_id, idempotency: Idempotency) -> Answer | None:
    """What the key's first request created; None if the key is new or expired."""
    row = (
        IdempotencyKey.objects.select_related("message", "generation")
        .filter(user_id=owner_id, key=idempotency.key)
        .first()
    )
    if row is None or row.created_at < _idempotency_cutoff():
        return None
    if row.fingerprint != idempotency.fingerprint:
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was already used for a different request; use a new key for a new request.",
            "Idempotency-Key",
        )
    return Answer(row.message, row.generation, row.status_code, replayed=True)


def _idempotency_cutoff():
    """Keys older than this are forgotten: a retry comes within minutes, not days."""
    return timezone.now() - timezone.timedelta(seconds=settings.CHAT_IDEMPOTENCY_TTL_S)


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
        # If nobody heartbeats it, its worker is gone: end it here (a locked, stale-only update).
        await _end_orphan(generation.id, Generation.Status.CANCELLED, stale_before=stale_before())
    await wait_for_end(generation.id, timeout=CANCEL_WAIT_S)
    return await Generation.objects.aget(pk=generation.id)


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


def stale_before():
    """Heartbeats older than this mean the worker is gone."""
    return timezone.now() - timezone.timedelta(seconds=settings.CHAT_HEARTBEAT_STALE_S)


def stale_heartbeat(stale_before) -> Q:
    """Generations not heartbeated since `stale_before` (or never, and created before it)."""
    return Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, created_at__lt=stale_before)


async def _end_orphan(generation_id, status: str, reason: str = "", stale_before=None) -> Generation | None:
    generation = await sync_to_async(generation_end_orphan)(
        generation_id, status=status, reason=reason, stale_before=stale_before
    )
    if generation is not None:
        await get_hub().publish(stream_group(generation_id), End.of(generation))
        await live.generation_changed(generation_id)
    return generation


# --- Operator actions (the admin) -----------------------------------------



async def generation_retry(*, generation: Generation) -> Generation:
    """Answer the same prompt again, in a new assistant message, with the configured provider."""
    generation = await Generation.objects.select_related("conversation", "user_message").aget(pk=generation.pk)
    if not generation.is_terminal:
        raise ApiError(409, "generation_active", f"Generation {generation.id} is still {generation.status}; stop it first.")
    retry, history = await sync_to_async(_new_generation_with_history)(
        conversation=generation.conversation,
        user_message=generation.user_message,
        response_format=generation.response_format,
    )
    await _launch(retry, history)
    return retry


def _new_generation_with_history(**kwargs) -> tuple[Generation, list[ChatMessage]]:
    with transaction.atomic():
        generation = _new_generation(**kwargs)
    return generation, _history(kwargs["conversation"], kwargs["user_message"])


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
    await _launch(continuation, history)
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

    Also forget expired Idempotency-Keys (CHAT_IDEMPOTENCY_TTL_S). Message texts stay. Rows go in batches, so that a large backlog never
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
    # Idempotency keys have their own, much shorter, lifetime.
    keys = IdempotencyKey.objects.filter(created_at__lt=_idempotency_cutoff())
    if dry_run:
        return {**counts, "chunks": chunks.count(), "connections": connections.count(), "keys": keys.count()}
    return {
        **counts,
        "chunks": _delete_in_batches(chunks),
        "connections": _delete_in_batches(connections),
        "keys": _delete_in_batches(keys),
    }


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while ids := list(queryset.values_list("pk", flat=True)[:PRUNE_BATCH]):
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted
