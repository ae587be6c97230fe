"""Worker mode against in-process: server CPU per token and the time from POST to first token.

    .venv/bin/python -m bench.workers                      # 100 answers of 100 tokens at 50 tokens/s
    .venv/bin/python -m bench.workers --answers 200 --tokens 200

Each mode gets a fresh PostgreSQL database and Redis (the in-process mode
with Redis too, as a deployment of several web processes runs it):

- inprocess: one uvicorn process runs and serves the answers, pinned to core 1;
- workers: one uvicorn process serves them (core 0, beside this client) and one
  `run_generations` worker runs them (core 1).

First, one answer at a time, POST → first token on an idle server; then
`--answers` at once (started over `--ramp` s), each followed over SSE by a
client, with the CPU time of every server process from the first POST to the
last end, divided by the tokens stored. The simulated model sends its first
token at once, so the latency is the system's own.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from httpx_sse import aconnect_sse

from bench.measure import cpu_seconds, free_port, machine, percentile, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgresql://postgres@127.0.0.1:5432/"


def create_database() -> str:
    name = f"bench_workers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES + "postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(POSTGRES + "postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Deployment:
    def __init__(self, mode: str, args):
        self.mode = mode
        self.database = create_database()
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "SECRET_KEY": "bench",
            "HTTPS": "0",
            "DATABASE_URL": POSTGRES + self.database,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CHAT_EVENTS_NAMESPACE": f"{self.database}-",
            "CHAT_RUNNER": mode,
            "CHAT_SIMULATED_TOKENS_PER_S": str(args.rate),
            "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": "0",
            "CHAT_SIMULATED_MAX_TOKENS": str(args.tokens),
            "CHAT_SIMULATED_POINTS": str(args.tokens // 15 + 2),
            "CHAT_MAX_ACTIVE_GENERATIONS_PER_USER": "0",
            "CHAT_MAX_STREAMS_PER_USER": "0",
            "CHAT_OVERLOAD_LAG_MS": "0",
            "CHAT_OVERLOAD_START_MS": "0",
            "CHAT_LOG_LEVEL": "WARNING",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True)

    def start(self) -> None:
        self.manage("migrate", "--noinput")
        self.manage("create_demo_user")
        web_core = "0" if self.mode == "workers" else "1"
        self.processes["web"] = self.spawn(
            web_core, "-m", "uvicorn", "--port", str(self.port), "--log-level", "warning", "project.asgi:application"
        )
        wait_for_port(self.port, self.processes["web"])
        if self.mode == "workers":
            self.processes["worker"] = self.spawn("1", "manage.py", "run_generations")
            with psycopg.connect(POSTGRES + self.database) as connection:
                while not connection.execute("SELECT 1 FROM chat_worker").fetchone():
                    time.sleep(0.1)

    def spawn(self, core: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["taskset", "-c", core, sys.executable, *args], cwd=ROOT, env=self.env)

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(process.pid) for name, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
            process.wait(30)
        drop_database(self.database)


async def answer(http: httpx.AsyncClient, conversation_id: int, prompt: str) -> tuple[float, int]:
    """POST a message and follow its answer to the end: (seconds from POST to first token, tokens)."""
    started = time.perf_counter()
    response = await http.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"content": prompt, "stream": True},
        headers={"X-CSRFToken": http.cookies["csrftoken"]},
    )
    generation = response.json()["generation"]
    first, tokens = None, 0
    async with aconnect_sse(http, "GET", f"/api/generations/{generation['id']}/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "token":
                first = first or time.perf_counter()
                tokens = json.loads(event.data)["seq"]
            elif event.event in ("done", "interrupted", "failed", "cancelled"):
                assert event.event == "done", event.data
                break
    return first - started, tokens


async def measure(deployment: Deployment, args) -> dict:
    base = f"http://127.0.0.1:{deployment.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=None)) as http:
        await http.get("/accounts/login/")
        await http.post(
            "/accounts/login/",
            data={"username": "demo", "password": "demo", "csrfmiddlewaretoken": http.cookies["csrftoken"]},
        )
        csrf = {"X-CSRFToken": http.cookies["csrftoken"]}
        conversation_id = (await http.post("/api/conversations", json={"title": "bench"}, headers=csrf)).json()["id"]
        idle = [(await answer(http, conversation_id, f"idle probe {i}"))[0] for i in range(args.probes)]

        async def later(i: int):
            await asyncio.sleep(args.ramp * i / args.answers)
            return await answer(http, conversation_id, f"question {i} for the benchmark")

        before, clock = deployment.cpu(), time.perf_counter()
        results = await asyncio.gather(*(later(i) for i in range(args.answers)))
        after, elapsed = deployment.cpu(), time.perf_counter() - clock
    tokens = sum(count for _, count in results)
    loaded = [latency for latency, _ in results]
    cpu = {name: after[name] - before[name] for name in after}
    return {
        "mode": deployment.mode,
        "tokens": tokens,
        "seconds": round(elapsed, 1),
        "cpu_us_per_token": {name: round(seconds / tokens * 1e6, 1) for name, seconds in cpu.items()},
        "cpu_us_per_token_total": round(sum(cpu.values()) / tokens * 1e6, 1),
        "first_token_ms_idle_p50": round(percentile(idle, 50) * 1000, 1),
        "first_token_ms_loaded_p50": round(percentile(loaded, 50) * 1000, 1),
        "first_token_ms_loaded_p99": round(percentile(loaded, 99) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=100, help="Answers at once (default 100).")
    parser.add_argument("--tokens", type=int, default=100, help="Tokens per answer (default 100).")
    parser.add_argument("--rate", type=float, default=50, help="Tokens per second per answer (default 50).")
    parser.add_argument("--ramp", type=float, default=2.0, help="Seconds over which the answers start (default 2).")
    parser.add_argument("--probes", type=int, default=20, help="Answers one at a time for the idle latency (default 20).")
    parser.add_argument("--modes", default="inprocess,workers")
    args = parser.parse_args()
    print(machine())
    for mode in args.modes.split(","):
        deployment = Deployment(mode, args)
        try:
            deployment.start()
            print(json.dumps(asyncio.run(measure(deployment, args))))
        finally:
            deployment.stop()


if __name__ == "__main__":
    main()
