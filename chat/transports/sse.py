"""The SSE transport: parse the resume position, follow the generation, encode events.

What is ready is sent in one write: one `Follow` batch is one body chunk.
"""

import asyncio
import logging
from contextlib import aclosing

from django.conf import settings
from django.http import StreamingHttpResponse

from ..models import Generation, StreamConnection
from ..server.admission import get_admission
from ..streaming.follow import Follow
from ..streaming.sse import encode
from .common import ConnectionLog, parse_coalesce_s, parse_last_event_id

logger = logging.getLogger(__name__)


async def generation_stream_response(
    request, generation: Generation, *, slot: str | None = None, status: int = 200, first: bytes = b""
) -> StreamingHttpResponse:
    """The generation's stream from the client's position; `first` goes out before the tokens.

    `slot`: a stream slot the caller already took (else one is taken here: 429 when none is free).
    """
    admission = get_admission()
    try:
        after_seq = parse_last_event_id(request, generation)
        coalesce_s = parse_coalesce_s(request.GET.get("coalesce_ms"))
        if slot is None:
            slot = await admission.open_stream(request.auth.pk)
        log = await ConnectionLog.open(
            generation=generation,
            user=request.auth,
            transport=StreamConnection.Transport.SSE,
            after_seq=after_seq,
            client_addr=request.META.get("REMOTE_ADDR") or "",
            user_agent=request.headers.get("User-Agent", ""),
        )
    except BaseException:
        if slot is not None:
            await admission.close_stream(slot)
        raise
    follow = Follow(
        generation.id,
        after_seq=after_seq,
        coalesce_s=coalesce_s,
        response_format=generation.response_format,
        active_when_read=not generation.is_terminal,
    )
    response = EventStreamResponse(
        sse_body(follow, log, first), request=request, status=status, content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # Tells nginx (and proxies that follow it) not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    admission.hold_until_closed(response, slot)
    return response


class EventStreamResponse(StreamingHttpResponse):
    """Close the body generator as soon as Django stops sending; let go of the request when it starts.

    Django wraps the body in generators of its own and closes only the
    outermost, so ours would linger, subscribed, until garbage collection.
    """

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream_request = request

    async def __aiter__(self):
        request, self._stream_request = self._stream_request, None
        if request is not None:
            release_request(request)
        async with aclosing(self._iterator) as body:
            async for part in body:
                yield part


def release_request(request) -> None:
    """Drop what the request holds (headers, the URL match, the user, the session, the body), but what closing it needs.

    Django keeps the request until the response ends, hours for a stream,
    though once the body starts (every middleware has run) nothing reads it.
    """
    kept = {name: value for name, value in vars(request).items() if name in ("_stream", "_files")}
    vars(request).clear()
    vars(request).update(kept)


async def sse_body(follow: Follow, log: "ConnectionLog", first: bytes = b""):
    try:
        # The retry hint also sends the headers at once, before the first token.
        yield encode(retry=settings.CHAT_STREAM_RETRY_MS, comment="stream") + first
        async with aclosing(follow.batches()) as batches:
            async for batch in batches:
                yield b"".join(event.sse for event in batch)
                log.sent(batch)
        log.end_reason = StreamConnection.EndReason.COMPLETED
    except (asyncio.CancelledError, GeneratorExit):
        log.client_gone()
        raise
    except Exception:
        logger.exception("stream of generation %s failed", follow.generation_id)
        raise
    finally:
        await log.close()
