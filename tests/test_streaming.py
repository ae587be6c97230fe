"""The core promise, over a real socket: every client ends with exactly the stored text."""

import asyncio
import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.support.client import (
    ChatClient,
    StreamRead,
    assert_ids_increase,
    connection_rows,
)
from tests.support.server import USERS

PROMPT = "How should a phone resume an LLM stream after switching networks?"


def seqs(events) -> list[int]:
    return StreamRead(events, 200).seqs


async def test_complete_stream_equals_stored_text(alice):
    generation = await alice.ask(PROMPT)
    read = await alice.read_stream(generation["id"])
    stored = await alice.generation(generation["id"])
    assert read.terminal.event == "done"
    assert stored["status"] == "complete"
    assert read.text == stored["text"] and stored["text"]
    assert_ids_increase(read.seqs, last=stored["last_seq"])
    assert read.terminal.id == str(stored["last_seq"])
    done = json.loads(read.terminal.data)
    assert done["seq"] == stored["last_seq"] and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == stored["token_count"]


@pytest.mark.parametrize("cut_every", [1, 2, 3, 5, 8, 13, 21])
async def test_resume_after_cuts_gives_exact_text(alice, cut_every):
    """Drop the connection every k token events (often mid-flush) and resume by Last-Event-ID."""
    generation = await alice.ask(f"{PROMPT} (cut every {cut_every})")
    events, _ = await alice.follow_with_cuts(generation["id"], cut_every)
    stored = await alice.generation(generation["id"])
    assert "".join(json.loads(e.data)["text"] for e in events if e.event == "token") == stored["text"]
    assert_ids_increase(seqs(events), last=stored["last_seq"])
    assert [e.event for e in events if e.event != "token"] == ["done"]


async def test_resume_by_query_parameter(alice):
    generation = await alice.ask(PROMPT)
    first = await alice.read_stream(generation["id"], max_events=7)
    rest = await alice.read_stream(generation["id"], params={"last_event_id": first.last_id})
    stored = await alice.generation(generation["id"])
    assert first.text + rest.text == stored["text"]
    # A late client may have had every token in its 7 events; then only the end is left.
    assert all(seq > int(first.last_id) for seq in rest.seqs) and rest.terminal.id == str(stored["last_seq"])


async def test_generation_completes_with_no_client_and_replays_later(alice):
    generation = await alice.ask(PROMPT)
    stored = await alice.wait_terminal(generation["id"])
    assert stored["status"] == "complete"
    replay = await alice.read_stream(generation["id"])
    assert replay.text == stored["text"]
    assert replay.terminal.event == "done"
    tail = await alice.read_stream(generation["id"], last_event_id=str(stored["last_seq"]))
    assert [e.event for e in tail.events] == ["done"], "resuming at the end gives just the end"


async def test_two_clients_receive_identical_sequences(server, alice):
    async with ChatClient(server.url) as second_device:
        await second_device.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        first, second = await asyncio.gather(
            alice.read_stream(generation["id"]), second_device.read_stream(generation["id"])
        )
    stored = await alice.generation(generation["id"])
    # The same text and end; not the same events: the one that connects later may get stored chunks.
    for read in (first, second):
        assert read.text == stored["text"]
        assert_ids_increase(read.seqs, last=stored["last_seq"])
    assert (first.terminal.id, first.terminal.event, first.terminal.data) == (
        second.terminal.id, second.terminal.event, second.terminal.data
    )


async def test_slow_reader_does_not_delay_the_generation(server, alice):
    """A client that stops reading must not hold the generation back."""
    generation = await alice.ask(PROMPT)
    async with alice.http.stream("GET", f"/api/generations/{generation['id']}/stream") as response:
        assert response.status_code == 200
        # Read nothing more while the generation runs to its end.
        assert (await alice.wait_terminal(generation["id"]))["status"] == "complete"
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
    assert b"event: done" in body


async def test_client_chooses_coalescing_window(alice):
    generation = await alice.ask(PROMPT)
    read = await alice.read_stream(generation["id"], params={"coalesce_ms": "200"})
    stored = await alice.generation(generation["id"])
    assert read.text == stored["text"]
    # The simulated model paces by an absolute schedule, so a slow machine only makes batches bigger.
    assert len(read.tokens) < stored["last_seq"] / 2, "tokens within the window go out together"
    assert_ids_increase(read.seqs, last=stored["last_seq"])
    # Resuming from an id inside a coalesced stream is exact too. A late client may have had
    # everything in one event; then the middle is the end, and only `done` is left.
    middle = (len(read.tokens) - 1) // 2
    rest = await alice.read_stream(generation["id"], last_event_id=read.tokens[middle].id)
    assert all(seq > int(read.tokens[middle].id) for seq in rest.seqs)
    assert StreamRead(read.tokens[: middle + 1], 200).text + rest.text == stored["text"]


async def test_non_streaming_fallback_returns_the_complete_answer(alice):
    conversation_id = await alice.new_conversation()
    response = await alice.post(
        f"/api/conversations/{conversation_id}/messages", json={"content": PROMPT, "stream": False}
    )
    assert response.status_code == 200, response.text
    generation = response.json()["generation"]
    assert generation["status"] == "complete"
    assert generation["text"] == (await alice.generation(generation["id"]))["text"] != ""


