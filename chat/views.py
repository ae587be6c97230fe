"""The SSE transport: parse the resume position, follow the generation, encode events."""

import asyncio
import logging
from contextlib import aclosing

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils import timezone

from . import runner
from .db import db_work
from .errors import ApiError
from .events import End, Token
from .models import Generation, StreamConnection
from .sse import encode
from .stream import Follow

logger = logging.getLogger(__name__)

# Sequence numbers are stored as 32-bit integers on every database backend.
MAX_EVENT_ID = 2**31 - 1


def parse_last_event_id(request, generation: Generation) -> int:
    """The client's position: the `Last-Event-ID` header, else `?last_event_id=`, else the start."""
    raw = request.headers.get("Last-Event-ID")
    field = "Last-Event-ID"
    if raw is None:
        raw, field = request.GET.get("last_event_id"), "last_event_id"
    if raw is None or raw.strip() == "":
        return generation.first_seq - 1
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_EVENT_ID:
        raise ApiError(400, "invalid_last_event_id", f"{field} must be a non-negative integer, got {raw[:40]!r}.", field)
    last_event_id = int(raw)
    if generation.is_terminal and last_event_id > generation.last_seq:
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"{field} {last_event_id} is past the end of this finished stream (last id {generation.last_seq}).",
            field,
        )
    return last_event_id


def parse_coalesce_s(request) -> float:
    raw = request.GET.get("coalesce_ms")
    if raw is None:
        return settings.CHAT_STREAM_COALESCE_MS / 1000
    limit = settings.CHAT_STREAM_COALESCE_MAX_MS
    if not raw.isdigit() or int(raw) > limit:
        raise ApiError(400, "invalid_coalesce_ms", f"coalesce_ms must be an integer from 0 to {limit}.", "coalesce_ms")
    return int(raw) / 1000


async def generation_stream_response(request, generation: Generation) -> StreamingHttpResponse:
    after_seq = parse_last_event_id(request, generation)
    coalesce_s = parse_coalesce_s(request)
    connection = await StreamConnection.objects.acreate(
        generation=generation,
        user=request.auth,
        transport=StreamConnection.Transport.SSE,
        resumed_from=after_seq if after_seq >= generation.first_seq else None,
        client_addr=(request.META.get("REMOTE_ADDR") or "")[:64],
        user_agent=request.headers.get("User-Agent", "")[:256],
    )
    follow = Follow(generation.id, after_seq=after_seq, coalesce_s=coalesce_s)
    response = EventStreamResponse(sse_body(follow, connection), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx (and proxies that follow it) not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


class EventStreamResponse(StreamingHttpResponse):
    """Close the body generator as soon as Django stops sending.

    Django wraps the body in generators of its own and closes only the
    outermost, so ours would linger, subscribed, until garbage collection.
    """

    async def __aiter__(self):
        async with aclosing(self._iterator) as body:
            async for part in body:
                yield part


async def sse_body(follow: Follow, connection: StreamConnection):
    events_sent = tokens_sent = 0
    end_reason = StreamConnection.EndReason.ERROR
    try:
        # The retry hint also sends the headers at once, before the first token.
        yield encode(retry=settings.CHAT_STREAM_RETRY_MS, comment="stream")
        async with aclosing(follow.events()) as events:
            async for event in events:
                yield event.sse
                if isinstance(event, Token):
                    events_sent += 1
                    tokens_sent += event.last_seq - event.first_seq + 1
                elif isinstance(event, End):
                    events_sent += 1
        end_reason = StreamConnection.EndReason.COMPLETED
    except (asyncio.CancelledError, GeneratorExit):
        end_reason = (
            StreamConnection.EndReason.SERVER_SHUTDOWN if runner.shutting_down else StreamConnection.EndReason.CLIENT_GONE
        )
        raise
    except Exception:
        logger.exception("stream of generation %s failed", follow.generation_id)
        raise
    finally:
        # Shielded: the client's disconnect may cancel us again while this is saved.
        await asyncio.shield(
            record_connection_end(connection.pk, events_sent=events_sent, tokens_sent=tokens_sent, end_reason=end_reason)
        )


async def record_connection_end(connection_id: int, *, events_sent: int, tokens_sent: int, end_reason: str) -> None:
    await db_work(
        StreamConnection.objects.filter(pk=connection_id).update
    )(events_sent=events_sent, tokens_sent=tokens_sent, ended_at=timezone.now(), end_reason=end_reason)
