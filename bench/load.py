"""The capacity benchmark's load client: raw sockets that only record, parsed after the run.

While a stream runs, its protocol does one thing per read: keep the bytes and
their arrival time. De-chunking, SSE parsing and JSON decoding happen after the
point, so the client spends almost nothing per token while the servers are
measured, and an arrival time is when the bytes reached the socket, not when a
busy client got round to parsing them.
"""

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

from bench.measure import HOST
from bench.wire import TERMINAL, request_head

EVENT_END = re.compile(rb"\r\n\r\n|\n\n")
# What a probe waits for as an answer's first token: of its text, or of its reasoning.
FIRST_TOKEN = (b"event: token", b"event: reasoning")
LINE_END = re.compile(rb"\r?\n")


class Recorder(asyncio.Protocol):
    """One HTTP/1.1 request (with `Connection: close`); the response kept as (arrival time, bytes)."""

    def __init__(self, request: bytes, watch: bytes | tuple[bytes, ...] | None = None):
        self.request = request
        self.pieces: list[tuple[float, bytes]] = []
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        # Probes wait for the first piece holding `watch` (say b"event: token", or one of several); the load
        # streams do not look.
        self.watch = (watch,) if isinstance(watch, bytes) else watch
        self.seen = loop.create_future()
        self.headers: dict = {}  # The request's credentials, for whoever reads its answer again.

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.pieces.append((now, data))
        if self.watch is not None and not self.seen.done() and any(watched in data for watched in self.watch):
            self.seen.set_result(now)

    def connection_lost(self, exc) -> None:
        for future in (self.closed, self.seen):
            if not future.done():
                future.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def send(
    port: int, method: str, path: str, headers: dict, body: bytes = b"", watch: bytes | tuple[bytes, ...] | None = None
) -> Recorder:
    """Open a connection and send one request; the response is recorded as it comes."""
    headers = {**headers, "Connection": "close"}
    if body:
        headers |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
    request = request_head(method, path, f"{HOST}:{port}", headers) + body
    loop = asyncio.get_running_loop()
    _, recorder = await loop.create_connection(lambda: Recorder(request, watch), HOST, port)
    return recorder


async def call(port: int, method: str, path: str, headers: dict, payload=None, timeout: float = 60) -> tuple[int, dict]:
    """A JSON request; returns the status and the decoded body (empty if none)."""
    recorder = await send(port, method, path, headers, json.dumps(payload).encode() if payload is not None else b"")
    try:
        await asyncio.wait_for(asyncio.shield(recorder.closed), timeout)
    finally:
        recorder.abort()
    response = parse(recorder.pieces)
    body = b"".join(data for _, data in response.body)
    return response.status, json.loads(body) if body.strip() else {}


@dataclass
class Response:
    status: int = 0
    headers: dict = field(default_factory=dict)
    body: list = field(default_factory=list)  # (arrival time, bytes), de-chunked
    ended: bool = False  # The whole body arrived (the last chunk, or the connection's end without chunking).


def parse(pieces: list[tuple[float, bytes]]) -> Response:
    response, head, body = Response(), b"", []
    for at, data in pieces:
        if not response.status:
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                continue
            lines = head[:end].decode("latin1").split("\r\n")
            response.status = int(lines[0].split()[1])
            response.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            data = head[end + 4:]
        if data:
            body.append((at, data))
    if response.headers.get("transfer-encoding", "").lower() == "chunked":
        response.body, response.ended = dechunk(body)
    else:
        response.body, response.ended = body, bool(response.status)
    return response


def dechunk(pieces: list[tuple[float, bytes]]) -> tuple[list, bool]:
    """Chunked transfer coding removed; each piece of data keeps the arrival time of the read that brought it."""
    out, buffer, data_left, crlf_left = [], b"", None, 0
    for at, data in pieces:
        buffer += data
        while buffer:
            if data_left is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                size, buffer = int(buffer[:end].split(b";")[0], 16), buffer[end + 2:]
                if size == 0:
                    return out, True
                data_left, crlf_left = size, 2
            if data_left:
                taken, buffer = buffer[:data_left], buffer[data_left:]
                out.append((at, taken))
                data_left -= len(taken)
                if data_left:
                    break
            dropped = min(crlf_left, len(buffer))
            buffer, crlf_left = buffer[dropped:], crlf_left - dropped
            if crlf_left:
                break
            data_left = None
    return out, False


def sse_events(body: list[tuple[float, bytes]]) -> list[tuple[float, str, dict]]:
    """(arrival time, event name, decoded data) of each event with data; comments and retry hints are skipped."""
    events, buffer = [], b""
    for at, data in body:
        buffer += data
        *blocks, buffer = EVENT_END.split(buffer)
        for block in blocks:
            name, payload = "message", None
            for line in LINE_END.split(block):
                if line.startswith(b"event:"):
                    name = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    payload = json.loads(line[5:])
            if payload is not None:
                events.append((at, name, payload))
    return events


@dataclass
class Stream:
    """What one load stream delivered: each token's arrival (text and reasoning alike), each part, how it ended."""

    status: int
    arrivals: list[tuple[int, float]]  # (seq, arrival time), one per token, in order
    text: str
    terminal: str | None
    contiguous: bool  # Every event's tokens follow the previous event's, from 1, with no gap or repeat.
    generation: str | None = None  # From the `posted` event of a stream that a POST answered with.
    reasoning: str = ""


def posted_generation(pieces: list[tuple[float, bytes]]) -> str | None:
    """The generation id in the `posted` event that opens a POST's stream (the project's one-request flow)."""
    response = parse(pieces[:4])
    for _, name, payload in sse_events(response.body):
        if name == "posted":
            return payload["generation"]["id"]
    return None


def read_stream(pieces: list[tuple[float, bytes]]) -> Stream:
    response = parse(pieces)
    if response.status not in (200, 201):
        return Stream(response.status, [], "", None, False)
    arrivals, last, terminal, contiguous, generation = [], 0, None, True, None
    parts = {"token": [], "reasoning": []}  # Each part's texts; one sequence space across them.
    for at, name, payload in sse_events(response.body):
        if name == "posted":
            generation = payload["generation"]["id"]
        elif name in parts:
            seq = payload["seq"]
            contiguous &= seq > last
            # A coalesced or replayed event covers several tokens; its id is the last one's.
            arrivals += [(s, at) for s in range(last + 1, seq + 1)]
            parts[name].append(payload["text"])
            last = max(last, seq)
        elif name in TERMINAL:
            terminal = name
            break
        elif name != "ping":
            contiguous = False  # A snapshot or anything else unexpected in a plain answer.
    text, reasoning = ("".join(texts) for texts in parts.values())
    return Stream(response.status, arrivals, text, terminal, contiguous, generation, reasoning)
