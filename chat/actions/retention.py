"""Retention: forget old token streams, connection rows and Idempotency-Keys; message texts stay."""

from django.db.models import Q
from django.utils import timezone

from ..models import Generation, IdempotencyKey, StreamConnection, TokenChunk
from .messages import idempotency_cutoff

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
    keys = IdempotencyKey.objects.filter(created_at__lt=idempotency_cutoff())
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
