"""Chaos: random connection cuts and a kill -9 under load, on SQLite and PostgreSQL.

Cuts: many generations at once, followed over SSE and WebSocket through the
fault proxy, which aborts a random share of the live connections every few
tens of milliseconds. Every client resumes from the last id it saw and must end
with exactly the stored text, its ids strictly increasing (nothing duplicated)
and reaching the stored last_seq (nothing lost).

Kill -9: the server dies mid-answer with many generations running, and a new
one starts on the same database. Every generation must end `interrupted` /
`worker_lost`, with a stored text equal to its stored tokens, and have lost at
most CHAT_MAX_UNWRITTEN_TOKENS of the tokens that clients had already been sent:
a run that far ahead of the database waits for it, however slow the writes.

Sizes come from the environment: CHAT_CHAOS_CUTS (100 in `make test`, 1000 in
`make chaos`) and CHAT_CHAOS_SECONDS, the time bound of the cut phase (60).
Figures are in docs/deploy.md, "Reliability tests".
"""

import asyncio
import json
import os
import random
import signal
import time

import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.api import issue_token
from tests.support.proxy import FaultProxy
from tests.support.server import LiveServer

CUTS = int(os.environ.get("CHAT_CHAOS_CUTS", "100"))
SECONDS = float(os.environ.get("CHAT_CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("CHAT_CHAOS_SEED", str(random.randrange(2**32))))
TERMINAL = {"done", "interrupted", "failed", "cancelled"}
# Answers of about 120 tokens at 100 tokens/s: each is cut several times.
PACED = {"CHAT_SIMULATED_TOKENS_PER_S": "100", "CHAT_SIMULATED_POINTS": "6", "CHAT_SIMULATED_MAX_TOKENS": "400"}
GENERATIONS_PER_ROUND = 16


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


class Follower:
    """One client following one generation to its end, resuming after every cut; checks as it goes."""

    def __init__(self, generation_id: str, transport: str):
        self.generation_id = generation_id
        self.transport = transport
        self.text = ""
        self.last_id = 0
        self.end: dict | None = None
        self.connections = 0

    def on_event(self, kind: str, event_id: int, data: dict) -> None:
        if kind == "snapshot":
            assert event_id >= self.last_id, (self.generation_id, kind, event_id, self.last_id)
            self.text = data["text"]
        elif kind == "token":
            assert event_id > self.last_id, f"{self.generation_id}: id {event_id} after {self.last_id} (a duplicate)"
            self.text += data["text"]
        elif kind in TERMINAL:
            assert event_id >= self.last_id
            self.end = {"type": kind, **data}
        else:
            return
        self.last_id = event_id

    async def follow(self, base_url: str, token: str, deadline: float) -> None:
        while self.end is None:
            assert time.monotonic() < deadline, f"{self.transport} follower of {self.generation_id} never ended"
            self.connections += 1
            try:
                await (self.sse if self.transport == "sse" else self.ws)(base_url, token)
            except (httpx.TransportError, ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.01)  # cut: resume from last_id

    async def sse(self, base_url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": str(self.last_id)}
        async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0)) as http:
            async with aconnect_sse(http, "GET", f"/api/generations/{self.generation_id}/stream", headers=headers) as source:
                assert source.response.status_code == 200, await source.response.aread()
                async for event in source.aiter_sse():
                    if event.id and event.data:
                        self.on_event(event.event, int(event.id), json.loads(event.data))
                    if self.end is not None:
                        return

    async def ws(self, base_url: str, token: str) -> None:
        url = base_url.replace("http://", "ws://") + f"/ws/generations/{self.generation_id}/?last_event_id={self.last_id}"
        async with connect(url, subprotocols=["llm-stream.v1", f"bearer.{token}"], origin=base_url, open_timeout=30) as ws:
            async for message in ws:
                frame = json.loads(message)
                assert frame["type"] != "error", frame
                if "id" in frame:
                    self.on_event(frame["type"], frame["id"], frame)
                if self.end is not None:
                    return


async def start_generation(http: httpx.AsyncClient, conversation_id: int) -> str:
    response = await http.post(f"/api/conversations/{conversation_id}/messages", json={"content": "Tell me about resumable streams", "stream": True})
    assert response.status_code == 201, response.text
    return response.json()["generation"]["id"]


async def assert_exactly_stored(http: httpx.AsyncClient, followers: list[Follower]) -> None:
    for follower in followers:
        stored = (await http.get(f"/api/generations/{follower.generation_id}")).json()
        assert follower.end["type"] == "done" and stored["status"] == "complete", (follower.end, stored["status"])
        assert follower.text == stored["text"], f"{follower.transport} {follower.generation_id}: text differs"
        assert follower.last_id == stored["last_seq"], (follower.last_id, stored["last_seq"])


@pytest.mark.timeout(SECONDS + 240)
async def test_random_cuts_over_sse_and_websocket(start_server, backend):
    server = start_server(backend, **PACED)
    token = await issue_token(server.url, "alice")
    rng = random.Random(SEED)
    started = time.monotonic()
    followed, rounds = 0, 0
    with ChaosProxy(server.port) as proxy:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            conversation_id = (await http.post("/api/conversations", json={"title": "chaos"})).json()["id"]
            while proxy.cuts < CUTS and time.monotonic() - started < SECONDS:
                rounds += 1
                ids = [await start_generation(http, conversation_id) for _ in range(GENERATIONS_PER_ROUND)]
                followers = [Follower(gid, "sse" if n % 2 else "ws") for n, gid in enumerate(ids)]
                deadline = time.monotonic() + 120
                tasks = [asyncio.create_task(f.follow(proxy.url, token, deadline)) for f in followers]
                while not all(task.done() for task in tasks):
                    await asyncio.sleep(rng.uniform(0.01, 0.06))
                    if proxy.cuts < CUTS:
                        await asyncio.to_thread(proxy.cut_some, rng, 0.3)
                await asyncio.gather(*tasks)
                await assert_exactly_stored(http, followers)
                followed += len(followers)
    elapsed = time.monotonic() - started
    print(
        f"\nchaos {backend}: {proxy.cuts} cuts over {followed} generations in {rounds} rounds, {elapsed:.1f} s, seed {SEED}"
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


async def watch(base_url: str, token: str, generation_id: str, seen: dict) -> None:
    """Follow a generation live, remembering the last id the server sent; ends when the server dies."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0)) as http:
            async with aconnect_sse(http, "GET", f"/api/generations/{generation_id}/stream", headers=headers) as source:
                async for event in source.aiter_sse():
                    if event.event == "token":
                        seen[generation_id] = int(event.id)
    except (httpx.TransportError, OSError):
        pass


@pytest.mark.timeout(240)
async def test_kill_9_mid_answer_under_load(start_server, backend, tmp_path):
    server = start_server(backend, fresh=True, **CRASH)
    token = await issue_token(server.url, "alice")
    seen: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        conversation_id = (await http.post("/api/conversations", json={"title": "crash"})).json()["id"]
        ids = [await start_generation(http, conversation_id) for _ in range(KILLED_GENERATIONS)]
        watchers = [asyncio.create_task(watch(server.url, token, gid, seen)) for gid in ids]
        deadline = time.monotonic() + 60
        while not (len(seen) == len(ids) and min(seen.values()) >= 20):
            assert time.monotonic() < deadline, f"only {len(seen)} of {len(ids)} generations streaming"
            await asyncio.sleep(0.05)
    server.stop(signal.SIGKILL)
    await asyncio.gather(*watchers)

    restarted = LiveServer(database_url=server.database_url, env=server.env, workdir=tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=restarted.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            ended = {}
            deadline = time.monotonic() + 90  # A bound on liveness, generous for a busy machine.
            while len(ended) < len(ids):
                assert time.monotonic() < deadline, f"{len(ids) - len(ended)} generations never ended after the restart"
                for gid in ids:
                    if gid not in ended:
                        generation = (await http.get(f"/api/generations/{gid}")).json()
                        if generation["status"] not in ("queued", "streaming"):
                            ended[gid] = generation
                await asyncio.sleep(0.2)

            lost = {}
            messages = (await http.get(f"/api/conversations/{conversation_id}/messages", params={"limit": 200})).json()["items"]
            contents = {m["generation"]["id"]: m["content"] for m in messages if m["role"] == "assistant"}
            for gid, generation in ended.items():
                assert (generation["status"], generation["reason"]) == ("interrupted", "worker_lost"), generation
                replay = await read_replay(http, gid)
                assert replay == generation["text"] == contents[gid], f"{gid}: message, tokens and replay differ"
                lost[gid] = seen[gid] - generation["last_seq"]
    finally:
        restarted.stop()
    assert max(lost.values()) <= UNWRITTEN, f"tokens sent before the kill then lost: {sorted(lost.values())} (at most {UNWRITTEN})"
    print(
        f"\nkill -9 {backend}: {len(ids)} generations ended interrupted/worker_lost; tokens lost per generation "
        f"max {max(lost.values())}, mean {sum(lost.values()) / len(lost):.2f} (at most {UNWRITTEN}); "
        f"tokens sent before the kill: {sum(seen.values())}"
    )


async def read_replay(http: httpx.AsyncClient, generation_id: str) -> str:
    text = ""
    async with aconnect_sse(http, "GET", f"/api/generations/{generation_id}/stream", headers={"Last-Event-ID": "0"}) as source:
        async for event in source.aiter_sse():
            if event.event == "snapshot":
                text = json.loads(event.data)["text"]
            elif event.event == "token":
                text += json.loads(event.data)["text"]
            elif event.event in TERMINAL:
                break
    return text
