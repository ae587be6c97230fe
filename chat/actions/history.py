"""What the model is shown of a conversation: the branch a message ends, newest messages kept."""

from django.db import connection

from ..llm import ChatMessage
from ..models import Conversation, Message

# The model sees at most this many earlier messages of the conversation.
HISTORY_MESSAGES = 40


def conversation_history(conversation: Conversation, user_message: Message) -> list[ChatMessage]:
    """The branch that ends at `user_message`: it and the messages it follows, oldest first.

    One recursive query (the ORM has none) walks the branch up from
    `user_message`, so an answer costs the same in a long conversation as in a
    short one. Answers' reasoning is left out: the model is shown their text.
    """
    table, quote = Message._meta.db_table, connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE branch (id, parent_id, depth) AS (
                SELECT id, parent_id, 0 FROM {quote(table)} WHERE id = %s AND conversation_id = %s
                UNION ALL
                SELECT m.id, m.parent_id, branch.depth + 1 FROM {quote(table)} m
                JOIN branch ON m.id = branch.parent_id
                WHERE m.conversation_id = %s AND branch.depth < %s
            )
            SELECT m.role, m.content FROM branch JOIN {quote(table)} m ON m.id = branch.id
            WHERE NOT (m.role = %s AND m.content = '')
            ORDER BY branch.depth LIMIT %s
            """,
            [user_message.pk, conversation.pk, conversation.pk, 4 * HISTORY_MESSAGES, Message.Role.ASSISTANT,
             HISTORY_MESSAGES],
        )
        newest_first = cursor.fetchall()
    return [ChatMessage(role, content) for role, content in reversed(newest_first)]
