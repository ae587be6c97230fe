"""What a short keepalive period costs: server CPU for streams that wait on a silent model.

Keepalive comments go out only while no token flows, so the cost is that of
streams whose model has not started (or has stalled): here N answers whose
simulated model waits 10 minutes for its first token, each followed by one
SSE client, and the server's CPU time over a window, for each
CHAT_STREAM_KEEPALIVE_S.

    .venv/bin/python -m bench.keepalive_cost --streams 500 --periods 15,2
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.client import ChatClient
from tests.support.server import USERS, DatabaseTemplates, LiveServer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hold_streams(server: LiveServer, streams: int, window_s: float) -> tuple[float, int]:
    """Open the streams, let them settle, and return (server CPU s over the window, bytes the clients got in it)."""
    async with ChatClient(server.url) as client:
        client.http = httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=None))
        await client.login("alice", USERS["alice"])
        conversation = await client.new_conversation()
        ids = [(await client.ask(f"question {n}", conversation_id=conversation))["id"] for n in range(streams)]
        received = 0
        counting = False

        async def follow(generation_id: str) -> None:
            nonlocal received
            async with client.http.stream("GET", f"/api/generations/{generation_id}/stream") as response:
                async for chunk in response.aiter_bytes():
                    if counting:
                        received += len(chunk)

        tasks = [asyncio.create_task(follow(i)) for i in ids]
        await asyncio.sleep(5)  # every stream open and idle
        counting = True
        before, started = cpu_seconds(server.process.pid), time.monotonic()
        await asyncio.sleep(window_s)
        cpu = cpu_seconds(server.process.pid) - before
        elapsed = time.monotonic() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return cpu / elapsed, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--periods", default="15,2", help="CHAT_STREAM_KEEPALIVE_S values, comma-separated")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    args = parser.parse_args()
    templates = DatabaseTemplates(Path(tempfile.mkdtemp(prefix="bench-keepalive-")))
    print(f"{args.streams} streams waiting on a silent model, server CPU over {args.window:g} s:")
    for period in (float(value) for value in args.periods.split(",")):
        env = {
            "CHAT_STREAM_KEEPALIVE_S": str(period),
            "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": "600",
            "CHAT_UPSTREAM_STALL_S": "900",
            "CHAT_DB_THREADS": "6",
        }
        server = LiveServer(database_url=templates.fresh("sqlite"), env=env, workdir=templates.workdir).start()
        try:
            cores, received = asyncio.run(hold_streams(server, args.streams, args.window))
        finally:
            server.stop()
        print(f"  keepalive {period:g} s: {cores * 100:.1f} % of a core, {received / args.window / 1024:.1f} KiB/s to the clients")
    templates.drop_all()


if __name__ == "__main__":
    main()
