"""Another user's live answer while one user makes maximal Durable Streams appends (issue 27).

Bob follows a live answer over SSE (40 tokens a second, as the simulated
model streams by default) and lists his conversations every 200 ms. First at
rest, then while Alice, from two connections at once, appends as much as one
append may carry: 1,000 JSON messages of about 1 KiB (just under the 1 MiB
DURABLE_MAX_APPEND_BYTES), back to back. The figure is the longest silence
between two of Bob's tokens, which the chat page shows as a stall past 10 s.

    .venv/bin/python -m bench.durable_append [--server uvicorn] [--seconds 15]

Not a test: the figures go to docs/deploy.md ("Durable Streams limits").
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.server import USERS, DatabaseTemplates, LiveServer

# As much as one append may carry by default: 1,000 messages (DURABLE_MAX_MESSAGES_PER_APPEND) in under 1 MiB.
MAXIMAL_APPEND = json.dumps(["x" * 1040] * 1000).encode()


async def token_for(http: httpx.AsyncClient, username: str) -> str:
    response = await http.post("/api/auth/token", json={"username": username, "password": USERS[username]})
    return response.json()["token"]


async def follow(http: httpx.AsyncClient, generation_id: str, arrivals: list[float], stop: asyncio.Event) -> None:
    async with http.stream("GET", f"/api/generations/{generation_id}/stream") as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                arrivals.append(time.monotonic())
            if stop.is_set():
                return


async def list_conversations(http: httpx.AsyncClient, latencies: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await http.get("/api/conversations")
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.2)


async def append_maximally(http: httpx.AsyncClient, path: str, stop: asyncio.Event, appended: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.post(path, content=MAXIMAL_APPEND, headers={"Content-Type": "application/json"})
        assert response.status_code == 204, response.text
        appended.append(time.perf_counter() - started)


def longest_gap(arrivals: list[float], start: float, end: float) -> float:
    inside = [t for t in arrivals if start <= t <= end]
    return max((b - a for a, b in zip(inside, inside[1:])), default=float("nan"))


async def run(base_url: str, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as anonymous:
        alice_token, bob_token = await token_for(anonymous, "alice"), await token_for(anonymous, "bob")
    alice = httpx.AsyncClient(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {alice_token}"})
    bob = httpx.AsyncClient(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {bob_token}"})
    conversation = (await bob.post("/api/conversations", json={"title": "live"})).json()
    posted = await bob.post(f"/api/conversations/{conversation['id']}/messages", json={"content": "Hi", "stream": True})
    generation_id = posted.json()["generation"]["id"]
    path = f"/ds/v1/stream/bench/{uuid.uuid4().hex}"
    assert (await alice.put(path, headers={"Content-Type": "application/json"})).status_code == 201

    arrivals, stop_all = [], asyncio.Event()
    follower = asyncio.create_task(follow(bob, generation_id, arrivals, stop_all))
    phases = {}
    for label, appenders in (("at rest", 0), ("2 maximal appenders", 2)):
        stop, latencies, appended = asyncio.Event(), [], []
        tasks = [asyncio.create_task(list_conversations(bob, latencies, stop))]
        tasks += [asyncio.create_task(append_maximally(alice, path, stop, appended)) for _ in range(appenders)]
        start = time.monotonic()
        await asyncio.sleep(seconds)
        stop.set()
        end = time.monotonic()
        await asyncio.gather(*tasks)
        phases[label] = (longest_gap(arrivals, start, end), latencies, appended)
    stop_all.set()
    await bob.post(f"/api/generations/{generation_id}/cancel")
    await follower
    print(f"{'phase':22} {'longest token gap s':>20} {'GET median ms':>14} {'GET max ms':>11} {'appends':>8} {'append median s':>16}")
    for label, (gap, latencies, appended) in phases.items():
        append_median = f"{statistics.median(appended):.2f}" if appended else "-"
        print(
            f"{label:22} {gap:20.3f} {statistics.median(latencies) * 1000:14.1f} {max(latencies) * 1000:11.1f} "
            f"{len(appended):8} {append_median:>16}"
        )
    await alice.aclose()
    await bob.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="uvicorn")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    args = parser.parse_args()
    templates = DatabaseTemplates(Path(tempfile.mkdtemp(prefix="bench-durable-append-")))
    env = {
        "CHAT_LOG_LEVEL": "WARNING",
        "CHAT_SIMULATED_TOKENS_PER_S": "40",
        "CHAT_SIMULATED_POINTS": "200",
        "CHAT_SIMULATED_MAX_TOKENS": "100000",
        # Alice writes far more than the default per-user quota in one phase: no quota here.
        "DURABLE_MAX_BYTES_PER_USER": "0",
    }
    server = LiveServer(
        database_url=templates.fresh(args.database), env=env, workdir=templates.workdir, server=args.server
    ).start()
    try:
        print(f"{args.server}, {args.database}; {len(MAXIMAL_APPEND)} bytes and 1,000 messages per append")
        asyncio.run(run(server.url, args.seconds))
    finally:
        server.stop()
        templates.drop_all()


if __name__ == "__main__":
    main()
