"""Raw-socket SSE and WebSocket clients that count every byte they send and receive.

They speak just enough HTTP/1.1 and RFC 6455 to follow a stream, so they cost
the benchmark process little and the byte counts are exactly what crossed the
socket: request and response headers, chunked framing, gzip, WebSocket frame
headers and masks, the close handshake. TCP/IP headers are not included.
"""

import asyncio
import base64
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field

TERMINAL = {"done", "interrupted", "failed", "cancelled"}
WS_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


@dataclass
class Received:
    """What one connection saw: events with their arrival times, and its byte counts."""

    events: list = field(default_factory=list)  # (unix time, type, payload dict)
    bytes_in: int = 0
    bytes_out: int = 0
    status: int = 0
    headers: dict = field(default_factory=dict)
    opened_at: float = 0.0
    connected_at: float = 0.0
    raw: list | None = None  # Body pieces (SSE) or frame payloads (WS), if asked for.

    @property
    def tokens(self) -> list:
        return [e for e in self.events if e[1] == "token"]

    @property
    def text(self) -> str:
        return "".join(e[2]["text"] for e in self.tokens)

    @property
    def terminal(self) -> str | None:
        return next((e[1] for e in self.events if e[1] in TERMINAL), None)

    @property
    def last_id(self) -> int | None:
        ids = [e[2]["seq"] for e in self.events if "seq" in e[2]]
        return ids[-1] if ids else None


class Counted:
    """A connection whose bytes are counted in both directions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: Received):
        self.reader, self.writer, self.received = reader, writer, received

    def write(self, data: bytes) -> None:
        self.received.bytes_out += len(data)
        self.writer.write(data)

    async def read(self, n: int = 65536) -> bytes:
        data = await self.reader.read(n)
        self.received.bytes_in += len(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.received.bytes_in += len(data)
        return data

    async def readuntil(self, separator: bytes) -> bytes:
        data = await self.reader.readuntil(separator)
        self.received.bytes_in += len(data)
        return data

    def abort(self) -> None:
        self.writer.transport.abort()


async def open_counted(host: str, port: int, received: Received, *, source: str | None = None, ssl=None) -> Counted:
    received.opened_at = time.time()
    local_addr = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr, limit=2**20, ssl=ssl)
    return Counted(reader, writer, received)


async def read_head(conn: Counted) -> None:
    head = (await conn.readuntil(b"\r\n\r\n")).decode("latin1").split("\r\n")
    conn.received.status = int(head[0].split()[1])
    conn.received.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
    conn.received.connected_at = time.time()


def request_head(method: str, path: str, host: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin1")


async def sse_body_chunks(conn: Counted):
    """The response body as it arrives: de-chunked and, if gzipped, decompressed."""
    chunked = conn.received.headers.get("transfer-encoding", "").lower() == "chunked"
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if conn.received.headers.get("content-encoding") == "gzip" else None
    while True:
        if chunked:
            size = int((await conn.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            data = (await conn.readexactly(size + 2))[:-2]
        else:
            data = await conn.read()
            if not data:
                return
        if inflate:
            # Django's GZipMiddleware compresses each chunk of an async stream as its own gzip member.
            out = inflate.decompress(data)
            while inflate.eof and inflate.unused_data:
                rest, inflate = inflate.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += inflate.decompress(rest)
            if inflate.eof:
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = out
        if data:
            yield data


async def follow_sse(
    host: str, port: int, path: str, *, cookie: str, last_event_id=None, gzip=False, max_tokens=None,
    source=None, received: Received | None = None,
) -> Received:
    """Read an SSE stream to its terminal event, or until `max_tokens` token events; then drop it."""
    received = received or Received()
    conn = await open_counted(host, port, received, source=source)
    headers = {"Accept": "text/event-stream", "Cookie": cookie, "Cache-Control": "no-cache"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    if gzip:
        headers["Accept-Encoding"] = "gzip"
    conn.write(request_head("GET", path, f"{host}:{port}", headers))
    try:
        await read_head(conn)
        if received.status != 200:
            return received
        buffer = b""
        async for data in sse_body_chunks(conn):
            now = time.time()
            if received.raw is not None:
                received.raw.append(data)
            buffer += data
            *blocks, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            for block in blocks:
                event, payload = "message", None
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        payload = json.loads(line[5:])
                if payload is None:
                    continue  # A comment: the retry hint or a keepalive.
                received.events.append((now, event, payload))
                if event in TERMINAL:
                    return received
                if max_tokens is not None and len(received.tokens) >= max_tokens:
                    return received
    finally:
        conn.abort()
    return received


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3: clients must mask)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_frames(conn: Counted):
    """(opcode, payload) of each server frame; fragments are joined."""
    parts, first_opcode = [], 0
    while True:
        b0, b1 = await conn.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await conn.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await conn.readexactly(8))
        payload = await conn.readexactly(length) if length else b""
        opcode = b0 & 0x0F
        if opcode >= 0x8:
            yield opcode, payload
            continue
        parts.append(payload)
        first_opcode = opcode or first_opcode
        if b0 & 0x80:
            yield first_opcode, b"".join(parts)
            parts = []


async def follow_ws(
    host: str, port: int, path: str, *, cookie: str, last_event_id=None, max_tokens=None, source=None,
    received: Received | None = None, deflate_offer=True, ssl=None,
) -> Received:
    """Open a WebSocket like a browser would and read JSON frames to the close."""
    received = received or Received()
    conn = await open_counted(host, port, received, source=source, ssl=ssl)
    if last_event_id is not None:
        path += ("&" if "?" in path else "?") + f"last_event_id={last_event_id}"
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Origin": f"{'https' if ssl else 'http'}://{host}:{port}",
        "Cookie": cookie,
    }
    if deflate_offer:
        # What browsers offer; Daphne (Autobahn with its defaults) declines it.
        headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits"
    conn.write(request_head("GET", path, f"{host}:{port}", headers))
    try:
        await read_head(conn)
        if received.status != 101:
            return received
        async for opcode, payload in ws_frames(conn):
            now = time.time()
            if opcode == 0x8:  # Close: answer it, as a client must.
                received.headers["close-code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                conn.write(ws_frame(0x8, payload[:2]))
                try:
                    await conn.writer.drain()
                except ConnectionError:
                    pass  # The server may drop the connection right after its close: everything is read.
                return received
            if opcode == 0x9:  # Protocol ping from the server.
                conn.write(ws_frame(0xA, payload))
                continue
            if opcode != 0x1:
                continue
            if received.raw is not None:
                received.raw.append(payload)
            frame = json.loads(payload)
            received.events.append((now, frame["type"], frame))
            if max_tokens is not None and frame["type"] == "token" and len(received.tokens) >= max_tokens:
                return received
    except asyncio.IncompleteReadError:
        return received
    finally:
        conn.abort()
    return received
