"""Chaos: random connection cuts and a kill -9 under load, on SQLite and PostgreSQL.

Every client is the project's Python client (clients/python, chat_client), as an
app would use it: it resumes by the last event id, detects stalls and falls back
by its own rules; the test only counts and checks.

Cuts: many generations at once, followed over SSE and WebSocket through the
fault proxy, which aborts a random share of the live connections every few
tens of milliseconds. Every client must end with exactly the stored text,
having been sent no token twice (nothing duplicated) and reaching the stored
last_seq (nothing lost).

Kill -9: the server dies mid-answer with many generations running, and a new
one starts on the same database, behind the same address. Every generation
must end `interrupted` / `worker_lost`, with a stored text equal to its stored
tokens, and have lost at most CHAT_MAX_UNWRITTEN_TOKENS of the tokens that
clients had already been sent: a run that far ahead of the database waits for
it, however slow the writes. The clients ride through the kill and end with
exactly the stored text (a snapshot corrects the tokens that were never stored).

Sizes come from the environment: CHAT_CHAOS_CUTS (100 in `make test`, 1000 in
`make chaos`) and CHAT_CHAOS_SECONDS, the time bound of the cut phase (60).
Figures are in docs/deploy.md, "Reliability tests".
"""

import asyncio
import os
import random
import signal
import time

import httpx
import pytest
from chat_client import AsyncChatClient, Config, Token

from tests.support.api import issue_token
from tests.support.proxy import FaultProxy
from tests.support.server import LiveServer

