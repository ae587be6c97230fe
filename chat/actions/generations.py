"""A running generation: wait for it, cancel it, end it when its worker is gone."""

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Generation
from ..streaming import registry
from ..streaming.answers import persisted_answer
from ..streaming.events import Cancel, End
from ..streaming.follow import wait_for_end
from ..streaming.hub import control_group, get_hub
from ..transports import live
from .ends import generation_end_write, generation_ended
from .queue import UNCLAIMED

# How long a cancel waits to report the generation's terminal state.
CANCEL_WAIT_S = 5.0


async def generation_wait(*, generation: Generation, timeout: float | None = None) -> Generation:
    """Wait for the generation to end (the non-streaming fallback) and return it fresh."""
    await wait_for_end(generation.id, timeout=timeout or settings.CHAT_NONSTREAM_TIMEOUT_S)
    return await Generation.objects.aget(pk=generation.id)


async def generation_cancel(*, generation: Generation) -> Generation:
    """Stop a running generation, wherever it runs; a finished one is left as it is."""
    if generation.is_terminal:
        return generation
    if run := registry.local_run(generation.id):
        run.request_stop(Generation.Status.CANCELLED)
    else:
        # Another process runs it: flag it (checked at every heartbeat) and ask it directly.
        await Generation.objects.filter(pk=generation.id).aupdate(cancel_requested=True)
        await get_hub().publish(control_group(generation.id), Cancel())
        # If nobody runs it (still in the workers' queue, or its worker is gone), end it here.
        await end_orphan(generation.id, Generation.Status.CANCELLED, condition=stale_heartbeat(stale_before()) | UNCLAIMED)
    await wait_for_end(generation.id, timeout=CANCEL_WAIT_S)
    return await Generation.objects.aget(pk=generation.id)


def generation_end_orphan(
    generation_id, *, status: str, reason: str = "", error: str = "", condition: Q | None = None
) -> Generation | None:
    """End a generation whose worker is gone, keeping every persisted token as its text.

    Returns None if it had already ended (or no longer matches `condition`,
    checked under the row's lock: heartbeated since, say), so several
    processes can race for it and only one does the work. The caller
    announces the end (`generation_ended`).
    """
    with transaction.atomic():
        # skip_locked: on PostgreSQL a process that loses the race moves on at
        # once; SQLite ignores it, and its IMMEDIATE transactions serialise us.
        candidates = Generation.objects.select_for_update(skip_locked=True).filter(
            pk=generation_id, status__in=Generation.ACTIVE_STATUSES
        )
        if condition is not None:
            candidates = candidates.filter(condition)
        generation = candidates.first()
        if generation is None:
            return None
        answer, last_seq = persisted_answer(generation)
        end = End(status=status, last_seq=last_seq, reason=reason, error=error)
        generation_end_write(
            Generation.objects.filter(pk=generation.pk),
            end,
            answer,
            row=live.generation_row(generation),
            owner_id=generation.conversation.owner_id,
            last_seq=last_seq,
            token_count=last_seq - generation.first_seq + 1,
        )
        generation.refresh_from_db()
    return generation


def stale_before():
    """Heartbeats older than this mean the worker is gone."""
    return timezone.now() - timezone.timedelta(seconds=settings.CHAT_HEARTBEAT_STALE_S)


def stale_heartbeat(stale_before) -> Q:
    """Generations not heartbeated since `stale_before` (or never, and created before it)."""
    return Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, created_at__lt=stale_before)


async def end_orphan(generation_id, status: str, reason: str = "", condition: Q | None = None) -> Generation | None:
    """`generation_end_orphan`, then announce the end."""
    generation = await sync_to_async(generation_end_orphan)(generation_id, status=status, reason=reason, condition=condition)
    if generation is not None:
        await generation_ended(generation_id, End.of(generation))
    return generation
