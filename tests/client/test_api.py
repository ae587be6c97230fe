"""The client library's API calls against a real server: typed errors with the server's code, cancel,
continuing an answer, and the events it parses."""

import asyncio
import time

import httpx
import pytest
from chat_client import (
    AsyncChatClient,
    BadRequest,
    ChatClient,
    Config,
    Conflict,
    End,
    NotFound,
    PayloadTooLarge,
    Reasoning,
    ServiceUnavailable,
    Snapshot,
    State,
    StateChange,
    Token,
    TooManyRequests,
    Unauthorized,
)
from chat_client.errors import error_from_response
from chat_client.events import parse

from tests.support.operator import admin_action, operator_client, started_id
from tests.support.server import USERS
from tests.support.wait import eventually

SLOW = {"CHAT_SIMULATED_TOKENS_PER_S": "20", "CHAT_SIMULATED_POINTS": "6", "CHAT_SIMULATED_MAX_TOKENS": "400"}


async def logged_in(base_url: str, name: str = "alice", **options) -> AsyncChatClient:
    client = AsyncChatClient(base_url, **options)
    await client.login(name, USERS[name])
    return client


async def test_each_refusal_is_its_own_error_with_the_servers_code(start_server):
    server = start_server("sqlite", fresh=True, CHAT_MAX_BODY_BYTES=2000, CHAT_MAX_ACTIVE_GENERATIONS_PER_USER=1, **SLOW)
    async with AsyncChatClient(server.url) as anonymous:
        with pytest.raises(Unauthorized) as refused:
            await anonymous.login("alice", "wrong")
        assert (refused.value.status, refused.value.code) == (401, "invalid_credentials")
    async with AsyncChatClient(server.url, "chat_not-a-token") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.conversations()
        assert refused.value.code == "invalid_token"

    async with await logged_in(server.url) as alice, await logged_in(server.url, "bob") as bob:
        conversation = await alice.create_conversation()
        with pytest.raises(NotFound) as refused:
            await bob.messages(conversation["id"])  # another user's: the same 404 as none at all
        assert refused.value.code == "not_found"

        with pytest.raises(PayloadTooLarge) as refused:
            await alice.post_message(conversation["id"], "x" * 3000)
        assert refused.value.code == "body_too_large"

        with pytest.raises(BadRequest) as refused:
            await alice.post_message(conversation["id"], "   ")
        assert (refused.value.code, refused.value.field) == ("invalid", "content")

        first = await alice.post_message(conversation["id"], "A slow answer", idempotency_key="key-1")
        with pytest.raises(Conflict) as refused:
            await alice.post_message(conversation["id"], "Another text", idempotency_key="key-1")
        assert refused.value.code == "idempotency_conflict"
        again = await alice.post_message(conversation["id"], "A slow answer", idempotency_key="key-1")
        assert again["generation"]["id"] == first["generation"]["id"]

        # One answer at a time for this user: a second is refused, and says when to come back.
        with pytest.raises(TooManyRequests) as refused:
            await alice.post_message(conversation["id"], "And another")
        assert (refused.value.code, refused.value.retry_after) == ("too_many_generations", 5)
        stream = alice.ask(conversation["id"], "Streamed, then refused")
        with pytest.raises(TooManyRequests):
            await stream.collect()  # a refused post is final: nothing was created
        assert stream.state == State.ERROR and stream.generation_id is None
        await alice.cancel(first["generation"]["id"])

        # A stream that does not exist is a final error, not a retry loop.
        changes = []
        missing = alice.follow("00000000-0000-4000-8000-000000000000", on_state=changes.append)
        with pytest.raises(NotFound):
            await missing.collect()
        assert [c.state for c in changes] == [State.CONNECTING, State.ERROR] and changes[-1].final
        # The same over the WebSocket route: the error frame and its 4404 close.
        with pytest.raises(NotFound) as refused:
            await alice.follow("00000000-0000-4000-8000-000000000000", transport="ws").collect()
        assert refused.value.code == "not_found"


def test_a_503_carries_its_code_and_retry_after():
    """The server's overload answer (chat/server/admission.py), as it sends it."""
    response = httpx.Response(
        503,
        headers={"Retry-After": "5"},
        json={"error": {"code": "overloaded", "message": "The server is busy.", "field": None}},
    )
    error = error_from_response(response)
    assert isinstance(error, ServiceUnavailable)
    assert (error.status, error.code, error.retry_after, error.retryable) == (503, "overloaded", 5, True)


