"""What the model is shown (conversation_history): one branch of the message tree, newest messages kept."""

import pytest

from chat.actions.history import HISTORY_MESSAGES, conversation_history
from chat.llm import ChatMessage
from chat.models import Conversation, Message
from tests.support import factories

pytestmark = pytest.mark.django_db


def say(conversation: Conversation, role: str, content: str, parent: Message | None) -> Message:
    return Message.objects.create(conversation=conversation, role=role, content=content, parent=parent)


def test_the_branch_only_oldest_first_without_empty_answers():
    conversation = Conversation.objects.create(owner=factories.user())
    first = say(conversation, "user", "one", None)
    answer = say(conversation, "assistant", "an answer", first)
    say(conversation, "assistant", "another version of it", first)  # A sibling: not on the branch.
    say(conversation, "assistant", "", first)  # An answer interrupted before its first token.
    edited = say(conversation, "user", "two, edited", answer)
    say(conversation, "user", "two", answer)  # The edit's original: another branch.
    say(Conversation.objects.create(owner=factories.user()), "user", "elsewhere", None)

    assert conversation_history(conversation, edited) == [
        ChatMessage("user", "one"),
        ChatMessage("assistant", "an answer"),
        ChatMessage("user", "two, edited"),
    ]
    assert conversation_history(conversation, first) == [ChatMessage("user", "one")]


def test_a_long_branch_keeps_its_newest_messages():
    conversation = Conversation.objects.create(owner=factories.user())
    parent = None
    for n in range(HISTORY_MESSAGES):
        parent = say(conversation, "user", f"question {n}", parent)
        empty = say(conversation, "assistant", "", parent)  # Interrupted: skipped, and the walk goes on past it.
        parent = say(conversation, "user", f"again {n}", empty)
    history = conversation_history(conversation, parent)
    assert len(history) == HISTORY_MESSAGES
    assert history[-1] == ChatMessage("user", f"again {HISTORY_MESSAGES - 1}")
    assert history[0] == ChatMessage("user", f"question {HISTORY_MESSAGES // 2}")
    assert all(m.role == "user" for m in history)


def test_a_message_of_another_conversation_has_no_history_here():
    conversation = Conversation.objects.create(owner=factories.user())
    other = Conversation.objects.create(owner=factories.user())
    theirs = say(other, "user", "theirs", None)
    assert conversation_history(conversation, theirs) == []


def test_earlier_reasoning_is_left_out():
    """The model is shown earlier answers' text, never their reasoning; an answer with reasoning only is skipped."""
    conversation = Conversation.objects.create(owner=factories.user())
    first = say(conversation, "user", "one", None)
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content="the answer", reasoning="thinking it over", parent=first
    )
    thought_only = Message.objects.create(
        conversation=conversation, role="assistant", content="", reasoning="cut while thinking", parent=say(
            conversation, "user", "two", answer
        )
    )
    last = say(conversation, "user", "three", thought_only)
    assert conversation_history(conversation, last) == [
        ChatMessage("user", "one"),
        ChatMessage("assistant", "the answer"),
        ChatMessage("user", "two"),
        ChatMessage("user", "three"),
    ]
