"""Answers: a user message and the generation that answers it, created once per Idempotency-Key."""

import hashlib
import json
from dataclasses import dataclass
from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..db import db_work
from ..errors import ApiError
from ..llm import ChatMessage
from ..llm.catalog import ChatModel, default_model, known_model, model_named
from ..models import Conversation, Generation, IdempotencyKey, Message
from ..server.admission import get_admission
from ..streaming import runner
from ..streaming.answers import AnswerParts
from ..transports import live
from .generations import generation_cancel
from .history import conversation_history
from .queue import queue_notify

# A new message's parent when the client names none: the conversation's newest message.
NEWEST = "newest"


def locked_conversation(conversation_id, owner_id) -> Conversation:
    """The owner's conversation, the owner locked as by `lock_user`, in one statement; 404 if it is not theirs."""
    conversation = (
        Conversation.objects.select_related("owner")
        .select_for_update(of=("owner",))
        .filter(pk=conversation_id, owner_id=owner_id)
        .first()
    )
    if conversation is None:
        raise ApiError(404, "not_found", "No such conversation.")
    return conversation


def lock_user(user_id) -> None:
    """Serialise one user's writes that check a limit or a key (a no-op lock on SQLite, which serialises writers)."""
    list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))


def model_for(conversation: Conversation, requested: str | None) -> ChatModel:
    """The model asked for (an unknown one is a 400), else the conversation's last one, else the default."""
    return model_named(requested) or known_model(conversation.model) or default_model()


def message_parent(conversation: Conversation, parent_id) -> Message | None:
    """The answer a new user message follows: NEWEST, None (a first message) or an id in this conversation."""
    if parent_id == NEWEST:
        return Message.objects.filter(conversation=conversation).order_by("-pk").first()
    if parent_id is None:
        return None
    parent = Message.objects.filter(pk=parent_id, conversation=conversation).first()
    if parent is None:
        # As for any object of another user's: not found, whether it exists elsewhere or not.
        raise ApiError(404, "not_found", f"Message {parent_id} is not in this conversation.", "parent_id")
    if parent.role != Message.Role.ASSISTANT:
        raise ApiError(
            400,
            "invalid_parent",
            f"Message {parent_id} is a {parent.role} message; a message follows an answer (or is first: null).",
            "parent_id",
        )
    return parent


def new_generation(
    *,
    conversation: Conversation,
    user_message: Message,
    response_format: str,
    model: ChatModel | None = None,
    first: bool = False,
    queued_behind: Generation | None = None,
) -> Generation:
    """Create an empty assistant message and the generation that will fill it (in the caller's transaction).

    The answer is a new version among the answers to `user_message` (`first`: it has none yet).
    `queued_behind`: it waits in the queue, unclaimed, until that answer has ended.
    """
    model = model or model_for(conversation, None)
    variant = 0 if first else Message.objects.filter(parent=user_message, role=Message.Role.ASSISTANT).count()
    assistant_message = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, parent=user_message
    )
    generation = Generation.objects.create(
        conversation=conversation,
        user_message=user_message,
        assistant_message=assistant_message,
        provider=model.provider,
        model=model.model,
        variant=variant,
        response_format=response_format,
        queued_behind=queued_behind,
        **(waiting_state() if queued_behind else runner.initial_state()),
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now(), model=model.id)
    announce(generation, conversation.owner_id)
    return generation


def waiting_state() -> dict:
    """An enqueued answer's run fields: in the queue, claimed by no one until the one before it ends."""
    return {"status": Generation.Status.QUEUED, "worker": "", "heartbeat_at": timezone.now()}


# What a new message does to an answer still running in its conversation (docs/protocol.md).
MULTITASK = ("reject", "enqueue", "interrupt")


def running_answer(conversation_id, owner_id) -> Generation | None:
    """The conversation's newest answer still queued or streaming, if it is the owner's."""
    return (
        Generation.objects.filter(
            conversation_id=conversation_id, conversation__owner_id=owner_id, status__in=Generation.ACTIVE_STATUSES
        )
        .order_by("-created_at")
        .first()
    )


def announce(generation: Generation, owner_id) -> None:
    """`generation.started` on the owner's channel once the caller's transaction commits.

    So before the generation is launched: the start always precedes its end on the channel.
    """
    transaction.on_commit(partial(live.publish_generation, live.generation_row(generation), owner_id))


async def launch(generation: Generation, history: list[ChatMessage], prefix: AnswerParts = AnswerParts()) -> None:
    """Start the answer here (in-process), or wake the workers to claim it (worker mode); it is announced.

    `prefix`: the answer so far (a continuation's).
    """
    if settings.CHAT_RUNNER == "workers":
        await db_work(queue_notify)()
    else:
        runner.start_generation(generation, history, prefix=prefix)


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
    conversation_id: int,
    owner_id: int,
    content: str,
    response_format: str = "text",
    model: str | None = None,
    parent_id: int | None | str = NEWEST,
    idempotency: Idempotency | None = None,
    status_code: int = 201,
    client_id: str = "",
    multitask: str | None = None,
) -> Answer:
    """Add the user's message after `parent_id` and start the answer to it, with `model`.

    `client_id`: the message's id in an AI SDK client (actions/chats.py).

    The conversation must be the owner's (else 404): checked in the answer's
    transaction, which saves the request a query. With an idempotency key
    already used for the same request, return what that request created
    instead; with a different request, refuse (409).

    `multitask` says what to do if an answer still runs in the conversation:
    `reject` (409), `enqueue` (this answer waits in the queue, and starts
    once that one has ended, with its text in the history), `interrupt`
    (stop it, keeping its partial text, then answer). None: answer at once,
    beside it.
    """
    if multitask == "interrupt":
        running = await sync_to_async(running_answer)(conversation_id, owner_id)
        if running is not None:
            await generation_cancel(generation=running)
    with get_admission().starting_answer():
        answer, history = await sync_to_async(_answer_idempotently)(
            multitask=multitask,
            conversation_id=conversation_id,
            owner_id=owner_id,
            user_message=None,
            content=content,
            parent_id=parent_id,
            model=model,
            response_format=response_format,
            idempotency=idempotency,
            status_code=status_code,
            client_id=client_id,
        )
        if history is not None:
            await launch(answer.generation, history)
        elif answer.generation.queued_behind_id and not answer.replayed:
            await runner.run_queued()  # The answer before it may have ended meanwhile.
    return answer


