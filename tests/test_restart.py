"""A restart without workers: the next process continues, in place, the answers the last one was running.

In-process mode (the default), a server that stops hands its answers on
instead of ending them, and one that is killed leaves them to the reaper,
which hands them on too; the next server to start claims them, as a worker
would, and goes on from the last persisted token. A client that follows
through the restart, resuming by Last-Event-ID, ends with exactly the stored
answer; after a clean stop it needs no snapshot.
"""

import asyncio
import signal
import uuid

import httpx
from httpx_sse import aconnect_sse

from tests.support.client import TERMINAL_EVENTS, assert_ids_increase, logged_in, shown_text
from tests.support.server import query
from tests.support.wait import eventually, eventually_sync

PROMPT = "Explain how a chat server should carry an answer across a restart"

RESUME_ENV = {
    "CHAT_RESUME_INTERRUPTED_MAX_AGE_S": "600",
    # An answer of about 15 s: the restart falls inside it.
    "CHAT_SIMULATED_TOKENS_PER_S": "20",
    "CHAT_SIMULATED_POINTS": "8",
    "CHAT_REAPER_INTERVAL_S": "0.5",
}


async def follow_across_restarts(http: httpx.AsyncClient, generation_id: str, seen: asyncio.Event, *, count: int) -> list:
    """Follow to the end as the page does: resume by Last-Event-ID after every cut, until the server is back.

    `seen` is set once `count` tokens have arrived.
    """
    events, last_id = [], None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while loop.time() < deadline:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with aconnect_sse(http, "GET", f"/api/generations/{generation_id}/stream", headers=headers) as source:
                if source.response.status_code == 200:
                    async for event in source.aiter_sse():
                        if event.event == "message" and not event.data:
                            continue
                        events.append(event)
                        last_id = event.id or last_id
                        if sum(e.event == "token" for e in events) >= count:
                            seen.set()
                        if event.event in TERMINAL_EVENTS:
                            return events
        except httpx.TransportError:
            pass  # The server went away, or is not back yet.
        await asyncio.sleep(0.2)  # The client's reconnect delay.
    raise AssertionError(f"generation {generation_id} did not end across the restart")


def generation_row(server, generation_id: str) -> dict:
    sql = "SELECT status, interrupt_reason, runs, first_seq, heartbeat_at FROM chat_generation WHERE id = %s"
    return query(server.database_url, sql, uuid.UUID(generation_id))[0]


async def restart_mid_answer(start_server, backend: str, sig: int) -> tuple:
    """An answer followed by a client while its server gets `sig` and a new one starts on the same port."""
    server = start_server(backend, fresh=True, **RESUME_ENV)
    successor = None
    try:
        async with await logged_in(server) as client:
            generation = await client.ask(PROMPT)
            seen = asyncio.Event()
            reader = asyncio.create_task(follow_across_restarts(client.http, generation["id"], seen, count=5))
            await asyncio.wait_for(seen.wait(), 60)
            await asyncio.to_thread(server.stop, sig)
            successor = server.successor()
            await asyncio.to_thread(successor.start)
            events = await asyncio.wait_for(reader, 120)
            stored = await client.wait_terminal(generation["id"])
    finally:
        if successor is not None:
            successor.stop()
    return server, successor, generation, events, stored


async def test_a_restart_continues_the_answer_a_shutdown_interrupted(start_server, backend):
    server, successor, generation, events, stored = await restart_mid_answer(start_server, backend, signal.SIGTERM)
    row = generation_row(server, generation["id"])
    assert (stored["status"], row["runs"]) == ("complete", 2), server.log()[-2000:] + successor.log()[-2000:]
    assert shown_text(events) == stored["text"]
    assert not [e for e in events if e.event == "snapshot"], "a client that followed along needs no snapshot"
    assert_ids_increase([int(e.id) for e in events if e.event == "token"], last=stored["last_seq"])
    assert "handed generation" in server.log() and "running queued generation" in successor.log()


async def test_a_killed_servers_answer_continues_after_the_restart(start_server, backend):
    """The dead process published tokens it never persisted: the client gets the stored answer in one snapshot."""
    server, successor, generation, events, stored = await restart_mid_answer(start_server, backend, signal.SIGKILL)
    row = generation_row(server, generation["id"])
    assert (stored["status"], row["runs"]) == ("complete", 2), successor.log()[-3000:]
    assert shown_text(events) == stored["text"]
    snapshots = [i for i, e in enumerate(events) if e.event == "snapshot"]
    assert len(snapshots) <= 1
    after = snapshots[0] if snapshots else 0
    assert_ids_increase([int(e.id) for e in events[after:] if e.event == "token"], last=stored["last_seq"])
    assert "running queued generation" in successor.log()


async def test_an_answer_older_than_the_max_age_ends_interrupted(start_server, tmp_path):
    server = start_server("sqlite", fresh=True, **{**RESUME_ENV, "CHAT_RESUME_INTERRUPTED_MAX_AGE_S": "1"})
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        await client.read_stream(generation["id"], max_events=3)
    server.stop(signal.SIGTERM)
    assert generation_row(server, generation["id"])["interrupt_reason"] == "", "handed on, not ended"
    # Older than the max age by the time the next server looks.
    eventually_sync(
        lambda: query(server.database_url, "SELECT 1 FROM chat_generation WHERE heartbeat_at < datetime('now', '-2 seconds')"),
        what="the handed-on answer to be older than the max age",
    )
    successor = server.successor().start()
    try:
        async with await logged_in(successor) as client:
            stored = await client.wait_terminal(generation["id"])
            read = await client.read_stream(generation["id"])
    finally:
        successor.stop()
    row = generation_row(server, generation["id"])
    assert (stored["status"], stored["reason"], row["runs"]) == ("interrupted", "worker_lost", 1)
    assert "nobody took it within 1 s" in stored["error"]
    assert read.answer == stored["text"] != "" and read.terminal.event == "interrupted"


async def test_the_next_server_continues_with_no_client_connected(start_server):
    """Daphne sends no lifespan events: the reaper starts with the reactor, not with the first request."""
    server = start_server("sqlite", fresh=True, **RESUME_ENV)
    async with await logged_in(server) as client:
        generation = await client.ask(PROMPT)
        await client.read_stream(generation["id"], max_events=3)
    server.stop(signal.SIGTERM)
    successor = server.successor().start()
    try:
        await eventually(
            lambda: asyncio.to_thread(generation_row, server, generation["id"]),
            until=lambda row: row["runs"] == 2,
            what="the new server to continue the answer by itself",
        )
    finally:
        successor.stop()
