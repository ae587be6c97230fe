"""What an operator does from the admin: retry, continue, mark interrupted, delete a stream's chunks."""

from asgiref.sync import sync_to_async
from django.db import transaction

from ..errors import ApiError
from ..llm import CONTINUE_INSTRUCTION, ChatMessage
from ..models import Generation, Message, TokenChunk
from ..streaming import registry, runner
from ..streaming.answers import AnswerParts
from ..streaming.follow import wait_for_end
from .generations import CANCEL_WAIT_S, end_orphan
from .history import conversation_history
from .messages import announce, check_active_limit, generation_regenerate, launch


async def generation_retry(*, generation: Generation) -> Generation:
    """Answer the same prompt again, in a new assistant message: a regenerate, under the user's own limits."""
    return (await generation_regenerate(generation=generation)).generation


def _create_continuation(generation_id) -> tuple[Generation, list[ChatMessage], AnswerParts]:
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
        check_active_limit(previous.conversation.owner_id)
        partial = AnswerParts.of_message(previous.assistant_message)
        continuation = Generation.objects.create(
            conversation=previous.conversation,
            user_message=previous.user_message,
            assistant_message=previous.assistant_message,
            continued_from=previous,
            # The same model and variant, so that it goes on with the same answer.
            provider=previous.provider,
            model=previous.model,
            variant=previous.variant,
            response_format=previous.response_format,
            first_seq=previous.last_seq + 1,
            last_seq=previous.last_seq,
            **runner.initial_state(),
        )
        announce(continuation, previous.conversation.owner_id)
    history = conversation_history(previous.conversation, previous.user_message)
    history += [ChatMessage(Message.Role.ASSISTANT, partial.text), ChatMessage(Message.Role.USER, CONTINUE_INSTRUCTION)]
    return continuation, history, partial


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
    continuation, history, partial = await sync_to_async(_create_continuation)(generation.pk)
    await launch(continuation, history, prefix=partial)
    return continuation


async def generation_mark_interrupted(*, generation: Generation) -> Generation | None:
    """End a stuck generation as interrupted (operator), keeping its persisted tokens.

    Returns None if it had already ended. A run of this process is asked to stop
    (it flushes first); one that does not, or that runs elsewhere or nowhere, is
    ended in the database.
    """
    if run := registry.local_run(generation.id):
        run.request_stop(Generation.Status.INTERRUPTED, Generation.InterruptReason.OPERATOR)
        end = await wait_for_end(generation.id, timeout=CANCEL_WAIT_S)
        if end and end.reason == Generation.InterruptReason.OPERATOR:
            return await Generation.objects.aget(pk=generation.id)
    return await end_orphan(generation.id, Generation.Status.INTERRUPTED, Generation.InterruptReason.OPERATOR)


def generation_chunks_delete(*, generations) -> tuple[int, int]:
    """Delete the token chunks of the finished ones among `generations`; their message text stays.

    Returns (generations affected, chunks deleted). A client that resumes one
    of them later gets its text in one `snapshot` event.
    """
    finished = [g.pk for g in generations if g.status in Generation.TERMINAL_STATUSES]
    deleted, _ = TokenChunk.objects.filter(generation_id__in=finished).delete()
    return len(finished), deleted
