"""Capacity: how many streams one process serves on time, against bare SSE servers in the same run.

    .venv/bin/python -m bench.capacity --plot docs/capacity.png     # the full run in docs/performance.md
    .venv/bin/python -m bench.capacity --quick                      # under 3 minutes
    .venv/bin/python -m bench.capacity --servers project-uvicorn --streams 50,100
    .venv/bin/python -m bench.capacity --code 5ba10d0,worktree      # a commit against the working tree

Every server (`--servers`; bare-sse, the baseline, is always added) serves
the same load, one after the other, each pinned to one core with taskset while
this client runs on the other. A load point is N streams, started over
`--ramp` seconds, of answers of `--tokens` tokens due at `--rate` tokens/s on
a wall-clock schedule (bench/schedule.py): bare servers generate them in the
request; the project's simulated LLM (bench/provider.py) produces them, and
the project persists them and fans them out as usual. Each point starts a
fresh server with a fresh database, and measures, in the steady window (every
stream started, none finished):

- delivered: the share of the tokens due in the window that arrived within 1 s
  of their due time, and the p50/p99 lag behind it;
- server CPU per token (/proc/<pid>/stat, first half of the window; the second
  half carries the latency probes), and the client's own CPU, to show it kept up;
- memory (peak, and growth per open stream), threads, and database
  connections held (pg_stat_activity, or SQLite file handles in /proc/<pid>/fd).

A point is sustained when delivered >= 99 %, p99 lag < 100 ms (150 ms with
coalescing), and every stream ended `done` with exactly the stored text (GET
/api/generations/<id>); a server is dropped after its first failed point. Then
the ratios to bare sse-starlette. Also: POST to first token and resume
(Last-Event-ID to the first replayed event) at rest and under load, idle
streams (held open on answers due in half an hour), and two processes on two
cores with PostgreSQL and Redis against one. Any stream whose text differs from
the stored text fails the run (exit status 1). Results: bench/results/capacity.json
and .txt; the plot with --plot.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from bench import load, profile
from bench.load import FIRST_TOKEN, Recorder, call, send
from bench.measure import busy_seconds, cpu_seconds, machine, open_files, percentile
from bench.schedule import due, sleep_until, word
from bench.servers import (
    ROOT,
    SPECS,
    Database,
    Databases,
    Server,
    Spec,
    project_env,
    scale_out_specs,
    set_autogroup_nice,
)
from tests.support.server import POSTGRES_ADMIN_URL, postgres_available, redis_available

PROMPT = "How should a phone app stream answers from a language model?"
LEAD_S = 0.5  # A stream's POST goes out this long before its first token is due.
ON_TIME_S = 1.0  # A token later than this counts as not delivered.
WARM_UP_ATTEMPTS = 3
RETRY_AFTER_S = 5  # What the project's 429 and 503 answers ask a client to wait.
SUSTAINED = {"delivered": 0.99, "p99_ms": 100.0, "p99_ms_coalesced": 150.0}
SAMPLE_S = 0.25
REDIS_URL = "redis://127.0.0.1:6379/7"

SIZES = {
    "smoke": dict(tokens=50, ramp=0.2, settle=0.1, grace=10.0, levels=[2], probes=1, idle=3, idle_s=0.5, retries=0,
                  servers=list(SPECS), phases=["ladder", "idle", "scale-out"]),
    "quick": dict(tokens=300, ramp=1.0, settle=1.0, grace=8.0, levels=[50, 100, 200, 400], probes=3, idle=0,
                  idle_s=0, retries=0, servers=["bare-sse", "project-uvicorn", "project-uvicorn-c48", "project-daphne"],
                  phases=["ladder"]),
    "full": dict(tokens=600, ramp=2.0, settle=2.0, grace=15.0, levels=[25, 50, 100, 150, 200, 250, 300, 400, 500, 600, 800],
                 probes=5, idle=1000, idle_s=5.0, retries=1, servers=list(SPECS), phases=["ladder", "idle", "scale-out"]),
}


@dataclass
class Plan:
    tokens: int
    rate: float
    ramp: float
    settle: float
    grace: float
    levels: list[int]
    probes: int
    idle: int
    idle_s: float
    servers: list[str]
    phases: list[str]
    codes: list[str]
    server_cpu: int
    client_cpu: int
    nice: int
    retries: int
    profile: Path | None
    gc_log: bool
    out: Path
    one_request: bool = False
    cpu_quota: float | None = None
    models: tuple[str, ...] = ()  # Models each project server also answers with in the ladder, beside text-only.


# --- the servers under load -------------------------------------------------------------


class Target:
    """How the client starts and checks a stream on one server: a bare GET, or the project's POST then GET."""

    def __init__(self, spec: Spec, port: int, database: Database | None, rate: float, one_request: bool = False):
        self.spec, self.port, self.database, self.rate = spec, port, database, rate
        # The project's answers start with one POST that streams (Accept: text/event-stream), else a POST then a GET.
        self.one_request = one_request and spec.project
        self.asked = 0
        self.owner: dict[str, dict] = {}  # Generation id -> its user's headers.

    def next_user(self) -> tuple[int, dict]:
        """The next answer's conversation and its user's headers: answers go round the users."""
        users = self.database.users
        user = users[self.asked % len(users)]
        conversation = user["conversations"][self.asked // len(users) % len(user["conversations"])]
        self.asked += 1
        return conversation, {"Authorization": f"Bearer {user['token']}"}

    @staticmethod
    def ask(t0: float, tokens: int) -> dict:
        return {"content": f"{PROMPT} [t0={t0:.6f}][tokens={tokens}]"}

    async def create(self, t0: float, tokens: int) -> str | None:
        """Start an answer of `tokens` tokens due from t0, for the next user; its generation id (None if bare)."""
        if not self.spec.project:
            return None
        conversation, headers = self.next_user()
        status, body = await call(self.port, "POST", f"/api/conversations/{conversation}/messages", headers,
                                  self.ask(t0, tokens))
        if status != 201:
            raise RuntimeError(f"POST message: {status} {str(body)[:200]}")
        self.owner[body["generation"]["id"]] = headers
        return body["generation"]["id"]

    async def post_stream(self, t0: float, tokens: int, *, watch: bytes | None = None) -> Recorder:
        """Start an answer with one POST whose response is its stream; `adopt` it once `posted` arrived."""
        conversation, headers = self.next_user()
        path = f"/api/conversations/{conversation}/messages"
        if self.spec.coalesce_ms:
            path += f"?coalesce_ms={self.spec.coalesce_ms}"
        recorder = await send(self.port, "POST", path, {**headers, "Accept": "text/event-stream"},
                              json.dumps(self.ask(t0, tokens)).encode(), watch=watch)
        recorder.headers = headers
        return recorder

    def adopt(self, recorder: Recorder) -> str | None:
        """The generation a POST's stream announced (None before its `posted` event, or if refused)."""
        generation = load.posted_generation(recorder.pieces)
        if generation is not None:
            self.owner[generation] = recorder.headers
        return generation

    async def open(self, generation: str | None, t0: float, tokens: int, *, last_event_id: int | None = None,
                   watch: bytes | None = None) -> Recorder:
        headers = {**self.owner.get(generation, {}), "Accept": "text/event-stream"}
        if generation is None:
            path = f"/stream?t0={t0:.6f}&tokens={tokens}&rate={self.rate:g}"
        else:
            path = f"/api/generations/{generation}/stream"
            if self.spec.coalesce_ms:
                path += f"?coalesce_ms={self.spec.coalesce_ms}"
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
        return await send(self.port, "GET", path, headers, watch=watch)

    async def stored_parts(self, generation: str | None, tokens: int) -> tuple[str, str]:
        """The stored answer's text and reasoning (a bare server's known text, and no reasoning)."""
        if generation is None:
            return "".join(word(seq) for seq in range(1, tokens + 1)), ""
        status, body = await call(self.port, "GET", f"/api/generations/{generation}", self.owner[generation],
                                  timeout=30)
        if status != 200:
            raise RuntimeError(f"GET generation: {status}")
        return body["text"], body.get("reasoning", "")  # An older tree (`--code <commit>`) has no reasoning.

    async def answer(self, tokens: int) -> tuple[str | None, float, float | None]:
        """Ask for a short answer due now and read it: (generation, POST-to-first-token ms, POST ms).

        An answer refused (a 503 under overload) or without a token within 30 s has no time (None).
        """
        started = time.time()
        if self.one_request:
            stream = await self.post_stream(started, tokens, watch=FIRST_TOKEN)
            posted = None
        else:
            try:
                generation = await self.create(started, tokens)
            except RuntimeError:
                return None, None, None
            posted = time.time()
            stream = await self.open(generation, started, tokens, watch=FIRST_TOKEN)
        try:
            async with asyncio.timeout(30):
                first = await stream.seen
                await stream.closed
        except TimeoutError:
            first = None
        finally:
            stream.abort()
        if self.one_request:
            generation = self.adopt(stream)
        return generation, (first - started) * 1000 if first else None, (posted - started) * 1000 if posted else None

    async def resume(self, generation: str, last_event_id: int) -> float | None:
        """Reconnect with Last-Event-ID; ms from the connect to the first replayed token."""
        started = time.time()
        stream = await self.open(generation, started, 0, last_event_id=last_event_id, watch=FIRST_TOKEN)
        try:
            async with asyncio.timeout(10):
                first = await stream.seen
        except TimeoutError:
            first = None
        finally:
            stream.abort()
        return (first - started) * 1000 if first else None


class Sampler:
    """Memory, threads and database connections of a server, sampled every SAMPLE_S."""

    def __init__(self, server: Server, database: Database | None, postgres):
        self.server, self.database, self.postgres = server, database, postgres
        self.samples: list[tuple[float, int, int, int | None]] = []  # (time, rss, threads, db connections)
        self.task: asyncio.Task | None = None

    async def connections(self) -> int | None:
        if self.database is None:
            return None
        if self.database.sqlite_path:
            return sum(open_files(pid, self.database.sqlite_path) for pid in self.server.pids)
        cursor = await self.postgres.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database.postgres_name,)
        )
        return (await cursor.fetchone())[0]

    async def sample(self) -> tuple:
        now = self.server.status()
        row = (time.time(), now["rss"], now["threads"], await self.connections())
        self.samples.append(row)
        return row

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_S)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[tuple]:
        return [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]


