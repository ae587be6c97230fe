"""The Python client library against a real server: asking, following, resuming, stalls, the fallback."""

import asyncio

import pytest
from chat_client import (
    AsyncChatClient,
    ChatClient,
    Config,
    End,
    Posted,
    Reasoning,
    Snapshot,
    State,
    StateChange,
    Token,
)

from tests.support.proxy import FaultProxy
from tests.support.server import USERS
from tests.support.wait import eventually

# Answers of a few seconds: long enough to cut, stall and fall back in the middle.
PACED = {"CHAT_SIMULATED_TOKENS_PER_S": "60", "CHAT_SIMULATED_POINTS": "4", "CHAT_SIMULATED_MAX_TOKENS": "400"}
# Small waits, so that a test's retries take moments; the rules are the defaults' rules.
QUICK = Config(stall_s=1.5, backoff_base_s=0.05, backoff_cap_s=0.3, fallback_poll_s=0.2)


@pytest.fixture
def paced(start_server):
    return start_server("sqlite", **PACED)


async def logged_in(base_url: str, name: str = "alice", **options) -> AsyncChatClient:
    client = AsyncChatClient(base_url, **options)
    await client.login(name, USERS[name])
    return client


async def stored(client: AsyncChatClient, generation_id: str) -> dict:
    return await eventually(
        lambda: client.generation(generation_id),
        until=lambda g: g["status"] not in ("queued", "streaming"),
        what=f"generation {generation_id} to end",
    )


def assert_tokens_once(events: list, stored_generation: dict) -> None:
    """Token ids only go forward and reach the stored last seq: nothing shown twice, nothing missing."""
    seqs = [e.seq for e in events if isinstance(e, (Token, Reasoning))]  # one sequence space for both parts
    assert seqs == sorted(set(seqs)), f"a token id repeated or went back: {seqs}"
    assert seqs[-1] == stored_generation["last_seq"]


async def test_ask_streams_the_answer_in_one_request_and_ends_with_the_stored_text(start_server):
    server = start_server("sqlite")
    async with await logged_in(server.url) as client:
        conversation = await client.create_conversation("library")
        stream = client.ask(conversation["id"], "How do I resume a stream?")
        events = [event async for event in stream]

        assert isinstance(events[2], Posted), events[:3]  # after `connecting` and `streaming`
        generation = await stored(client, stream.generation_id)
        assert stream.text == generation["text"] != ""
        assert stream.last_event_id == generation["last_seq"]
        assert "".join(e.text for e in events if isinstance(e, Token)) == generation["text"]
        assert_tokens_once(events, generation)
        end = events[-2]
        assert isinstance(end, End) and (end.status, end.finish_reason, end.fallback) == ("complete", "stop", False)
        assert end.usage["completion_tokens"] == generation["token_count"]
        states = [e.state for e in events if isinstance(e, StateChange)]
        assert states == [State.CONNECTING, State.STREAMING, State.ENDED]
        conversations = await client.conversations()
        assert conversations[0]["id"] == conversation["id"]
        messages = await client.messages(conversation["id"])
        assert [m["role"] for m in messages] == ["user", "assistant"]


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_the_blocking_client_asks_and_follows(start_server, transport):
    server = start_server("sqlite")
    with ChatClient(server.url, transport=transport) as chat:
        chat.login("alice", USERS["alice"])
        conversation = chat.create_conversation()
        seen = []
        answer = chat.ask(conversation["id"], "Tell me about streams", on_state=seen.append).collect()
        generation = chat.generation(answer.generation_id)
        assert (answer.text, answer.last_event_id) == (generation["text"], generation["last_seq"])
        assert answer.end.status == "complete" and answer.state == State.ENDED
        assert [c.state for c in seen] == [State.CONNECTING, State.STREAMING, State.ENDED]

        # Following it again from a position gives exactly the rest.
        middle = generation["last_seq"] // 2
        replay = chat.follow(answer.generation_id, last_event_id=middle).collect()
        assert generation["text"].endswith(replay.text) and 0 < len(replay.text) < len(generation["text"])
        assert replay.last_event_id == generation["last_seq"]


