"""Server CPU per delivered token: this project's server against a bare SSE server.

    .venv/bin/python -m bench.throughput [--streams 100] [--rate 50] [--tokens 100]

Both servers run as separate processes on 127.0.0.1 and serve the same load:
S concurrent streams, each T tokens at R tokens/s, one event per token. The
client reads raw sockets (cheap, so it disturbs the servers little) and counts
token events. Each server's CPU time (user + system, from /proc) over the run,
divided by the tokens it delivered, gives its cost per token; the ratio to the
bare server, measured in the same run, is the figure that matters, since the
absolute numbers depend on the machine. When a server keeps up, its
throughput capacity is the inverse of its cost per token.
"""

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.measure import cpu_seconds, free_port
from tests.support.server import USERS, DatabaseTemplates, LiveServer

ROOT = Path(__file__).resolve().parents[1]


DONE_SEQ = re.compile(rb'event: done\r?\ndata: \{"seq": ?(\d+)')


async def read_events(port: int, path: str, headers: dict) -> int:
    """GET an SSE stream over a raw socket; return the tokens it delivered (the seq of its `done`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Connection: close\r\n\r\n".encode())
    tail = b""
    while chunk := await reader.read(65536):
        tail = (tail + chunk)[-512:]
        if done := DONE_SEQ.search(tail):
            writer.close()
            return int(done.group(1))
    writer.close()
    raise RuntimeError(f"stream {path} ended without a done event")


async def load_bare(port: int, streams: int, tokens: int, rate: float) -> int:
    path = f"/stream?tokens={tokens}&rate={rate}"
    return sum(await asyncio.gather(*(read_events(port, path, {}) for _ in range(streams))))


async def load_project(server: LiveServer, streams: int, coalesce_ms: int = 0) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        await client.get("/accounts/login/")
        await client.post(
            "/accounts/login/",
            data={"username": "alice", "password": USERS["alice"], "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        )
        headers = {"X-CSRFToken": client.cookies["csrftoken"]}
        conversation = (await client.post("/api/conversations", json={}, headers=headers)).json()["id"]

        async def one(n: int) -> int:
            response = await client.post(
                f"/api/conversations/{conversation}/messages", json={"content": f"question {n}"}, headers=headers
            )
            generation = response.json()["generation"]["id"]
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            path = f"/api/generations/{generation}/stream?coalesce_ms={coalesce_ms}"
            return await read_events(server.port, path, {"Cookie": cookie})

        return sum(await asyncio.gather(*(one(n) for n in range(streams))))


def measure(pid: int, run) -> dict:
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    delivered = asyncio.run(run)
    return {"tokens": delivered, "wall_s": time.monotonic() - wall_before, "cpu_s": cpu_seconds(pid) - cpu_before}


def run_project(templates: DatabaseTemplates, streams: int, rate: float, points: int, coalesce_ms: int, server: str) -> dict:
    env = {
        "CHAT_SIMULATED_TOKENS_PER_S": str(rate),
        "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": "0",
        "CHAT_SIMULATED_POINTS": str(points),
        "CHAT_SIMULATED_MAX_TOKENS": "100000",
        "CHAT_LOG_LEVEL": "WARNING",
    }
    server = LiveServer(database_url=templates.fresh("sqlite"), env=env, workdir=templates.workdir, server=server).start()
    try:
        return measure(server.process.pid, load_project(server, streams, coalesce_ms))
    finally:
        server.stop()


def run_bare(streams: int, rate: float, tokens: int) -> dict:
    port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_sse:app", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        return measure(bare.pid, load_bare(port, streams, tokens, rate))
    finally:
        bare.terminate()
        bare.wait()


def split_costs(short: dict, long: dict, streams: int) -> tuple[float, float]:
    """Fit CPU = streams * (per_stream + per_token * tokens_per_stream) through two runs."""
    per_token = (long["cpu_s"] - short["cpu_s"]) / (long["tokens"] - short["tokens"])
    per_stream = (short["cpu_s"] - per_token * short["tokens"]) / streams
    return per_token, per_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--points", type=int, nargs=2, default=[3, 20], help="short and long simulated answers")
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne", help="the project's ASGI server")
    parser.add_argument("--coalesce-ms", type=int, default=0, help="the project's live coalescing window")
    args = parser.parse_args()
    templates = DatabaseTemplates(Path(tempfile.mkdtemp(prefix="bench-throughput-")))

    rows = {}
    for label, points in zip(("short", "long"), args.points):
        project = run_project(templates, args.streams, args.rate, points, args.coalesce_ms, args.server)
        # The bare server sends exactly as many tokens per stream as the project did.
        bare = run_bare(args.streams, args.rate, round(project["tokens"] / args.streams))
        rows[label] = {"bare": bare, "project": project}

    print(
        f"{args.streams} concurrent streams at {args.rate:g} tokens/s, server CPU from /proc; the bare server sends "
        f"one event per token, the project ({args.server}) coalesces live tokens within {args.coalesce_ms} ms"
    )
    print(f"{'run':6} {'server':13} {'tokens':>7} {'wall s':>7} {'CPU s':>7} {'us/token':>9} {'ratio':>6}")
    for label, pair in rows.items():
        base = pair["bare"]["cpu_s"] / pair["bare"]["tokens"]
        for name, row in pair.items():
            cost = row["cpu_s"] / row["tokens"]
            print(
                f"{label:6} {name:13} {row['tokens']:>7} {row['wall_s']:>7.2f} {row['cpu_s']:>7.2f} "
                f"{cost * 1e6:>9.1f} {cost / base:>5.2f}x"
            )
    bare_token, bare_stream = split_costs(rows["short"]["bare"], rows["long"]["bare"], args.streams)
    project_token, project_stream = split_costs(rows["short"]["project"], rows["long"]["project"], args.streams)
    print("\nFitted CPU cost = per answer + per token x tokens:")
    print(f"  bare:    {bare_stream * 1e3:7.2f} ms per answer, {bare_token * 1e6:6.1f} us per token")
    print(f"  project: {project_stream * 1e3:7.2f} ms per answer, {project_token * 1e6:6.1f} us per token")
    print(f"  per-token cost ratio {project_token / bare_token:.2f}x -> streaming throughput {bare_token / project_token:.2f}x the bare server's")


if __name__ == "__main__":
    main()