@dataclass
class LoadStream:
    start: float  # Its first token's due time.
    generation: str | None = None
    post_ms: float | None = None
    recorder: Recorder | None = None
    error: str | None = None
    read: load.Stream | None = None  # The recording, parsed after the point.


class Bench:
    def __init__(self, plan: Plan, workdir: Path):
        self.plan = plan
        self.workdir = workdir
        self.databases = Databases(workdir)
        self.postgres = None  # A connection for pg_stat_activity, opened when a phase needs it.
        self.servers: list[Server] = []
        self.kept_logs = plan.out / "logs"

    # --- one server at one load --------------------------------------------------------

    async def start(self, spec: Spec, cpus: list[int]) -> tuple[Server, Database | None]:
        database = await asyncio.to_thread(self.databases.fresh, spec) if spec.project else None
        env = project_env(spec, database, rate=self.plan.rate, tokens=self.plan.tokens, redis_url=REDIS_URL) \
            if database else {}
        server = Server(spec, cpus, env=env, workdir=self.workdir, nice=self.plan.nice, cpu_quota=self.plan.cpu_quota,
                        gc_log=self.workdir / f"gc-{uuid.uuid4().hex[:8]}" if self.plan.gc_log else None)
        self.servers.append(server)
        try:
            await asyncio.to_thread(server.start)
        except Exception:
            self.databases.discard(database)
            raise
        return server, database

    async def stop(self, server: Server, database: Database | None) -> float | None:
        exit_s = await asyncio.to_thread(server.stop)
        if exit_s is None and server.log_path.exists():
            # It had to be killed: keep its log, for whoever finds out why.
            self.kept_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log_path, self.kept_logs / server.log_path.name)
        self.servers.remove(server)
        await asyncio.to_thread(self.databases.discard, database)
        return exit_s

    async def warm_up(self, target: Target) -> str | None:
        """One short answer end to end, so the first requests' imports and caches are not counted per stream.

        Asked again, as a client would, if the server refused it: on a machine busy with other
        work a fresh server's loop can run late enough for its overload guard to answer 503.
        """
        for attempt in range(WARM_UP_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_AFTER_S)
            generation, first_ms, _ = await target.answer(20)
            if first_ms is not None:
                return generation
        raise RuntimeError(f"{target.spec.label}: the warm-up answer sent no token ({WARM_UP_ATTEMPTS} attempts)")

    async def at_rest(self, target: Target, finished: str | None, server: Server) -> dict:
        """POST to first token, and resume from the middle of a finished answer, on an idle server.

        The server's CPU over the answers, one after the other, is the fixed cost of an answer: the
        POST, the stream request, the 3 tokens, the end (the issue's target: at most 10 ms).
        """
        trials = max(self.plan.probes * 2, 2)
        ttft, resume = [], []
        cpu = server.cpu_seconds()
        for _ in range(trials):
            ttft.append((await target.answer(3))[1])
        cpu = server.cpu_seconds() - cpu
        if finished is not None:
            for _ in range(trials):
                resume.append(await target.resume(finished, 10))
        return {"ttft_ms": ttft, "resume_ms": resume, "cpu_ms_per_answer": cpu / trials * 1000}

    async def point(self, spec: Spec, n: int, cpus: list[int], *, at_rest: bool = False) -> dict:
        """N streams on a fresh server: the steady window's figures, the probes, the check of every text."""
        plan = self.plan
        server, database = await self.start(spec, cpus)
        sampler = Sampler(server, database, self.postgres)
        row = {"server": spec.label, "streams": n, "workers": spec.workers, "coalesce_ms": spec.coalesce_ms,
               "model": spec.model}
        if spec.model:
            row["text_only"] = replace(spec, model="").label  # The same server answering text only.
        try:
            target = Target(spec, server.port, database, plan.rate, one_request=plan.one_request)
            finished = await self.warm_up(target)
            if at_rest:
                row["at_rest"] = await self.at_rest(target, finished, server)
            sampler.start()
            await asyncio.sleep(0.5)
            base = await sampler.sample()

            t = time.time() + LEAD_S + 0.2
            streams = [LoadStream(t + k * plan.ramp / n) for k in range(n)]
            tasks = [asyncio.create_task(self.run_stream(target, s)) for s in streams]
            w0 = t + plan.ramp + plan.settle
            w1 = t + (plan.tokens - 1) / plan.rate - 0.2
            mid = (w0 + w1) / 2

            await sleep_until(w0)
            cpu0, client0, busy0 = server.cpu_seconds(), cpu_seconds("self"), busy_seconds()
            spy = None
            if plan.profile and spec.project:
                row["profile"] = str(plan.profile / f"{spec.label.replace('@', '-')}-{n}.txt")
                spy = profile.record(server.pids[-1], w1 - w0, Path(row["profile"]), [plan.client_cpu])
            await sleep_until(mid)
            cpu1, client1, busy1 = server.cpu_seconds(), cpu_seconds("self"), busy_seconds()
            probes = await self.probes(target, streams, w1)

            last_due = t + plan.ramp + (plan.tokens - 1) / plan.rate
            done, pending = await asyncio.wait(tasks, timeout=max(1.0, last_due + plan.grace - time.time()))
            for s in streams:
                if s.recorder is not None:
                    s.recorder.abort()
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sampler.stop()
            peak = server.status()["peak_rss"]
            if spy is not None:
                await asyncio.to_thread(spy.wait)

            row |= self.figures(spec, streams, w0, mid, w1)
            row |= await self.verify(target, streams)
            steady = sampler.between(w0, w1)
            rss = statistics.median(s[1] for s in steady)
            connections = [s[3] for s in sampler.samples if s[3] is not None]
            row |= {
                "cpu_s": cpu1 - cpu0,
                "cpu_pct": (cpu1 - cpu0) / (mid - w0) * 100 / spec.workers,
                "client_cpu_pct": (client1 - client0) / (mid - w0) * 100,
                # Cores kept busy by everything else on the machine meanwhile (other work, PostgreSQL, Redis).
                "other_load_cores": (busy1 - busy0 - (cpu1 - cpu0) - (client1 - client0)) / (mid - w0),
                "rss_base": base[1],
                "rss_steady": rss,
                "rss_per_stream": (rss - base[1]) / n,
                "peak_rss": peak,
                "threads_base": base[2],
                "threads_max": max(s[2] for s in sampler.samples),
                "db_connections_base": base[3],
                "db_connections_max": max(connections) if connections else None,
                "probes": probes,
            }
            if server.gc_log:
                collections = server.collections(w0, w1)
                row["full_gc_ms"] = [ms for _, generation, ms in collections if generation == 2]
                # Every collection stops the process: their share of the half the CPU figures come from.
                stopped_s = sum(ms for at, _, ms in collections if at <= mid) / 1000
                row["gc_pct"] = stopped_s / (mid - w0) / spec.workers * 100
            row["cpu_us_per_token"] = row["cpu_s"] / row["cpu_tokens"] * 1e6 if row["cpu_tokens"] else None
            row["sustained"], row["why_not"] = verdict(spec, row)
        finally:
            if sampler.task and not sampler.task.done():
                await sampler.stop()
            row["exit_s"] = await self.stop(server, database)
        return row

    async def run_stream(self, target: Target, stream: LoadStream) -> None:
        await sleep_until(stream.start - LEAD_S)
        try:
            posted = time.time()
            if target.one_request:
                # Its POST's time: until the response's head and `posted` event, written together.
                stream.recorder = await target.post_stream(stream.start, self.plan.tokens, watch=b"event: posted")
                seen = await stream.recorder.seen
                stream.post_ms = (seen - posted) * 1000 if seen else None
                stream.generation = target.adopt(stream.recorder)
                await stream.recorder.closed
                return
            stream.generation = await target.create(stream.start, self.plan.tokens)
            if target.spec.project:
                stream.post_ms = (time.time() - posted) * 1000
            stream.recorder = await target.open(stream.generation, stream.start, self.plan.tokens)
            await stream.recorder.closed
        except Exception as exc:
            stream.error = f"{exc.__class__.__name__}: {exc}"

    async def probes(self, target: Target, streams: list[LoadStream], until: float) -> dict:
        """Under load, in the second half of the window: new answers, and resumes of live ones."""
        ttft, resume = [], []
        live = [s for s in streams if s.generation]
        for i in range(self.plan.probes):
            if time.time() > until - 0.3:
                break
            ttft.append((await target.answer(3))[1])
            if live and time.time() < until - 0.3:
                stream = live[(i * 7919) % len(live)]
                # 20 tokens back: persisted (flushed every 50 ms) and long gone from any live buffer.
                behind = math.floor((time.time() - stream.start) * self.plan.rate) - 20
                if behind >= 1:
                    resume.append(await target.resume(stream.generation, behind))
            await asyncio.sleep(0.1)
        return {"ttft_ms": ttft, "resume_ms": resume}

    def figures(self, spec: Spec, streams: list[LoadStream], w0: float, mid: float, w1: float) -> dict:
        """Delivery and lag of the tokens due in the window; tokens that arrived in the CPU half."""
        rate, tokens = self.plan.rate, self.plan.tokens
        lags, due_in_window, on_time, cpu_tokens, first_lags = [], 0, 0, 0, []
        # Tokens over 100 ms late, per half second of the window by due time: a stall shows as a spike.
        late = [0] * (int((w1 - w0) * 2) + 1)
        for s in streams:
            s.read = load.read_stream(s.recorder.pieces) if s.recorder else None
            arrived = dict(s.read.arrivals) if s.read else {}
            first = max(1, math.ceil((w0 - s.start) * rate) + 1)
            last = min(tokens, math.floor((w1 - s.start) * rate) + 1)
            for seq in range(first, last + 1):
                due_in_window += 1
                at = arrived.get(seq)
                if at is not None:
                    lag = at - due(s.start, seq, rate)
                    lags.append(lag * 1000)
                    on_time += lag <= ON_TIME_S
                    if lag > 0.1:
                        late[int((due(s.start, seq, rate) - w0) * 2)] += 1
            cpu_tokens += sum(w0 <= at < mid for at in arrived.values())
            if 1 in arrived:
                first_lags.append((arrived[1] - s.start) * 1000)
        posts = [s.post_ms for s in streams if s.post_ms is not None]
        return {
            "window_s": w1 - w0,
            "due_in_window": due_in_window,
            "delivered": on_time / due_in_window if due_in_window else 0.0,
            "lag_p50_ms": percentile(lags, 50),
            "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": max(lags) if lags else None,
            "first_token_lag_p50_ms": percentile(first_lags, 50),
            "first_token_lag_p99_ms": percentile(first_lags, 99),
            "post_p50_ms": percentile(posts, 50),
            "post_p99_ms": percentile(posts, 99),
            "post_max_ms": max(posts) if posts else None,
            "cpu_tokens": cpu_tokens,
            "late_per_half_second": late,
        }

    async def verify(self, target: Target, streams: list[LoadStream]) -> dict:
        """Every stream against the stored text and reasoning: exact, unfinished (a prefix of both), or a mismatch."""
        limit = asyncio.Semaphore(16)
        counts = {"exact": 0, "unfinished": 0, "errors": 0, "mismatches": 0, "with_reasoning": 0}
        examples = []

        async def check(s: LoadStream) -> None:
            if s.error or s.read is None or s.read.status not in (200, 201):
                counts["errors"] += 1
                examples.append(s.error or f"status {s.read.status if s.read else None}")
                return
            async with limit:
                try:
                    text, reasoning = await target.stored_parts(s.generation, self.plan.tokens)
                except Exception as exc:
                    counts["errors"] += 1
                    examples.append(f"stored text of {s.generation}: {exc}")
                    return
            counts["with_reasoning"] += bool(s.read.reasoning)
            if s.read.terminal == "done" and s.read.contiguous and (s.read.text, s.read.reasoning) == (text, reasoning):
                counts["exact"] += 1
            elif s.read.terminal is None and s.read.contiguous and starts(s.read, text, reasoning):
                counts["unfinished"] += 1
            else:
                counts["mismatches"] += 1
                examples.append(f"{s.generation}: ended {s.read.terminal}, contiguous {s.read.contiguous}, "
                                f"{len(s.read.text)} of {len(text)} characters of text, {len(s.read.reasoning)} "
                                f"of {len(reasoning)} of reasoning")

        await asyncio.gather(*(check(s) for s in streams))
        return counts | {"problems": examples[:5]}

    # --- the phases --------------------------------------------------------------------

    async def ladder(self, specs: list[Spec], levels: list[int], cpus_of) -> list[dict]:
        """Every server at each level in turn (same level, close in time); a server stops at its first failure.

        Every other level takes the servers in reverse order, so that a machine that speeds up or
        slows down over a run weighs on each alike, when a level is given more than once.
        """
        rows, alive, rested = [], list(specs), set()
        for round_, n in enumerate(levels):
            for spec in (list(alive) if round_ % 2 == 0 else alive[::-1]):
                for attempt in range(self.plan.retries + 1):
                    print(f"  {spec.label:34} {n:>5} streams ... ", end="", flush=True)
                    try:
                        row = await self.point(spec, n, cpus_of(spec), at_rest=spec.label not in rested)
                    except Exception as exc:
                        row = {"server": spec.label, "streams": n, "sustained": False,
                               "why_not": [f"crashed: {exc}"], "mismatches": 0}
                    rested.add(spec.label)
                    row["attempt"], row["round"] = attempt + 1, round_
                    rows.append(row)
                    print(summary(row), flush=True)
                    if row["sustained"]:
                        break
                    # A shared machine can spoil one point; a failure counts once it repeats.
                else:
                    alive.remove(spec)
        return rows

    async def idle(self, spec: Spec, n: int) -> dict:
        """N streams held open on answers due in half an hour: memory, threads, connections and CPU while waiting."""
        server, database = await self.start(spec, [self.plan.server_cpu])
        sampler = Sampler(server, database, self.postgres)
        row = {"server": spec.label, "streams": n, "database": "postgresql" if spec.postgres else "sqlite"}
        recorders, errors, retried = [], [], []
        try:
            target = Target(spec, server.port, database, self.plan.rate)
            await self.warm_up(target)
            await asyncio.sleep(1.0)
            base = await sampler.sample()
            limit = asyncio.Semaphore(32)
            started = time.time()

            async def open_one() -> None:
                """POST, then GET; a refusal while the server is busy opening the others is retried, as clients do."""
                t0, generation = time.time() + 1800, None
                async with limit:
                    for attempt in range(4):
                        try:
                            if generation is None:
                                generation = await target.create(t0, self.plan.tokens)
                            recorder = await target.open(generation, t0, self.plan.tokens, watch=b"\r\n\r\n")
                            async with asyncio.timeout(60):
                                await recorder.seen  # The response's head: the stream is open, or refused.
                            status = load.parse(recorder.pieces).status
                            if status not in (429, 503):
                                recorders.append(recorder)
                                return
                            recorder.abort()
                            refusal = f"GET stream: {status}"
                        except RuntimeError as exc:  # The POST's refusal.
                            refusal = str(exc)
                        except Exception as exc:
                            errors.append(f"{exc.__class__.__name__}: {exc}")
                            return
                        if attempt == 3 or not any(f"{code}" in refusal for code in (429, 503)):
                            errors.append(refusal)
                            return
                        retried.append(refusal)
                        await asyncio.sleep(RETRY_AFTER_S)

            await asyncio.gather(*(open_one() for _ in range(n)))
            opened_s = time.time() - started
            await asyncio.sleep(2.0)
            cpu0 = server.cpu_seconds()
            sampler.start()
            await asyncio.sleep(self.plan.idle_s)
            cpu = server.cpu_seconds() - cpu0
            await sampler.stop()
            open_now = sum(1 for r in recorders if not r.closed.done()
                           and load.parse(r.pieces).status == 200)
            held = sampler.samples[-max(1, int(self.plan.idle_s / SAMPLE_S)):]
            rss = statistics.median(s[1] for s in held)
            connections = [s[3] for s in held if s[3] is not None]
            row |= {
                "open": open_now,
                "errors": len(errors),
                "retried_posts": len(retried),
                "problems": errors[:3],
                "open_s": opened_s,
                "rss_base": base[1],
                "rss": rss,
                "rss_per_stream": (rss - base[1]) / max(open_now, 1),
                "threads_base": base[2],
                "threads": max(s[2] for s in held),
                "db_connections_base": base[3],
                "db_connections": max(connections) if connections else None,
                "cpu_pct": cpu / self.plan.idle_s * 100,
            }
        finally:
            for recorder in recorders:
                recorder.abort()
            if sampler.task and not sampler.task.done():
                await sampler.stop()
            row["exit_s"] = await self.stop(server, database)
        return row