@pytest.mark.parametrize("model", ["simulated-1", "simulated-reasoning"])
@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_cuts_mid_answer_resume_with_exactly_the_stored_text(paced, transport, model):
    async with await logged_in(paced.url) as direct:
        conversation = await direct.create_conversation()
        with FaultProxy(paced.port) as proxy:
            client = AsyncChatClient(proxy.url, direct.token, config=QUICK, transport=transport)
            async with client:
                stream = client.ask(conversation["id"], "A long answer, please", model=model)
                events, tokens_since_cut, cut_parts = [], 0, set()
                async for event in stream:
                    events.append(event)
                    if isinstance(event, (Token, Reasoning)):  # cuts inside the reasoning part too
                        tokens_since_cut += 1
                        if tokens_since_cut == 15:  # cut every 15 token events
                            tokens_since_cut = 0
                            await asyncio.to_thread(proxy.cut)
                            cut_parts.add(type(event))
        generation = await stored(direct, stream.generation_id)
    assert proxy.cuts >= 2, "the answer ended before it could be cut twice"
    assert stream.text == generation["text"] and stream.reasoning == generation["reasoning"]
    assert cut_parts == ({Token, Reasoning} if model == "simulated-reasoning" else {Token}), cut_parts
    assert_tokens_once(events, generation)
    states = [e.state for e in events if isinstance(e, StateChange)]
    assert states.count(State.INTERRUPTED) >= 2 and states[-1] == State.ENDED
    assert State.FALLBACK not in states  # every cut let the answer progress: no strikes add up


async def test_a_stall_is_reported_as_interrupted_with_the_text_so_far_then_resumes(paced):
    async with await logged_in(paced.url) as direct:
        conversation = await direct.create_conversation()
        with FaultProxy(paced.port) as proxy:
            async with AsyncChatClient(proxy.url, direct.token, config=QUICK) as client:
                stream = client.ask(conversation["id"], "A long answer, please")
                stalls, tokens = [], 0
                async for event in stream:
                    if isinstance(event, Token):
                        tokens += 1
                        if tokens == 10:
                            assert await asyncio.to_thread(proxy.stall) == 1  # the stream's connection goes silent
                    elif isinstance(event, StateChange) and event.state == State.INTERRUPTED:
                        stalls.append((event, stream.text))
                        await asyncio.to_thread(proxy.release)
        generation = await stored(direct, stream.generation_id)
    (change, text_then), *_ = stalls
    assert change.reason == "No data for 1.5 s." and change.failures == 1
    assert text_then and generation["text"].startswith(text_then)
    assert stream.text == generation["text"] and stream.end.status == "complete"


@pytest.mark.parametrize("model", ["simulated-1", "simulated-reasoning"])
async def test_three_failed_streams_fall_back_to_the_stored_answer(paced, model):
    async with await logged_in(paced.url) as direct:
        conversation = await direct.create_conversation()
        with FaultProxy(paced.port) as proxy:
            async with AsyncChatClient(proxy.url, direct.token, config=QUICK) as client:
                stream = client.ask(conversation["id"], "A long answer, please", model=model)
                events = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, Token) and sum(isinstance(e, Token) for e in events) == 5:
                        await asyncio.to_thread(proxy.refuse, path="/stream")  # every resume is refused
                        await asyncio.to_thread(proxy.cut)
        generation = await stored(direct, stream.generation_id)
    states = [(e.state, e.fallback) for e in events if isinstance(e, StateChange)]
    assert (State.INTERRUPTED, True) in states and states[-1] == (State.FALLBACK, True)
    assert stream.text == generation["text"] and stream.last_event_id == generation["last_seq"]
    assert stream.reasoning == generation["reasoning"] and bool(stream.reasoning) == (model == "simulated-reasoning")
    end = events[-2]
    assert isinstance(end, End) and end.fallback and end.status == "complete"
    assert isinstance(events[-3], Snapshot) and events[-3].text == generation["text"]
    assert sum("/stream" in line for line in proxy.refused) >= 3


async def test_a_post_cut_before_it_was_answered_is_retried_with_the_same_key(paced):
    """The POST reaches the server but its answer is held: the retry carries the same Idempotency-Key,
    so the server creates one message and one answer, which the client then follows to its end."""
    async with await logged_in(paced.url) as direct:
        conversation = await direct.create_conversation()
        with FaultProxy(paced.port) as proxy:
            await asyncio.to_thread(proxy.stall, "/messages", new_requests=True)
            async with AsyncChatClient(proxy.url, direct.token, config=QUICK) as client:
                stream = client.ask(conversation["id"], "Only once, please")
                answer = asyncio.create_task(stream.collect())
                await eventually(lambda: sum("POST /api/conversations/" in r for r in proxy.requests), until=lambda n: n >= 2, what="the post and its retry")
                await asyncio.to_thread(proxy.release)
                answer = await answer
        generation = await stored(direct, answer.generation_id)
        messages = await direct.messages(conversation["id"])
    assert [m["role"] for m in messages] == ["user", "assistant"], messages
    assert answer.text == generation["text"] and answer.end.status == "complete"
    assert stream.idempotency_key and stream.posted.generation["id"] == generation["id"]
