"""The general namespace: PUT creates, POST appends or closes, GET reads (catch-up, long-poll, SSE), HEAD, DELETE."""

import re
from datetime import UTC, datetime

from django.http import HttpResponse

from durable import storage
from durable.conf import setting
from durable.live import sse_body, wait_for_change, wake
from durable.protocol import (
    STREAM_CLOSED,
    STREAM_CURSOR,
    STREAM_NEXT_OFFSET,
    STREAM_UP_TO_DATE,
    ProtocolError,
    encode_offset,
    is_json,
    is_true,
    json_array,
    parse_offset,
    response_cursor,
    sse_base64,
)
from durable.views.common import (
    CACHEABLE,
    NOT_CACHEABLE,
    EventStreamResponse,
    client_cursor,
    empty,
    live_mode,
    protocol_view,
    read_body,
    set_headers,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(\s*;.*)?", re.ASCII)
_TTL = re.compile(r"0|[1-9][0-9]{0,9}")
MAX_TTL_S = 2**31 - 1  # The column is a 32-bit integer on PostgreSQL (68 years).
_PRODUCER_NUMBER = re.compile(r"[0-9]{1,16}")
# Content-Type and Stream-Seq are stored in 255-character columns.
MAX_HEADER_VALUE = 255
MAX_PRODUCER_NUMBER = 2**53 - 1  # JavaScript's largest safe integer (protocol 5.2.1)
MAX_PATH = 512
# generations/ holds only generations; __ds/ is the protocol's control namespace (section 6), not offered here.
RESERVED = {"generations", "__ds"}


def stream_path(path: str) -> str:
    """Validate a stream's path (already percent-decoded by Django)."""
    segments = path.split("/")
    if (
        len(path) > MAX_PATH
        or any(segment in ("", ".", "..") for segment in segments)
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
    ):
        raise ProtocolError(400, "invalid_path", f"A stream path is up to {MAX_PATH} characters of non-empty segments, no . or ..")
    if segments[0] in RESERVED:
        raise ProtocolError(404, "not_found", f"No stream here: {segments[0]}/ is reserved.")
    return path


@protocol_view
async def stream_view(request, user, path: str):
    path = stream_path(path)
    handler = HANDLERS.get(request.method)
    if handler is None:
        raise ProtocolError(405, "method_not_allowed", "Use GET, HEAD, PUT, POST or DELETE.", {"Allow": ALLOW})
    return await handler(request, user, path)


# --- Writes ----------------------------------------------------------------------


def parse_expiry(request) -> tuple[int | None, datetime | None]:
    ttl, expires = request.headers.get("Stream-TTL"), request.headers.get("Stream-Expires-At")
    if ttl is not None and expires is not None:
        raise ProtocolError(400, "ttl_and_expiry", "Give Stream-TTL or Stream-Expires-At, not both.")
    if ttl is not None:
        if not _TTL.fullmatch(ttl) or int(ttl) > MAX_TTL_S:
            raise ProtocolError(
                400, "invalid_ttl", f"Stream-TTL is a whole number of seconds up to {MAX_TTL_S}, without sign, point or leading zeros."
            )
        return int(ttl), None
    if expires is not None:
        try:
            at = datetime.fromisoformat(expires)
            at = at.astimezone(UTC) if at.tzinfo is not None else None
        except (ValueError, OverflowError):  # Overflow: a time past year 9999 once in UTC.
            at = None
        if at is None:
            raise ProtocolError(400, "invalid_expires_at", "Stream-Expires-At is an RFC 3339 timestamp with a time zone, in years 1 to 9999.")
        return None, at
    return None, None


async def create(request, user, path):
    if "Stream-Forked-From" in request.headers:
        raise ProtocolError(501, "forks_not_supported", "This server does not support forking streams.")
    content_type = request.headers.get("Content-Type", "").strip()
    if len(content_type) > MAX_HEADER_VALUE:
        raise ProtocolError(400, "invalid_content_type", f"Content-Type is at most {MAX_HEADER_VALUE} characters.")
    if not _CONTENT_TYPE.fullmatch(content_type):
        content_type = DEFAULT_CONTENT_TYPE
    ttl_s, expires_at = parse_expiry(request)
    body = read_body(request)
    stream, created = await storage.create(
        user.pk,
        path,
        content_type=content_type,
        ttl_s=ttl_s,
        expires_at=expires_at,
        closed=is_true(request.headers.get(STREAM_CLOSED)),
        body=body,
        at=request.arrived_at,
    )
    response = empty(201 if created else 200, stream.content_type)
    response[STREAM_NEXT_OFFSET] = encode_offset(stream.tail)
    if created:
        response["Location"] = request.build_absolute_uri()
    if stream.closed:
        response[STREAM_CLOSED] = "true"
    return response


def producer_claim(request) -> storage.ProducerClaim | None:
    """The idempotent producer headers: all three or none (protocol 5.2.1)."""
    names = ("Producer-Id", "Producer-Epoch", "Producer-Seq")
    values = [request.headers.get(name) for name in names]
    if all(value is None for value in values):
        return None
    if any(value is None for value in values):
        raise ProtocolError(400, "incomplete_producer", "Send Producer-Id, Producer-Epoch and Producer-Seq together.")
    producer_id, epoch, seq = values
    if not producer_id or len(producer_id) > 255:
        raise ProtocolError(400, "invalid_producer_id", "Producer-Id is a non-empty string of up to 255 characters.")
    for name, value in zip(names[1:], (epoch, seq)):
        if not _PRODUCER_NUMBER.fullmatch(value) or int(value) > MAX_PRODUCER_NUMBER:
            raise ProtocolError(400, "invalid_producer_number", f"{name} is an integer from 0 to 2^53-1.")
    return storage.ProducerClaim(producer_id, int(epoch), int(seq))


async def append(request, user, path):
    claim = producer_claim(request)
    close = is_true(request.headers.get(STREAM_CLOSED))
    body = read_body(request)
    if not body and not close:
        raise ProtocolError(400, "empty_append", "An append needs a body (or Stream-Closed: true to close the stream).")
    content_type = request.headers.get("Content-Type", "").strip()
    if body and not content_type:
        raise ProtocolError(400, "content_type_required", "An append with a body needs a Content-Type.")
    seq = request.headers.get("Stream-Seq")
    if seq is not None and len(seq) > MAX_HEADER_VALUE:
        raise ProtocolError(400, "invalid_stream_seq", f"Stream-Seq is at most {MAX_HEADER_VALUE} characters.")
    outcome = await storage.append(
        user.pk, path, content_type=content_type, body=body, stream_seq=seq, claim=claim, close=close,
        at=request.arrived_at,
    )
    if outcome.changed:
        await wake(outcome.group)
    response = empty(outcome.status)
    set_headers(response, outcome.headers)
    return response


async def remove(request, user, path):
    group = await storage.delete(user.pk, path, at=request.arrived_at)
    if group is None:
        raise ProtocolError(404, "not_found", "No stream at this path.")
    await wake(group)
    return empty(204)


# --- Reads -----------------------------------------------------------------------


async def existing(request, user, path):
    stream = await storage.find(user.pk, path, at=request.arrived_at)
    if stream is None:
        raise ProtocolError(404, "not_found", "No stream at this path.")
    return stream


async def head(request, user, path):
    stream = await existing(request, user, path)
    response = empty(200, stream.content_type)
    response[STREAM_NEXT_OFFSET] = encode_offset(stream.tail)
    response["Cache-Control"] = NOT_CACHEABLE
    if stream.closed:
        response[STREAM_CLOSED] = "true"
    if stream.ttl_s is not None:
        response["Stream-TTL"] = str(stream.ttl_s)
    if stream.expires_at is not None:
        response["Stream-Expires-At"] = stream.expires_at.isoformat().replace("+00:00", "Z")
    return response


def chunk_response(request, stream, chunk: storage.Chunk, start: str, *, cursor: str | None = None) -> HttpResponse:
    """A 200 with the chunk's messages; a 304 when the client's If-None-Match names it."""
    next_offset = encode_offset(chunk.next_seq)
    etag = f'"ds{stream.pk}:{start}:{next_offset}{":c" if chunk.at_eof else ""}"'
    if request.headers.get("If-None-Match") == etag:
        response = empty(304)
    else:
        body = json_array(chunk.messages) if is_json(chunk.content_type) else b"".join(chunk.messages)
        response = empty(200, chunk.content_type, body)
    response["ETag"] = etag
    response[STREAM_NEXT_OFFSET] = next_offset
    # An empty answer at the tail of an open stream changes with the next append: not cacheable.
    response["Cache-Control"] = CACHEABLE if chunk.messages or chunk.closed else NOT_CACHEABLE
    if chunk.up_to_date:
        response[STREAM_UP_TO_DATE] = "true"
    if chunk.at_eof:
        response[STREAM_CLOSED] = "true"
    if cursor is not None:
        response[STREAM_CURSOR] = cursor
    return response


def caught_up(stream, after: int, *, closed: bool, cursor: str | None) -> HttpResponse:
    """A long-poll with nothing new: 204 with the tail, or the end of a closed stream."""
    response = empty(204)
    response[STREAM_NEXT_OFFSET] = encode_offset(after)
    response[STREAM_UP_TO_DATE] = "true"
    response["Cache-Control"] = NOT_CACHEABLE
    if closed:
        response[STREAM_CLOSED] = "true"
    else:
        response[STREAM_CURSOR] = cursor
    return response


async def read(request, user, path):
    offset = parse_offset(request.GET)
    live = live_mode(request, offset)
    stream = await existing(request, user, path)
    if offset is not None and offset.end:
        raise ProtocolError(400, "invalid_offset", "That offset belongs to a generation's stream, not this one.")
    after = None if offset is not None and offset.now else (offset.seq if offset else 0)
    cursor = response_cursor(client_cursor(request)) if live else None
    if live == "sse":
        if after is None:
            chunk = await storage.read(stream.pk, None, touch=False, at=request.arrived_at)
            after = chunk.tail if chunk else 0
        body = sse_body(stream.pk, stream.group, after, client_cursor(request))
        return EventStreamResponse(body, base64=sse_base64(stream.content_type))
    chunk = await storage.read(stream.pk, after, touch=True, at=request.arrived_at)
    if chunk is None:
        raise ProtocolError(404, "not_found", "No stream at this path.")
    if live is None and offset is not None and offset.now:
        body = b"[]" if is_json(chunk.content_type) else b""
        response = empty(200, chunk.content_type, body)
        response[STREAM_NEXT_OFFSET] = encode_offset(chunk.tail)
        response[STREAM_UP_TO_DATE] = "true"
        response["Cache-Control"] = NOT_CACHEABLE
        if chunk.closed:
            response[STREAM_CLOSED] = "true"
        return response
    start = request.GET.get("offset", "-1")
    if live is None or chunk.messages:
        return chunk_response(request, stream, chunk, start, cursor=cursor)
    if chunk.closed:
        return caught_up(stream, chunk.next_seq, closed=True, cursor=cursor)
    chunk = await wait_for_change(stream.pk, stream.group, chunk.next_seq, setting("DURABLE_LONG_POLL_TIMEOUT_S"))
    if chunk is None:
        raise ProtocolError(404, "not_found", "The stream was deleted.")
    if chunk.messages:
        return chunk_response(request, stream, chunk, start, cursor=cursor)
    return caught_up(stream, chunk.next_seq, closed=chunk.closed, cursor=cursor)


HANDLERS = {"GET": read, "HEAD": head, "PUT": create, "POST": append, "DELETE": remove}
ALLOW = "GET, HEAD, PUT, POST, DELETE, OPTIONS"
