"""`generations/<uuid>`: a generation, read-only, through the same `Follow` as the SSE and WebSocket transports."""

from durable import generations
from durable.conf import setting
from durable.protocol import (
    STREAM_CLOSED,
    STREAM_CURSOR,
    STREAM_NEXT_OFFSET,
    STREAM_UP_TO_DATE,
    ProtocolError,
    encode_offset,
    parse_offset,
    response_cursor,
    sse_control,
)
from durable.views.common import (
    CACHEABLE,
    NOT_CACHEABLE,
    EventStreamResponse,
    client_cursor,
    empty,
    live_mode,
    protocol_view,
)

ALLOW = "GET, HEAD, OPTIONS"


@protocol_view
async def generation_view(request, user, generation_id):
    if request.method not in ("GET", "HEAD"):
        raise ProtocolError(
            405, "read_only", "A generation's stream is written only by its run: use GET or HEAD.", {"Allow": ALLOW}
        )
    generation = await generations.owned_generation(generation_id, user)
    if generation is None:
        raise ProtocolError(404, "not_found", "No such generation.")
    where = await generations.position(generation)
    if request.method == "HEAD":
        return described(empty(200, generations.CONTENT_TYPE), where.next_offset, closed=where.ended)
    offset = parse_offset(request.GET)
    live = live_mode(request, offset)
    after_seq, at_end = generations.start_seq(offset, generation, where)
    cursor = response_cursor(client_cursor(request))
    if live == "sse":
        if at_end:
            body = iter_once(sse_control(where.next_offset, closed=True))
        else:
            body = generations.sse_body(generation, after_seq, where, client_cursor(request))
        return EventStreamResponse(body)
    if offset is not None and offset.now and live is None:
        return described(empty(200, generations.CONTENT_TYPE, b"[]"), where.next_offset, closed=where.ended, up_to_date=True)
    if at_end:
        if live:
            return described(empty(204), where.next_offset, closed=True, up_to_date=True)
        return batch_response(request, generation, generations.Batch(after=after_seq, ended=True), where, cursor=None)
    batch = await generations.catch_up(generation, after_seq, where)
    if live is None or batch.messages:
        return batch_response(request, generation, batch, where, cursor=cursor if live else None)
    batch = await generations.long_poll(generation, after_seq, setting("DURABLE_LONG_POLL_TIMEOUT_S"))
    if batch.messages:
        return batch_response(request, generation, batch, where, cursor=cursor)
    response = described(empty(204), encode_offset(after_seq), closed=False, up_to_date=True)
    response[STREAM_CURSOR] = cursor
    return response


def described(response, next_offset: str, *, closed: bool, up_to_date: bool = False):
    response[STREAM_NEXT_OFFSET] = next_offset
    response["Cache-Control"] = NOT_CACHEABLE
    if up_to_date or closed:
        response[STREAM_UP_TO_DATE] = "true"
    if closed:
        response[STREAM_CLOSED] = "true"
    return response


def batch_response(request, generation, batch: generations.Batch, where, *, cursor):
    """The batch's messages as a JSON array; cacheable once the generation has ended, and a 304 on a matching ETag."""
    next_offset = batch.next_offset()
    etag = f'"gen-{generation.pk.hex}:{request.GET.get("offset", "-1")}:{next_offset}"'
    if request.headers.get("If-None-Match") == etag:
        response = empty(304)
    else:
        response = empty(200, generations.CONTENT_TYPE, batch.body())
    response["ETag"] = etag
    up_to_date = batch.ended or (not where.ended and batch.after >= where.tail)
    described(response, next_offset, closed=batch.ended, up_to_date=up_to_date)
    response["Cache-Control"] = CACHEABLE if where.ended else NOT_CACHEABLE
    if cursor is not None:
        response[STREAM_CURSOR] = cursor
    return response


async def iter_once(part: bytes):
    yield part
