"""SSE against WebSocket on one running server, with the same token schedule.

    .venv/bin/python -m bench.transports --quick     # about a minute
    .venv/bin/python -m bench.transports             # the full run behind docs/transports.md

One Daphne process serves the project (plus Django's GZipMiddleware, used only
by clients that ask for gzip) with a simulated LLM on a wall-clock schedule
(bench/provider.py): token i of every answer is produced at t0 + i / rate, and
the client, on the same machine and clock, subtracts that from the arrival time
to get the delivery latency. Clients are raw sockets (bench/wire.py) that count
every byte in both directions. Server CPU comes from /proc/<pid>/stat. Phases:
bytes per token, load at N concurrent streams, time to first token, resume cost,
a network switch, nginx in front (HTTP/1.1 and HTTP/2), and idle connections.
Everything runs on 127.0.0.1; results go to a JSON file, a table on stdout and,
if asked, a PNG plot.
"""

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx

from bench.measure import (
    HOST,
    cpu_seconds,
    free_port,
    machine,
    percentile,
    wait_for_port,
)
from bench.wire import Received, follow_sse, follow_ws
from tests.support.server import TEST_ENV, USERS, DatabaseTemplates

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "How should a phone app stream answers from a language model?"
# The smallest and the full sizes; --quick sits between.
SIZES = {
    "smoke": {"levels": [3], "tokens": 12, "rate": 50.0, "trials": 3, "idle_s": 2.5, "idle_n": 3},
    "quick": {"levels": [10, 50], "tokens": 40, "rate": 20.0, "trials": 10, "idle_s": 5.0, "idle_n": 50},
    "full": {"levels": [10, 100, 500], "tokens": 100, "rate": 20.0, "trials": 30, "idle_s": 10.0, "idle_n": 200},
}
KEEPALIVE_S = 2.0  # Scaled down from the 15 s default so the idle phase sees several.


