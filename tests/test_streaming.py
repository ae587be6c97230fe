"""The core promise, over a real socket: every client ends with exactly the stored text."""

import asyncio
import json

import httpx
import pytest

from tests.support.client import ChatClient
from tests.support.server import USERS

PROMPT = "How should a phone resume an LLM stream after switching networks?"


def seqs(events) -> list[int]:
    return [json.loads(e.data)["seq"] for e in events if e.event == "token"]


def assert_increasing_to(ids: list[int], last_seq: int) -> None:
    """Event ids only go forward (a replayed chunk may cover several tokens) and reach the end."""
    assert ids == sorted(set(ids)), f"an event id repeated or went back: {ids}"
    assert ids[-1] == last_seq


async def test_complete_stream_equals_stored_text(alice):
    generation = await alice.ask(PROMPT)
    read = await alice.read_stream(generation["id"])
    stored = await alice.generation(generation["id"])
    assert read.terminal.event == "done"
    assert stored["status"] == "complete"
    assert read.text == stored["text"] and stored["text"]
    assert seqs(read.events) == list(range(1, stored["last_seq"] + 1))
    assert [e.id for e in read.tokens] == [str(s) for s in seqs(read.events)]
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
    assert_increasing_to(seqs(events), stored["last_seq"])
    assert [e.event for e in events if e.event != "token"] == ["done"]


async def test_resume_by_query_parameter(alice):
    generation = await alice.ask(PROMPT)
    first = await alice.read_stream(generation["id"], max_events=7)
    rest = await alice.read_stream(generation["id"], params={"last_event_id": first.last_id})
    assert first.text + rest.text == (await alice.generation(generation["id"]))["text"]
    assert seqs(rest.events)[0] > int(first.last_id)


async def test_generation_completes_with_no_client_and_replays_later(alice):
    generation = await alice.ask(PROMPT)
    for _ in range(100):
        if (await alice.generation(generation["id"]))["status"] == "complete":
            break
        await asyncio.sleep(0.1)
    stored = await alice.generation(generation["id"])
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
    assert [(e.id, e.event, e.data) for e in first.events] == [(e.id, e.event, e.data) for e in second.events]
    assert first.text == (await alice.generation(generation["id"]))["text"]


async def test_slow_reader_does_not_delay_the_generation(server, alice):
    """A client that stops reading must not hold the generation back."""
    generation = await alice.ask(PROMPT)
    async with alice.http.stream("GET", f"/api/generations/{generation['id']}/stream") as response:
        assert response.status_code == 200
        # Read nothing more while the generation runs to its end.
        for _ in range(100):
            stored = await alice.generation(generation["id"])
            if stored["status"] == "complete":
                break
            await asyncio.sleep(0.1)
        assert stored["status"] == "complete"
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
    assert b"event: done" in body


async def test_client_chooses_coalescing_window(alice):
    generation = await alice.ask(PROMPT)
    read = await alice.read_stream(generation["id"], params={"coalesce_ms": "200"})
    stored = await alice.generation(generation["id"])
    assert read.text == stored["text"]
    assert len(read.tokens) < stored["last_seq"] / 2, "tokens within the window go out together"
    assert seqs(read.events)[-1] == stored["last_seq"]
    # Resuming from an id inside a coalesced stream is exact too.
    middle = read.tokens[len(read.tokens) // 2].id
    rest = await alice.read_stream(generation["id"], last_event_id=middle)
    assert seqs(rest.events)[0] > int(middle)
    assert stored["text"].endswith(rest.text)
    assert rest.text == stored["text"][len("".join(json.loads(e.data)["text"] for e in read.tokens[: len(read.tokens) // 2 + 1])):]


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


async def test_connections_are_recorded(server, alice):
    """Each stream connection leaves a row saying how far it got and how it ended."""
    generation = await alice.ask(PROMPT)
    await alice.read_stream(generation["id"], max_events=3)
    await alice.read_stream(generation["id"], last_event_id="3")
    rows = await connection_rows(server, generation["id"])
    assert [(r["resumed_from"], r["end_reason"]) for r in rows] == [(None, "client_gone"), (3, "completed")]
    assert rows[0]["tokens_sent"] >= 3
    stored = await alice.generation(generation["id"])
    assert rows[1]["tokens_sent"] == stored["last_seq"] - 3


async def connection_rows(server, generation_id) -> list[dict]:
    """Read StreamConnection rows straight from the server's database."""
    import subprocess
    import sys

    from tests.support.server import ROOT

    code = (
        "import json; from chat.models import StreamConnection as C; "
        f"print(json.dumps(list(C.objects.filter(generation_id='{generation_id}').order_by('pk')"
        ".values('resumed_from','end_reason','tokens_sent','events_sent','transport'))))"
    )
    for _ in range(50):
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=server.env, capture_output=True, text=True
        )
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        if all(r["end_reason"] for r in rows):
            return rows
        await asyncio.sleep(0.2)
    return rows


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
