"""The workers' queue: generations waiting for a worker, claimed exactly once, handed back on a worker's exit.

The queue is the generations table itself: a generation `queued` with no
`worker` waits for one. A worker claims a few at a time with `SELECT … FOR
UPDATE SKIP LOCKED` and marks them `streaming` under its name in the same
transaction, so any number of workers can race and each generation is run by
one of them (`runs` counts the runs: 1, plus one per hand-on). Workers are
woken with PostgreSQL `NOTIFY`, sent at commit, never before the row exists.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from ..llm import CONTINUE_INSTRUCTION, ChatMessage
from ..models import Generation, Message, TokenChunk
from ..streaming.answers import AnswerParts, last_persisted_seq, persisted_answer
from .history import conversation_history

# The NOTIFY channel the workers LISTEN on.
QUEUE_CHANNEL = "chat_generation_queued"

UNCLAIMED = Q(status=Generation.Status.QUEUED, worker="")
# Waiting behind an answer of its conversation that still runs (multitask "enqueue").
WAITING = Exists(Generation.objects.filter(pk=OuterRef("queued_behind_id"), status__in=Generation.ACTIVE_STATUSES))


def queue_notify() -> None:
    """Wake the workers: in a transaction, at its commit (PostgreSQL; elsewhere they poll)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {QUEUE_CHANNEL}")


@dataclass
class Claimed:
    """A generation a worker now runs, with what the model must be sent to produce (the rest of) it."""

    generation: Generation
    messages: list[ChatMessage]
    prefix: AnswerParts  # The answer so far: the message's, then this generation's persisted tokens.
    after_seq: int  # Its last persisted token; the run goes on from the next.


def generation_claim(*, worker: str, limit: int) -> list[Claimed]:
    """Take up to `limit` queued generations, oldest first, for `worker`; none that another worker took."""
    with transaction.atomic():
        ids = list(
            Generation.objects.select_for_update(skip_locked=True)
            .filter(UNCLAIMED)
            .exclude(WAITING)
            .order_by("created_at")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        Generation.objects.filter(pk__in=ids).update(
            status=Generation.Status.STREAMING, worker=worker, heartbeat_at=timezone.now(), runs=F("runs") + 1
        )
    generations = Generation.objects.filter(pk__in=ids).select_related("conversation", "user_message", "assistant_message")
    return [claimed(generation) for generation in generations.order_by("created_at")]


def claimed(generation: Generation) -> Claimed:
    prefix, after_seq = persisted_answer(generation)
    messages = conversation_history(generation.conversation, generation.user_message)
    if prefix.text:
        # A continuation (operator's or a hand-on): the model goes on from the text so far.
        messages += [ChatMessage(Message.Role.ASSISTANT, prefix.text), ChatMessage(Message.Role.USER, CONTINUE_INSTRUCTION)]
    return Claimed(generation, messages, prefix, after_seq)


def generation_hand_on(generation_id, *, condition: Q) -> Generation | None:
    """Put a generation whose worker is gone back in the queue, to be continued in place by another.

    Its persisted tokens stay, and the next run goes on after the last of
    them. The ones its worker made but never persisted are lost, and no
    client saw them: a worker publishes a token only once it is persisted.
    An in-process run publishes first, so there a client may have seen up to
    CHAT_MAX_UNWRITTEN_TOKENS tokens that are lost: see `rewind`.
    Returns None if it no longer matches `condition` (heartbeated since,
    ended, or taken by another reaper).
    """
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update(skip_locked=True)
            .filter(pk=generation_id, status__in=Generation.ACTIVE_STATUSES)
            .filter(condition)
            .first()
        )
        if generation is None:
            return None
        if settings.CHAT_RUNNER == "inprocess":
            rewind(generation)
        else:
            last_seq = last_persisted_seq(generation.pk)
            generation.last_seq = last_seq if last_seq is not None else generation.first_seq - 1
        generation.token_count = generation.last_seq - generation.first_seq + 1
        generation.status = Generation.Status.QUEUED
        generation.worker = ""
        # The queue timeout counts from here.
        generation.heartbeat_at = timezone.now()
        generation.save(update_fields=["first_seq", "last_seq", "token_count", "status", "worker", "heartbeat_at"])
        queue_notify()
    return generation


def rewind(generation: Generation) -> None:
    """Number the next run's tokens past any that a client of the dead in-process run saw.

    That run published each token before persisting it, at most
    CHAT_MAX_UNWRITTEN_TOKENS ahead of the database, so a client may hold
    text the database never got. The persisted answer moves into the message
    (the text before `first_seq`, as for a continuation) and `first_seq`
    jumps past every position a client can be at: whatever it holds, a client
    gets the stored answer in one snapshot, then the new tokens.
    """
    answer, last_seq = persisted_answer(generation)
    Message.objects.filter(pk=generation.assistant_message_id).update(content=answer.text, reasoning=answer.reasoning)
    TokenChunk.objects.filter(generation_id=generation.pk, first_seq__gte=generation.first_seq).delete()
    generation.first_seq = last_seq + settings.CHAT_MAX_UNWRITTEN_TOKENS + 2
    generation.last_seq = generation.first_seq - 1


def may_hand_on(runs: int) -> bool:
    """Whether an answer whose process stopped or died goes on in another run (docs/deploy.md).

    In worker mode another worker claims it; in-process, the next process
    that starts (or any other one running) does (`chat.streaming.reaper`).
    """
    if not settings.CHAT_AUTO_CONTINUE or runs >= settings.CHAT_MAX_RUNS:
        return False
    return settings.CHAT_RUNNER == "workers" or settings.CHAT_RESUME_INTERRUPTED_MAX_AGE_S > 0


def queue_timeout_s() -> float:
    """How long a handed-on answer may wait to be claimed before the reaper ends it."""
    if settings.CHAT_RUNNER == "workers":
        return settings.CHAT_QUEUE_TIMEOUT_S
    return settings.CHAT_RESUME_INTERRUPTED_MAX_AGE_S or settings.CHAT_HEARTBEAT_STALE_S
