"""Upstream faults, cancel, shutdown and a lossy hub, each against a real server."""

import asyncio
import json
import signal
import sqlite3
from contextlib import AsyncExitStack

import pytest
from httpx_sse import aconnect_sse

from tests.support.client import logged_in
from tests.support.openai_upstream import OpenAIUpstream, echo_reply

PROMPT = "Explain backpressure in streaming systems"


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(token_delay_s=0.01) as server:
        yield server


async def test_upstream_stall_interrupts_and_keeps_partial_text(start_server, backend):
    server = start_server(backend, CHAT_SIMULATED_STALL_AFTER=5, CHAT_UPSTREAM_STALL_S=1.5, CHAT_STREAM_KEEPALIVE_S=0.4)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        async with client.http.stream("GET", f"/api/generations/{generation['id']}/stream") as response:
            body = "".join([chunk async for chunk in response.aiter_text()])
        stored = await client.generation(generation["id"])
    assert stored["status"] == "interrupted" and stored["reason"] == "upstream_stall"
    assert stored["last_seq"] == 5 and stored["text"]
    assert ": keepalive" in body, "keepalives flow while the upstream is silent"
    assert "event: interrupted" in body and '"reason":"upstream_stall"' in body


async def test_upstream_error_before_any_token_fails(start_server):
    server = start_server(CHAT_SIMULATED_FAIL_AFTER=0)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
    assert read.terminal.event == "failed"
    assert stored["status"] == "failed" and "HTTP 500" in stored["error"]
    assert stored["text"] == "" and read.tokens == []


@pytest.mark.parametrize("knob", ["CHAT_SIMULATED_FAIL_AFTER", "CHAT_SIMULATED_MALFORMED_AFTER"])
async def test_upstream_cut_mid_stream_interrupts(start_server, knob):
    server = start_server(**{knob: 7})
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
    assert read.terminal.event == "interrupted"
    assert json.loads(read.terminal.data)["reason"] == "upstream_error"
    assert stored["status"] == "interrupted" and stored["last_seq"] == 7
    assert read.text == stored["text"] != ""


async def test_openai_provider_streams_through_the_server(start_server, upstream):
    server = start_server(CHAT_LLM_PROVIDER="openai", CHAT_OPENAI_BASE_URL=upstream.base_url, CHAT_OPENAI_MODEL="m1")
    async with await logged_in(server) as client:
        generation = await client.ask("hello streaming world")
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
    assert read.terminal.event == "done"
    assert stored["provider"] == "openai" and stored["model"] == "m1"
    assert read.text == stored["text"] == echo_reply("hello streaming world")
    assert upstream.requests[-1].body["stream"] is True


@pytest.mark.parametrize(
    "scenario, status, reason",
    [("error_500", "failed", ""), ("cut", "interrupted", "upstream_error"), ("stall", "interrupted", "upstream_stall")],
)
async def test_openai_upstream_faults(start_server, upstream, scenario, status, reason):
    # A short stall limit only where the stall is the point: a busy machine can be slower than 1 s.
    stall_s = 1 if scenario == "stall" else 30
    server = start_server(
        CHAT_LLM_PROVIDER="openai", CHAT_OPENAI_BASE_URL=upstream.base_url, CHAT_UPSTREAM_STALL_S=stall_s
    )
    async with await logged_in(server) as client:
        generation = await client.ask(f"[upstream:{scenario}] tell me a story")
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
    assert stored["status"] == status and stored["reason"] == reason
    assert read.terminal.event == {"failed": "failed", "interrupted": "interrupted"}[status]
    assert read.text == stored["text"]
    if status == "interrupted":
        assert stored["text"], "the partial text is kept"


