"""Another user's latency while failed logins are sprayed at the server (issue 27).

A failed login costs a password hash (about 0.3 s of CPU). The spray comes
in two shapes: one address with 20 logins in flight at once and a new random
username each time (the app's per-address limit locks it, then answers 429
without hashing), and 20 addresses (127.0.0.x) each at nginx's login rate, one
a second (each address's failures reach the app and are hashed, up to the
app's limit). Meanwhile another user, logged in, lists their conversations
every 100 ms; their latency is compared with the same requests at rest.

    .venv/bin/python -m bench.login_spray [--server uvicorn] [--seconds 20]

Not a test: the figures go to docs/deploy.md ("Login throttling").
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.server import USERS, DatabaseTemplates, LiveServer

SPRAY_CONCURRENCY = 20


async def victim(base_url: str, token: str, stop: asyncio.Event) -> list[float]:
    """Latencies (s) of bob's GET /api/conversations, one every 100 ms until `stop`."""
    latencies = []
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        while not stop.is_set():
            started = time.perf_counter()
            response = await http.get("/api/conversations")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            await asyncio.sleep(0.1)
    return latencies


async def spray_one_address(base_url: str, stop: asyncio.Event, statuses: list[int]) -> None:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as http:

        async def attacker():
            while not stop.is_set():
                response = await http.post("/api/auth/token", json={"username": uuid.uuid4().hex[:10], "password": "guess"})
                statuses.append(response.status_code)

        await asyncio.gather(*(attacker() for _ in range(SPRAY_CONCURRENCY)))


async def spray_at_nginx_rate(base_url: str, stop: asyncio.Event, statuses: list[int]) -> None:
    async def address(n: int):
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + n}")
        async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as http:
            while not stop.is_set():
                started = time.monotonic()
                response = await http.post("/api/auth/token", json={"username": uuid.uuid4().hex[:10], "password": "guess"})
                statuses.append(response.status_code)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    await asyncio.gather(*(address(n) for n in range(SPRAY_CONCURRENCY)))


async def phase(base_url: str, token: str, seconds: float, spray) -> tuple[list[float], list[int]]:
    stop, statuses = asyncio.Event(), []
    measuring = asyncio.create_task(victim(base_url, token, stop))
    spraying = asyncio.create_task(spray(base_url, stop, statuses)) if spray else None
    await asyncio.sleep(seconds)
    stop.set()
    latencies = await measuring
    if spraying:
        await spraying
    return latencies, statuses


def summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


async def run(base_url: str, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        token = (await http.post("/api/auth/token", json={"username": "bob", "password": USERS["bob"]})).json()["token"]
    # Rest phases between the sprays show how much the machine itself varies.
    rows = [("at rest", *await phase(base_url, token, seconds, None))]
    rows.append((f"one address, {SPRAY_CONCURRENCY} in flight", *await phase(base_url, token, seconds, spray_one_address)))
    rows.append(("at rest again", *await phase(base_url, token, seconds, None)))
    rows.append((f"{SPRAY_CONCURRENCY} addresses at 1/s each", *await phase(base_url, token, seconds, spray_at_nginx_rate)))
    rest_median = statistics.mean(summary(latencies)[0] for label, latencies, _ in rows if label.startswith("at rest"))
    print(f"{'phase':32} {'requests':>8} {'median ms':>10} {'p95 ms':>8} {'x rest':>7}  logins (status: count)")
    print(f"(x rest: the median against the mean of the rest phases' medians, {rest_median:.1f} ms)")
    for label, latencies, statuses in rows:
        median, p95 = summary(latencies)
        counts = ", ".join(f"{status}: {statuses.count(status)}" for status in sorted(set(statuses))) or "-"
        print(f"{label:32} {len(latencies):8} {median:10.1f} {p95:8.1f} {median / rest_median:7.2f}  {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="uvicorn")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    args = parser.parse_args()
    templates = DatabaseTemplates(Path(tempfile.mkdtemp(prefix="bench-login-spray-")))
    server = LiveServer(
        database_url=templates.fresh("sqlite"), env={"CHAT_LOG_LEVEL": "WARNING"}, workdir=templates.workdir, server=args.server
    ).start()
    try:
        print(f"{args.server}, SQLite, default login limits; bob lists his conversations every 100 ms")
        asyncio.run(run(server.url, args.seconds))
    finally:
        server.stop()
        templates.drop_all()


if __name__ == "__main__":
    main()