CUTS = int(os.environ.get("CHAT_CHAOS_CUTS", "100"))
SECONDS = float(os.environ.get("CHAT_CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("CHAT_CHAOS_SEED", str(random.randrange(2**32))))
# Answers of about 120 tokens at 100 tokens/s: each is cut several times.
PACED = {"CHAT_SIMULATED_TOKENS_PER_S": "100", "CHAT_SIMULATED_POINTS": "6", "CHAT_SIMULATED_MAX_TOKENS": "400"}
GENERATIONS_PER_ROUND = 16
# Resume at once, and never fall back: under cuts every 10-60 ms a few attempts in a row may fail
# before a token, and each client must get its answer by resuming, which is what this suite tests.
RESUMING = Config(stall_s=30, backoff_base_s=0.01, backoff_cap_s=0.05, max_failed_attempts=10**6)


class ChaosProxy(FaultProxy):
    """The fault proxy, plus cutting a random share of the live connections rather than all of them."""

    def cut_some(self, rng: random.Random, share: float) -> int:
        async def cut() -> int:
            victims = [c for c in list(self._live) if rng.random() < share]
            for connection in victims:
                connection.abort()
            self.cuts += len(victims)
            return len(victims)

        return self._call(cut())


async def start_generation(http: httpx.AsyncClient, conversation_id: int) -> str:
    response = await http.post(f"/api/conversations/{conversation_id}/messages", json={"content": "Tell me about resumable streams", "stream": True})
    assert response.status_code == 201, response.text
    return response.json()["generation"]["id"]


async def assert_exactly_stored(http: httpx.AsyncClient, followers) -> None:
    for follower in followers:
        stored = (await http.get(f"/api/generations/{follower.generation_id}")).json()
        assert follower.end.status == "complete" == stored["status"] and not follower.end.fallback, (follower.end, stored["status"])
        assert follower.text == stored["text"], f"{follower.transport} {follower.generation_id}: text differs"
        assert follower.last_event_id == stored["last_seq"], (follower.last_event_id, stored["last_seq"])
        assert follower.duplicates == 0, f"{follower.transport} {follower.generation_id}: {follower.duplicates} tokens sent twice"


@pytest.mark.timeout(SECONDS + 240)
async def test_random_cuts_over_sse_and_websocket(start_server, backend):
    server = start_server(backend, **PACED)
    token = await issue_token(server.url, "alice")
    rng = random.Random(SEED)
    started = time.monotonic()
    followed, rounds, connections = 0, 0, 0
    with ChaosProxy(server.port) as proxy:
        async with (
            httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
            AsyncChatClient(proxy.url, token, config=RESUMING) as client,
        ):
            conversation_id = (await http.post("/api/conversations", json={"title": "chaos"})).json()["id"]
            while proxy.cuts < CUTS and time.monotonic() - started < SECONDS:
                rounds += 1
                ids = [await start_generation(http, conversation_id) for _ in range(GENERATIONS_PER_ROUND)]
                followers = [client.follow(gid, transport="sse" if n % 2 else "ws") for n, gid in enumerate(ids)]
                tasks = [asyncio.create_task(asyncio.wait_for(f.collect(), 120)) for f in followers]
                while not all(task.done() for task in tasks):
                    await asyncio.sleep(rng.uniform(0.01, 0.06))
                    if proxy.cuts < CUTS:
                        await asyncio.to_thread(proxy.cut_some, rng, 0.3)
                await asyncio.gather(*tasks)
                await assert_exactly_stored(http, followers)
                followed += len(followers)
                connections += sum(f.attempts for f in followers)
    elapsed = time.monotonic() - started
    print(
        f"\nchaos {backend}: {proxy.cuts} cuts over {followed} generations in {rounds} rounds "
        f"({connections} connections), {elapsed:.1f} s, seed {SEED}"
    )
    assert proxy.cuts >= min(CUTS, 20), f"only {proxy.cuts} cuts in {elapsed:.0f} s"


# --- kill -9 --------------------------------------------------------------------------------

KILLED_GENERATIONS = 24
RATE = 40  # tokens per second per generation
FLUSH_S = 0.05
UNWRITTEN = 8  # A little more than a flush interval's tokens: a loaded machine's slow writes pace the runs.
CRASH = {
    "CHAT_SIMULATED_TOKENS_PER_S": str(RATE),
    # Long enough to be still running at the kill, however slowly a busy machine starts them.
    "CHAT_SIMULATED_POINTS": "300",
    "CHAT_SIMULATED_MAX_TOKENS": "6000",
    "CHAT_FLUSH_INTERVAL_S": str(FLUSH_S),
    "CHAT_MAX_UNWRITTEN_TOKENS": str(UNWRITTEN),
    "CHAT_HEARTBEAT_S": "0.5",
    "CHAT_HEARTBEAT_STALE_S": "2",
    "CHAT_REAPER_INTERVAL_S": "0.5",
}


# Riding through the kill: the server is gone for a while (the restart), so the clients keep
# trying with short waits; any of the client's ways to the stored text is fine here.
RIDING = Config(stall_s=5, backoff_base_s=0.05, backoff_cap_s=0.5, fallback_poll_s=0.2)


async def ride(stream, seen: dict) -> None:
    """Follow a generation through the kill, remembering the last token id it was sent."""
    async for event in stream:
        if isinstance(event, Token):
            seen[stream.generation_id] = max(event.seq, seen.get(stream.generation_id, 0))


@pytest.mark.timeout(240)
async def test_kill_9_mid_answer_under_load(start_server, backend, tmp_path):
    server = start_server(backend, fresh=True, **CRASH)
    token = await issue_token(server.url, "alice")
    seen: dict[str, int] = {}
    with FaultProxy(server.port) as proxy:  # the address the clients know, before and after the restart
        async with AsyncChatClient(proxy.url, token, config=RIDING) as client:
            conversation_id = (await client.create_conversation("crash"))["id"]
            ids = [(await client.post_message(conversation_id, "Tell me about resumable streams"))["generation"]["id"] for _ in range(KILLED_GENERATIONS)]
            riders = [client.follow(gid) for gid in ids]
            tasks = [asyncio.create_task(ride(stream, seen)) for stream in riders]
            deadline = time.monotonic() + 60
            while not (len(seen) == len(ids) and min(seen.values()) >= 20):
                assert time.monotonic() < deadline, f"only {len(seen)} of {len(ids)} generations streaming"
                await asyncio.sleep(0.05)
            server.stop(signal.SIGKILL)

            restarted = LiveServer(database_url=server.database_url, env=server.env, workdir=tmp_path).start()
            proxy.target = ("127.0.0.1", restarted.port)
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), 120)  # A bound on liveness, generous for a busy machine.
                async with AsyncChatClient(restarted.url, token) as direct:
                    ended = {gid: await direct.generation(gid) for gid in ids}
                    messages = await direct.messages(conversation_id)
                    contents = {m["generation"]["id"]: m["content"] for m in messages if m["role"] == "assistant"}
                    lost, fell_back = {}, 0
                    for stream in riders:
                        generation = ended[stream.generation_id]
                        assert (generation["status"], generation["reason"]) == ("interrupted", "worker_lost"), generation
                        replay = await direct.follow(stream.generation_id, last_event_id=0).collect()
                        assert replay.text == generation["text"] == contents[stream.generation_id], f"{stream.generation_id}: message, tokens and replay differ"
                        assert stream.text == generation["text"], f"{stream.generation_id}: the client does not show the stored text"
                        assert (stream.end.status, stream.end.reason) == ("interrupted", "worker_lost")
                        lost[stream.generation_id] = seen[stream.generation_id] - generation["last_seq"]
                        fell_back += stream.end.fallback
            finally:
                restarted.stop()
    assert max(lost.values()) <= UNWRITTEN, f"tokens sent before the kill then lost: {sorted(lost.values())} (at most {UNWRITTEN})"
    print(
        f"\nkill -9 {backend}: {len(ids)} generations ended interrupted/worker_lost; tokens lost per generation "
        f"max {max(lost.values())}, mean {sum(lost.values()) / len(lost):.2f} (at most {UNWRITTEN}); "
        f"tokens sent before the kill: {sum(seen.values())}; every client shows the stored text "
        f"({len(ids) - fell_back} by the stream, {fell_back} by the fallback)"
    )
