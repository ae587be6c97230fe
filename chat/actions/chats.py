"""AI SDK chats: conversations named by the chat id a client generated (`POST /api/ai-sdk/chat`).

The client's id is looked up within its owner's conversations only, so
another user's chat of the same id is a different conversation, never theirs.
The server's messages are the history; the client only adds its new message.
"""

from django.db import IntegrityError

from ..errors import ApiError
from ..models import Conversation, Generation, Message
from ..transports import live
from .messages import NEWEST, Answer, generation_regenerate, message_post


async def chat_conversation(*, owner, chat_id: str) -> Conversation:
    """The owner's conversation of this chat id; 404 if there is none (whoever else has one)."""
    conversation = await Conversation.objects.owned_by(owner).filter(client_id=chat_id).afirst()
    if conversation is None:
        raise ApiError(404, "not_found", f"No chat {chat_id!r}.")
    return conversation


async def chat_open(*, owner, chat_id: str, title: str) -> Conversation:
    """The owner's conversation of this chat id, created (titled `title`) on the chat's first message."""
    conversation = await Conversation.objects.owned_by(owner).filter(client_id=chat_id).afirst()
    if conversation is not None:
        return conversation
    try:
        conversation = await Conversation.objects.acreate(owner=owner, client_id=chat_id, title=title)
    except IntegrityError:
        # The same chat's first message, sent twice at once: the other request created it.
        return await chat_conversation(owner=owner, chat_id=chat_id)
    await live.conversation_changed(conversation, "conversation.created")
    return conversation


async def chat_submit(
    *, conversation: Conversation, client_id: str, content: str, model: str | None, message_id: str | None
) -> Answer:
    """Post the user's new message (`client_id`: its id in the client) after the chat's newest one.

    With `message_id` (the SDK's edit of a user message), in that message's
    place: the edited one stays, as a branch, as on the chat page.
    """
    parent_id = NEWEST
    if message_id is not None:
        edited = await chat_message(conversation, message_id, Message.Role.USER)
        parent_id = edited.parent_id
    return await message_post(
        conversation_id=conversation.pk,
        owner_id=conversation.owner_id,
        content=content,
        model=model,
        parent_id=parent_id,
        client_id=client_id,
    )


async def chat_regenerate(*, conversation: Conversation, message_id: str | None, model: str | None) -> Answer:
    """A new version of the answer `message_id` (default: the chat's newest answer); the old one stays."""
    if message_id is not None:
        answer = await chat_message(conversation, message_id, Message.Role.ASSISTANT)
    else:
        answer = await conversation.messages.filter(role=Message.Role.ASSISTANT).order_by("-pk").afirst()
        if answer is None:
            raise ApiError(400, "nothing_to_regenerate", "This chat has no answer to regenerate yet.", "trigger")
    generation = await Generation.objects.filter(assistant_message=answer).order_by("-first_seq", "-created_at").afirst()
    if generation is None:
        raise ApiError(400, "nothing_to_regenerate", f"Message {message_id} is not an answer.", "messageId")
    return await generation_regenerate(generation=generation, model=model)


async def chat_message(conversation: Conversation, message_id: str, role: str) -> Message:
    """The chat's message of this id and role: a user message's client id, or an id of the server's."""
    messages = conversation.messages.filter(role=role)
    message = None
    if role == Message.Role.USER:
        message = await messages.filter(client_id=message_id).order_by("-pk").afirst()
    if message is None and message_id.isascii() and message_id.isdigit() and len(message_id) <= 18:
        message = await messages.filter(pk=int(message_id)).afirst()
    if message is None:
        raise ApiError(
            404,
            "not_found",
            f"No {role} message {message_id[:40]!r} in this chat (an answer's id is the `start` chunk's "
            "messageId; GET /api/ai-sdk/chat/<id>/messages lists them all).",
            "messageId",
        )
    return message


async def chat_running_generation(*, conversation: Conversation) -> Generation | None:
    """The chat's answer being generated, if any (the newest, should there be several)."""
    return (
        await Generation.objects.filter(conversation=conversation, status__in=Generation.ACTIVE_STATUSES)
        .order_by("-created_at")
        .afirst()
    )


async def chat_branch(*, conversation: Conversation) -> list[Message]:
    """The chat as the SDK shows it: the branch that ends at its newest message, oldest first."""
    rows = {m.pk: m async for m in conversation.messages.order_by("pk")}
    branch, message = [], rows[max(rows)] if rows else None
    while message is not None:
        branch.append(message)
        message = rows.get(message.parent_id)
    return branch[::-1]
