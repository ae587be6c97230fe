"""The end of a generation: the one place that records it and the one place that announces it, whoever ended it.

`generation_end_write` stores the end (the row's status, the answer into its
message) and tells the owner's devices at the commit; `generation_ended`
then tells the followers through the hub. The runner, the reaper, an operator
and `manage.py reap_generations` all end generations through these two.
"""

from functools import partial

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..models import Message
from ..streaming.answers import AnswerParts
from ..streaming.events import End
from ..streaming.hub import Hub, get_hub, stream_group
from ..transports import live


def generation_end_write(generations: QuerySet, end: End, answer: AnswerParts, *, row: dict, owner_id, **progress) -> bool:
    """Record `end` on the one generation `generations` selects, in the caller's transaction; False if none matched.

    `row` is the generation's `live.GENERATION_FIELDS` (its status is taken from `end`); `progress` adds
    fields to write with it (last_seq, token_count, ...). The owner's devices hear of it at the commit.
    """
    now = timezone.now()
    updated = generations.update(
        status=end.status,
        finish_reason=end.finish_reason,
        interrupt_reason=end.reason,
        error=end.error[:2000],
        usage=end.usage,
        finished_at=now,
        **progress,
    )
    if not updated:
        return False
    Message.objects.filter(pk=row["assistant_message_id"]).update(
        content=answer.text, reasoning=answer.reasoning, updated_at=now
    )
    ended = {
        **row, "status": end.status, "finish_reason": end.finish_reason, "interrupt_reason": end.reason, "parts": answer.parts
    }
    transaction.on_commit(partial(live.publish_generation, ended, owner_id))
    return True


async def generation_ended(generation_id, end: End, *, hub: Hub | None = None) -> None:
    """Tell the generation's followers that it ended; only once `generation_end_write` is committed,
    so that nobody hears of an end the database does not have."""
    await (hub or get_hub()).publish(stream_group(generation_id), end)


async def generations_ended(generations) -> None:
    """`generation_ended` for each of the generations (model instances) just ended."""
    for generation in generations:
        await generation_ended(generation.id, End.of(generation))
