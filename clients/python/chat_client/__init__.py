"""Python client for django-llm-stream: answers streamed over SSE or WebSocket that survive cuts,
stalls and network switches (resume by event id), falling back to the stored answer.

    from chat_client import ChatClient

    with ChatClient("http://127.0.0.1:8000") as chat:
        chat.login("demo", "demo")
        conversation = chat.create_conversation("Hello")
        answer = chat.ask(conversation["id"], "How do I resume a stream?").collect()
        print(answer.text, answer.end.status)
"""

from .client import NEWEST, AsyncChatClient, BlockingAnswerStream, ChatClient
from .errors import (
    ApiError,
    AttemptFailed,
    BadRequest,
    ChatError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StreamFailed,
    TooManyRequests,
    Unauthorized,
)
from .events import End, Event, Json, Posted, Reasoning, Snapshot, State, StateChange, Token
from .retry import Config
from .stream import Answer, AnswerStream

__all__ = [
    "NEWEST", "Answer", "AnswerStream", "ApiError", "AsyncChatClient", "AttemptFailed", "BadRequest",
    "BlockingAnswerStream", "ChatClient", "ChatError", "Config", "Conflict", "End", "Event", "Forbidden", "Json",
    "NotFound", "PayloadTooLarge", "Posted", "Reasoning", "ServiceUnavailable", "Snapshot", "State", "StateChange",
    "StreamFailed", "Token", "TooManyRequests", "Unauthorized",
]