def starts(read: load.Stream, text: str, reasoning: str) -> bool:
    """Whether a stream cut short read the start of the stored answer: some of its reasoning, or all of it
    and some of its text (the benchmark's answers reason first)."""
    if not read.text:
        return reasoning.startswith(read.reasoning)
    return read.reasoning == reasoning and text.startswith(read.text)


def verdict(spec: Spec, row: dict) -> tuple[bool, list[str]]:
    limit = SUSTAINED["p99_ms_coalesced"] if spec.coalesce_ms else SUSTAINED["p99_ms"]
    why = []
    if row["delivered"] < SUSTAINED["delivered"]:
        why.append(f"delivered {row['delivered']:.1%}")
    if row["lag_p99_ms"] is None or row["lag_p99_ms"] >= limit:
        why.append(f"p99 lag {fmt(row['lag_p99_ms'], 0)} ms")
    for key in ("errors", "unfinished", "mismatches"):
        if row[key]:
            why.append(f"{row[key]} {key}")
    return not why, why


# --- reporting ---------------------------------------------------------------------------


def fmt(value, digits=1, unit="") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def kib(value) -> str:
    return "-" if value is None else f"{value / 1024:.0f}"


def summary(row: dict) -> str:
    if "delivered" not in row:
        return "FAILED " + "; ".join(row["why_not"])
    head = "sustained" if row["sustained"] else "NOT sustained (" + ", ".join(row["why_not"]) + ")"
    gc = ""
    if "gc_pct" in row:
        full = row["full_gc_ms"]
        gc = f", GC {row['gc_pct']:.1f} % of the time, " + (
            f"{len(full)} full GCs of {min(full):.0f}-{max(full):.0f} ms" if full else "no full GC")
    return (f"{head}: delivered {row['delivered']:.1%}, p99 lag {fmt(row['lag_p99_ms'], 0)} ms, "
            f"CPU {fmt(row['cpu_pct'], 0)} %, {fmt(row['cpu_us_per_token'], 0)} us/token{gc}")


