"""Live reads of the general namespace: long-poll and SSE, woken through the hub, never by polling."""

import asyncio
import base64
from collections.abc import AsyncIterator

from chat.streaming.events import Wake
from chat.streaming.hub import get_hub
from durable import storage
from durable.conf import setting
from durable.protocol import (
    encode_offset,
    is_json,
    json_array,
    response_cursor,
    sse_base64,
    sse_control,
    sse_event,
)


async def wake(group: str) -> None:
    """Tell every process's live readers of a stream to read it again."""
    await get_hub().publish(group, Wake())


async def wait_for_change(stream_id: int, group: str, after: int, timeout: float) -> storage.Chunk | None:
    """Wait until the stream has messages after `after`, is closed or is gone; the last read on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Subscribe before reading, so that an append between the two still wakes us.
    async with get_hub().subscribe(group) as subscription:
        while True:
            chunk = await storage.read(stream_id, after, touch=True)
            if chunk is None or chunk.messages or chunk.closed:
                return chunk
            remaining = deadline - loop.time()
            if remaining <= 0 or await subscription.get(remaining) is None:
                return chunk


def data_payload(content_type: str, messages: list[bytes]) -> str:
    if is_json(content_type):
        return json_array(messages).decode()
    joined = b"".join(messages)
    if sse_base64(content_type):
        return base64.b64encode(joined).decode()
    return joined.decode("utf-8", errors="replace")


async def sse_body(stream_id: int, group: str, after: int, cursor: str | None) -> AsyncIterator[bytes]:
    """Data and control events from `after`, then live ones, until the stream closes or SSE_MAX_S passes."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + setting("DURABLE_SSE_MAX_S")
    keepalive_s = setting("DURABLE_LONG_POLL_TIMEOUT_S")
    announce = True  # The first control event goes out even with no data (protocol 8, offset=now).
    async with get_hub().subscribe(group) as subscription:
        while True:
            chunk = await storage.read(stream_id, after, touch=True)
            if chunk is None:
                return  # Deleted or expired: a reconnect will get the 404.
            if chunk.messages:
                yield sse_event("data", data_payload(chunk.content_type, chunk.messages))
                after = chunk.next_seq
            if chunk.messages or chunk.at_eof or announce:
                yield sse_control(
                    encode_offset(after), cursor=response_cursor(cursor), up_to_date=chunk.up_to_date, closed=chunk.at_eof
                )
            if chunk.at_eof:
                return
            if not chunk.up_to_date:
                continue
            remaining = ends_at - loop.time()
            if remaining <= 0:
                return
            announce = await subscription.get(min(keepalive_s, remaining)) is None