async def test_stream_headers(alice):
    generation = await alice.ask(PROMPT)
    async with alice.http.stream("GET", f"/api/generations/{generation['id']}/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = await anext(response.aiter_text())
        assert first.startswith(": stream\nretry: ")


async def test_connections_are_recorded(start_server, backend):
    """Each stream connection leaves a row saying how far it got and how it ended."""
    # The model stalls after 40 tokens until cancelled: the first connection is cut while the
    # answer runs, however late it connects, so its server cannot have sent the end already.
    server = start_server(backend, CHAT_SIMULATED_STALL_AFTER=40, CHAT_UPSTREAM_STALL_S=600)
    async with ChatClient(server.url) as alice:
        await alice.login("alice", USERS["alice"])
        generation = await alice.ask(PROMPT)
        first = await alice.read_stream(generation["id"], max_events=1)
        cut = int(first.last_id)
        await alice.post(f"/api/generations/{generation['id']}/cancel")
        rest = await alice.read_stream(generation["id"], last_event_id=first.last_id)
        stored = await alice.generation(generation["id"])
    assert rest.terminal.event == "cancelled" and first.text + rest.text == stored["text"]
    rows = await connection_rows(server, generation["id"], 2)
    assert [(r["resumed_from"], r["end_reason"]) for r in rows] == [(None, "client_gone"), (cut, "completed")]
    assert rows[0]["tokens_sent"] >= cut
    assert rows[1]["tokens_sent"] == stored["last_seq"] - cut


async def test_fifty_concurrent_generations_each_followed(start_server, backend):
    """50 generations at once, each with a client, on the default SQLite database: no lock errors."""
    server = start_server(backend, fresh=True)
    async with ChatClient(server.url) as client:
        await client.login("alice", USERS["alice"])
        client.http._transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200))
        generations = await asyncio.gather(*(client.ask(f"Question number {n} about caching") for n in range(50)))
        reads = await asyncio.gather(*(client.read_stream(g["id"]) for g in generations))
        stored = await asyncio.gather(*(client.generation(g["id"]) for g in generations))
    assert [s["status"] for s in stored] == ["complete"] * 50
    for read, generation in zip(reads, stored):
        assert read.terminal.event == "done"
        assert read.text == generation["text"]
    assert "database is locked" not in server.log()
    assert "Traceback" not in server.log()


async def test_post_with_accept_event_stream_answers_with_the_stream_itself(alice):
    """One request instead of two: `posted` (the 201's JSON), then the tokens and the end, as the stream URL."""
    conversation_id = await alice.new_conversation()
    events = []
    async with aconnect_sse(
        alice.http,
        "POST",
        f"/api/conversations/{conversation_id}/messages",
        json={"content": PROMPT},
        headers={**alice.csrf, "Idempotency-Key": "one-request-1"},
    ) as source:
        assert source.response.status_code == 201
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for event in source.aiter_sse():
            if event.event != "message" or event.data:  # httpx-sse reports the bare `retry:` hint as an event.
                events.append(event)
    posted, rest = events[0], StreamRead(events[1:], 201)
    assert posted.event == "posted" and posted.id == ""
    generation = json.loads(posted.data)["generation"]
    assert source.response.headers["location"] == f"/api/generations/{generation['id']}"
    stored = await alice.generation(generation["id"])
    assert json.loads(posted.data)["message"]["content"] == PROMPT and generation["status"] in ("queued", "streaming")
    assert rest.text == stored["text"] != "" and rest.terminal.event == "done"
    assert_ids_increase(rest.seqs, last=stored["last_seq"])
    # It resumes like any stream; a retry with the same key streams the same answer again, from the start.
    middle = rest.seqs[len(rest.seqs) // 2]
    resumed = await alice.read_stream(generation["id"], last_event_id=str(middle))
    assert all(seq > middle for seq in resumed.seqs) and resumed.terminal.id == str(stored["last_seq"])
    response = await alice.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"content": PROMPT},
        headers={"Idempotency-Key": "one-request-1", "Accept": "text/event-stream"},
    )
    assert response.status_code == 201 and f'"id": "{generation["id"]}"' in response.text
    assert response.text.count("event: done") == 1


async def test_post_that_streams_takes_the_coalescing_window(alice):
    """`?coalesce_ms=` works on the POST as on the stream URL; a bad one is a 400 and creates nothing."""
    conversation_id = await alice.new_conversation()
    path = f"/api/conversations/{conversation_id}/messages"
    headers = {**alice.csrf, "Accept": "text/event-stream"}
    response = await alice.http.post(f"{path}?coalesce_ms=-1", json={"content": PROMPT}, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_coalesce_ms"
    assert (await alice.http.get(path)).json()["items"] == []
    async with aconnect_sse(alice.http, "POST", f"{path}?coalesce_ms=200", json={"content": PROMPT}, headers=alice.csrf) as source:
        assert source.response.status_code == 201
        events = [event async for event in source.aiter_sse() if event.event in ("posted", "token", "done")]
    generation = json.loads(events[0].data)["generation"]
    read = StreamRead(events[1:], 201)
    stored = await alice.generation(generation["id"])
    assert read.text == stored["text"] != "" and read.terminal.event == "done"
    # The simulated model paces by an absolute schedule, so a slow machine only makes batches bigger.
    assert len(read.tokens) < stored["last_seq"] / 2, "tokens within the window go out together"
    assert_ids_increase(read.seqs, last=stored["last_seq"])


async def test_post_with_accept_event_stream_errors_are_json(alice):
    """Nothing to stream: the usual JSON errors, and `stream: false` still waits for the whole answer."""
    headers = {**alice.csrf, "Accept": "text/event-stream"}
    response = await alice.http.post("/api/conversations/999999/messages", json={"content": PROMPT}, headers=headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    conversation_id = await alice.new_conversation()
    path = f"/api/conversations/{conversation_id}/messages"
    response = await alice.http.post(path, json={"content": " "}, headers=headers)
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/json")
    response = await alice.http.post(path, json={"content": PROMPT, "stream": False}, headers=headers)
    assert response.status_code == 200 and response.json()["generation"]["status"] == "complete"
