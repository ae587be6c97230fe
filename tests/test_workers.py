"""Worker mode (CHAT_RUNNER=workers): web processes queue answers, worker processes run them.

Real processes over real sockets, on PostgreSQL and Redis: uvicorn web
processes behind a TCP balancer, `manage.py run_generations` workers. A
deploy of the web tier, a worker's SIGTERM or its SIGKILL must cost no
answer: each one completes, in place (same generation, seqs going on), and
every client ends with exactly the stored text.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import require_backend, require_redis
from tests.support.balancer import Balancer
from tests.support.client import (
    TERMINAL_EVENTS,
    ChatClient,
    assert_ids_increase,
    shown_text,
)
from tests.support.server import ROOT, TEST_ENV, USERS, LiveServer, query
from tests.support.wait import eventually, eventually_sync

pytestmark = pytest.mark.timeout(240)

# Answers long enough to be mid-way when a process goes: about 120 tokens.
LONG_ANSWERS = {"CHAT_SIMULATED_POINTS": "6", "CHAT_SIMULATED_MAX_TOKENS": "120"}


class UvicornServer(LiveServer):
    """A web process as `make serve` runs it: uvicorn, with a graceful-shutdown timeout.

    Without the timeout, uvicorn waits for every open stream to end before it stops.
    """

    COMMAND = ["-m", "uvicorn", "--fd", "{fd}", "--timeout-graceful-shutdown", "1", "--no-access-log"]

    def start(self, timeout: float = 60.0) -> "UvicornServer":
        fd = self.listener.fileno()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *(arg.format(fd=fd) for arg in self.COMMAND), "project.asgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[fd],
            )
        self.listener.close()
        eventually_sync(self.listening, what=f"uvicorn on port {self.port} to serve", timeout=timeout)
        return self

    def listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{self.log()}")
        return "Application startup complete" in self.log()


class WorkerProcess:
    """`manage.py run_generations` in a subprocess; ready once its heartbeat row is in the database."""

    def __init__(self, *, database_url: str, env: dict, workdir):
        self.database_url = database_url
        self.env = {**os.environ, **TEST_ENV, **env, "DATABASE_URL": database_url}
        self.log_path = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "run_generations"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        eventually_sync(self.ready, what=f"worker {self.process.pid} to report in", timeout=60)
        return self

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{self.log()}")
        return bool(self.name)

    @property
    def name(self) -> str | None:
        rows = query(self.database_url, "SELECT name FROM chat_worker WHERE name LIKE %s", f"%:{self.process.pid}:%")
        return rows[0]["name"] if rows else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Deployment:
    """Web processes (uvicorn) and workers on one fresh PostgreSQL database and the shared Redis."""

    def __init__(self, database_url: str, workdir, env: dict):
        self.database_url = database_url
        self.workdir = workdir
        self.env = {
            "CHAT_RUNNER": "workers",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            # Pub/sub ignores database numbers: each test's event channels apart.
            "CHAT_EVENTS_NAMESPACE": f"t{uuid.uuid4().hex[:8]}-",
            "CHAT_WORKER_POLL_S": "2",
            # Four to six processes on a PostgreSQL the other tests share: a few connections each.
            "CHAT_DB_THREADS": "3",
            **env,
        }
        self.webs: list[LiveServer] = []
        self.workers: list[WorkerProcess] = []

    def web(self, **env) -> LiveServer:
        server = UvicornServer(database_url=self.database_url, env={**self.env, **env}, workdir=self.workdir)
        self.webs.append(server)  # Before it starts: stopped at the end even if it never gets ready.
        return server.start()

    def worker(self, **env) -> WorkerProcess:
        worker = WorkerProcess(database_url=self.database_url, env={**self.env, **env}, workdir=self.workdir)
        self.workers.append(worker)
        return worker.start()

    def generations(self) -> list[dict]:
        return query(self.database_url, "SELECT id, status, interrupt_reason, worker, runs, last_seq FROM chat_generation")

    def stop(self) -> None:
        for process in [*self.workers, *self.webs]:
            process.stop(signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in [*self.webs, *self.workers])


@pytest.fixture
def deploy(database_templates, tmp_path):
    require_backend("postgres")
    require_redis()
    deployments = []

    def make(**env) -> Deployment:
        env = {key: str(value) for key, value in env.items()}
        deployment = Deployment(database_templates.fresh("postgres"), tmp_path, env)
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        deployment.stop()


async def follow(http: httpx.AsyncClient, generation_id: str, following: asyncio.Event | None = None) -> tuple[list, int]:
    """Follow a generation to its end over SSE, resuming from the last id after every cut; (events, reconnects).

    `following` is set at the first token: the client is following the answer live.
    """
    events, last_id, reconnects = [], None, 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with aconnect_sse(http, "GET", f"/api/generations/{generation_id}/stream", headers=headers) as source:
                if source.response.status_code == 200:
                    async for event in source.aiter_sse():
                        if event.event == "message" and not event.data:
                            continue
                        events.append(event)
                        last_id = event.id or last_id
                        if following is not None and event.event == "token":
                            following.set()
                        if event.event in TERMINAL_EVENTS:
                            return events, reconnects
        except httpx.TransportError:
            pass  # The web process went away mid-stream: resume on another.
        reconnects += 1
        assert reconnects < 100, f"generation {generation_id}: no end after 100 reconnects"


async def check_client(http: httpx.AsyncClient, generation_id: str, events: list, *, snapshots_allowed=False) -> dict:
    """The client's text is exactly the stored text, its ids went only forward to the stored end."""
    stored = (await http.get(f"/api/generations/{generation_id}")).json()
    assert stored["status"] == "complete", stored
    assert shown_text(events) == stored["text"]
    token_ids = [int(e.id) for e in events if e.event == "token"]
    assert_ids_increase(token_ids, last=stored["last_seq"])
    if not snapshots_allowed:
        assert not [e for e in events if e.event == "snapshot"], "a follower that followed along needs no snapshot"
    return stored