def capacity(rows: list[dict], label: str) -> tuple[int, bool]:
    """The largest level sustained before the first failure, and whether a failure bounded it."""
    levels = {}
    for r in rows:
        if r["server"] == label:
            levels[r["streams"]] = levels.get(r["streams"], False) or r["sustained"]
    passed = [n for n, ok in levels.items() if ok]
    return (max(passed) if passed else 0), not all(levels.values())


def ratio_text(mine: tuple[int, bool], base: tuple[int, bool]) -> str:
    (n, bounded), (b, base_bounded) = mine, base
    if not b:
        return "-"
    value = f"{n / b:.2f}x"
    if not bounded and base_bounded:
        return ">=" + value  # It never failed; bare did.
    if bounded and not base_bounded:
        return "<=" + value
    if not bounded and not base_bounded:
        return "?" + value  # Neither failed: raise --streams to find out.
    return value


def spread(values: list | None) -> str:
    """p50/p90 of probe times in ms; a probe that timed out counts as "t/o"."""
    if not values:
        return "-"
    got = [v for v in values if v is not None]
    text = f"{fmt(percentile(got, 50), 0)}/{fmt(percentile(got, 90), 0)}"
    return text + (f" ({len(values) - len(got)} t/o)" if len(got) < len(values) else "")


