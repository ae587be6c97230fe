"""Conversations: create, rename, delete."""

import asyncio

from asgiref.sync import sync_to_async
from django.db import transaction

from ..errors import ApiError
from ..models import Conversation, Generation
from ..transports import live
from .generations import generation_cancel
from .messages import lock_user


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
        lock_user(conversation.owner_id)
        if Generation.objects.filter(conversation=conversation, status__in=Generation.ACTIVE_STATUSES).exists():
            raise ApiError(
                409,
                "generation_active",
                "An answer in this conversation is still stopping; try the delete again in a few seconds.",
            )
        conversation.delete()