async def generation_regenerate(
    *, generation: Generation, model: str | None = None, idempotency: Idempotency | None = None, status_code: int = 201
) -> Answer:
    """Answer the same user message again, in a new assistant message: a new version; the old one stays."""
    with get_admission().starting_answer():
        generation = await Generation.objects.select_related("conversation", "user_message").aget(pk=generation.pk)
        if not generation.is_terminal:
            raise ApiError(
                409, "generation_active", f"Generation {generation.id} is still {generation.status}; cancel it first."
            )
        answer, history = await sync_to_async(_answer_idempotently)(
            conversation_id=generation.conversation_id,
            owner_id=generation.conversation.owner_id,
            user_message=generation.user_message,
            content=None,
            parent_id=None,
            model=model,
            response_format=generation.response_format,
            idempotency=idempotency,
            status_code=status_code,
        )
        if history is not None:
            await launch(answer.generation, history)
    return answer


def _answer_idempotently(**kwargs) -> tuple[Answer, list[ChatMessage] | None]:
    """Create the answer, or find the one an earlier request with the same key created.

    Returns the history to generate from, or None when nothing was created.
    """
    try:
        return _answer(**kwargs)
    except IntegrityError:
        idempotency, owner_id = kwargs["idempotency"], kwargs["owner_id"]
        if idempotency is None:
            raise
        # A concurrent request with the same key committed first: answer what it created.
        replay = _replay(owner_id, idempotency)
        if replay is None:
            raise
        return replay, None


def check_active_limit(owner_id) -> None:
    """A 429 if the user already has CHAT_MAX_ACTIVE_GENERATIONS_PER_USER answers queued or streaming."""
    limit = settings.CHAT_MAX_ACTIVE_GENERATIONS_PER_USER
    if limit:
        active = Generation.objects.filter(conversation__owner_id=owner_id, status__in=Generation.ACTIVE_STATUSES).count()
        if active >= limit:
            raise ApiError(
                429,
                "too_many_generations",
                f"You have {active} answers being generated; the limit is {limit}. "
                "Wait for one to finish, or cancel one.",
            )


def _answer(
    *,
    conversation_id: int,
    owner_id: int,
    user_message: Message | None,
    content: str | None,
    parent_id: int | None | str,
    model: str | None,
    response_format: str,
    idempotency: Idempotency | None,
    status_code: int,
    client_id: str = "",
    multitask: str | None = None,
) -> tuple[Answer, list[ChatMessage] | None]:
    with transaction.atomic():
        conversation = locked_conversation(conversation_id, owner_id)
        model = model_for(conversation, model)
        if idempotency is not None:
            IdempotencyKey.objects.filter(user_id=owner_id, created_at__lt=idempotency_cutoff()).delete()
            replay = _replay(owner_id, idempotency)
            if replay is not None:
                return replay, None
        running = running_answer(conversation_id, owner_id) if multitask in ("reject", "enqueue") else None
        if running is not None and multitask == "reject":
            raise ApiError(
                409,
                "answer_running",
                f"An answer is still being generated in this conversation ({running.id}). Wait for it, stop it, "
                'or post with "multitask": "enqueue" or "interrupt".',
            )
        check_active_limit(owner_id)
        first = user_message is None
        if first:
            parent = message_parent(conversation, parent_id)
            user_message = Message.objects.create(
                conversation=conversation, role=Message.Role.USER, content=content, parent=parent, client_id=client_id
            )
        generation = new_generation(
            conversation=conversation,
            user_message=user_message,
            response_format=response_format,
            model=model,
            first=first,
            queued_behind=running,
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
    if running is not None:
        # Enqueued: its history is read when it is claimed, with the answer before it complete.
        transaction.on_commit(queue_notify)
        return Answer(user_message, generation, status_code), None
    return Answer(user_message, generation, status_code), conversation_history(conversation, user_message)


def _replay(owner_id, idempotency: Idempotency) -> Answer | None:
    """What the key's first request created; None if the key is new or expired."""
    row = (
        IdempotencyKey.objects.select_related("message", "generation")
        .filter(user_id=owner_id, key=idempotency.key)
        .first()
    )
    if row is None or row.created_at < idempotency_cutoff():
        return None
    if row.fingerprint != idempotency.fingerprint:
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was already used for a different request; use a new key for a new request.",
            "Idempotency-Key",
        )
    return Answer(row.message, row.generation, row.status_code, replayed=True)


def idempotency_cutoff():
    """Keys older than this are forgotten: a retry comes within minutes, not days."""
    return timezone.now() - timezone.timedelta(seconds=settings.CHAT_IDEMPOTENCY_TTL_S)