def ladder_table(rows: list[dict], base_label: str | None) -> list[str]:
    lines = [f"{'streams':>7} {'server':36} {'deliv':>6} {'p50':>6} {'p99':>7} {'1st p99':>8} {'POST p99':>8} "
             f"{'CPU%':>5} {'us/tok':>7} {'x bare':>6} {'client%':>7} {'other':>5} {'KiB/str':>7} {'peak MiB':>8} "
             f"{'thr':>9} {'db':>7} {'exit s':>6}  verdict"]
    by_level = {}
    for row in rows:
        by_level.setdefault(row["streams"], []).append(row)
    for n, level in by_level.items():
        base = next((r for r in level if r["server"] == base_label and r.get("cpu_us_per_token")), None)
        for r in level:
            if "delivered" not in r:
                lines.append(f"{n:>7} {r['server']:36} FAILED: {'; '.join(r['why_not'])[:200]}")
                continue
            times = r["cpu_us_per_token"] / base["cpu_us_per_token"] if base and r["cpu_us_per_token"] else None
            lines.append(
                f"{n:>7} {r['server']:36} {r['delivered']:>6.1%} {fmt(r['lag_p50_ms'], 0):>6} "
                f"{fmt(r['lag_p99_ms'], 0):>7} {fmt(r['first_token_lag_p99_ms'], 0):>8} {fmt(r['post_p99_ms'], 0):>8} "
                f"{fmt(r['cpu_pct'], 0):>5} {fmt(r['cpu_us_per_token'], 0):>7} {fmt(times, 2, 'x'):>6} "
                f"{fmt(r['client_cpu_pct'], 0):>7} {fmt(max(r['other_load_cores'], 0.0), 2):>5} {kib(r['rss_per_stream']):>7} {r['peak_rss'] / 2**20:>8.0f} "
                f"{r['threads_base']:>4}>{r['threads_max']:<4} "
                f"{fmt(r['db_connections_base'])+'>'+fmt(r['db_connections_max']):>7} {fmt(r['exit_s'], 1) if r['exit_s'] else 'kill':>6}  "
                + ("ok" if r["sustained"] else "FAIL " + ", ".join(r["why_not"]))
                + (f" (attempt {r['attempt']})" if r.get("attempt", 1) > 1 else "")
            )
    return lines