def test_events_parse_from_sse_data_and_websocket_frames_alike():
    assert parse("token", {"seq": 3, "text": "a"}) == Token(3, "a")
    assert parse("reasoning", {"type": "reasoning", "id": 2, "seq": 2, "text": "hm"}) == Reasoning(2, "hm")
    assert parse("snapshot", {"seq": 9, "text": "all", "reasoning": "why"}) == Snapshot(9, "all", "why")
    assert parse("snapshot", {"seq": 9, "text": "all"}).reasoning is None
    assert parse("interrupted", {"seq": 4, "status": "interrupted", "reason": "upstream_stall"}) == End(
        4, "interrupted", reason="upstream_stall"
    )
    assert parse("ping", {}) is None and parse("keep-alive", {}) is None


async def test_a_reasoning_answer_keeps_its_parts_apart(start_server):
    """Reasoning tokens share the sequence space but not the text (once the server streams them)."""
    server = start_server("sqlite")
    async with await logged_in(server.url) as alice:
        models = [m["id"] for m in await alice.models()]
        if "simulated-reasoning" not in models:
            pytest.skip("this server has no reasoning model yet (docs/protocol.md, parts)")
        conversation = await alice.create_conversation()
        stream = alice.ask(conversation["id"], "Think first", model="simulated-reasoning")
        events = [e async for e in stream]
        generation = await alice.generation(stream.generation_id)
    reasoning = [e for e in events if isinstance(e, Reasoning)]
    tokens = [e for e in events if isinstance(e, Token)]
    assert reasoning and tokens and reasoning[-1].seq < tokens[0].seq
    assert stream.reasoning == generation["reasoning"] and stream.text == generation["text"]


async def test_the_retry_after_of_a_refused_stream_is_waited_for(start_server):
    server = start_server("sqlite", fresh=True, CHAT_MAX_STREAMS_PER_USER=1, **SLOW)
    async with await logged_in(server.url) as alice:
        conversation = await alice.create_conversation()
        posted = await alice.post_message(conversation["id"], "A slow answer")
        generation_id = posted["generation"]["id"]
        holder = alice.follow(generation_id)
        events = aiter(holder)
        while not isinstance(event := await anext(events), StateChange) or event.state != State.STREAMING:
            pass  # the one stream this user may hold is open
        changes = []
        second = alice.follow(generation_id, on_state=changes.append, config=Config(backoff_base_s=0.01))
        follower = asyncio.create_task(second.collect())
        await eventually(lambda: [c for c in changes if c.state == State.INTERRUPTED], what="the refusal")
        refused_at = time.monotonic()
        await holder.aclose()
        answer = await follower
        waited = time.monotonic() - refused_at
        stored = await alice.generation(generation_id)
    refusal = next(c for c in changes if c.state == State.INTERRUPTED)
    assert refusal.retry_in >= 5, refusal  # Retry-After: 5, whatever the backoff says
    assert waited >= 4.5  # counted from after the refusal was seen: the asked time, less a little
    assert answer.text == stored["text"] and answer.end.status == "complete"


async def test_cancel_ends_the_stream_as_cancelled(start_server):
    server = start_server("sqlite", **SLOW)
    async with await logged_in(server.url) as alice:
        conversation = await alice.create_conversation()
        stream = alice.ask(conversation["id"], "A slow answer")
        events = []
        async for event in stream:
            events.append(event)
            if isinstance(event, Token) and len([e for e in events if isinstance(e, Token)]) == 3:
                cancelled = await stream.cancel()
                assert cancelled["id"] == stream.generation_id
        stored = await alice.generation(stream.generation_id)
    assert stream.end.status == "cancelled" == stored["status"]
    assert stream.text == stored["text"] and stream.state == State.ENDED


def test_an_interrupted_answer_continued_reads_as_one_answer(start_server):
    server = start_server("sqlite", fresh=True, **SLOW)
    with ChatClient(server.url) as chat:
        chat.login("alice", USERS["alice"])
        conversation = chat.create_conversation()
        stream = chat.ask(conversation["id"], "How should a mobile client resume an answer?")
        for event in stream:
            if isinstance(event, Token) and event.seq >= 4:
                break
        chat.cancel(stream.generation_id)
        stopped = chat.follow(stream.generation_id, last_event_id=stream.last_event_id, text=stream.text).collect()
        assert stopped.end.status == "cancelled" and chat.continuation(stopped.generation_id) is None

        async def continue_it() -> str:
            async with await operator_client(server) as ops:
                return started_id(await admin_action(ops, "continue_generations", stopped.generation_id))

        continuation_id = asyncio.run(continue_it())
        assert chat.continuation(stopped.generation_id)["id"] == continuation_id
        whole = chat.continue_answer(stopped).collect()
        stored = chat.generation(continuation_id)
    assert whole.generation_id == continuation_id and whole.end.status == "complete"
    assert whole.text == stored["text"] and whole.text.startswith(stopped.text) and len(whole.text) > len(stopped.text)
