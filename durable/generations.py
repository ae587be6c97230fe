"""A generation read as a durable stream: `Follow`'s events, encoded as JSON messages.

Each message is the event's WebSocket frame (docs/protocol.md): `token`,
`reasoning`, `snapshot`, `json`, then one terminal `done` / `interrupted` / `failed` /
`cancelled`, after which the stream is closed. A message's offset is its
event id zero-padded, so offsets and `Last-Event-ID` name the same position;
the terminal message's offset is `<last_seq>_end`.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from chat.db import db_work
from chat.models import Generation
from chat.streaming.answers import last_persisted_seq
from chat.streaming.events import KEEPALIVE, End
from chat.streaming.follow import Follow
from durable.conf import setting
from durable.protocol import (
    ProtocolError,
    encode_offset,
    response_cursor,
    sse_control,
    sse_event,
)

CONTENT_TYPE = "application/json"
# After a long-poll's first event, events arriving this soon after go out in the same response.
LONG_POLL_LINGER_S = 0.05


@dataclass
class Position:
    """Where a generation's stream stands: its persisted tail and, once ended, its last sequence number."""

    tail: int
    end: int | None  # last_seq of an ended generation

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def next_offset(self) -> str:
        return encode_offset(self.end, end=True) if self.ended else encode_offset(self.tail)


@dataclass
class Batch:
    """The messages of one response, and where a client continues from."""

    messages: list[str] = field(default_factory=list)
    after: int = 0
    ended: bool = False
    size: int = 0

    def add(self, event) -> None:
        self.messages.append(event.ws)
        self.size += len(event.ws)
        if isinstance(event, End):
            self.ended = True
        self.after = max(self.after, event.id)

    def body(self) -> bytes:
        return ("[" + ",".join(self.messages) + "]").encode()

    def next_offset(self) -> str:
        return encode_offset(self.after, end=self.ended)


async def owned_generation(generation_id, user) -> Generation | None:
    return await Generation.objects.filter(pk=generation_id, conversation__owner=user).only(
        "id", "status", "first_seq", "last_seq", "response_format"
    ).afirst()


async def position(generation: Generation) -> Position:
    if generation.is_terminal:
        return Position(tail=generation.last_seq, end=generation.last_seq)
    tail = await db_work(last_persisted_seq)(generation.pk)
    return Position(tail=generation.first_seq - 1 if tail is None else tail, end=None)


def start_seq(offset, generation: Generation, where: Position) -> tuple[int, bool]:
    """The client's position as (after_seq, at the end); offsets past the stream are a 400.

    The start (-1) is the whole answer: a continuation's stream opens with a
    snapshot of the text it continues.
    """
    if offset is None or offset.start:
        return 0, False
    if offset.now:
        return (where.end, True) if where.ended else (where.tail, False)
    if offset.end:
        if not where.ended or offset.seq != where.end:
            raise ProtocolError(400, "invalid_offset", "That offset is not this stream's end.")
        return offset.seq, True
    if where.ended and offset.seq > where.end:
        raise ProtocolError(400, "invalid_offset", f"That offset is past the end of this finished stream ({where.end}).")
    return offset.seq, False


def follow(generation: Generation, after_seq: int) -> Follow:
    return Follow(generation.pk, after_seq=after_seq, response_format=generation.response_format)


async def catch_up(generation: Generation, after_seq: int, where: Position) -> Batch:
    """What the database holds after `after_seq`: through the end for an ended generation, else its persisted tail."""
    batch = Batch(after=after_seq)
    if not where.ended and after_seq >= where.tail:
        return batch
    budget = setting("DURABLE_READ_CHUNK_BYTES")
    try:
        # Replaying stored tokens never waits long; the bound only guards against a gap that never fills.
        async with asyncio.timeout(setting("DURABLE_LONG_POLL_TIMEOUT_S")):
            async with aclosing(follow(generation, after_seq).events()) as events:
                async for event in events:
                    if event is KEEPALIVE:
                        continue
                    batch.add(event)
                    if batch.ended or batch.size >= budget or (not where.ended and batch.after >= where.tail):
                        break
    except TimeoutError:
        pass
    return batch


async def long_poll(generation: Generation, after_seq: int, timeout: float) -> Batch:
    """The first live events after `after_seq`, and any that follow within LONG_POLL_LINGER_S; empty on timeout."""
    batch = Batch(after=after_seq)
    try:
        async with asyncio.timeout(timeout) as deadline:
            async with aclosing(follow(generation, after_seq).events()) as events:
                async for event in events:
                    if event is KEEPALIVE:
                        continue
                    batch.add(event)
                    if batch.ended:
                        break
                    deadline.reschedule(asyncio.get_running_loop().time() + LONG_POLL_LINGER_S)
    except TimeoutError:
        pass
    return batch


async def sse_body(generation: Generation, after_seq: int, where: Position, cursor: str | None) -> AsyncIterator[bytes]:
    """A data event per `Follow` event, each with its control event; closes after the terminal one."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + setting("DURABLE_SSE_MAX_S")
    caught_up_at = where.end if where.ended else where.tail
    if after_seq >= caught_up_at and not where.ended:
        yield sse_control(encode_offset(after_seq), cursor=response_cursor(cursor), up_to_date=True)
    async with aclosing(follow(generation, after_seq).events()) as events:
        async for event in events:
            if event is KEEPALIVE:
                yield sse_control(encode_offset(after_seq), cursor=response_cursor(cursor), up_to_date=True)
            else:
                yield sse_event("data", f"[{event.ws}]")
                ended = isinstance(event, End)
                after_seq = max(after_seq, event.id)
                yield sse_control(
                    encode_offset(after_seq, end=ended),
                    cursor=response_cursor(cursor),
                    up_to_date=ended or after_seq >= caught_up_at,
                    closed=ended,
                )
                if ended:
                    return
            if loop.time() >= ends_at:
                return