def model_ratios(rows: list[dict]) -> list[tuple[dict, dict, float]]:
    """(model row, the text-only row of its server in the same round of the ladder, the ratio of their CPU per token).

    Sustained points only: a point whose tokens came late has its CPU spread over fewer of them.
    """
    pairs = []
    for row in rows:
        if not (row.get("text_only") and row.get("sustained") and row.get("cpu_us_per_token")):
            continue
        twin = next((r for r in reversed(rows) if r["server"] == row["text_only"] and r.get("round") == row["round"]
                     and r.get("sustained") and r.get("cpu_us_per_token")), None)
        if twin is not None:
            pairs.append((row, twin, row["cpu_us_per_token"] / twin["cpu_us_per_token"]))
    return pairs


def model_table(rows: list[dict]) -> list[str]:
    """Answers of other models (--model) against the same server's text-only answers, level by level."""
    pairs = model_ratios(rows)
    if not pairs:
        return []
    lines = ["", "Other models against text-only answers: server CPU per token at the same level, measured one "
             "after the other (in turn first and second)",
             f"{'streams':>7} {'server':36} {'text-only us/tok':>16} {'us/tok':>7} {'ratio':>6}"]
    for row, twin, ratio in pairs:
        lines.append(f"{row['streams']:>7} {row['server']:36} {twin['cpu_us_per_token']:>16.1f} "
                     f"{row['cpu_us_per_token']:>7.1f} {ratio:>5.2f}x")
    for label in dict.fromkeys(row["server"] for row, _, _ in pairs):
        ratios = [ratio for row, _, ratio in pairs if row["server"] == label]
        lines.append(f"{'median':>7} {label:36} {statistics.median(ratios):>32.2f}x over {len(ratios)} round"
                     + ("s" if len(ratios) > 1 else ""))
    return lines