class Bench:
    def __init__(self, size: dict, workdir: Path):
        self.size = size
        self.workdir = workdir
        self.rate = size["rate"]
        self.port = free_port()
        self.cookie = ""
        self.csrf = ""
        self.conversations: list[int] = []
        self.next_conversation = 0
        self.server: subprocess.Popen | None = None

    # --- the server --------------------------------------------------------

    def start_server(self) -> None:
        templates = DatabaseTemplates(self.workdir)
        env = {
            **os.environ,
            **TEST_ENV,
            "DATABASE_URL": templates.fresh("sqlite"),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "CHAT_LLM_PROVIDER": "bench",
            "CHAT_SIMULATED_TOKENS_PER_S": str(self.rate),
            "CHAT_SIMULATED_MAX_TOKENS": str(self.size["tokens"]),
            "CHAT_SIMULATED_POINTS": str(self.size["tokens"] // 12 + 2),
            "CHAT_UPSTREAM_STALL_S": "300",
            "CHAT_STREAM_KEEPALIVE_S": str(KEEPALIVE_S),
            "CHAT_STREAM_IDLE_CHECK_S": "2",
            "CHAT_HEARTBEAT_S": "2",
            "CHAT_LOG_LEVEL": "WARNING",
            # nginx's TLS listener says so in X-Forwarded-Proto (bench/nginx.conf.template).
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto:https",
        }
        log = open(self.workdir / "daphne.log", "ab")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(self.port), "bench.asgi:application"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.server)

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    async def login(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", timeout=30) as client:
            await client.get("/accounts/login/")
            response = await client.post(
                "/accounts/login/",
                data={"username": "alice", "password": USERS["alice"], "csrfmiddlewaretoken": client.cookies["csrftoken"]},
            )
            assert response.status_code == 302, f"login failed: {response.status_code}"
            self.cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            self.csrf = client.cookies["csrftoken"]

    def http(self) -> httpx.AsyncClient:
        headers = {"Cookie": self.cookie, "X-CSRFToken": self.csrf}
        limits = httpx.Limits(max_connections=20)
        return httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", headers=headers, timeout=120, limits=limits)

    async def ask(self, client: httpx.AsyncClient, t0: float) -> str:
        """Start a generation whose tokens are due from t0 on; return its id."""
        if len(self.conversations) < 25:
            response = await client.post("/api/conversations", json={"title": "bench"})
            self.conversations.append(response.json()["id"])
            conversation = self.conversations[-1]
        else:
            conversation = self.conversations[self.next_conversation % len(self.conversations)]
            self.next_conversation += 1
        response = await client.post(
            f"/api/conversations/{conversation}/messages", json={"content": f"{PROMPT} [t0={t0:.6f}]"}
        )
        assert response.status_code == 201, response.text
        return response.json()["generation"]["id"]

    async def ask_many(self, n: int, lead_s: float = 1.0) -> tuple[list[str], float]:
        """Start n generations due at one t0, far enough ahead that every stream is open before it."""
        t0 = time.time() + lead_s + n * 0.03
        async with self.http() as client:
            ids = await asyncio.gather(*(self.ask(client, t0) for _ in range(n)))
        return ids, t0

    async def stored_text(self, generation_id: str) -> dict:
        async with self.http() as client:
            return (await client.get(f"/api/generations/{generation_id}")).json()

    def follow(self, transport: str, generation_id: str, *, port=None, prefix="", **kwargs):
        port = port or self.port
        if transport == "ws":
            return follow_ws(HOST, port, f"{prefix}/ws/generations/{generation_id}/", cookie=self.cookie, **kwargs)
        return follow_sse(
            HOST, port, f"{prefix}/api/generations/{generation_id}/stream", cookie=self.cookie,
            gzip=transport == "sse+gzip", **kwargs,
        )

    def latencies(self, reads: list[Received], t0: float) -> list[float]:
        """Arrival minus production time, per token, in ms.

        A late subscriber's gap is filled from the database in stored chunks: one
        event then carries several tokens, each with its own production time.
        """
        result = []
        for read in reads:
            previous = 0
            for at, _, payload in read.tokens:
                result += [(at - (t0 + (seq - 1) / self.rate)) * 1000 for seq in range(previous + 1, payload["seq"] + 1)]
                previous = payload["seq"]
        return result

    # --- phases ------------------------------------------------------------

    async def run_streams(self, transport: str | None, n: int, **follow_kwargs) -> dict:
        """n concurrent streams of one transport (None: generations with no client) and their costs."""
        ids, t0 = await self.ask_many(n)
        tasks = [] if transport is None else [
            asyncio.create_task(self.follow(transport, gid, received=Received(raw=[] if n <= 10 else None), **follow_kwargs))
            for gid in ids
        ]
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu_before, wall_before = cpu_seconds(self.server.pid), time.time()
        if transport is None:
            # Sleep rather than poll, so the window holds the generations' own work only.
            await asyncio.sleep(t0 + self.size["tokens"] / self.rate + 1.0 - time.time())
            reads = []
        else:
            reads = await asyncio.gather(*tasks)
        cpu = cpu_seconds(self.server.pid) - cpu_before
        if transport is None:
            await self.wait_ended(ids)
        latency = self.latencies(reads, t0)
        tokens = len(latency) if reads else n * self.size["tokens"]
        result = {
            "transport": transport or "no client",
            "streams": n,
            "tokens": tokens,
            "events": sum(len(r.tokens) for r in reads) if reads else None,
            "wall_s": time.time() - wall_before,
            "cpu_s": cpu,
            "cpu_us_per_token": cpu / tokens * 1e6 if tokens else None,
            "complete": sum(r.terminal == "done" for r in reads) if reads else None,
            "latency_p50_ms": percentile(latency, 50),
            "latency_p99_ms": percentile(latency, 99),
            "latency_max_ms": max(latency) if latency else None,
        }
        if reads:
            result["bytes_in_per_token"] = sum(r.bytes_in for r in reads) / tokens
            result["bytes_out_per_token"] = sum(r.bytes_out for r in reads) / tokens
            result["bytes_per_stream"] = (sum(r.bytes_in + r.bytes_out for r in reads)) / n
            result["handshake_bytes_out"] = reads[0].bytes_out
            result["response_headers"] = reads[0].headers
            stored = await self.stored_text(ids[0])
            result["exact_text"] = all(r.text == stored["text"] for r in reads[:3])
            if reads[0].raw:
                result["raw_sample"] = reads[0]
        return result

    async def wait_ended(self, ids: list[str]) -> None:
        async with self.http() as client:
            for gid in ids:
                for _ in range(600):
                    if (await client.get(f"/api/generations/{gid}")).json()["status"] not in ("queued", "streaming"):
                        break
                    await asyncio.sleep(0.1)

    async def time_to_first_token(self, transport: str, trials: int) -> dict:
        """Send a message and open its stream at once, as an app does; time until the first token."""
        totals, opens = [], []
        async with self.http() as client:
            for _ in range(trials):
                started = time.time()
                gid = await self.ask(client, started)
                read = await self.follow(transport, gid, max_tokens=1)
                totals.append((read.tokens[0][0] - started) * 1000)
                opens.append((read.tokens[0][0] - read.opened_at) * 1000)
                await client.post(f"/api/generations/{gid}/cancel")
        return {"ttft_p50_ms": percentile(totals, 50), "ttft_p90_ms": percentile(totals, 90),
                "open_to_token_p50_ms": percentile(opens, 50)}

    async def resume_cost(self, transport: str, generation_id: str, trials: int) -> dict:
        """Cut a finished stream after its first event; time from the cut to the first replayed event."""
        last_seq = (await self.stored_text(generation_id))["last_seq"]
        costs, bytes_ = [], []
        for trial in range(trials):
            first = await self.follow(transport, generation_id, max_tokens=1)
            cut_at = time.time()
            # Replay comes in stored chunks; resume mid-answer even if the first chunk held it all.
            resume_from = first.last_id if first.last_id < last_seq else last_seq // 2
            rest = await self.follow(transport, generation_id, last_event_id=resume_from, max_tokens=1)
            costs.append((rest.events[0][0] - cut_at) * 1000)
            bytes_.append(rest.bytes_out + rest.bytes_in)
        return {"resume_p50_ms": percentile(costs, 50), "resume_p90_ms": percentile(costs, 90),
                "resume_bytes": statistics.median(bytes_)}

    async def network_switch(self, transport: str) -> dict:
        """Read part of a live stream, then come back from a new address and port, leaving the old socket dangling."""
        [gid], t0 = await self.ask_many(1, lead_s=0.5)
        cut = max(3, self.size["tokens"] // 4)
        old = Received()
        old_task = asyncio.create_task(self.follow(transport, gid, received=old))
        while len(old.tokens) < cut:
            await asyncio.sleep(0.005)
        # A new network: new source address and port; the old connection is neither read nor closed.
        switched_at, kept = time.time(), old.tokens[:cut]
        old_task.cancel()
        new = await self.follow(transport, gid, last_event_id=kept[-1][2]["seq"], source="127.0.0.2")
        stored = await self.stored_text(gid)
        text = "".join(e[2]["text"] for e in kept) + new.text
        seqs = [e[2]["seq"] for e in kept + new.tokens]
        return {
            "exact_text": text == stored["text"],
            "no_duplicates": seqs == sorted(set(seqs)),
            "gap_ms": (new.tokens[0][0] - switched_at) * 1000 if new.tokens else None,
            "token_interval_ms": 1000 / self.rate,
            "terminal": new.terminal,
        }

    async def idle(self, transport: str, n: int, seconds: float) -> dict:
        """n streams open on generations that have not produced a token yet: the cost of waiting."""
        ids, _ = await self.ask_many(n, lead_s=seconds + 60)
        reads = [Received() for _ in ids]
        tasks = [asyncio.create_task(self.follow(transport, gid, received=r)) for gid, r in zip(ids, reads)]
        while not all(r.connected_at for r in reads):  # Every stream open and its headers in, before measuring.
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        before_in, before_out = sum(r.bytes_in for r in reads), sum(r.bytes_out for r in reads)
        cpu_before = cpu_seconds(self.server.pid)
        await asyncio.sleep(seconds)
        cpu = cpu_seconds(self.server.pid) - cpu_before
        bytes_in = sum(r.bytes_in for r in reads) - before_in
        bytes_out = sum(r.bytes_out for r in reads) - before_out
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self.http() as client:
            await asyncio.gather(*(client.post(f"/api/generations/{gid}/cancel") for gid in ids))
        per_minute = 60 / seconds / n
        return {
            "streams": n,
            "keepalive_s": KEEPALIVE_S,
            "bytes_in_per_conn_min": bytes_in * per_minute,
            "bytes_out_per_conn_min": bytes_out * per_minute,
            "cpu_ms_per_conn_min": cpu * 1000 * per_minute,
        }


# --- compression that flushes per event, computed from the captured plain stream ---


def chunk_overhead(size: int) -> int:
    return len(f"{size:x}") + 4


def ws_header(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def per_event_compression(raw: Received, transport: str) -> int:
    """Wire bytes the captured plain stream would take with compression flushed after every event."""
    if transport == "sse":
        deflate = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        plain = sum(len(p) + chunk_overhead(len(p)) for p in raw.raw)
        packed = [deflate.compress(p) + deflate.flush(zlib.Z_SYNC_FLUSH) for p in raw.raw]
        compressed = sum(len(p) + chunk_overhead(len(p)) for p in packed) + len(deflate.flush())
        return raw.bytes_in - plain + compressed + len("Content-Encoding: gzip\r\n")
    # permessage-deflate with context takeover: each message ends with a sync flush minus its 4-byte tail.
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    plain = sum(len(p) + ws_header(len(p)) for p in raw.raw)
    packed = [(deflate.compress(p) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4] for p in raw.raw]
    compressed = sum(len(p) + ws_header(len(p)) for p in packed)
    return raw.bytes_in - plain + compressed + len("Sec-WebSocket-Extensions: permessage-deflate\r\n")


# --- nginx -----------------------------------------------------------------


class Nginx:
    """Debian's nginx on two loopback ports: plain HTTP/1.1, and TLS with HTTP/2 (a throwaway certificate)."""

    def __init__(self, workdir: Path, upstream_port: int):
        self.dir = workdir / "nginx"
        self.port, self.tls_port = free_port(), free_port()
        self.upstream_port = upstream_port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        for sub in ("logs", "temp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "temp", 0o777)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem")],
            check=True, capture_output=True,
        )
        template = (ROOT / "bench" / "nginx.conf.template").read_text()
        config = template.format(
            dir=self.dir, port=self.port, tls_port=self.tls_port, upstream=f"{HOST}:{self.upstream_port}",
            user="root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        )
        (self.dir / "nginx.conf").write_text(config)
        self.process = subprocess.Popen(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "logs" / "stderr.log", "ab"),
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def established(self) -> int:
        """TCP connections established to the TLS port right now (from /proc/net/tcp)."""
        hex_port = f":{self.tls_port:04X}"
        count = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += local.endswith(hex_port) and state == "01"
        return count


async def behind_nginx(bench: Bench, nginx: Nginx, n: int) -> dict:
    results = {}
    for label, transport, prefix in [
        ("sse", "sse", ""),
        ("sse, X-Accel-Buffering ignored", "sse", "/no-xab"),
        ("ws", "ws", ""),
    ]:
        ids, t0 = await bench.ask_many(n)
        reads = await asyncio.gather(*(bench.follow(transport, gid, port=nginx.port, prefix=prefix) for gid in ids))
        latency = bench.latencies(reads, t0)
        results[label] = {
            "complete": sum(r.terminal == "done" for r in reads),
            "streams": n,
            "latency_p50_ms": percentile(latency, 50),
            "latency_p99_ms": percentile(latency, 99),
            "status": reads[0].status,
        }
    [gid], _ = await bench.ask_many(1)
    broken = await bench.follow("ws", gid, port=nginx.port, prefix="/no-upgrade")
    results["ws, no Upgrade headers"] = {"status": broken.status, "complete": int(broken.terminal == "done"), "streams": 1}
    return results


async def http2_multiplexing(bench: Bench, nginx: Nginx, n: int) -> dict:
    """n SSE streams through nginx over HTTP/2, against n WebSockets over TLS: TCP connections used."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    results = {}
    ids, t0 = await bench.ask_many(n)
    peak = 0
    base = f"https://{HOST}:{nginx.tls_port}"
    # httpx asks for gzip by default, and its decoder stops after the first gzip member,
    # while Django's GZipMiddleware sends one member per event: ask for identity.
    headers = {"Cookie": bench.cookie, "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(http2=True, verify=False, base_url=base, headers=headers, timeout=60) as client:
        versions, arrivals, statuses = set(), [], []

        async def one(gid):
            async with client.stream("GET", f"/api/generations/{gid}/stream") as response:
                versions.add(response.http_version)
                if response.status_code != 200:
                    statuses.append(response.status_code)
                    return False
                async for line in response.aiter_lines():
                    if line.startswith("data:") and '"text"' in line:
                        arrivals.append((time.time(), json.loads(line[5:])["seq"]))
                    if line.startswith("event: done"):
                        return True
                return False

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, nginx.established())
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        done = await asyncio.gather(*(one(gid) for gid in ids))
        watcher.cancel()
    latency = [(at - (t0 + (seq - 1) / bench.rate)) * 1000 for at, seq in arrivals]
    results["sse over h2"] = {"streams": n, "complete": sum(done), "tcp_connections": peak, "errors": statuses,
                              "http_version": sorted(versions), "latency_p50_ms": percentile(latency, 50),
                              "latency_p99_ms": percentile(latency, 99)}
    ids, t0 = await bench.ask_many(n)
    peak = 0
    tasks = [asyncio.create_task(follow_ws(HOST, nginx.tls_port, f"/ws/generations/{gid}/", cookie=bench.cookie, ssl=context))
             for gid in ids]
    while not all(t.done() for t in tasks):
        peak = max(peak, nginx.established())
        await asyncio.sleep(0.05)
    reads = [t.result() for t in tasks]
    latency = bench.latencies(reads, t0)
    results["ws over TLS"] = {"streams": n, "complete": sum(r.terminal == "done" for r in reads), "tcp_connections": peak,
                              "http_version": ["HTTP/1.1 upgrade"], "latency_p50_ms": percentile(latency, 50),
                              "latency_p99_ms": percentile(latency, 99)}
    return results


# --- the run -----------------------------------------------------------------

TRANSPORTS = ["sse", "sse+gzip", "ws"]


async def run(size: dict, bench: Bench, with_nginx: bool) -> dict:
    await bench.login()
    results = {"size": size, "machine": machine(), "loadavg_before": os.getloadavg(), "load": [], "bytes": {}}
    print(f"bytes per token: {size['levels'][0]} streams of {size['tokens']} tokens per transport", flush=True)
    for transport in TRANSPORTS:
        row = await bench.run_streams(transport, size["levels"][0])
        sample = row.pop("raw_sample", None)
        results["bytes"][transport] = row
        if sample is not None and transport in ("sse", "ws"):
            tokens = len(sample.tokens)
            computed = per_event_compression(sample, transport)
            label = "sse+gzip, flushed per event (computed)" if transport == "sse" else "ws+permessage-deflate (computed)"
            results["bytes"][label] = {
                "transport": label,
                "bytes_in_per_token": computed / tokens,
                "bytes_out_per_token": sample.bytes_out / tokens,
            }
    for n in size["levels"]:
        for transport in [None, "sse", "ws"]:
            print(f"load: {n} streams, {transport or 'no client'}", flush=True)
            row = await bench.run_streams(transport, n)
            row.pop("raw_sample", None)
            row.pop("response_headers", None)
            results["load"].append(row)
    print("time to first token, resume cost, network switch", flush=True)
    finished = (await bench.ask_many(1, lead_s=0.0))[0][0]
    await bench.wait_ended([finished])
    results["ttft"] = {t: await bench.time_to_first_token(t, size["trials"]) for t in ("sse", "ws")}
    results["resume"] = {t: await bench.resume_cost(t, finished, size["trials"]) for t in ("sse", "ws")}
    results["switch"] = {t: await bench.network_switch(t) for t in ("sse", "ws")}
    if with_nginx:
        nginx = Nginx(bench.workdir, bench.port)
        try:
            nginx.start()
            print("behind nginx", flush=True)
            results["nginx"] = await behind_nginx(bench, nginx, size["levels"][0])
            results["http2"] = await http2_multiplexing(bench, nginx, max(size["levels"][0], 20))
        finally:
            nginx.stop()
    print("idle connections", flush=True)
    results["idle"] = {t: await bench.idle(t, size["idle_n"], size["idle_s"]) for t in ("sse", "ws")}
    results["loadavg_after"] = os.getloadavg()
    return results


def fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report(results: dict) -> str:
    """The results as plain-text tables, with ratios against SSE (no gzip) from the same run."""
    lines = [f"Machine: {results['machine']}",
             f"Load average (1, 5, 15 min) before {results['loadavg_before']}, after {results['loadavg_after']}", ""]
    lines.append("Bytes on the wire per token (whole answer: headers, framing, terminal event, close)")
    base = results["bytes"]["sse"]["bytes_in_per_token"] + results["bytes"]["sse"]["bytes_out_per_token"]
    lines.append(f"{'transport':42} {'down B/tok':>10} {'up B/tok':>9} {'ratio':>6} {'p50 ms':>8}")
    for label, row in results["bytes"].items():
        total = row["bytes_in_per_token"] + row["bytes_out_per_token"]
        lines.append(f"{label:42} {row['bytes_in_per_token']:>10.1f} {row['bytes_out_per_token']:>9.1f} "
                     f"{total / base:>5.2f}x {fmt(row.get('latency_p50_ms')):>8}")
    lines += ["", "Load: server CPU per delivered token and delivery latency (produced -> received)"]
    lines.append(f"{'streams':>7} {'transport':10} {'tokens':>7} {'events':>7} {'CPU s':>6} {'us/tok':>7} {'ratio':>6} "
                 f"{'p50 ms':>7} {'p99 ms':>7} {'done':>5}")
    by_n = {}
    for row in results["load"]:
        by_n.setdefault(row["streams"], {})[row["transport"]] = row
    for n, rows in by_n.items():
        base_cpu = rows["sse"]["cpu_us_per_token"]
        for transport, row in rows.items():
            lines.append(f"{n:>7} {transport:10} {row['tokens']:>7} {fmt(row['events']):>7} {row['cpu_s']:>6.2f} {row['cpu_us_per_token']:>7.1f} "
                         f"{row['cpu_us_per_token'] / base_cpu:>5.2f}x {fmt(row['latency_p50_ms']):>7} "
                         f"{fmt(row['latency_p99_ms']):>7} {fmt(row.get('complete')):>5}")
    lines += ["", "Time to first token (POST then open the stream), resume (cut -> first replayed token)"]
    for t in ("sse", "ws"):
        ttft, resume = results["ttft"][t], results["resume"][t]
        lines.append(f"{t:4} TTFT p50 {fmt(ttft['ttft_p50_ms'])} ms, p90 {fmt(ttft['ttft_p90_ms'])} ms; "
                     f"resume p50 {fmt(resume['resume_p50_ms'])} ms, p90 {fmt(resume['resume_p90_ms'])} ms, "
                     f"{resume['resume_bytes']:.0f} B to the first token")
    lines += ["", "Network switch (new source address and port, old socket left dangling)"]
    for t, row in results["switch"].items():
        lines.append(f"{t:4} exact text {row['exact_text']}, no duplicates {row['no_duplicates']}, "
                     f"gap {fmt(row['gap_ms'])} ms (token interval {row['token_interval_ms']:.0f} ms), end {row['terminal']}")
    if "nginx" in results:
        lines += ["", "Behind nginx (proxy_buffering on)"]
        for label, row in results["nginx"].items():
            lines.append(f"{label:32} status {row['status']}, complete {row['complete']}/{row['streams']}, "
                         f"p50 {fmt(row.get('latency_p50_ms'))} ms, p99 {fmt(row.get('latency_p99_ms'))} ms")
        for label, row in results["http2"].items():
            lines.append(f"{label:32} {row['http_version']}, {row['complete']}/{row['streams']} complete over "
                         f"{row['tcp_connections']} TCP connections, p50 {fmt(row['latency_p50_ms'])} ms")
    lines += ["", f"Idle streams (keepalive every {KEEPALIVE_S:g} s here; 15 s by default)"]
    for t, row in results["idle"].items():
        lines.append(f"{t:4} per connection-minute: {row['bytes_in_per_conn_min']:.0f} B down, "
                     f"{row['bytes_out_per_conn_min']:.0f} B up, {row['cpu_ms_per_conn_min']:.1f} ms server CPU")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency_axis, cpu_axis, bytes_axis) = plt.subplots(1, 3, figsize=(15, 4.5))
    for transport, colour in (("sse", "tab:blue"), ("ws", "tab:orange")):
        rows = [r for r in results["load"] if r["transport"] == transport]
        streams = [r["streams"] for r in rows]
        latency_axis.plot(streams, [r["latency_p50_ms"] for r in rows], "o-", color=colour, label=f"{transport} p50")
        latency_axis.plot(streams, [r["latency_p99_ms"] for r in rows], "s--", color=colour, label=f"{transport} p99")
        cpu_axis.plot(streams, [r["cpu_us_per_token"] for r in rows], "o-", color=colour, label=transport)
        bytes_axis.plot(streams, [r["bytes_in_per_token"] + r["bytes_out_per_token"] for r in rows], "o-",
                        color=colour, label=transport)
    idle = [r for r in results["load"] if r["transport"] == "no client"]
    cpu_axis.plot([r["streams"] for r in idle], [r["cpu_us_per_token"] for r in idle], "x:", color="grey",
                  label="generation only (no client)")
    for axis, title, unit in (
        (latency_axis, "Token delivery latency", "ms (log)"),
        (cpu_axis, "Server CPU per delivered token", "µs"),
        (bytes_axis, "Bytes on the wire per token (both ways)", "bytes"),
    ):
        axis.set_xscale("log")
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    latency_axis.set_yscale("log")
    bytes_axis.set_ylim(bottom=0)
    figure.suptitle(f"SSE vs WebSocket, same server and token schedule ({results['size']['rate']:g} tokens/s, "
                    f"{results['size']['tokens']} tokens per answer)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_const", const="quick", dest="size", help="smaller levels, about a minute")
    parser.add_argument("--smoke", action="store_const", const="smoke", dest="size", help="tiny, for the test suite")
    parser.add_argument("--levels", type=int, nargs="+", help="concurrent streams to load with")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx and HTTP/2 phases")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="directory for transports.json")
    parser.add_argument("--plot", type=Path, help="write the plot PNG here (docs/transports.png for the docs)")
    args = parser.parse_args(argv)
    size = dict(SIZES[args.size or "full"])
    if args.levels:
        size["levels"] = args.levels
    with_nginx = not args.no_nginx and shutil.which("nginx") is not None and shutil.which("openssl") is not None
    if not with_nginx and not args.no_nginx:
        print("nginx or openssl not found: skipping the proxy phases (apt-get install -y nginx)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-transports-"))
    bench = Bench(size, workdir)
    bench.start_server()
    try:
        results = asyncio.run(run(size, bench, with_nginx))
    except BaseException:
        print("server log, last lines:\n" + (workdir / "daphne.log").read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        bench.stop_server()
        shutil.rmtree(workdir, ignore_errors=True)
    results["command"] = "python -m bench.transports " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transports.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "transports.txt").write_text(text + "\n")
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return results


if __name__ == "__main__":
    main()
