"""Business logic: every write to conversations and generations lives here, by area.

Views parse input, call one action and shape the output. Actions are the only
place that publishes events, and only after the data they describe is
committed (`ends.generation_ended` for the end of an answer).
"""

from .chats import (
    chat_branch,
    chat_conversation,
    chat_open,
    chat_regenerate,
    chat_running_generation,
    chat_submit,
)
from .conversations import conversation_create, conversation_delete, conversation_rename
from .ends import generation_ended
from .generations import (
    CANCEL_WAIT_S,
    generation_cancel,
    generation_end_orphan,
    generation_wait,
    stale_before,
    stale_heartbeat,
)
from .messages import NEWEST, Answer, Idempotency, generation_regenerate, message_post
from .operator import (
    continuation_refusal,
    generation_chunks_delete,
    generation_continue,
    generation_mark_interrupted,
    generation_retry,
)
from .retention import streams_prune

__all__ = [
    "CANCEL_WAIT_S",
    "NEWEST",
    "Answer",
    "Idempotency",
    "chat_branch",
    "chat_conversation",
    "chat_open",
    "chat_regenerate",
    "chat_running_generation",
    "chat_submit",
    "continuation_refusal",
    "conversation_create",
    "conversation_delete",
    "conversation_rename",
    "generation_cancel",
    "generation_chunks_delete",
    "generation_continue",
    "generation_end_orphan",
    "generation_ended",
    "generation_mark_interrupted",
    "generation_regenerate",
    "generation_retry",
    "generation_wait",
    "message_post",
    "stale_before",
    "stale_heartbeat",
    "streams_prune",
]