async def post_answers(client: ChatClient, count: int) -> list[str]:
    conversation_id = await client.new_conversation()
    posts = [client.ask(f"question {i} about workers", conversation_id=conversation_id) for i in range(count)]
    return [generation["id"] for generation in await asyncio.gather(*posts)]


def all_streaming(deployment: Deployment, ids: list[str], *, or_ended: bool = False):
    """Every generation is running (or, `or_ended`, has run) and has tokens persisted."""
    wanted = {uuid.UUID(i) for i in ids}
    rows = [r for r in deployment.generations() if r["id"] in wanted]
    statuses = {"streaming", "complete"} if or_ended else {"streaming"}
    return all(r["status"] in statuses and r["last_seq"] > 2 for r in rows) and len(rows) == len(wanted)


async def test_rolling_restart_of_the_web_tier_loses_no_answer(deploy):
    """50 answers followed through the balancer while both web processes restart, one after the other."""
    # About 25 s an answer: both restarts fall inside them, even on a busy machine.
    deployment = deploy(CHAT_SIMULATED_TOKENS_PER_S=10, CHAT_SIMULATED_POINTS=12, CHAT_SIMULATED_MAX_TOKENS=250)
    first, second = deployment.web(), deployment.web()
    deployment.worker()
    deployment.worker()
    async with Balancer([first.port, second.port]) as balancer:
        async with ChatClient(balancer.url) as client:
            # 50 streams and the requests beside them: more than httpx's default pool of 100 may be busy at once.
            await client.http.aclose()
            client.http = httpx.AsyncClient(base_url=balancer.url, timeout=30.0, limits=httpx.Limits(max_connections=None))
            await client.login("alice", USERS["alice"])
            ids = await post_answers(client, 50)
            following = [asyncio.Event() for _ in ids]
            followers = [asyncio.create_task(follow(client.http, i, f)) for i, f in zip(ids, following)]
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in following)), 60)
            running = []  # Answers running as each web process is stopped.
            for old in (first, second):
                running.append(sum(r["status"] == "streaming" for r in deployment.generations()))
                balancer.ports.remove(old.port)  # Out of the balancer, as a deploy does, then SIGTERM.
                # In threads: the balancer and the clients go on meanwhile, as they would.
                # uvicorn re-raises the signal once it has shut down.
                assert await asyncio.to_thread(old.stop, signal.SIGTERM) in (0, -signal.SIGTERM), deployment.logs()
                balancer.ports.append((await asyncio.to_thread(deployment.web)).port)
            results = await asyncio.gather(*followers)
            for generation_id, (events, _) in zip(ids, results):
                await check_client(client.http, generation_id, events)
    rows = deployment.generations()
    assert [(r["status"], r["interrupt_reason"], r["runs"]) for r in rows] == [("complete", "", 1)] * 50
    reconnects = sum(count for _, count in results)
    print(f"\n50 answers; running as each web process stopped: {running}; {reconnects} client reconnects")
    print(f"connections per web process: {dict(balancer.connections)}")
    assert all(running) and reconnects >= running[0] // 2, "the restarts missed the answers"


