"""Typed parts over a real socket: reasoning streams, persists and resumes exactly like text.

`simulated-reasoning` thinks first (a reasoning part), then answers; every
part's tokens share one sequence space, so one event id names one position.
"""

import json

import pytest

from chat.llm import ChatMessage
from chat.llm.simulated import SimulatedProvider
from tests.support.client import assert_ids_increase, logged_in, shown_parts
from tests.support.operator import admin_action, operator_client, started_id
from tests.support.ws import read_ws

PROMPT = "How does a model think before it answers?"
MODEL = SimulatedProvider.REASONING_MODEL


def expected_parts(prompt: str) -> tuple[str, str]:
    """The simulated model's answer to a first message, as (text, reasoning)."""
    tokens = SimulatedProvider(tokens_per_s=0, model=MODEL).answer_tokens([ChatMessage("user", prompt)])
    text = "".join(t for t in tokens if isinstance(t, str))
    return text, "".join(t.text for t in tokens if not isinstance(t, str))


def reasoning_tokens(prompt: str) -> list[str]:
    tokens = SimulatedProvider(tokens_per_s=0, model=MODEL).answer_tokens([ChatMessage("user", prompt)])
    return [t.text for t in tokens if not isinstance(t, str)]


def assert_contiguous(read, stored: dict) -> None:
    """One event per token at most, ids only forward across both parts, ending at the stored last seq."""
    assert_ids_increase(read.part_seqs, last=stored["last_seq"])


async def test_reasoning_streams_first_and_is_stored_apart_from_the_text(alice):
    generation = await alice.ask(PROMPT, model=MODEL)
    read = await alice.read_stream(generation["id"])
    stored = await alice.wait_terminal(generation["id"])
    text, reasoning = expected_parts(PROMPT)
    assert stored["status"] == "complete"
    assert (stored["text"], stored["reasoning"]) == (text, reasoning) and reasoning
    assert (read.text, read.reasoning) == (text, reasoning)
    names = [e.event for e in read.events if e.event in ("token", "reasoning")]
    assert names == sorted(names, key=lambda name: name == "token"), "the reasoning part comes before the text"
    assert_contiguous(read, stored)
    messages = (await alice.http.get(f"/api/conversations/{stored['conversation_id']}/messages")).json()["items"]
    answer = next(m for m in messages if m["id"] == stored["assistant_message_id"])
    assert (answer["content"], answer["reasoning"]) == (text, reasoning)
    assert next(m for m in messages if m["role"] == "user")["reasoning"] == ""


@pytest.mark.parametrize("cut_every", [1, 4, 9])
async def test_resume_inside_the_reasoning_part_is_exact(alice, cut_every):
    """Cut every k token or reasoning events (many cuts fall inside the reasoning) and resume by Last-Event-ID."""
    generation = await alice.ask(f"{PROMPT} (cut every {cut_every})", model=MODEL)
    events, _ = await alice.follow_with_cuts(generation["id"], cut_every)
    stored = await alice.wait_terminal(generation["id"])
    assert shown_parts(events) == (stored["text"], stored["reasoning"])
    seqs = [json.loads(e.data)["seq"] for e in events if e.event in ("token", "reasoning")]
    assert_ids_increase(seqs, last=stored["last_seq"])
    assert [e.event for e in events if e.event not in ("token", "reasoning")] == ["done"]


async def test_a_late_client_replays_both_parts_from_the_database(alice):
    generation = await alice.ask(PROMPT, model=MODEL)
    stored = await alice.wait_terminal(generation["id"])
    replay = await alice.read_stream(generation["id"])
    assert (replay.text, replay.reasoning) == (stored["text"], stored["reasoning"])
    # From the middle of the reasoning: exactly the rest of it, then the whole text.
    thoughts = reasoning_tokens(PROMPT)
    middle = len(thoughts) // 2
    rest = await alice.read_stream(generation["id"], last_event_id=str(middle))
    assert (rest.reasoning, rest.text) == ("".join(thoughts[middle:]), stored["text"])
    assert_ids_increase(rest.part_seqs, last=stored["last_seq"], after=middle)


async def test_the_websocket_carries_reasoning_frames(server, alice):
    generation = await alice.ask(PROMPT, model=MODEL)
    read = await read_ws(server, generation["id"], alice)
    stored = await alice.wait_terminal(generation["id"])
    reasoning = [f for f in read.frames if f["type"] == "reasoning"]
    assert "".join(f["text"] for f in reasoning) == stored["reasoning"] and read.text == stored["text"]
    ids = [f["id"] for f in read.frames if f["type"] in ("token", "reasoning")]
    assert_ids_increase(ids, last=stored["last_seq"])
    assert all(f["id"] == f["seq"] for f in reasoning)


async def test_durable_streams_messages_carry_the_reasoning_part(alice):
    generation = await alice.ask(PROMPT, model=MODEL)
    stored = await alice.wait_terminal(generation["id"])
    response = await alice.http.get(f"/ds/v1/stream/generations/{generation['id']}", params={"offset": "-1"})
    assert response.status_code == 200, response.text
    messages = response.json()
    assert "".join(m["text"] for m in messages if m["type"] == "reasoning") == stored["reasoning"]
    assert "".join(m["text"] for m in messages if m["type"] == "token") == stored["text"]
    assert messages[-1]["type"] == "done"


async def test_the_non_streaming_fallback_returns_both_parts(alice):
    conversation = await alice.new_conversation()
    response = await alice.post(
        f"/api/conversations/{conversation}/messages", json={"content": PROMPT, "stream": False, "model": MODEL}
    )
    assert response.status_code == 200, response.text
    generation = response.json()["generation"]
    assert (generation["text"], generation["reasoning"]) == expected_parts(PROMPT)


async def test_a_continuation_snapshot_restores_both_parts(start_server, backend):
    """An answer cut mid-text, continued by an operator: a client that starts over gets one snapshot with
    the text and the reasoning so far, then the rest; it ends with exactly the stored parts."""
    text, reasoning = expected_parts(PROMPT)
    server = start_server(backend, fresh=True, CHAT_SIMULATED_FAIL_AFTER=len(reasoning_tokens(PROMPT)) + 5)
    async with await logged_in(server) as alice, await operator_client(server) as ops:
        old = await alice.ask(PROMPT, model=MODEL)
        cut = await alice.wait_terminal(old["id"])
        assert cut["status"] == "interrupted" and cut["reasoning"] == reasoning and cut["text"]
        new_id = started_id(await admin_action(ops, "continue_generations", old["id"]))
        fresh = await alice.read_stream(new_id, last_event_id="0")
        stored = await alice.wait_terminal(new_id)
    assert fresh.events[0].event == "snapshot"
    assert json.loads(fresh.events[0].data)["reasoning"] == reasoning
    assert shown_parts(fresh.events) == (stored["text"], stored["reasoning"])
    assert stored["reasoning"] == reasoning and text.startswith(cut["text"])


async def test_json_answers_keep_working_beside_reasoning(alice):
    generation = await alice.ask("List the steps to resume a stream", model=MODEL, response_format="json")
    read = await alice.read_stream(generation["id"])
    stored = await alice.wait_terminal(generation["id"])
    assert stored["status"] == "complete" and stored["json"] is not None and stored["reasoning"]
    values = [json.loads(e.data)["value"] for e in read.events if e.event == "json"]
    assert values[-1] == stored["json"]
    reasoning_seqs = {json.loads(e.data)["seq"] for e in read.events if e.event == "reasoning"}
    assert not reasoning_seqs & {json.loads(e.data)["seq"] for e in read.events if e.event == "json"}