def report(results: dict) -> str:
    plan = results["plan"]
    lines = [
        f"Machine: {results['machine']} (shared with other work: compare within a run, not across runs)",
        f"Load average before {results['loadavg_before']}, after {results.get('loadavg_after')}",
        f"Code: {results['commit']}{' + uncommitted changes' if results['dirty'] else ''}; "
        f"answers of {plan['tokens']} tokens at {plan['rate']:g} tokens/s, streams started over {plan['ramp']:g} s; "
        f"servers on core {plan['server_cpu']}, client on core {plan['client_cpu']}"
        + (f", each server process capped at {plan['cpu_quota']:g} of a core" if plan.get("cpu_quota") else "")
        + "; the project's answers start "
        + ("with one POST that streams" if plan.get("one_request") else "with a POST, then a GET of the stream"),
        f"Sustained: delivered >= {SUSTAINED['delivered']:.0%} (within {ON_TIME_S:g} s), p99 lag < "
        f"{SUSTAINED['p99_ms']:.0f} ms ({SUSTAINED['p99_ms_coalesced']:.0f} ms coalesced), every text exact",
    ]
    base_label = "bare-sse"
    if results.get("ladder"):
        rows = results["ladder"]
        lines += ["", "Capacity ladder (SQLite, one process on one core). deliv = tokens due in the steady window "
                  "that arrived within 1 s; p50/p99 = their lag (ms); 1st = first token's lag; us/tok = server CPU "
                  "per token; client% = this client's CPU; other = cores busy with other work on the machine; "
                  "thr = threads before>max; db = database connections before>max; exit s = SIGINT to exit (kill: "
                  "not within 5 s, its log kept in <out>/logs)", ""]
        lines += ladder_table(rows, base_label)
        lines += ["", f"{'server':36} {'sustained':>9} {'x bare-sse':>10}  {'us/token at lowest level':>24}"]
        base = capacity(rows, base_label)
        lowest = min(r["streams"] for r in rows)
        base_low = next((r for r in rows if r["server"] == base_label and r["streams"] == lowest), None)
        for label in dict.fromkeys(r["server"] for r in rows):
            cap = capacity(rows, label)
            low = next((r for r in rows if r["server"] == label and r["streams"] == lowest), None)
            cost = low.get("cpu_us_per_token") if low else None
            times = cost / base_low["cpu_us_per_token"] if cost and base_low and base_low.get("cpu_us_per_token") else None
            lines.append(f"{label:36} {('>=' if not cap[1] else '') + str(cap[0]):>9} {ratio_text(cap, base):>10}  "
                         f"{fmt(cost, 0):>10} us ({fmt(times, 2, 'x')})")
        lines += model_table(rows)
        lines += ["", "Latency, p50/p90 ms: POST to the first token of a new answer; resume = reconnect with "
                  "Last-Event-ID to the first replayed token. At rest: an idle server; under load: during the "
                  "largest point the server sustained. CPU per answer: the server's, over the answers at rest.",
                  f"{'server':36} {'rest POST>1st':>13} {'rest resume':>11}  {'load':>5} {'POST>1st':>11} "
                  f"{'resume':>11}  {'CPU per answer':>14}"]
        for label in dict.fromkeys(r["server"] for r in rows):
            mine = [r for r in rows if r["server"] == label and "probes" in r]
            rest = next((r["at_rest"] for r in rows if r["server"] == label and "at_rest" in r), None)
            loaded = max((r for r in mine if r["sustained"]), key=lambda r: r["streams"], default=None) or \
                (mine[0] if mine else None)
            lines.append(
                f"{label:36} {spread(rest and rest['ttft_ms']):>13} {spread(rest and rest['resume_ms']):>11}  "
                f"{loaded['streams'] if loaded else '-':>5} {spread(loaded and loaded['probes']['ttft_ms']):>11} "
                f"{spread(loaded and loaded['probes']['resume_ms']):>11}  "
                f"{fmt(rest and rest.get('cpu_ms_per_answer'), 1, ' ms'):>14}"
            )
    if results.get("idle"):
        lines += ["", "Idle streams held open (answers due in half an hour)", f"{'server':36} {'db':10} {'open':>9} "
                  f"{'open in s':>9} {'KiB/stream':>10} {'threads':>9} {'db conns':>9} {'CPU %':>6}"]
        for r in results["idle"]:
            if "open" not in r:
                lines.append(f"{r['server']:36} FAILED: {r.get('error', '')[:200]}")
                continue
            lines.append(f"{r['server']:36} {r['database']:10} {str(r['open']) + '/' + str(r['streams']):>9} "
                         f"{r['open_s']:>9.1f} {kib(r['rss_per_stream']):>10} {str(r['threads_base']) + '>' + str(r['threads']):>9} "
                         f"{fmt(r['db_connections_base']) + '>' + fmt(r['db_connections']):>9} {r['cpu_pct']:>6.1f}"
                         + (f"  {r['errors']} errors: {r['problems'][0][:120]}" if r["errors"] else ""))
    if results.get("scale_out"):
        rows = results["scale_out"]
        lines += ["", "Scale-out: PostgreSQL + Redis, uvicorn; one process on one core against two workers on two "
                  "cores behind one port (client, PostgreSQL and Redis float on both cores)", ""]
        lines += ladder_table(rows, None)
        labels = list(dict.fromkeys(r["server"] for r in rows))
        if len(labels) == 2:
            one, two = capacity(rows, labels[0]), capacity(rows, labels[1])
            lines.append(f"  two processes sustain {ratio_text(two, one)} the streams of one "
                         f"({two[0]} against {one[0]})")
    mismatches = results["mismatches"]
    lines += ["", f"Correctness: {results['streams_checked']} streams checked against the stored text, "
              + ("all exact or cut short by a deadline, never different." if not mismatches else
                 f"{mismatches} DIFFERENT: THE RUN FAILS.")]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["ladder"] if "delivered" in r]
    labels = list(dict.fromkeys(r["server"] for r in results["ladder"]))
    codes = results["plan"]["codes"]
    names = list(dict.fromkeys(label.split("@")[0] for label in labels))
    colours = {name: f"C{i}" for i, name in enumerate(names)}

    def style(label: str) -> dict:
        name, _, code = label.partition("@")
        older = len(codes) > 1 and code and code != codes[-1]
        return dict(color=colours[name], marker="s" if "c48" in name else "o",
                    linestyle="--" if older else "-", alpha=0.55 if older else 1.0, label=label)

    figure, ((capacity_axis, lag_axis), (cost_axis, cpu_axis)) = plt.subplots(2, 2, figsize=(13, 9.5))
    base = capacity(results["ladder"], "bare-sse")
    for i, label in enumerate(labels):
        sustained, bounded = capacity(results["ladder"], label)
        bar = capacity_axis.barh(i, sustained, color=style(label)["color"], alpha=style(label)["alpha"])
        capacity_axis.bar_label(bar, [f" {'' if bounded else '>='}{sustained}  ({ratio_text((sustained, bounded), base)})"],
                                fontsize=8)
    capacity_axis.set_yticks(range(len(labels)), labels, fontsize=8)
    capacity_axis.invert_yaxis()
    capacity_axis.set_xlim(right=max(results["plan"]["levels"]) * 1.35)
    for label in labels:
        mine = [r for r in rows if r["server"] == label]
        streams = [r["streams"] for r in mine]
        lag_axis.plot(streams, [max(r["lag_p99_ms"] or 1e5, 0.1) for r in mine], **style(label))
        cost_axis.plot(streams, [r["cpu_us_per_token"] for r in mine], **style(label))
        cpu_axis.plot(streams, [r["cpu_pct"] for r in mine], **style(label))
    lag_axis.axhline(100, color="grey", linewidth=0.8)
    lag_axis.axhline(150, color="grey", linewidth=0.8, linestyle=":")
    for axis, title, unit in (
        (capacity_axis, "Streams sustained (x bare-sse)", "concurrent streams"),
        (lag_axis, "p99 lag behind the token's due time (limits 100 / 150 ms)", "ms (log)"),
        (cost_axis, "Server CPU per delivered token", "µs"),
        (cpu_axis, "Server CPU (one core)", "%"),
    ):
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
        if axis is capacity_axis:
            axis.set_xlabel(unit)
        else:
            axis.set_xlabel("concurrent streams")
            axis.set_ylabel(unit)
    lag_axis.set_yscale("log")
    cost_axis.set_ylim(bottom=0)
    cpu_axis.set_ylim(0, 105)
    lag_axis.legend(fontsize=7)
    plan = results["plan"]
    figure.suptitle(f"One process on one core, {plan['tokens']}-token answers at {plan['rate']:g} tokens/s, "
                    f"streams started over {plan['ramp']:g} s (code: {', '.join(codes)}; {results['date']})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# --- the run -----------------------------------------------------------------------------


async def run(plan: Plan, bench: Bench, results: dict) -> None:
    os.sched_setaffinity(0, {plan.client_cpu})
    specs = [replace(SPECS[name], code=code, model=model) if SPECS[name].project else SPECS[name]
             for name in plan.servers for code in (plan.codes if SPECS[name].project else ["worktree"])
             for model in (("", *plan.models) if SPECS[name].project else [""])]
    needs_postgres = "scale-out" in plan.phases or "idle" in plan.phases
    if needs_postgres and postgres_available():
        import psycopg

        bench.postgres = await psycopg.AsyncConnection.connect(POSTGRES_ADMIN_URL, autocommit=True)
    try:
        if "ladder" in plan.phases:
            print(f"capacity ladder: {', '.join(s.label for s in specs)} at {plan.levels} streams", flush=True)
            results["ladder"] = await bench.ladder(specs, plan.levels, lambda spec: [plan.server_cpu])
        if "idle" in plan.phases and plan.idle:
            results["idle"] = []
            idle_specs = [SPECS["bare-sse"]] + [replace(SPECS[name], code=code) for name in
                                                ("project-uvicorn", "project-daphne") for code in plan.codes]
            if bench.postgres:
                idle_specs += [replace(SPECS["project-uvicorn"], code=code, postgres=True) for code in plan.codes]
            for spec in idle_specs:
                print(f"idle: {spec.label} {'(PostgreSQL)' if spec.postgres else ''}, {plan.idle} streams ... ",
                      end="", flush=True)
                try:
                    row = await bench.idle(spec, plan.idle)
                    print(f"{row['open']} open, {kib(row['rss_per_stream'])} KiB each, {row['threads']} threads, "
                          f"{fmt(row['db_connections'])} db connections, {row['cpu_pct']:.1f} % CPU", flush=True)
                except Exception as exc:
                    row = {"server": spec.label, "streams": plan.idle, "error": str(exc)}
                    print(f"FAILED: {exc}", flush=True)
                results["idle"].append(row)
        if "scale-out" in plan.phases:
            if not (bench.postgres and redis_available()):
                print("scale-out skipped: needs PostgreSQL and Redis on 127.0.0.1", flush=True)
            else:
                os.sched_setaffinity(0, {plan.server_cpu, plan.client_cpu})
                specs = [s for code in plan.codes for s in scale_out_specs(code)]
                print(f"scale-out: {', '.join(s.label for s in specs)} at {plan.levels} streams", flush=True)
                results["scale_out"] = await bench.ladder(
                    specs, plan.levels, lambda spec: [plan.server_cpu, plan.client_cpu][: spec.workers])
    finally:
        if bench.postgres:
            await bench.postgres.close()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def parse_plan(argv) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="size", help="under 3 minutes")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="size", help="tiny, for the test suite")
    parser.add_argument("--servers", help=f"comma-separated, from {', '.join(SPECS)} (bare-sse is always added)")
    parser.add_argument("--streams", help="comma-separated load levels, e.g. 25,50,100")
    parser.add_argument("--phases", help="comma-separated, from ladder, idle, scale-out")
    parser.add_argument("--code", default="worktree",
                        help="comma-separated versions of the project to run side by side: worktree or commits")
    parser.add_argument("--model", help="comma-separated models each project server also answers with in the ladder, "
                        "beside text-only answers, e.g. simulated-reasoning (half of each answer reasoning); the "
                        "report compares their CPU per token with the text-only answers'")
    parser.add_argument("--tokens", type=int, help="tokens per answer (600; 300 with --quick)")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--one-request", action="store_true",
                        help="start each of the project's answers with one POST that streams (Accept: "
                             "text/event-stream) instead of a POST then a GET of the stream")
    parser.add_argument("--ramp", type=float, help="seconds over which a point's streams start")
    parser.add_argument("--idle", type=int, help="streams held open in the idle phase (1000)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--nice", type=int, default=-20,
                        help="priority of the client and servers (-20: other work on a shared machine delays them "
                        "less; needs root, else the current one is kept)")
    parser.add_argument("--cpu-quota", type=float, help="cap each server process at this share of a core (a cgroup; "
                        "needs root): e.g. 0.4 to set two processes on two cores against one and leave the client, "
                        "PostgreSQL and Redis a core")
    parser.add_argument("--retries", type=int, help="runs of a failed point again before a server is dropped (1; 0 "
                        "with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="directory for capacity.json")
    parser.add_argument("--plot", type=Path, help="write the plot PNG here (docs/capacity.png for the docs)")
    parser.add_argument("--gc-log", action="store_true", help="time every garbage collection of the servers in the "
                        "steady window (bench/gc_hook): each one stops the server's every thread")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of the project's points "
                        "(summarise with python -m bench.profile; sampling slows the server: not for the figures)")
    args = parser.parse_args(argv)
    size = dict(SIZES[args.size or "full"])
    servers = args.servers.split(",") if args.servers else size["servers"]
    unknown = [s for s in servers if s not in SPECS]
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {list(SPECS)}")
    if "bare-sse" not in servers:
        servers.insert(0, "bare-sse")  # The baseline every ratio is taken against.
    plan = Plan(
        tokens=args.tokens or size["tokens"], rate=args.rate, ramp=args.ramp if args.ramp is not None else size["ramp"],
        settle=size["settle"], grace=size["grace"],
        levels=[int(n) for n in args.streams.split(",")] if args.streams else size["levels"],
        probes=size["probes"], idle=args.idle if args.idle is not None else size["idle"], idle_s=size["idle_s"] or 5.0,
        servers=servers, phases=args.phases.split(",") if args.phases else size["phases"],
        codes=[code if code == "worktree" else git("rev-parse", "--short", code) for code in args.code.split(",")],
        server_cpu=args.server_cpu, client_cpu=args.client_cpu, nice=args.nice,
        retries=args.retries if args.retries is not None else size["retries"], profile=args.profile,
        gc_log=args.gc_log, out=args.out, one_request=args.one_request, cpu_quota=args.cpu_quota,
        models=tuple(args.model.split(",")) if args.model else (),
    )
    if (plan.tokens - 1) / plan.rate - 0.2 - plan.ramp - plan.settle < 0.2:
        parser.error(f"answers of {plan.tokens} tokens at {plan.rate:g}/s leave no steady window after a "
                     f"{plan.ramp:g} s ramp and {plan.settle:g} s to settle")
    if plan.profile:
        plan.profile.mkdir(parents=True, exist_ok=True)
    return plan, args