async def stop_a_worker_mid_answers(deploy, sig: int, **env) -> tuple[Deployment, list, list]:
    """Answers on worker A; B started; A gets `sig`. Returns the deployment, ids and each client's events."""
    deployment = deploy(CHAT_SIMULATED_TOKENS_PER_S=8, CHAT_REAPER_INTERVAL_S=1, **LONG_ANSWERS, **env)
    web = deployment.web()
    a = deployment.worker()
    async with ChatClient(web.url) as client:
        await client.login("alice", USERS["alice"])
        ids = await post_answers(client, 12)
        following = [asyncio.Event() for _ in ids]
        followers = [asyncio.create_task(follow(client.http, i, f)) for i, f in zip(ids, following)]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in following)), 60)
        # In threads: the clients follow along meanwhile.
        b = await asyncio.to_thread(deployment.worker)
        assert {r["worker"] for r in deployment.generations()} == {a.name}
        await asyncio.to_thread(a.stop, sig)
        results = await asyncio.gather(*followers)
        for generation_id, (events, _) in zip(ids, results):
            await check_client(client.http, generation_id, events)
    rows = deployment.generations()
    assert {(r["status"], r["interrupt_reason"], r["worker"], r["runs"]) for r in rows} == {("complete", "", b.name, 2)}
    return deployment, ids, results


async def test_a_draining_worker_hands_its_answers_on_in_place(deploy):
    """SIGTERM with a drain timeout shorter than the answers: the other worker goes on from the last token."""
    deployment, _, _ = await stop_a_worker_mid_answers(deploy, signal.SIGTERM, CHAT_WORKER_DRAIN_S=1)
    assert "draining: 12 answer(s)" in deployment.workers[0].log()


async def test_a_killed_workers_answers_go_on_in_another(deploy):
    """SIGKILL: the reaper (a dead pid on this host) hands them on; no client saw a token that was lost."""
    await stop_a_worker_mid_answers(deploy, signal.SIGKILL)


async def test_racing_workers_run_each_generation_once(deploy):
    """60 queued answers, then four workers start at once and race for them: each answer runs exactly once."""
    # Answers of 3 s: one worker alone would need over 20 s for them all, so a busy machine's slow
    # start of the others cannot leave it the whole queue.
    deployment = deploy(
        CHAT_SIMULATED_MAX_TOKENS=15, CHAT_SIMULATED_TOKENS_PER_S=5, CHAT_WORKER_CAPACITY=8, CHAT_WORKER_CLAIM_BATCH=3
    )
    web = deployment.web()
    async with ChatClient(web.url) as client:
        await client.login("alice", USERS["alice"])
        ids = await post_answers(client, 60)
        # Cancelled while still in the queue: ended at once, never run.
        cancelled = ids.pop()
        response = await client.post(f"/api/generations/{cancelled}/cancel")
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
        starting = [
            WorkerProcess(database_url=deployment.database_url, env=deployment.env, workdir=deployment.workdir)
            for _ in range(4)
        ]
        for worker in starting:  # All four start before any is ready.
            worker.process = subprocess.Popen(
                [sys.executable, "manage.py", "run_generations"],
                cwd=ROOT,
                env=worker.env,
                stdout=open(worker.log_path, "ab"),
                stderr=subprocess.STDOUT,
            )
        deployment.workers += starting
        for generation_id in ids:
            assert (await client.wait_terminal(generation_id))["status"] == "complete"
    rows = {str(r["id"]): r for r in deployment.generations()}
    assert sorted(r["runs"] for r in rows.values()) == [0] + [1] * 59
    assert (rows[cancelled]["status"], rows[cancelled]["runs"]) == ("cancelled", 0)
    assert len({rows[i]["worker"] for i in ids}) >= 2, "one worker took everything: no race"


async def test_cancel_from_the_web_tier_and_the_per_user_limit(deploy):
    deployment = deploy(CHAT_SIMULATED_TOKENS_PER_S=5, CHAT_MAX_ACTIVE_GENERATIONS_PER_USER=2, **LONG_ANSWERS)
    web = deployment.web()
    deployment.worker()
    async with ChatClient(web.url) as client:
        await client.login("alice", USERS["alice"])
        conversation_id = await client.new_conversation()
        first = await client.ask("one", conversation_id=conversation_id)
        await client.ask("two", conversation_id=conversation_id)
        response = await client.post(
            f"/api/conversations/{conversation_id}/messages", json={"content": "three", "stream": True}
        )
        assert (response.status_code, response.json()["error"]["code"]) == (429, "too_many_generations")
        await eventually(lambda: all_streaming(deployment, [first["id"]]), what="the first answer running on the worker")
        follower = asyncio.create_task(follow(client.http, first["id"]))
        response = await client.post(f"/api/generations/{first['id']}/cancel")
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
        events, _ = await follower
        assert events[-1].event == "cancelled"
        stored = await client.generation(first["id"])
        assert shown_text(events) == stored["text"] and stored["text"], "cancelled mid-answer, text kept"
        assert json.loads(events[-1].data)["seq"] == stored["last_seq"]
        response = await client.post(
            f"/api/conversations/{conversation_id}/messages", json={"content": "three", "stream": True}
        )
        assert response.status_code == 201, "a place freed by the cancel"
