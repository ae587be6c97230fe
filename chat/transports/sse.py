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


class EventEncoding:
    """Our own events (docs/protocol.md): the retry hint, then `first`, then each event's cached encoding.

    Another protocol over SSE (transports/ai_sdk.py) is another encoding with
    the same four members; the following, the log and the response stay here.
    """

    transport = StreamConnection.Transport.SSE
    headers: dict[str, str] = {}

    def __init__(self, first: bytes = b""):
        self.first = first

    def head(self) -> bytes:
        # The retry hint also sends the headers at once, before the first token.
        return encode(retry=settings.CHAT_STREAM_RETRY_MS, comment="stream") + self.first

    @staticmethod
    def batch(events: list) -> bytes:
        return b"".join(event.sse for event in events)


async def generation_stream_response(
    request,
    generation: Generation,
    *,
    slot: str | None = None,
    status: int = 200,
    first: bytes = b"",
    after_seq: int | None = None,
    encoding=None,
) -> StreamingHttpResponse:
    """The generation's stream from the client's position; `first` goes out before the tokens.

    `slot`: a stream slot the caller already took (else one is taken here: 429 when none is free).
    `after_seq`: where to start (default: the client's `Last-Event-ID`); `encoding`: default `EventEncoding(first)`.
    """
    admission = get_admission()
    encoding = encoding or EventEncoding(first)
    try:
        if after_seq is None:
            after_seq = parse_last_event_id(request, generation)
        coalesce_s = parse_coalesce_s(request.GET.get("coalesce_ms"))
        if slot is None:
            slot = await admission.open_stream(request.auth.pk)
        log = await ConnectionLog.open(
            generation=generation,
            user=request.auth,
            transport=encoding.transport,
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
        sse_body(follow, log, encoding), request=request, status=status, content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # Tells nginx (and proxies that follow it) not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    for name, value in encoding.headers.items():
        response[name] = value
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


async def sse_body(follow: Follow, log: "ConnectionLog", encoding: EventEncoding):
    try:
        yield encoding.head()
        async with aclosing(follow.batches()) as batches:
            async for batch in batches:
                yield encoding.batch(batch)
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


async def posted_answer_response(request, post, posted_body) -> StreamingHttpResponse:
    """The new answer's stream as the response to the POST that asked for it, after a `posted` event.

    `post()` creates the answer (an `actions.Answer`); `posted_body(answer)` is the JSON the POST would have
    answered with. A bad window or no free stream slot is refused before anything is created.
    """
    admission = get_admission()
    parse_coalesce_s(request.GET.get("coalesce_ms"))
    slot = await admission.open_stream(request.auth.pk)
    try:
        answer = await post()
        first = encode(await posted_body(answer), event="posted")
    except BaseException:
        await admission.close_stream(slot)
        raise
    response = await generation_stream_response(request, answer.generation, slot=slot, status=201, first=first)
    response["Location"] = f"/api/generations/{answer.generation.id}"
    return response