async def test_cancel_ends_a_resumed_stream(start_server, backend):
    """Stop must work on a stream the client has resumed, not only on the first connection."""
    server = start_server(backend, CHAT_SIMULATED_TOKENS_PER_S=20)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        first = await client.read_stream(generation["id"], max_events=3)
        following = asyncio.Event()
        resumed = asyncio.create_task(
            client.read_stream(generation["id"], last_event_id=first.last_id, first_event=following)
        )
        await asyncio.wait_for(following.wait(), 30)
        response = await client.post(f"/api/generations/{generation['id']}/cancel")
        read = await asyncio.wait_for(resumed, 30)
        stored = await client.generation(generation["id"])
        again = await client.post(f"/api/generations/{generation['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert read.terminal.event == "cancelled"
    assert stored["status"] == "cancelled" and stored["last_seq"] < 100
    assert first.text + read.text == stored["text"]
    assert again.status_code == 200 and again.json()["status"] == "cancelled", "cancel is idempotent"


async def test_lossy_hub_still_gives_exact_text_and_an_end(start_server, backend):
    """The hub drops every third token and every end event: clients fill from the database."""
    server = start_server(backend, CHAT_HUB_CLASS="tests.support.lossy_hub.LossyHub")
    async with await logged_in(server) as client:
        generations = [await client.ask(f"{PROMPT} {n}") for n in range(3)]
        reads = await asyncio.gather(*(client.read_stream(g["id"]) for g in generations))
        cut_reads = await asyncio.gather(*(client.follow_with_cuts(g["id"], 4) for g in generations))
        stored = [await client.generation(g["id"]) for g in generations]
    for read, (cut_events, _), generation in zip(reads, cut_reads, stored):
        assert read.terminal.event == "done", "a lost end must not leave the client hanging"
        assert read.text == generation["text"]
        assert "".join(json.loads(e.data)["text"] for e in cut_events if e.event == "token") == generation["text"]


async def test_server_shutdown_interrupts_and_flushes(start_server, database_templates, tmp_path):
    server = start_server(fresh=True, CHAT_SIMULATED_TOKENS_PER_S=20)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        read = await client.read_stream(generation["id"], max_events=5)
        assert read.text
    assert server.stop(signal.SIGTERM) is not None
    assert "stopping 1 generation" in server.log()
    restarted = type(server)(database_url=server.database_url, env={}, workdir=tmp_path).start()
    try:
        async with await logged_in(restarted) as client:
            stored = await client.generation(generation["id"])
            replay = await client.read_stream(generation["id"])
    finally:
        restarted.stop()
    assert stored["status"] == "interrupted" and stored["reason"] == "server_shutdown"
    assert stored["last_seq"] >= 5, "every token produced before the shutdown is flushed"
    assert replay.text == stored["text"] and stored["text"].startswith(read.text)
    assert replay.terminal.event == "interrupted"


async def test_error_right_after_a_burst_of_tokens_is_interrupted_not_failed(start_server):
    """Regression: the pump decided failed-or-interrupted before the consume loop had counted
    the tokens queued ahead of the error, so a burst then an error ended `failed` with text."""
    server = start_server(
        CHAT_SIMULATED_TOKENS_PER_S=0, CHAT_SIMULATED_FIRST_TOKEN_DELAY_S=0, CHAT_SIMULATED_FAIL_AFTER=5
    )
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        read = await client.read_stream(generation["id"])
        stored = await client.generation(generation["id"])
    assert (stored["status"], stored["reason"], stored["last_seq"]) == ("interrupted", "upstream_error", 5)
    assert read.terminal.event == "interrupted" and read.text == stored["text"] != ""


async def test_daphne_exits_on_sigint_with_many_streams_open(start_server, tmp_path):
    """Regression: after a loaded run Daphne did not exit within 15 s of SIGINT (a thread and a
    connection per open stream to wind down). Every answer still ends interrupted, with its tokens."""
    server = start_server(
        fresh=True, CHAT_SIMULATED_TOKENS_PER_S=10, CHAT_SIMULATED_POINTS=100, CHAT_SIMULATED_MAX_TOKENS=2000
    )
    async with await logged_in(server) as client, AsyncExitStack() as streams:
        generations = [(await client.ask(f"{PROMPT} {index}"))["id"] for index in range(30)]
        for generation_id in generations:
            response = await streams.enter_async_context(
                client.http.stream("GET", f"/api/generations/{generation_id}/stream")
            )
            assert response.status_code == 200
            await anext(response.aiter_bytes())  # The stream is open and flowing.
        # Generous: it used to take more than 15 s; with nothing per stream to wind down, about a second.
        assert server.stop(signal.SIGINT, timeout=60) == 0, "killed, not exited by itself:\n" + server.log()[-4000:]
    restarted = type(server)(database_url=server.database_url, env={}, workdir=tmp_path).start()
    try:
        async with await logged_in(restarted) as client:
            stored = [await client.generation(generation_id) for generation_id in generations]
            replays = [await client.read_stream(generation_id) for generation_id in generations[:5]]
    finally:
        restarted.stop()
    assert {(g["status"], g["reason"]) for g in stored} == {("interrupted", "server_shutdown")}
    assert all(replay.text == g["text"] for replay, g in zip(replays, stored))


async def test_a_run_waits_for_a_stalled_database_rather_than_run_ahead_of_it(start_server):
    """While the database takes no writes, clients get at most CHAT_MAX_UNWRITTEN_TOKENS past the stored
    tokens (what a crash then could lose); once it takes them again, the answer ends complete."""
    limit = 3
    server = start_server(
        CHAT_MAX_UNWRITTEN_TOKENS=limit,
        CHAT_SIMULATED_TOKENS_PER_S=200,
        CHAT_SIMULATED_POINTS=20,
        CHAT_SIMULATED_MAX_TOKENS=2000,
        CHAT_UPSTREAM_STALL_S=120,
    )
    database = sqlite3.connect(server.database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    events: asyncio.Queue = asyncio.Queue()

    async def read(url: str) -> None:
        async with aconnect_sse(client.http, "GET", url) as source:
            async for event in source.aiter_sse():
                await events.put(event)

    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        reader = asyncio.create_task(read(f"/api/generations/{generation['id']}/stream"))
        seen, stored = 0, None
        try:
            while True:
                try:
                    # Held at the bound, the stream must go quiet: 100 tokens' time shows it does.
                    held = database.in_transaction and seen == stored + limit
                    event = await asyncio.wait_for(events.get(), 0.5 if held else 60)
                except TimeoutError:
                    assert held, "the stream stopped"
                    database.execute("COMMIT")
                    continue
                if event.event in ("done", "interrupted", "failed"):
                    break
                if event.event != "token":
                    continue
                seen = int(event.id)
                if stored is None:  # From here on writers wait; readers go on (WAL).
                    database.execute("BEGIN IMMEDIATE")
                    (stored,) = database.execute(
                        "SELECT coalesce(max(last_seq), 0) FROM chat_tokenchunk WHERE generation_id = ?",
                        [generation["id"].replace("-", "")],
                    ).fetchone()
                if database.in_transaction:
                    assert seen <= stored + limit, f"token {seen} sent while only {stored} were stored"
        finally:
            reader.cancel()
            database.close()
        final = await client.generation(generation["id"])
    assert event.event == "done" and final["status"] == "complete"
    assert final["last_seq"] == seen > stored + limit, "the run went on once the database took writes again"
