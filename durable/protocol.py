"""The Durable Streams wire format: offsets, cursors, content types, SSE frames and common headers. Pure."""

import json
import math
import random
import re
import time

STREAM_NEXT_OFFSET = "Stream-Next-Offset"
STREAM_UP_TO_DATE = "Stream-Up-To-Date"
STREAM_CURSOR = "Stream-Cursor"
STREAM_CLOSED = "Stream-Closed"

# Offsets are zero-padded decimal numbers, so they sort as strings: for a
# generation the number is the sequence number of the last token covered, the
# same number as our SSE `Last-Event-ID`; for other streams, of the last message.
OFFSET_WIDTH = 16
# A generation's terminal message sits after its last token: "<last_seq>_end"
# sorts after "<last_seq>" and before "<last_seq + 1>".
END_SUFFIX = "_end"
_OFFSET = re.compile(r"([0-9]{1,16})(_end)?")  # ASCII digits only: int() would also read "１".

# Cursors count 20 s intervals from 2024-10-09T00:00:00Z (protocol 10.1).
CURSOR_EPOCH_S = 1728432000
CURSOR_INTERVAL_S = 20
CURSOR_JITTER_MAX_S = 3600


class ProtocolError(Exception):
    """A request the protocol refuses: its status, a stable code, a message, and headers to add."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def encode_offset(seq: int, *, end: bool = False) -> str:
    return f"{seq:0{OFFSET_WIDTH}d}" + (END_SUFFIX if end else "")


class Offset:
    """A parsed `offset` query parameter: the start (`-1` or absent), `now`, or a position."""

    def __init__(self, *, seq: int = 0, start: bool = False, now: bool = False, end: bool = False):
        self.seq, self.start, self.now, self.end = seq, start, now, end


def parse_offset(query) -> Offset | None:
    """The request's offset, or None when it has none; a malformed or repeated one is a 400."""
    values = query.getlist("offset")
    if not values:
        return None
    if len(values) > 1:
        raise ProtocolError(400, "invalid_offset", "Give one offset parameter, not several.")
    raw = values[0]
    if raw == "-1":
        return Offset(start=True)
    if raw == "now":
        return Offset(now=True)
    match = _OFFSET.fullmatch(raw)
    if match is None:
        shown = raw[:40].encode("unicode_escape").decode()
        raise ProtocolError(400, "invalid_offset", f"offset must be -1, now, or an offset this server returned; got {shown!r}.")
    return Offset(seq=int(match.group(1)), end=bool(match.group(2)))


def response_cursor(client_cursor: str | None) -> str:
    """The cursor for a live response: the current interval, always past the client's (protocol 10.1)."""
    current = int((time.time() - CURSOR_EPOCH_S) // CURSOR_INTERVAL_S)
    if client_cursor and client_cursor.isascii() and client_cursor.isdigit() and len(client_cursor) < 20 and int(client_cursor) >= current:
        jitter_s = random.randint(1, CURSOR_JITTER_MAX_S)
        return str(int(client_cursor) + max(1, math.ceil(jitter_s / CURSOR_INTERVAL_S)))
    return str(current)


def media_type(content_type: str) -> str:
    """`text/plain; charset=utf-8` -> `text/plain`: what two content types must share to match."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


def sse_base64(content_type: str) -> bool:
    """Whether SSE data events carry base64: for anything but text/* and application/json (protocol 5.8)."""
    kind = media_type(content_type)
    return not (kind.startswith("text/") or kind == "application/json")


# Not chat.streaming.sse.encode: the protocol's reference clients and conformance suite read `data:` with no space after
# the colon, and keep every byte of a text payload after it.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(event: str, payload: str) -> bytes:
    """One SSE event; every line of the payload gets its own `data:` line, so no payload can end the event."""
    lines = "\n".join(f"data:{line}" for line in _LINE_BREAK.split(payload))
    return f"event: {event}\n{lines}\n\n".encode()


def sse_control(next_offset: str, *, cursor: str | None = None, up_to_date: bool = False, closed: bool = False) -> bytes:
    control: dict = {"streamNextOffset": next_offset}
    if closed:
        control["streamClosed"] = True
    else:
        control["streamCursor"] = cursor
    if up_to_date or closed:
        control["upToDate"] = True
    return sse_event("control", json.dumps(control, separators=(",", ":")))


def json_array(messages: list[bytes]) -> bytes:
    """A JSON stream's read body: its messages (each stored as one JSON text) as one array."""
    return b"[" + b",".join(messages) + b"]"


def is_true(value: str | None) -> bool:
    """`Stream-Closed: true`, any case; every other value counts as absent (protocol 4.1)."""
    return value is not None and value.strip().lower() == "true"


# Sent on every response (protocol 12.7): no sniffing, and fetch() from other origins may read.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "cross-origin"}
# No credentials are allowed cross-origin, so other sites cannot ride a browser's session: they need a bearer token.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, "
        "Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq"
    ),
    "Access-Control-Expose-Headers": (
        "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, Stream-Expires-At, "
        "Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, "
        "ETag, Location"
    ),
    "Access-Control-Max-Age": "600",
}