def main(argv=None) -> int:
    plan, args = parse_plan(argv)
    # Started in the background by a shell script (`cmd &`), we would ignore SIGINT, and so would the
    # servers: Twisted then installs no handler and Daphne would never stop on it. Restore the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Threads and processes started from here on inherit it: the servers, their threads, this client's.
        os.setpriority(os.PRIO_PROCESS, 0, plan.nice)
    except PermissionError:
        print(f"cannot set priority {plan.nice} (not root): keeping {os.getpriority(os.PRIO_PROCESS, 0)}")
        plan.nice = os.getpriority(os.PRIO_PROCESS, 0)
    session_nice = set_autogroup_nice("self", plan.nice)
    workdir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    results = {
        "plan": plan.__dict__,
        "machine": machine(),
        "loadavg_before": os.getloadavg(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "chat", "project")),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench.capacity " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    bench = Bench(plan, workdir)
    try:
        asyncio.run(run(plan, bench, results))
    finally:
        for server in list(bench.servers):
            server.stop()
        bench.databases.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        if session_nice is not None:
            set_autogroup_nice("self", session_nice)  # The terminal's session outlives the benchmark.
    results["loadavg_after"] = os.getloadavg()
    checked = [r for key in ("ladder", "scale_out") for r in results.get(key, []) if "exact" in r]
    results["streams_checked"] = sum(r["exact"] + r["unfinished"] + r["mismatches"] for r in checked)
    results["mismatches"] = sum(r["mismatches"] for r in checked)
    text = report(results)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "capacity.txt").write_text(text + "\n")
    if args.plot and results.get("ladder"):
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return 1 if results["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
